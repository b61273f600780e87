"""Sequential networks (MLP, LeNet-style CNN) with hand-written passes (spec 2.2-2.4, 3.1,
3.3): forward, JVP, VJP, Pearlmutter's exact Hessian-vector product, explicit Jacobian
and Hessian, and a cached linearization for fast GGN products, K-FAC and linear
operators.

Parameters are a flat tuple over all layers in order (W1, b1, W2, b2, ...); layers
without parameters contribute nothing. The model's input is ``x`` of shape
``(B, *input_shape)``; its output ``f(x)`` has shape ``(B, k)``.

A :class:`Linearization` (from :func:`linearize`, one forward pass) holds every layer's
input and cache, so that any number of Jacobian-vector products
(:func:`jvp_linearized`), vector-Jacobian products (:func:`vjp_linearized`) or
backpropagations to the layer outputs (:func:`backprop_to_layer_outputs`, what K-FAC
needs) reuse it. Tangents and cotangents may carry extra *leading* axes to push several
directions through at once: a tangent ``(m, *p.shape)`` per tensor gives ``J v`` of
shape ``(m, B, k)``; a cotangent ``(m, B, k)`` gives ``(m, *p.shape)`` per tensor.
"""

from __future__ import annotations

import math

from .. import backend
from ..losses import MSE, check_targets, loss_grad, loss_value
from ..models.base import forward, param_shapes
from ..models.sequential import (
    Sequential,
    _hvp_linearized,
    _loss_hvp,
    _shapes,
    jvp_linearized,
    linearize,
    vjp_linearized,
)
from ..params import num_params, unflatten
from .generic import check_batch, ggn_matrix, ggn_vp, hessian_matrix, jacobian, value_and_grad


@value_and_grad.register
def _(model: Sequential, params, batch, loss=MSE()):
    xp, x, y = check_batch(model, params, batch, loss)
    lin = linearize(model, params, x)
    check_targets(loss, lin.outputs, y)
    g = vjp_linearized(lin, loss_grad(loss, lin.outputs, y) / x.shape[0])
    return loss_value(loss, lin.outputs, y), g


@ggn_vp.register
def _(model: Sequential, params, batch, v, loss=MSE()):
    """G v = (1/B) sum_b J_b^T H_b J_b v with one forward pass (spec 3.2; Huh eq (3)).

    ``v`` may carry leading axes like in :func:`jvp_linearized` (m products at once).
    """
    xp, x, y = check_batch(model, params, batch, loss)
    lin = linearize(model, params, x)
    jv = jvp_linearized(lin, v)
    return vjp_linearized(lin, _loss_hvp(loss, lin.outputs, jv) / x.shape[0])


def _flat_rows(xp, tree, m):
    return xp.concat([xp.reshape(t, (m, -1)) for t in tree], axis=-1)


def _chunk(model, b, p, budget=2**23):
    """Columns per batched Pearlmutter pass so that the intermediates stay near ``budget``
    elements (gathers of convolutions and pooling are kh*kw times their input)."""
    ins, out = _shapes(model)
    per = out[0]
    for layer, s in zip(model.layers, ins):
        ks = getattr(layer, "kernel_size", (1, 1))
        per += math.prod(s) * (1 + ks[0] * ks[1])
    return max(1, min(p, budget // max(1, 4 * b * per)))


@hessian_matrix.register
def _(model: Sequential, params, batch, loss=MSE()):
    """Explicit P x P Hessian of the mean loss from Pearlmutter products of unit vectors
    (batched over chunks of columns, one forward pass)."""
    xp, x, y = check_batch(model, params, batch, loss)
    lin = linearize(model, params, x)
    check_targets(loss, lin.outputs, y)
    shapes = param_shapes(model)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=x.dtype, device=backend.device_of(x))
    m = _chunk(model, x.shape[0], p)
    rows = []
    for s in range(0, p, m):
        e = eye[s : s + m, :]
        rows.append(_flat_rows(xp, _hvp_linearized(lin, y, unflatten(e, shapes), loss), e.shape[0]))
    return xp.matrix_transpose(xp.concat(rows, axis=0))


@ggn_matrix.register
def _(model: Sequential, params, batch, loss=MSE()):
    """Explicit P x P GGN (1/B) sum_b J_b^T H_b J_b, assembled by
    :func:`arraycurv.fisher_exact_matrix` (Kronecker-structured for MLPs; equal to the
    exact Fisher for MSE and softmax cross-entropy, spec Conventions)."""
    from .fisher import fisher_exact_matrix

    xp, x, y = check_batch(model, params, batch, loss)
    check_targets(loss, forward(model, params, x), y)
    return fisher_exact_matrix(model, params, x, loss)


@jacobian.register
def _(model: Sequential, params, x):
    """Explicit output Jacobian (B, k, P) by backpropagating the k unit output cotangents
    of every sample at once (per-sample VJPs)."""
    lin = linearize(model, params, x)
    xp = backend.namespace_of(x=x)
    b, k = lin.outputs.shape
    eye = xp.eye(k, dtype=x.dtype, device=backend.device_of(x))
    cot = xp.broadcast_to(eye[:, None, :], (k, b, k))
    per = vjp_linearized(lin, cot, per_sample=True)  # (k, B, *s)
    j = xp.concat([xp.reshape(t, (k, b, -1)) for t in per], axis=-1)
    return xp.permute_dims(j, (1, 0, 2))
