"""The generic functions every model family implements, and the curvature defaults
built from them (Julia-style generic functions via ``functools.singledispatch``).

A model is a small frozen dataclass describing the architecture; parameters are a tuple
of arrays (see :mod:`arraycurv.params`); a batch is a tuple ``(x, y)`` with the batch on
the leading axis. A model family registers implementations for its type::

    @forward.register
    def _(model: DeepLinear, params, x): ...

The *passes* (``param_shapes``, ``init_params``, ``forward``, ``jvp``, ``vjp``) must be
registered by every family; the curvature functions (``jacobian``, ``ggn_vp``,
``ggn_matrix``, ``ggn_blocks``, ``ggn_block_diag``, ``value_and_grad``) have generic
defaults here, written only in terms of the passes and the loss, that a family may
override with a faster exact form (e.g. Kronecker structure for deep linear networks).
``hvp`` and ``hessian_matrix`` need a second-order pass and have no default.

Conventions (spec): losses are means over the batch; G = (1/B) sum_b J_b^T H_b J_b.
"""

from __future__ import annotations

import functools

from .. import backend
from ..losses import MSE, check_targets, loss_grad, loss_hessian_vp, loss_value
from ..models.base import forward, hvp, jvp, param_shapes, vjp
from ..params import flatten, num_params, unflatten
from ..validation import check_ndim

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


@functools.singledispatch
def hessian_matrix(model, params, batch, loss=MSE()):
    """Explicit P x P Hessian of the mean loss (flat ordering of :mod:`arraycurv.params`)."""
    xp = backend.namespace_of(params=tuple(params))
    shapes = param_shapes(model)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=params[0].dtype, device=backend.device_of(params[0]))
    cols = [flatten(hvp(model, params, batch, unflatten(eye[i, :], shapes), loss)) for i in range(p)]
    return xp.stack(cols, axis=1)


# ---------------------------------------------------------------- checks and defaults
def check_batch(model, params, batch, loss=MSE()):
    """Validate ``batch = (x, y)`` against the model and loss; returns ``(xp, x, y)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected a tuple (x, y), got {type(batch).__name__}")
    x, y = batch
    xp = backend.namespace_of(params=tuple(params), x=x, y=y)
    check_ndim(y, (1, 2), "batch y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"batch: expected x and y with the same batch size, got {x.shape[0]} and {y.shape[0]}")
    return xp, x, y


@functools.singledispatch
def value_and_grad(model, params, batch, loss=MSE()):
    """Mean loss and its gradient (a tuple shaped like ``params``)."""
    xp, x, y = check_batch(model, params, batch, loss)
    out = forward(model, params, x)
    check_targets(loss, out, y)
    g = vjp(model, params, x, loss_grad(loss, out, y) / x.shape[0])
    return loss_value(loss, out, y), g


@functools.singledispatch
def jacobian(model, params, x):
    """Explicit output Jacobian, shape (B, k, P): J[b, o, :] = d f_o(x_b) / d theta (flat)."""
    xp = backend.namespace_of(params=tuple(params), x=x)
    shapes = param_shapes(model)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=params[0].dtype, device=backend.device_of(params[0]))
    cols = [jvp(model, params, x, unflatten(eye[i, :], shapes))[1] for i in range(p)]
    return xp.stack(cols, axis=-1)


@functools.singledispatch
def ggn_vp(model, params, batch, v, loss=MSE()):
    """Matrix-free GGN product G v = (1/B) sum_b J_b^T H_b J_b v, shaped like ``params``."""
    xp, x, y = check_batch(model, params, batch, loss)
    out, jv = jvp(model, params, x, v)
    return vjp(model, params, x, loss_hessian_vp(loss, out, jv) / x.shape[0])


@functools.singledispatch
def ggn_matrix(model, params, batch, loss=MSE()):
    """Explicit P x P GGN (flat ordering), materialized column by column from ``ggn_vp``."""
    xp, x, y = check_batch(model, params, batch, loss)
    shapes = param_shapes(model)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=params[0].dtype, device=backend.device_of(params[0]))
    cols = [flatten(ggn_vp(model, params, batch, unflatten(eye[i, :], shapes), loss)) for i in range(p)]
    return xp.stack(cols, axis=1)


def _offsets(shapes):
    out, start = [], 0
    for s in shapes:
        n = num_params([s])
        out.append((start, start + n))
        start += n
    return out


@functools.singledispatch
def ggn_blocks(model, params, batch, loss=MSE()):
    """GGN layer blocks: ``blocks[i][j]`` is the (P_i, P_j) block between tensors i and j."""
    g = ggn_matrix(model, params, batch, loss)
    offs = _offsets(param_shapes(model))
    return tuple(tuple(g[a:b, c:d] for (c, d) in offs) for (a, b) in offs)


@functools.singledispatch
def ggn_block_diag(model, params, batch, loss=MSE()):
    """Diagonal blocks of the GGN, one (P_i, P_i) matrix per parameter tensor."""
    blocks = ggn_blocks(model, params, batch, loss)
    return tuple(blocks[i][i] for i in range(len(blocks)))
