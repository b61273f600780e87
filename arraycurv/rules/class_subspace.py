"""The class-subspace quasi-Newton rule of Tuddenham, Pruegel-Bennett & Hare (2020).

Newton in the span of the class gradients and SGD with learning rate eta in its
complement, eq (6), with the paper's stabilization: exponential moving averages of the
unit class gradients v_k and of the eigenvalues lambda_k over the steps. Written as a
chain of two transforms::

    class_subspace_newton(lr) = chain(scale_by_class_subspace(lr, decay=...), scale_by_lr(lr))

:func:`scale_by_class_subspace` maps the gradient g to ``u = g + sum_k (1/(eta lambda_k)
- 1) (v_k . g) v_k`` so that ``-eta u`` is exactly eq (6); its state
(:class:`ClassSubspaceState`) holds the moving averages. See ``docs/class_subspace.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .. import backend
from ..curvature.subspace import (
    CURVATURES,
    METHODS,
    ClassSubspace,
    _basis,
    _coefficients,
    _combine,
    _inverse_eigenvalues,
    _norms,
    _tree_pairs,
    class_subspace,
    subspace_curvature,
)
from ..directions.class_subspace import VARIANTS, _subspace_newton
from ..losses import SoftmaxCrossEntropy
from ..validation import check_arrays, check_lr, check_nonneg, check_rcond, check_real
from .base import UpdateRule, chain
from .registry import RuleSpec, register_rule
from .transforms import scale_by_lr

__all__ = ["ClassSubspaceState", "class_subspace_newton", "scale_by_class_subspace"]


class ClassSubspaceState(NamedTuple):
    """Moving averages of :func:`scale_by_class_subspace` (``None`` before the first step).

    Attributes
    ----------
    count : int
        Number of averaged steps t.
    vectors : tuple of (C, *shape) arrays or None
        Biased EMA of the unit class gradients v_k (``"orthogonal"`` variant).
    eigenvalues : array (C,) or None
        Biased EMA of lambda_k (``"orthogonal"``).
    class_grads : tuple of (C, *shape) arrays or None
        Biased EMA of the class gradients c_k, the span of the ``"exact"`` variant.
    weights : array (C,) or None
        Biased EMA of the weights w_k of eq (3) (``"exact"``).
    """

    count: int
    vectors: Any = None
    eigenvalues: Any = None
    class_grads: Any = None
    weights: Any = None


def _avg(decay, old, new):
    """Biased EMA step ``decay old + (1 - decay) new`` (old = None: zeros)."""
    return (1.0 - decay) * new if old is None else decay * old + (1.0 - decay) * new


def _avg_tree(decay, old, new):
    return tuple(_avg(decay, None if old is None else o, n) for o, n in zip(old or (None,) * len(new), new))


def _orthogonal_step(state, sub, grads, decay, lr, damping, rcond):
    """Eq (6) with the EMAs of v_k and lambda_k. The averaged vectors u_k are used
    through ``v_k (v_k . g) = u_k (u_k . g) / |u_k|^2`` (unit length without rescaling
    them; the debiasing factor cancels), lambda_k is debiased."""
    t = state.count + 1
    vec = _avg_tree(decay, state.vectors, sub.vectors)
    lam = _avg(decay, state.eigenvalues, sub.eigenvalues)
    xp = backend.namespace_of(grads=tuple(grads), vectors=vec)
    nrm2 = _norms(xp, vec) ** 2
    scale = xp.where(nrm2 > 0, 1.0 / xp.where(nrm2 > 0, nrm2, xp.ones_like(nrm2)), xp.zeros_like(nrm2))
    lam_hat = lam / (1.0 - decay**t)
    rc = lam.shape[0] * float(xp.finfo(lam.dtype).eps) if rcond is None else rcond
    inv = _inverse_eigenvalues(xp, lam_hat, rc, damping)
    coef = (inv - lr) * scale * _coefficients(xp, vec, grads)
    inside = _combine(xp, vec, coef)
    step = tuple(-lr * g - a for g, a in zip(grads, inside))
    return step, ClassSubspaceState(t, vec, lam)


def _exact_step(state, sub, grads, decay, lr, damping, rcond, curvature, model, params, batch, loss):
    """The assumption-free variant on the EMAs of c_k and w_k."""
    t = state.count + 1
    cg = _avg_tree(decay, state.class_grads, sub.class_grads)
    w = _avg(decay, state.weights, sub.weights)
    c = 1.0 - decay**t
    avg = ClassSubspace(tuple(g / c for g in cg), sub.vectors, sub.eigenvalues, w / c, sub.counts)
    xp = backend.namespace_of(grads=tuple(grads))
    basis = _basis(xp, avg.class_grads)
    k_u = subspace_curvature(model, params, batch, basis, curvature=curvature, loss=loss, subspace=avg)
    step = _subspace_newton(xp, grads, basis, k_u, lr, damping, rcond)
    return step, ClassSubspaceState(t, class_grads=cg, weights=w)


def scale_by_class_subspace(lr: float, *, decay: float = 0.9, damping: float = 0.0, rcond: float | None = None,
                            variant: str = "orthogonal", curvature: str = "low_rank",
                            method: str = "auto") -> UpdateRule:
    """Transform g into ``u`` with ``-lr u`` = the step of Tuddenham et al. (2020) eq (6).

    At every step the class subspace of the batch (:func:`arraycurv.curvature.subspace.class_subspace`)
    enters moving averages with factor ``decay`` (debiased like Adam's moments; 0 uses
    the current batch only). ``variant="orthogonal"`` (the paper) uses the averaged v_k,
    taken at unit length, and the averaged lambda_k in eq (6). ``variant="exact"``
    uses an orthonormal basis of the averaged class gradients and the exact curvature
    ``curvature`` in it (``"low_rank"``: eq 3 from the averaged c_k and w_k; ``"ggn"``,
    ``"hessian"``: at the current parameters on the batch).

    ``method`` is how the class gradients are computed
    (:func:`arraycurv.curvature.subspace.class_gradients`; ``"auto"``: one per-sample
    reverse pass when the family supports it and B P is small, else one pass per class
    over its samples). The ``updates`` it receives play the role of g (the gradient at the
    head of a chain).
    Needs the keyword extras ``model``, ``batch`` (integer labels) and ``loss``.
    """
    lr = check_lr(lr)
    decay = check_real(decay, "decay", lo=0, hi=1, hi_open=True, want="a number in [0, 1)")
    damping = check_nonneg(damping, "damping")
    rcond = check_rcond(rcond)
    for name, value, choices in (("variant", variant, VARIANTS), ("curvature", curvature, CURVATURES),
                                 ("method", method, METHODS)):
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name}: expected one of {choices}, got {value!r}")

    def update(updates, state, params, *, model, batch, loss=None, **extra):
        if not isinstance(state, ClassSubspaceState):
            raise TypeError(f"state: expected a ClassSubspaceState from rule.init(params), got {type(state).__name__}")
        loss = SoftmaxCrossEntropy() if loss is None else loss
        sub = class_subspace(model, params, batch, method=method)  # checks params and batch
        check_arrays([("params[0]", params[0])] + _tree_pairs(updates, [tuple(p.shape) for p in params],
                                                                    "grads"))
        if variant == "orthogonal":
            step, state = _orthogonal_step(state, sub, updates, decay, lr, damping, rcond)
        else:
            step, state = _exact_step(state, sub, updates, decay, lr, damping, rcond, curvature, model, params,
                                      batch, loss)
        return tuple(s / (-lr) for s in step), state

    return UpdateRule(lambda params: ClassSubspaceState(0), update, "scale_by_class_subspace")


def class_subspace_newton(lr: float, *, decay: float = 0.9, damping: float = 0.0, rcond: float | None = None,
                          variant: str = "orthogonal", curvature: str = "low_rank", method: str = "auto",
                          name: str = "class_subspace_newton") -> UpdateRule:
    """Quasi-Newton in the class-gradient subspace (Tuddenham et al. 2020, eq 6 with EMAs).

    ``updates = -lr g - sum_k (1/lambda_k - lr) (v_k . g) v_k`` with v_k, lambda_k the
    moving averages of :func:`scale_by_class_subspace`; ``lr`` is the learning rate of
    the complement (the Newton part has step 1). For softmax cross-entropy classifiers
    (batches with integer labels).
    """
    return chain(scale_by_class_subspace(lr, decay=decay, damping=damping, rcond=rcond, variant=variant,
                                         curvature=curvature, method=method), scale_by_lr(lr), name=name)


register_rule(RuleSpec("class_subspace_newton", class_subspace_newton, "class-subspace QN", None, "eq (6)",
                       "Tuddenham et al. 2020"))
