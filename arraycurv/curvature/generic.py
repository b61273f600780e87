"""The curvature verbs and their generic defaults (Julia-style generics via ``functools.singledispatch``).

``value_and_grad``, ``jacobian``, ``ggn_vp``, ``ggn_matrix``, ``ggn_blocks``,
``ggn_block_diag`` and ``hessian_matrix`` have defaults written only in terms of the model
passes of :mod:`arraycurv.models.base` and the loss; a family may register a faster
exact form (e.g. Kronecker structure for deep linear networks), and every fast form is
tested against the default. Conventions (spec): losses are means over the batch;
G = (1/B) sum_b J_b^T H_b J_b.
"""

from __future__ import annotations

import functools

from .. import backend
from ..losses import MSE, loss_grad, loss_hessian_vp, loss_value
from ..models.base import forward, hvp, jvp, param_shapes, vjp
from ..params import flatten, num_params, unflatten
from ..validation import check_call, validated

__all__ = [
    "check_batch",
    "ggn_block_diag",
    "ggn_blocks",
    "ggn_matrix",
    "ggn_vp",
    "hessian_matrix",
    "jacobian",
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
    g = vjp.trusted(model, params, x, loss_grad(loss, out, y) / x.shape[0], xp=xp)
    return loss_value(loss, out, y), g


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


# ------------------------------------------------------------------ GGN
@functools.singledispatch
def _ggn_vp(model, params, batch, v, loss=MSE(), *, xp):
    x = batch[0]
    out, jv = jvp.trusted(model, params, x, v, xp=xp)
    return vjp.trusted(model, params, x, loss_hessian_vp(loss, out, jv) / x.shape[0], xp=xp)


@validated(_ggn_vp)
def ggn_vp(model, params, batch, v, loss=MSE()):
    """Matrix-free GGN product G v = (1/B) sum_b J_b^T H_b J_b v, shaped like ``params``.

    The targets ``y`` of the batch do not enter the GGN; they are checked against the loss.
    """
    return check_call(model, params, batch=batch, tangent=v, loss=loss, names=_V, tangent_lead=None)


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
