"""Curvature in a subspace, and the class-gradient subspace of Tuddenham,
Pruegel-Bennett & Hare (2020), eqs (1)-(5).

Directions in parameter space are tuples shaped like the parameters with one leading
axis: ``(S, *shape_i)`` per tensor holds S directions (the layout of the models' stacked
tangents).

Class gradients (eq 1, Fort & Ganguli 2019): for the logits z = f(x) of a classifier
with C outputs and a batch with labels y,

    c_k = (1 / |D_k|) sum_{mu in D_k} grad z_k^mu,

the mean over the samples of class k of the gradient of logit k. :func:`class_gradients`
gets all C of them from ONE reverse pass with class-masked cotangents
``u[k, mu, j] = [y_mu = k] [j = k] / |D_k|`` when the model family's passes accept a
leading axis of cotangents (:func:`arraycurv.models.base.stacked_tangents`: Sequential
networks), or from C reverse passes otherwise (the generic fallback, e.g. DeepLinear);
``method="by_class"`` instead runs each class's reverse pass on its own samples only, C
calls whose total work is that of a single pass over the batch.

Eq (2) writes every logit gradient as ``grad z_k^mu = y_k^mu c_k + eps_k^mu``
(:func:`class_gradient_decomposition`, materialized). Eq (3) is the low-rank Hessian

    H_LR = sum_k w_k c_k c_k^T,   w_k = (1/|B|) sum_mu y_k^mu p_k^mu (1 - p_k^mu),

and with v_k = c_k / |c_k| and lambda_k = w_k |c_k|^2 it reads H_LR = sum_k lambda_k
v_k v_k^T (eq 4): the same matrix; the paper's *assumption* that the c_k are orthogonal
makes (lambda_k, v_k) its eigenpairs, so that its generalized inverse is sum_k v_k
v_k^T / lambda_k and P = I - sum_k v_k v_k^T (eq 5) projects onto the complement.
:func:`class_subspace` returns these quantities; :func:`subspace_basis` and
:func:`subspace_curvature` give the assumption-free variant: an orthonormal basis U of
span{c_k} and the exact U^T H_LR U, U^T G U or U^T H U.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from .. import backend
from ..linalg.subspaces import _direction_pairs, _stack, orthonormal_basis
from ..losses import SoftmaxCrossEntropy
from ..models.base import forward, hvp, linearize, param_shapes, stacked_tangents, vjp
from ..params import unflatten
from ..validation import ArgumentTypeError, check_arrays, check_call, check_nonneg, check_params, check_rcond
from .generic import ggn_vp, jacobian

__all__ = [
    "CURVATURES",
    "ClassSubspace",
    "LogitGradientDecomposition",
    "class_complement_project",
    "class_gradient_decomposition",
    "class_gradients",
    "class_gradients_matrix",
    "class_subspace",
    "low_rank_hessian_matrix",
    "low_rank_hessian_pinv_vp",
    "low_rank_hessian_vp",
    "subspace_basis",
    "subspace_coefficients",
    "subspace_combine",
    "subspace_curvature",
]

#: Curvatures accepted by :func:`subspace_curvature`.
CURVATURES = ("low_rank", "ggn", "hessian")
#: Methods of :func:`class_gradients`.
METHODS = ("masked", "per_sample", "by_class", "auto")
#: ``method="auto"`` keeps per-sample gradients when B * P is at most this many numbers.
PER_SAMPLE_LIMIT = 2**22


class ClassSubspace(NamedTuple):
    """The class-gradient subspace of Tuddenham et al. (2020) eqs (1), (3), (4).

    Attributes
    ----------
    class_grads : tuple of (C, *shape) arrays
        c_k of eq (1); zero for a class without samples in the batch.
    vectors : tuple of (C, *shape) arrays
        v_k = c_k / |c_k| (zero where c_k = 0).
    eigenvalues : array (C,)
        lambda_k = w_k |c_k|^2 (eq 4).
    weights : array (C,)
        w_k = (1/|B|) sum_mu y_k^mu p_k^mu (1 - p_k^mu) (eq 3).
    counts : array (C,)
        |D_k|, the number of samples of class k in the batch (int64).
    """

    class_grads: tuple
    vectors: tuple
    eigenvalues: Any
    weights: Any
    counts: Any


class LogitGradientDecomposition(NamedTuple):
    """Eq (2) materialized: ``grad z_k^mu = y_k^mu c_k + eps_k^mu`` in the flat layout.

    Attributes
    ----------
    class_grads : array (C, P)
        c_k.
    residuals : array (B, C, P)
        eps_k^mu = grad z_k^mu - y_k^mu c_k.
    explained : array (C,)
        ``|D_k| |c_k|^2 / sum_{mu in D_k} |grad z_k^mu|^2``: the share of the squared
        norm of the class-k logit gradients over their own samples that the class
        gradient carries (1 when they all equal c_k; 0 for an empty class).
    """

    class_grads: Any
    residuals: Any
    explained: Any


# ----------------------------------------------------------------------- helpers
def _check_batch_type(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else \
            type(batch).__name__
        raise ArgumentTypeError(f"batch: expected a tuple (x, y) with integer labels y, got {got}")


def _check_labels(model, params, batch, lin=None, xp=None):
    """(xp, x, y, outputs, onehot (B, C), counts (C,)) for integer labels y; the outputs
    come from the linearization ``lin`` when given, else from a forward pass. The call
    is validated here (``params``, ``batch x``, ``batch y``) unless ``xp`` is given."""
    if xp is None:
        _check_batch_type(batch)
        xp = check_call(model, params, batch=tuple(batch), loss=SoftmaxCrossEntropy())
    x, y = batch
    out = forward.trusted(model, params, x, xp=xp) if lin is None else lin.outputs
    c = out.shape[1]
    ar = xp.arange(c, device=backend.device_of(out))
    hot = xp.astype(xp.astype(y, xp.int64)[:, None] == ar[None, :], out.dtype)
    return xp, x, y, out, hot, xp.astype(xp.sum(hot, axis=0), xp.int64)


def _per_class_scale(xp, hot, counts):
    """[y_mu = k] / |D_k| (0 for empty classes), shape (B, C)."""
    n = xp.astype(counts, hot.dtype)
    return hot / xp.where(n > 0, n, xp.ones_like(n))[None, :]


def _tree_pairs(tree, shapes, name):
    """``(name[i], array)`` pairs of a tuple (or other sequence) of arrays with exactly ``shapes``."""
    if isinstance(tree, Sequence) and not isinstance(tree, (str, bytes, tuple, list)) and not backend.is_array(tree):
        tree = tuple(tree)  # e.g. the lazy gradient of arraycurv.train
    check_params(tree, shapes, name)
    return [(f"{name}[{i}]", t) for i, t in enumerate(tree)]


def _coefficients(xp, directions, v):
    s = directions[0].shape[0]
    return sum(xp.reshape(d, (s, -1)) @ xp.reshape(t, (-1,)) for d, t in zip(directions, v))


def _combine(xp, directions, coeffs):
    return tuple(xp.tensordot(coeffs, d, axes=1) for d in directions)


def subspace_coefficients(directions, v):
    """The inner products <d_s, v> of S directions (tuple of (S, *shape)) with v (a
    tuple shaped like the parameters), shape (S,)."""
    pairs, _ = _direction_pairs(directions, "directions")
    pairs += _tree_pairs(v, [tuple(d.shape[1:]) for d in directions], "v")
    return _coefficients(check_arrays(pairs), directions, v)


def subspace_combine(directions, coeffs):
    """sum_s coeffs[..., s] d_s for S directions (tuple of (S, *shape)) and coefficients
    (S,) (a tuple shaped like the parameters) or (m, S) (with a leading axis m)."""
    pairs, s = _direction_pairs(directions, "directions")
    if not backend.is_array(coeffs) or not hasattr(coeffs, "shape"):
        raise ArgumentTypeError(f"coeffs: expected an array of shape ({s},) or (m, {s}), got {type(coeffs).__name__}")
    if coeffs.ndim not in (1, 2) or coeffs.shape[-1] != s:
        raise ValueError(f"coeffs: expected shape ({s},) or (m, {s}) for {s} directions, got {tuple(coeffs.shape)}")
    return _combine(check_arrays(pairs + [("coeffs", coeffs)]), directions, coeffs)


def _norms(xp, directions):
    s = directions[0].shape[0]
    flat = [xp.reshape(d, (s, -1)) for d in directions]
    return xp.sqrt(sum(xp.vecdot(f, f, axis=-1) for f in flat))


# ----------------------------------------------------------------- class gradients
def class_gradients(model, params, batch, *, method: str = "masked") -> tuple:
    """Class gradients c_k of Tuddenham et al. (2020) eq (1) (Fort & Ganguli 2019).

    ``c_k = (1/|D_k|) sum_{mu in D_k} grad_theta z_k(x_mu)`` for every class k of the
    model's C outputs (logits), from the batch ``(x, y)`` with integer labels y. A class
    without samples gets c_k = 0.

    Parameters
    ----------
    model, params, batch
        Any model family (the passes of :mod:`arraycurv.models.base`), its parameters and
        a batch with integer labels in [0, C).
    method : {"masked", "per_sample", "by_class", "auto"}
        ``"masked"``: the cotangent ``u[k, mu, :] = [y_mu = k] e_k / |D_k|`` (C, B, C)
        through one reverse pass when the family stacks cotangents
        (:func:`~arraycurv.models.base.stacked_tangents`), else one reverse pass per
        class (fallback); C times the arithmetic of one reverse pass.
        ``"per_sample"``: one reverse pass of the (B, C) cotangent ``u_mu = e_{y_mu} /
        |D_{y_mu}|`` through the family's linearization keeping the batch axis
        (``vjp(..., per_sample=True)``, Sequential networks), then the per-class sums
        ``onehot^T (B, P)``: one pass of work and B P numbers of memory.
        ``"by_class"``: one reverse pass per class over that class's samples only (C
        small passes, one pass of work in total, any family). ``"auto"``: per_sample
        when available and B P <= :data:`PER_SAMPLE_LIMIT`, else by_class.

    Returns
    -------
    tuple of (C, *shape) arrays, one per parameter tensor.
    """
    checked, lin, method = _prepare(model, params, batch, method)
    return _class_gradients(model, params, *checked, method, lin)


def _has_per_sample(lin) -> bool:
    return "per_sample" in inspect.signature(lin.vjp).parameters


def _prepare(model, params, batch, method):
    """Checked labels, the linearization (per-sample method) and the resolved method."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    _check_batch_type(batch)
    xp = check_call(model, params, batch=tuple(batch), loss=SoftmaxCrossEntropy())
    lin = None
    if method == "auto":
        method = "by_class"
        n = sum(math.prod(s) for s in param_shapes(model))
        if batch[0].shape[0] * n <= PER_SAMPLE_LIMIT:
            lin = linearize.trusted(model, params, batch[0], xp=xp)
            method = "per_sample" if _has_per_sample(lin) else "by_class"
            lin = lin if method == "per_sample" else None
    elif method == "per_sample":
        lin = linearize.trusted(model, params, batch[0], xp=xp)
        if not _has_per_sample(lin):
            raise ValueError(f"method: 'per_sample' needs a linearization with per-sample reverse passes, which "
                             f"{type(model).__name__} does not have; use 'masked' or 'by_class'")
    return _check_labels(model, params, batch, lin, xp), lin, method


def _class_gradients(model, params, xp, x, y, out, hot, counts, method, lin=None):
    scale = _per_class_scale(xp, hot, counts)
    if method == "per_sample":
        # one reverse pass of the class-masked cotangent u_mu = e_{y_mu} / |D_{y_mu}|, batch axis kept
        per = lin.vjp(scale, per_sample=True)  # (B, *shape) per tensor
        return tuple(xp.tensordot(xp.matrix_transpose(hot), t, axes=1) for t in per)
    c = out.shape[1]
    dev = backend.device_of(out)
    eye = xp.eye(c, dtype=out.dtype, device=dev)
    if method == "by_class":
        return _by_class(xp, model, params, x, y, scale, counts, eye)
    cot = eye[:, None, :] * xp.matrix_transpose(scale)[:, :, None]  # (C, B, C)
    if stacked_tangents(model):
        return tuple(_vjp(xp, model, params, x, cot))
    per = [_vjp(xp, model, params, x, cot[k, ...]) for k in range(c)]
    return tuple(xp.stack([g[i] for g in per]) for i in range(len(per[0])))


def _vjp(xp, model, params, x, cotangent):
    """The reverse pass without re-validating (the inputs were checked by the caller's
    forward pass and label check; the cotangents are built here)."""
    trusted = getattr(vjp, "trusted", None)
    if trusted is None:  # pragma: no cover - a vjp without the validate-once wrapper
        return vjp(model, params, x, cotangent)
    return trusted(model, params, x, cotangent, xp=xp)


def _by_class(xp, model, params, x, y, scale, counts, eye):
    c = eye.shape[0]
    n = [int(v) for v in backend.to_numpy(counts)]
    order = xp.argsort(xp.astype(y, xp.int64), stable=True)
    xs, start, per = xp.take(x, order, axis=0), 0, []
    for k in range(c):
        if n[k] == 0:
            per.append(tuple(xp.zeros(s, dtype=eye.dtype, device=backend.device_of(eye))
                             for s in param_shapes(model)))
            continue
        xk = xs[start : start + n[k], ...]
        start += n[k]
        cot = xp.broadcast_to(eye[k : k + 1, :] / n[k], (n[k], c))
        per.append(tuple(_vjp(xp, model, params, xk, cot)))
    return tuple(xp.stack([g[i] for g in per]) for i in range(len(per[0])))


def class_gradients_matrix(model, params, batch):
    """Reference form of :func:`class_gradients`: the explicit output Jacobian
    (:func:`arraycurv.jacobian`, (B, C, P)) averaged per class, ``c[k] = mean_{mu in D_k}
    J[mu, k, :]``, shape (C, P) in the flat parameter order (eq 1)."""
    xp, x, y, out, hot, counts = _check_labels(model, params, batch)
    jac = jacobian(model, params, x)
    scale = _per_class_scale(xp, hot, counts)  # (B, C)
    return xp.sum(scale[:, :, None] * jac, axis=0)


def class_gradient_decomposition(model, params, batch) -> LogitGradientDecomposition:
    """Eq (2) of Tuddenham et al. (2020), materialized from the explicit Jacobian:
    ``grad z_k^mu = y_k^mu c_k + eps_k^mu`` (see :class:`LogitGradientDecomposition`).
    Small models only (B C P numbers)."""
    xp, x, y, out, hot, counts = _check_labels(model, params, batch)
    jac = jacobian(model, params, x)  # (B, C, P)
    scale = _per_class_scale(xp, hot, counts)
    cg = xp.sum(scale[:, :, None] * jac, axis=0)
    residuals = jac - hot[:, :, None] * cg[None, :, :]
    own = xp.sum(hot * xp.sum(jac**2, axis=2), axis=0)  # sum_{mu in D_k} |grad z_k^mu|^2
    n = xp.astype(counts, out.dtype)
    num = n * xp.sum(cg**2, axis=1)
    explained = xp.where(own > 0, num / xp.where(own > 0, own, xp.ones_like(own)), xp.zeros_like(own))
    return LogitGradientDecomposition(cg, residuals, explained)


def class_subspace(model, params, batch, *, method: str = "masked") -> ClassSubspace:
    """The low-rank Hessian of Tuddenham et al. (2020) eqs (3)-(4) in its eigen-form.

    With p^mu = softmax(z^mu) and one-hot labels y^mu: w_k = (1/|B|) sum_mu y_k^mu p_k^mu
    (1 - p_k^mu), v_k = c_k / |c_k| and lambda_k = w_k |c_k|^2, so that H_LR = sum_k
    w_k c_k c_k^T = sum_k lambda_k v_k v_k^T. The v_k are unit vectors, orthogonal only
    approximately (the paper's assumption); :func:`subspace_curvature` drops it.
    ``method`` is passed to :func:`class_gradients`.
    """
    checked, lin, method = _prepare(model, params, batch, method)
    xp, x, y, out, hot, counts = checked
    cg = _class_gradients(model, params, *checked, method, lin)
    z = out - xp.max(out, axis=1, keepdims=True)
    e = xp.exp(z)
    p = e / xp.sum(e, axis=1, keepdims=True)
    w = xp.sum(hot * p * (1.0 - p), axis=0) / out.shape[0]
    nrm = _norms(xp, cg)
    safe = xp.where(nrm > 0, nrm, xp.ones_like(nrm))
    vectors = tuple(t / xp.reshape(safe, (-1,) + (1,) * (t.ndim - 1)) for t in cg)
    return ClassSubspace(cg, vectors, w * nrm**2, w, counts)


# ------------------------------------------------------------ the low-rank Hessian
def _subspace_pairs(sub):
    """The named arrays of a :class:`ClassSubspace` (shapes checked), ``(pairs, C)``."""
    if not isinstance(sub, ClassSubspace):
        raise TypeError(f"subspace: expected a ClassSubspace from class_subspace, got {type(sub).__name__}")
    pairs, c = _direction_pairs(sub.vectors, "subspace.vectors")
    shapes = [tuple(v.shape[1:]) for v in sub.vectors]
    more, _ = _direction_pairs(sub.class_grads, "subspace.class_grads", shapes=shapes, s=c, like="subspace.vectors")
    for name in ("eigenvalues", "weights"):
        a = getattr(sub, name)
        if not backend.is_array(a) or not hasattr(a, "shape"):
            raise ArgumentTypeError(f"subspace.{name}: expected an array of shape ({c},), got {type(a).__name__}")
        if tuple(a.shape) != (c,):
            raise ValueError(f"subspace.{name}: expected shape ({c},) like subspace.vectors, got {tuple(a.shape)}")
        more.append((f"subspace.{name}", a))
    return pairs + more, shapes


def _check_subspace(sub, v=None):
    """Namespace of a checked subspace (and of ``v``, a tuple shaped like the parameters)."""
    pairs, shapes = _subspace_pairs(sub)
    if v is not None:
        pairs += _tree_pairs(v, shapes, "v")
    return check_arrays(pairs)


def low_rank_hessian_matrix(subspace: ClassSubspace):
    """Materialized H_LR = sum_k lambda_k v_k v_k^T = sum_k w_k c_k c_k^T (eqs 3-4), (P, P)."""
    xp = _check_subspace(subspace)
    v = xp.matrix_transpose(_stack(xp, subspace.vectors))  # (C, P)
    return xp.matrix_transpose(v) @ (subspace.eigenvalues[:, None] * v)


def low_rank_hessian_vp(subspace: ClassSubspace, v):
    """H_LR v = sum_k lambda_k (v_k . v) v_k (eq 4), shaped like the parameters."""
    xp = _check_subspace(subspace, v)
    return _combine(xp, subspace.vectors, subspace.eigenvalues * _coefficients(xp, subspace.vectors, v))


def _inverse_eigenvalues(xp, lam, rcond, damping):
    """1 / (lambda + damping) above ``rcond * max lambda`` (and > 0), else 0."""
    top = xp.max(lam) if lam.shape[0] else 0.0
    keep = (lam > 0) & (lam > rcond * top)
    den = lam + damping
    return xp.where(keep, 1.0 / xp.where(keep, den, xp.ones_like(den)), xp.zeros_like(lam))


def low_rank_hessian_pinv_vp(subspace: ClassSubspace, v, *, rcond: float | None = None, damping: float = 0.0):
    """Generalized inverse of eq (4) applied to v: ``sum_k (v_k . v) v_k / lambda_k``.

    Exact Moore-Penrose pseudo-inverse of H_LR only when the v_k are orthonormal (the
    paper's assumption, "simply the reciprocal"). Eigenvalues ``<= rcond * max lambda``
    (default ``C * eps``) are treated as zero; ``damping`` adds to the kept ones.
    """
    rcond = check_rcond(rcond)
    damping = check_nonneg(damping, "damping")
    xp = _check_subspace(subspace, v)
    lam = subspace.eigenvalues
    rcond = lam.shape[0] * float(xp.finfo(lam.dtype).eps) if rcond is None else rcond
    inv = _inverse_eigenvalues(xp, lam, rcond, damping)
    return _combine(xp, subspace.vectors, inv * _coefficients(xp, subspace.vectors, v))


def class_complement_project(subspace: ClassSubspace, v):
    """P v = v - sum_k (v_k . v) v_k (eq 5), shaped like the parameters. A projector when
    the v_k are orthonormal (the paper's assumption)."""
    xp = _check_subspace(subspace, v)
    inside = _combine(xp, subspace.vectors, _coefficients(xp, subspace.vectors, v))
    return tuple(a - b for a, b in zip(v, inside))


# ------------------------------------------------- exact curvature in a span
def subspace_basis(directions, *, rcond: float | None = None) -> tuple:
    """Orthonormal basis of the span of S directions (tuple of (S, *shape)), as a tuple of
    (r, *shape) arrays, r = numerical rank (:func:`arraycurv.linalg.orthonormal_basis`)."""
    rcond = check_rcond(rcond)
    pairs, _ = _direction_pairs(directions, "directions")
    xp = check_arrays(pairs)
    return _basis(xp, directions, rcond)


def _basis(xp, directions, rcond=None):
    u = orthonormal_basis(_stack(xp, directions), rcond=rcond)  # (P, r)
    return unflatten(xp.matrix_transpose(u), tuple(tuple(d.shape[1:]) for d in directions), "basis")


def subspace_curvature(model, params, batch, basis, *, curvature: str = "ggn", loss=SoftmaxCrossEntropy(),
                       subspace: ClassSubspace | None = None):
    """U^T K U for S directions U (tuple of (S, *shape)), shape (S, S), symmetrized.

    ``curvature`` picks K: ``"ggn"`` (G, :func:`arraycurv.ggn_vp`), ``"hessian"`` (H,
    :func:`arraycurv.hvp`) or ``"low_rank"`` (H_LR of eq 3, from ``subspace`` or computed
    from the batch, which then needs integer labels; ``loss`` is not used). With U an
    orthonormal basis of the class gradients (:func:`subspace_basis`) this is the exact
    curvature in their span, without the orthogonality assumption of Tuddenham et al.
    (2020) eq (4). Costs S products with K (a batched one for families that stack
    tangents).
    """
    if not isinstance(curvature, str) or curvature not in CURVATURES:
        raise ValueError(f"curvature: expected one of {CURVATURES}, got {curvature!r}")
    if curvature == "low_rank":
        _check_batch_type(batch)
        xp = check_call(model, params, batch=tuple(batch), loss=SoftmaxCrossEntropy())
    else:
        xp = check_call(model, params, batch=batch, loss=None if curvature == "low_rank" else loss)
    shapes = [tuple(p.shape) for p in params]
    pairs, s = _direction_pairs(basis, "basis", shapes=shapes, like="params")
    check_arrays([("params[0]", params[0])] + pairs)
    if curvature == "low_rank":
        if subspace is None:
            sub = class_subspace(model, params, batch)
        else:
            _check_subspace(subspace)
            sub = subspace
        a = xp.stack([_coefficients(xp, basis, tuple(t[k, ...] for t in sub.class_grads))
                      for k in range(sub.eigenvalues.shape[0])])  # (C, S): a[k, s] = <c_k, u_s>
        m = xp.matrix_transpose(a) @ (sub.weights[:, None] * a)
    else:
        rows = _apply_curvature(xp, model, params, batch, basis, curvature, loss)
        m = xp.stack([_coefficients(xp, basis, r) for r in rows])
    return 0.5 * (m + xp.matrix_transpose(m)) if s else m


def _apply_curvature(xp, model, params, batch, basis, curvature, loss):
    """K u_s for every direction s, as a list of parameter tuples (trusted products: the
    call was checked by :func:`subspace_curvature`)."""
    s = basis[0].shape[0]
    if curvature == "hessian" and stacked_tangents(model):
        out = hvp.trusted(model, params, batch, tuple(basis), loss, xp=xp)
        return [tuple(t[i, ...] for t in out) for i in range(s)]
    fn = hvp if curvature == "hessian" else ggn_vp
    return [fn.trusted(model, params, batch, tuple(t[i, ...] for t in basis), loss, xp=xp) for i in range(s)]
