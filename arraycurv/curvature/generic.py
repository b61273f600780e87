"""The curvature verbs and their generic defaults (Julia-style generics via ``functools.singledispatch``).

``value_and_grad``, ``jacobian``, ``ggn_vp``, ``ggn_matrix``, ``ggn_blocks``,
``ggn_block_diag`` and ``hessian_matrix`` have defaults written only in terms of the model
passes of :mod:`arraycurv.models.base` and the loss; a family may register a faster
exact form (e.g. Kronecker structure for deep linear networks), and every fast form is
tested against the default. Conventions (spec): losses are means over the batch;
G = (1/B) sum_b J_b^T H_b J_b.

The ``*_matmat`` verbs push k directions at once (:func:`ggn_matmat`, :func:`hvp_matmat`,
:func:`jacobian_matmat`): ``V`` is a tuple shaped like ``params`` whose tensors carry one
leading axis k, ``V[i]`` of shape (k, *params[i].shape), i.e. the k rows of the (k, P)
matrix V^T in the flat ordering split per tensor (:func:`arraycurv.params.unflatten` of a
(k, P) array). Families whose passes take stacked tangents
(:func:`arraycurv.models.base.stacked_tangents`, e.g. Sequential networks) run one pass
with matrices (one matmul per layer for all k); the others loop over the k directions.
"""

from __future__ import annotations

import functools

from .. import backend
from ..losses import MSE, loss_hessian_vp, loss_value_and_grad
from ..models.base import forward, hvp, jvp, param_shapes, stacked_tangents, vjp
from ..params import flatten, num_params, unflatten
from ..validation import check_call, validated

__all__ = [
    "check_batch",
    "ggn_block_diag",
    "ggn_blocks",
    "ggn_matmat",
    "ggn_matrix",
    "ggn_vp",
    "hessian_matrix",
    "hvp_matmat",
    "jacobian",
    "jacobian_matmat",
    "value_and_grad",
]

# Every verb is a public function that validates once (validation.check_call) and then
# runs the trusted implementation registered for the model's type, with ``xp=``
# (validation.validated). Defaults below call the other verbs and the passes through
# ``verb.trusted(..., xp=xp)``: nothing is validated twice.
_V = {"tangent": "v"}


def check_batch(model, params, batch, loss=MSE()):
    """Validate ``batch = (x, y)`` against the model and loss; returns ``(xp, x, y)``.

    A thin wrapper of :func:`arraycurv.validation.check_call` for code that needs x and y.
    """
    xp = check_call(model, params, batch=batch, loss=loss)
    return xp, batch[0], batch[1]


def _eye_columns(xp, model, params):
    shapes = param_shapes(model)
    p = num_params(shapes)
    return shapes, p, xp.eye(p, dtype=params[0].dtype, device=backend.device_of(params[0]))


# ------------------------------------------------------------------ value_and_grad
@functools.singledispatch
def _value_and_grad(model, params, batch, loss=MSE(), *, xp):
    x, y = batch
    out = forward.trusted(model, params, x, xp=xp)
    value, g = loss_value_and_grad.trusted(loss, out, y, xp)
    return value, vjp.trusted(model, params, x, g / x.shape[0], xp=xp)


@validated(_value_and_grad)
def value_and_grad(model, params, batch, loss=MSE()):
    """Mean loss and its gradient (a tuple shaped like ``params``)."""
    return check_call(model, params, batch=batch, loss=loss)


# ------------------------------------------------------------------ jacobian
@functools.singledispatch
def _jacobian(model, params, x, *, xp):
    shapes, p, eye = _eye_columns(xp, model, params)
    cols = [jvp.trusted(model, params, x, unflatten(eye[i, :], shapes), xp=xp)[1] for i in range(p)]
    return xp.stack(cols, axis=-1)


@validated(_jacobian)
def jacobian(model, params, x):
    """Explicit output Jacobian, shape (B, k, P): J[b, o, :] = d f_o(x_b) / d theta (flat)."""
    return check_call(model, params, x=x)


def _check_stack(model, tangent, name):
    """One leading axis k >= 1 on every tensor of a (validated) stacked tangent."""
    s = param_shapes(model)[0]
    t = tangent[0]
    if t.ndim != len(s) + 1 or t.shape[0] < 1:
        raise ValueError(f"{name}[0]: expected shape (k, {', '.join(map(str, s))}) with k >= 1 directions "
                         f"(one leading axis like every {name}[i]), got {tuple(t.shape)}")


def _check_matmat(model, params, name="V", **kw):
    tangent = kw.pop("tangent")
    xp = check_call(model, params, tangent=tangent, names={"tangent": name}, tangent_lead=True, **kw)
    _check_stack(model, tangent, name)
    return xp


def _columns(xp, product, stack, out_tree=True):
    """Loop form of a matmat: ``product`` of each direction ``stack[i][j]``, stacked on axis 0."""
    cols = [product(tuple(t[j, ...] for t in stack)) for j in range(stack[0].shape[0])]
    if not out_tree:
        return xp.stack(cols, axis=0)
    return tuple(xp.stack([c[i] for c in cols], axis=0) for i in range(len(cols[0])))


@functools.singledispatch
def _jacobian_matmat(model, params, x, V, *, xp):
    if stacked_tangents(model):
        return jvp.trusted(model, params, x, V, xp=xp)[1]
    return _columns(xp, lambda v: jvp.trusted(model, params, x, v, xp=xp)[1], V, out_tree=False)


@validated(_jacobian_matmat)
def jacobian_matmat(model, params, x, V):
    """k Jacobian-vector products at once, J V, shape (k, B, *output_shape).

    ``J V[j] = d f(x) / d theta . V[j]`` for the k directions of ``V``, a tuple shaped like
    ``params`` with one leading axis k (``V[i]`` of shape (k, *params[i].shape); module
    docstring). Equals stacking :func:`arraycurv.jvp` over the directions; for families
    with stacked tangents it is one tangent pass with matrices (spec 3.2).
    """
    return _check_matmat(model, params, x=x, tangent=V)


# ------------------------------------------------------------------ GGN
@functools.singledispatch
def _ggn_vp(model, params, batch, v, loss=MSE(), *, xp):
    x = batch[0]
    out, jv = jvp.trusted(model, params, x, v, xp=xp)
    return vjp.trusted(model, params, x, loss_hessian_vp.trusted(loss, out, jv) / x.shape[0], xp=xp)


@validated(_ggn_vp)
def ggn_vp(model, params, batch, v, loss=MSE()):
    """Matrix-free GGN product G v = (1/B) sum_b J_b^T H_b J_b v, shaped like ``params``.

    The targets ``y`` of the batch do not enter the GGN; they are checked against the loss.
    """
    return check_call(model, params, batch=batch, tangent=v, loss=loss, names=_V, tangent_lead=None)


@functools.singledispatch
def _ggn_matmat(model, params, batch, V, loss=MSE(), *, xp):
    if not stacked_tangents(model):
        return _columns(xp, lambda v: ggn_vp.trusted(model, params, batch, v, loss, xp=xp), V)
    from ..models.sequential import _loss_hvp  # H_b (J V)_b for stacked outputs

    x = batch[0]
    out, jv = jvp.trusted(model, params, x, V, xp=xp)
    return vjp.trusted(model, params, x, _loss_hvp(loss, out, jv, xp) / x.shape[0], xp=xp)


@validated(_ggn_matmat)
def ggn_matmat(model, params, batch, V, loss=MSE()):
    """k GGN products at once: G V = (1/B) sum_b J_b^T H_b J_b V, shaped like ``V``.

    ``V`` is a tuple shaped like ``params`` with one leading axis k (``V[i]`` of shape
    (k, *params[i].shape), module docstring); the result has the same layout, its entry j
    being :func:`ggn_vp` of direction j. Sequential networks run one forward pass, one
    tangent pass and one reverse pass for all k directions (one matmul per layer and
    pass); other families loop over the directions with :func:`ggn_vp`.
    """
    return _check_matmat(model, params, batch=batch, tangent=V, loss=loss)


@functools.singledispatch
def _ggn_matrix(model, params, batch, loss=MSE(), *, xp):
    shapes, p, eye = _eye_columns(xp, model, params)
    cols = [flatten(ggn_vp.trusted(model, params, batch, unflatten(eye[i, :], shapes), loss, xp=xp))
            for i in range(p)]
    return xp.stack(cols, axis=1)


@validated(_ggn_matrix)
def ggn_matrix(model, params, batch, loss=MSE()):
    """Explicit P x P GGN (flat ordering), materialized column by column from ``ggn_vp``."""
    return check_call(model, params, batch=batch, loss=loss)


def _offsets(shapes):
    out, start = [], 0
    for s in shapes:
        n = num_params([s])
        out.append((start, start + n))
        start += n
    return out


@functools.singledispatch
def _ggn_blocks(model, params, batch, loss=MSE(), *, xp):
    g = ggn_matrix.trusted(model, params, batch, loss, xp=xp)
    offs = _offsets(param_shapes(model))
    return tuple(tuple(g[a:b, c:d] for (c, d) in offs) for (a, b) in offs)


@validated(_ggn_blocks)
def ggn_blocks(model, params, batch, loss=MSE()):
    """GGN layer blocks: ``blocks[i][j]`` is the (P_i, P_j) block between tensors i and j."""
    return check_call(model, params, batch=batch, loss=loss)


@functools.singledispatch
def _ggn_block_diag(model, params, batch, loss=MSE(), *, xp):
    blocks = ggn_blocks.trusted(model, params, batch, loss, xp=xp)
    return tuple(blocks[i][i] for i in range(len(blocks)))


@validated(_ggn_block_diag)
def ggn_block_diag(model, params, batch, loss=MSE()):
    """Diagonal blocks of the GGN, one (P_i, P_i) matrix per parameter tensor."""
    return check_call(model, params, batch=batch, loss=loss)


# ------------------------------------------------------------------ Hessian
@functools.singledispatch
def _hessian_matrix(model, params, batch, loss=MSE(), *, xp):
    shapes, p, eye = _eye_columns(xp, model, params)
    cols = [flatten(hvp.trusted(model, params, batch, unflatten(eye[i, :], shapes), loss, xp=xp)) for i in range(p)]
    return xp.stack(cols, axis=1)


@validated(_hessian_matrix)
def hessian_matrix(model, params, batch, loss=MSE()):
    """Explicit P x P Hessian of the mean loss (flat ordering of :mod:`arraycurv.params`)."""
    return check_call(model, params, batch=batch, loss=loss)


@functools.singledispatch
def _hvp_matmat(model, params, batch, V, loss=MSE(), *, xp):
    if stacked_tangents(model):  # the family's hvp takes stacked tangents
        return hvp.trusted(model, params, batch, V, loss, xp=xp)
    return _columns(xp, lambda v: hvp.trusted(model, params, batch, v, loss, xp=xp), V)


@validated(_hvp_matmat)
def hvp_matmat(model, params, batch, V, loss=MSE()):
    """k exact Hessian products at once, H V, shaped like ``V`` (one leading axis k).

    Entry j is :func:`arraycurv.hvp` of direction j (Pearlmutter 1994). For Sequential
    networks one forward pass and one batched R-operator pass (forward tangents, backward
    and R-backward with matrices, spec 3.3) serve all k directions; other families loop.
    """
    return _check_matmat(model, params, batch=batch, tangent=V, loss=loss)
