"""Fast curvature forms of :class:`arraycurv.models.Sequential` networks (spec 3.1, 3.3).

Gradient and GGN products through the cached linearization, the explicit Jacobian and
Hessian in chunks of stacked tangents, the explicit GGN through the structured
Fisher assembly, and the Sequential forms of the Fisher generics
(:func:`arraycurv.curvature.fisher.gradient_gram`,
:func:`arraycurv.curvature.fisher.per_sample_rows`). Passes and the linearization:
:mod:`arraycurv.models.sequential`.
"""

from __future__ import annotations

from .. import backend
from ..losses import MSE, loss_grad, loss_hessian_factor, loss_value
from ..models.base import linearize, param_shapes
from ..models.layers import layer_cost, layer_kron_rows
from ..models.sequential import (
    Sequential,
    SequentialLinearization,
    _hvp_linearized,
    _jvp_trusted,
    _loss_hvp,
    _shapes,
    _split,
    _vjp_trusted,
    backprop_to_layer_outputs,
)
from ..params import num_params, unflatten
from .fisher import gradient_gram, per_sample_rows
from .generic import ggn_matrix, ggn_vp, hessian_matrix, jacobian, value_and_grad

#: only registrations (the Sequential fast forms of the curvature verbs): nothing public
__all__: list[str] = []


@value_and_grad.register(Sequential)
def _(model: Sequential, params, batch, loss=MSE(), *, xp=None):
    x, y = batch
    lin = linearize.trusted(model, params, x, xp=xp)
    g = _vjp_trusted(lin, loss_grad(loss, lin.outputs, y) / x.shape[0])
    return loss_value(loss, lin.outputs, y), g


@ggn_vp.register(Sequential)
def _(model: Sequential, params, batch, v, loss=MSE(), *, xp=None):
    """G v = (1/B) sum_b J_b^T H_b J_b v with one forward pass (spec 3.2; Huh eq (3)).

    ``v`` may carry leading axes like in :func:`jvp_linearized` (m products at once).
    """
    x = batch[0]
    lin = linearize.trusted(model, params, x, xp=xp)
    jv = _jvp_trusted(lin, v)
    return _vjp_trusted(lin, _loss_hvp(loss, lin.outputs, jv) / x.shape[0])


def _flat_rows(xp, tree, m):
    return xp.concat([xp.reshape(t, (m, -1)) for t in tree], axis=-1)


def _chunk(model, b, p, budget=2**23):
    """Columns per batched Pearlmutter pass so that the intermediates stay near ``budget``
    elements (gathers of convolutions and pooling are kh*kw times their input)."""
    ins, out = _shapes(model)
    per = out[0] + sum(layer_cost(layer, s) for layer, s in zip(model.layers, ins))
    return max(1, min(p, budget // max(1, 4 * b * per)))


@hessian_matrix.register(Sequential)
def _(model: Sequential, params, batch, loss=MSE(), *, xp=None):
    """Explicit P x P Hessian of the mean loss from Pearlmutter products of unit vectors
    (batched over chunks of columns, one forward pass)."""
    x, y = batch
    lin = linearize.trusted(model, params, x, xp=xp)
    shapes = param_shapes(model)
    p = num_params(shapes)
    eye = xp.eye(p, dtype=x.dtype, device=backend.device_of(x))
    m = _chunk(model, x.shape[0], p)
    rows = []
    for s in range(0, p, m):
        e = eye[s : s + m, :]
        rows.append(_flat_rows(xp, _hvp_linearized(lin, y, unflatten(e, shapes), loss), e.shape[0]))
    return xp.matrix_transpose(xp.concat(rows, axis=0))


@ggn_matrix.register(Sequential)
def _(model: Sequential, params, batch, loss=MSE(), *, xp=None):
    """Explicit P x P GGN (1/B) sum_b J_b^T H_b J_b, assembled like the exact Fisher
    (:func:`arraycurv.curvature.fisher.gradient_gram` of the rows of S_b: Kronecker-structured
    for MLPs; equal to the exact Fisher for MSE and softmax cross-entropy, spec Conventions)."""
    x = batch[0]
    lin = linearize.trusted(model, params, x, xp=xp)
    cot = xp.permute_dims(loss_hessian_factor(loss, lin.outputs), (1, 0, 2))  # the k rows of S_b
    return gradient_gram(lin, cot, 1.0 / x.shape[0])


@jacobian.register(Sequential)
def _(model: Sequential, params, x, *, xp=None):
    """Explicit output Jacobian (B, k, P) by backpropagating the k unit output cotangents
    of every sample at once (per-sample VJPs)."""
    lin = linearize.trusted(model, params, x, xp=xp)
    b, k = lin.outputs.shape
    eye = xp.eye(k, dtype=x.dtype, device=backend.device_of(x))
    cot = xp.broadcast_to(eye[:, None, :], (k, b, k))
    per = _vjp_trusted(lin, cot, per_sample=True)  # (k, B, *s)
    j = xp.concat([xp.reshape(t, (k, b, -1)) for t in per], axis=-1)
    return xp.permute_dims(j, (1, 0, 2))


# ------------------------------------------------------------------- Fisher generics
@per_sample_rows.register(SequentialLinearization)
def _(lin: SequentialLinearization, cotangent):
    """One reverse pass keeping the batch axis (per-sample parameter cotangents)."""
    xp = backend.namespace_of(outputs=lin.outputs)
    m, b = cotangent.shape[:2]
    per = _vjp_trusted(lin, cotangent, per_sample=True)  # (m, B, *s) per tensor
    return xp.concat([xp.reshape(t, (m, b, -1)) for t in per], axis=-1)


def _single_row_layers(lin):
    """[(a~ (B, n_in'), layer index, bias)] of the parameterized layers if every one of them
    has one Kronecker row per sample (T = 1: Dense, or a convolution to 1x1), else None."""
    out = []
    for i, (layer, p) in enumerate(zip(lin.model.layers, _split(lin.model, lin.params))):
        if not p:
            continue
        rows = layer_kron_rows(layer, p, lin.caches[i])
        if rows is None or rows[0].shape[1] != 1:
            return None
        out.append((rows[0][:, 0, :], i, len(p) > 1))
    return out


@gradient_gram.register(SequentialLinearization)
def _(lin: SequentialLinearization, cotangent, scale=1.0):
    """Kronecker-structured blocks for MLPs (:func:`_kron_gram`); otherwise the Gram matrix
    of the (m B, P) per-sample gradients, or the Jacobian default when m > k."""
    xp = backend.namespace_of(outputs=lin.outputs)
    layers = _single_row_layers(lin)
    if layers is not None:
        return _kron_gram(xp, lin, layers, cotangent, scale)
    m, b, k = cotangent.shape
    if m > k:
        return gradient_gram.dispatch(object)(lin, cotangent, scale)
    rows = xp.reshape(per_sample_rows(lin, cotangent), (m * b, -1))
    f = xp.matmul(xp.matrix_transpose(rows), rows) * scale
    return 0.5 * (f + xp.matrix_transpose(f))


def _kron_gram(xp, lin, layers, cot, scale):
    """scale * sum_{r, b} g_rb g_rb^T (P x P) for g_rb = J_b^T cot[r, b] when every layer's
    per-sample gradient is vec_r(delta_rbl a~_bl^T) = delta_rbl (x) a~_bl (a~ with the
    homogeneous coordinate for a bias), so that block (l, m) is

        scale * sum_b (sum_r delta_rbl delta_rbm^T) (x) (a~_bl a~_bm^T),

    one (n_l n_m) x B times B x (n~_l n~_m) matmul per pair of layers l <= m: about
    B P^2 flops in all instead of the 2 B m P^2 of the Gram matrix of the (B m, P) stacked
    gradients (m = k rows of S_b for the exact Fisher). Each block is permuted to the
    row-major order of [W, b] and split into the W and b tensors; blocks below the
    diagonal are transposes; the block rows are concatenated once.
    """
    deltas = backprop_to_layer_outputs(lin, cot)  # (m, B, n_out_l) per layer
    b = lin.outputs.shape[0]
    lay = []
    for a, i, bias in layers:
        layer, p = lin.model.layers[i], _split(lin.model, lin.params)[i]
        g = layer_kron_rows(layer, p, lin.caches[i], deltas[i])[1][..., 0, :]  # (m, B, n_out)
        lay.append((xp.permute_dims(g, (1, 0, 2)), a, bias))  # delta as (B, m, n_out)
    # tensors in flat order: (layer position, 0 = W / 1 = b)
    tensors = [(pos, part) for pos, (_, _, bias) in enumerate(lay) for part in ((0, 1) if bias else (0,))]
    blocks = {}
    for lp, (dl, al, bl) in enumerate(lay):
        for mp in range(lp, len(lay)):
            dm, am, bm = lay[mp]
            nl, nm, tl, tm = dl.shape[2], dm.shape[2], al.shape[1], am.shape[1]
            il, im = tl - bl, tm - bm  # input widths without the homogeneous coordinate
            d = xp.matmul(xp.matrix_transpose(dl), dm) * scale  # (B, n_l, n_m)
            if lp == mp:  # exactly symmetric factors give an exactly symmetric diagonal block
                d = 0.5 * (d + xp.matrix_transpose(d))
            y = al[:, :, None] * am[:, None, :]  # (B, n~_l, n~_m)
            t = xp.matmul(xp.matrix_transpose(xp.reshape(d, (b, nl * nm))), xp.reshape(y, (b, tl * tm)))
            t = xp.permute_dims(xp.reshape(t, (nl, nm, tl, tm)), (0, 2, 1, 3))  # (n_l, n~_l, n_m, n~_m)
            for rp, rows in ((0, t[:, :il, ...]), (1, t[:, il:, ...])):
                if rp == 1 and not bl:
                    continue
                r = rows.shape[0] * rows.shape[1]
                blocks[((lp, rp), (mp, 0))] = xp.reshape(rows[..., :im], (r, nm * im))
                if bm:
                    blocks[((lp, rp), (mp, 1))] = xp.reshape(rows[..., im:], (r, nm))
    pieces = []
    for ti in tensors:
        row = [blocks[(ti, tj)] if (ti, tj) in blocks else xp.matrix_transpose(blocks[(tj, ti)]) for tj in tensors]
        pieces.append(xp.concat(row, axis=1) if len(row) > 1 else row[0])
    return xp.concat(pieces, axis=0) if len(pieces) > 1 else pieces[0]
