"""Newton in the class-gradient subspace plus gradient descent in its complement
(Tuddenham, Pruegel-Bennett & Hare 2020, eq 6).

With the low-rank Hessian H_LR = sum_k lambda_k v_k v_k^T of eq (4), its generalized
inverse and the projection P = I - sum_k v_k v_k^T of eq (5), Newton's method in the
span and SGD with learning rate eta in the complement give the step

    theta' - theta = -(H_LR)^+ g - eta P g
                   = -eta g - sum_k (1/lambda_k - eta) (v_k^T g) v_k,          (eq 6)

which this module returns as a *direction that includes the learning rate* of the
complement (the Newton part has step 1). Two variants:

``"orthogonal"`` (the paper)
    eq (6) literally, with the unit vectors v_k and eigenvalues lambda_k of
    :func:`arraycurv.curvature.subspace.class_subspace`: exact when the class gradients
    are orthogonal.
``"exact"``
    no orthogonality assumption: U an orthonormal basis of span{c_k}
    (:func:`~arraycurv.curvature.subspace.subspace_basis`), K_U = U^T K U the exact
    curvature in the span (K = H_LR of eq 3, the GGN or the Hessian), and
    ``d = -U K_U^+ U^T g - eta (I - U U^T) g``. With orthogonal class gradients and
    K = H_LR the two variants coincide.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import backend
from ..curvature.generic import value_and_grad
from ..curvature.subspace import (
    CURVATURES,
    METHODS,
    _basis,
    _coefficients,
    _combine,
    _inverse_eigenvalues,
    _tree_pairs,
    class_subspace,
    subspace_curvature,
)
from ..linalg.subspaces import _direction_pairs
from ..losses import SoftmaxCrossEntropy
from ..validation import ArgumentTypeError, check_arrays, check_call, check_lr, check_rcond, check_real, check_symmetric

__all__ = [
    "VARIANTS",
    "class_subspace_direction",
    "class_subspace_newton_direction",
    "subspace_newton_direction",
]

#: Variants of :func:`class_subspace_direction`.
VARIANTS = ("orthogonal", "exact")


def _nonneg(value, name):
    return check_real(value, name, lo=0, want="a finite real number >= 0")


def _step_hypers(lr, damping, rcond):
    """The checked (lr, damping, rcond) of a subspace step."""
    return check_lr(lr), _nonneg(damping, "damping"), check_rcond(rcond)


def _rcond(rcond, n, dtype, xp):
    return max(n, 1) * float(xp.finfo(dtype).eps) if rcond is None else rcond


def _grads_pairs(grads, shapes=None):
    """``(grads[i], array)`` pairs: shaped like ``shapes`` when given, else any arrays."""
    if shapes is not None:
        return _tree_pairs(grads, shapes, "grads")
    if not isinstance(grads, Sequence) or isinstance(grads, str) or backend.is_array(grads) or not grads:
        raise ArgumentTypeError(f"grads: expected a non-empty tuple of arrays, got {type(grads).__name__}")
    for i, g in enumerate(grads):
        if not backend.is_array(g) or not hasattr(g, "shape"):
            raise ArgumentTypeError(f"grads[{i}]: expected an array, got {type(g).__name__}")
    return [(f"grads[{i}]", g) for i, g in enumerate(grads)]


def _array_pair(a, name, shape):
    if not backend.is_array(a) or not hasattr(a, "shape"):
        raise ArgumentTypeError(f"{name}: expected an array of shape {shape}, got {type(a).__name__}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
    return (name, a)


def _check_directions_call(grads, dirs, dname, extra_name, extra, extra_shape):
    """Namespace of ``grads`` (a tuple of arrays), ``dirs`` (S directions shaped like the
    grads) and one more array, all checked; returns ``(xp, S)``."""
    gp = _grads_pairs(grads)
    shapes = [tuple(g.shape) for _, g in gp]
    dp, s = _direction_pairs(dirs, dname, shapes=shapes, like="grads")
    ep = _array_pair(extra, extra_name, extra_shape(s))
    return check_arrays(gp + dp + [ep]), s


def class_subspace_newton_direction(grads, vectors, eigenvalues, lr: float, *, damping: float = 0.0,
                                    rcond: float | None = None):
    """Eq (6) of Tuddenham et al. (2020): ``-lr g - sum_k (1/lambda_k - lr) (v_k . g) v_k``.

    Parameters
    ----------
    grads : tuple of arrays
        The (minibatch) gradient g, shaped like the parameters.
    vectors : tuple of (C, *shape) arrays
        The directions v_k (unit class gradients, or their moving averages).
    eigenvalues : array (C,)
        lambda_k. Values ``<= rcond * max lambda`` (default ``C * eps``) count as zero:
        their Newton part vanishes (the generalized inverse) and only ``-lr P g`` remains
        along v_k.
    lr : float
        Learning rate eta of the complement.
    damping : float
        Added to the kept lambda_k (1 / (lambda_k + damping)); 0 in the paper.

    Returns
    -------
    tuple shaped like ``grads``: the step theta' - theta.
    """
    lr, damping, rcond = _step_hypers(lr, damping, rcond)
    xp, _ = _check_directions_call(grads, vectors, "vectors", "eigenvalues", eigenvalues, lambda s: (s,))
    inv = _inverse_eigenvalues(xp, eigenvalues, _rcond(rcond, eigenvalues.shape[0], eigenvalues.dtype, xp), damping)
    coef = (inv - lr) * _coefficients(xp, vectors, grads)
    inside = _combine(xp, vectors, coef)
    return tuple(-lr * g - a for g, a in zip(grads, inside))


def subspace_newton_direction(grads, basis, curvature, lr: float, *, damping: float = 0.0,
                              rcond: float | None = None):
    """Newton in span(U) and gradient descent in its complement, without assumptions:
    ``-U (K_U + damping I)^+ U^T g - lr (g - U U^T g)`` for an orthonormal basis U
    (tuple of (S, *shape)) and the S x S curvature ``K_U = U^T K U``
    (:func:`arraycurv.curvature.subspace.subspace_curvature`).

    The pseudo-inverse is taken through ``eigh`` with eigenvalues ``|mu| <= rcond * max
    |mu|`` (default ``S * eps``) cut; an indefinite K_U (the Hessian) keeps its negative
    eigenvalues (the exact Newton step in the span). ``damping`` shifts the kept ones.
    """
    lr, damping, rcond = _step_hypers(lr, damping, rcond)
    xp, s = _check_directions_call(grads, basis, "basis", "curvature", curvature, lambda s: (s, s))
    check_symmetric(curvature, "curvature", xp, rtol=max(1e-6, 1e3 * float(xp.finfo(curvature.dtype).eps)))
    return _subspace_newton(xp, grads, basis, curvature, lr, damping, rcond)


def _subspace_newton(xp, grads, basis, curvature, lr, damping, rcond):
    s = basis[0].shape[0]
    gu = _coefficients(xp, basis, grads)  # U^T g
    if s == 0:
        return tuple(-lr * g for g in grads)
    mu, q = xp.linalg.eigh(0.5 * (curvature + xp.matrix_transpose(curvature)))
    top = float(xp.max(xp.abs(mu)))
    cut = _rcond(rcond, s, mu.dtype, xp) * top
    keep = xp.abs(mu) > cut
    den = mu + damping
    inv = xp.where(keep, 1.0 / xp.where(keep, den, xp.ones_like(den)), xp.zeros_like(mu))
    newton = q @ (inv * (xp.matrix_transpose(q) @ gu))  # K_U^+ U^T g
    inside = _combine(xp, basis, newton - lr * gu)
    return tuple(-lr * g - a for g, a in zip(grads, inside))


def class_subspace_direction(model, params, batch, *, lr: float, variant: str = "orthogonal",
                             curvature: str = "low_rank", loss=SoftmaxCrossEntropy(), damping: float = 0.0,
                             rcond: float | None = None, grads=None, method: str = "masked"):
    """The quasi-Newton step of Tuddenham et al. (2020) eq (6) for one batch.

    Parameters
    ----------
    model, params, batch
        A classifier (C logits), its parameters and a batch ``(x, y)`` with integer labels.
    lr : float
        Learning rate eta of the complement.
    variant : {"orthogonal", "exact"}
        ``"orthogonal"``: eq (6) with v_k, lambda_k of eq (4). ``"exact"``: Newton with
        the exact curvature ``curvature`` in span{c_k} (module docstring).
    curvature : {"low_rank", "ggn", "hessian"}
        K for ``variant="exact"`` (H_LR of eq 3, the GGN, the Hessian); ignored by
        ``"orthogonal"``.
    loss
        The training loss (softmax cross-entropy in the paper), for the gradient and for
        the GGN / Hessian.
    grads : tuple, optional
        The gradient of the mean loss on ``batch`` if already computed.
    method : str
        How to compute the class gradients (:func:`~arraycurv.curvature.subspace.class_gradients`).

    Returns
    -------
    tuple shaped like ``params``: the step theta' - theta.
    """
    lr, damping, rcond = _step_hypers(lr, damping, rcond)
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}, got {variant!r}")
    if not isinstance(curvature, str) or curvature not in CURVATURES:
        raise ValueError(f"curvature: expected one of {CURVATURES}, got {curvature!r}")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    xp = check_call(model, params, batch=batch, loss=loss)
    if grads is None:
        _, grads = value_and_grad.trusted(model, params, batch, loss, xp=xp)
    else:
        check_arrays([("params[0]", params[0])] + _grads_pairs(grads, [tuple(p.shape) for p in params]))
    sub = class_subspace(model, params, batch, method=method)
    if variant == "orthogonal":
        return class_subspace_newton_direction(grads, sub.vectors, sub.eigenvalues, lr, damping=damping, rcond=rcond)
    basis = _basis(xp, sub.class_grads)
    k_u = subspace_curvature(model, params, batch, basis, curvature=curvature, loss=loss, subspace=sub)
    return _subspace_newton(xp, grads, basis, k_u, lr, damping, rcond)
