"""Fast curvature forms of :class:`arraycurv.models.Sequential` networks (spec 3.1, 3.3).

Gradient and GGN products through the cached linearization, the explicit Jacobian and
Hessian in chunks of stacked tangents, the explicit GGN through the structured
Fisher assembly, and the Sequential forms of the Fisher generics
(:func:`arraycurv.curvature.fisher.gradient_gram`,
:func:`arraycurv.curvature.fisher.per_sample_rows`). Passes and the linearization:
:mod:`arraycurv.models.sequential`.
"""

from __future__ import annotations

from dataclasses import dataclass

import array_api_extra as xpx

from .. import backend
from ..losses import MSE, loss_hessian_factor
from ..models.base import linearize, param_shapes
from ..models.layers import layer_cost, layer_kron_rows
from ..models.sequential import (
    Sequential,
    SequentialLinearization,
    _ggn_vp_linearized,
    _grad_cotangents,
    _hvp_linearized,
    _shapes,
    _split,
    _value_and_grad_linearized,
    _vjp_trusted,
    backprop_to_layer_outputs,
)
from ..params import num_params, unflatten
from .fisher import gradient_gram, per_sample_rows
from .generic import ggn_matmat, ggn_matrix, ggn_vp, hessian_matrix, jacobian, value_and_grad

#: only registrations (the Sequential fast forms of the curvature verbs): nothing public
__all__: list[str] = []


@value_and_grad.register(Sequential)
def _(model: Sequential, params, batch, loss=MSE(), *, xp=None):
    x, y = batch
    return _value_and_grad_linearized(linearize.trusted(model, params, x, xp=xp), y, loss)


@ggn_vp.register(Sequential)
def _(model: Sequential, params, batch, v, loss=MSE(), *, xp=None):
    """G v = (1/B) sum_b J_b^T H_b J_b v with one forward pass (spec 3.2; Huh eq (3)).

    ``v`` may carry leading axes like in :func:`jvp_linearized` (m products at once).
    """
    return _ggn_vp_linearized(linearize.trusted(model, params, batch[0], xp=xp), v, loss)


@ggn_matmat.register(Sequential)
def _(model: Sequential, params, batch, V, loss=MSE(), *, xp=None):
    """G V for k stacked directions: one forward, one tangent and one reverse pass with
    (k, B, n) matrices per layer (the stacked form of the GGN product above)."""
    return ggn_vp.trusted(model, params, batch, V, loss, xp=xp)


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
    grad_cots = _grad_cotangents(lin, y, loss, xp)  # v-independent: once for all chunks
    rows = []
    for s in range(0, p, m):
        e = eye[s : s + m, :]
        rows.append(_flat_rows(xp, _hvp_linearized(lin, unflatten(e, shapes), loss, grad_cots), e.shape[0]))
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


def _kron_gram(xp, lin, layers, cot, scale, budget=2**20):
    """scale * sum_{r, b} g_rb g_rb^T (P x P) for g_rb = J_b^T cot[r, b] when every layer's
    per-sample gradient is vec_r(delta_rbl a~_bl^T) = delta_rbl (x) a~_bl (a~ with the
    homogeneous coordinate for a bias), so that block (l, m) is

        scale * sum_b D_b^(lm) (x) (a~_bl a~_bm^T),   D_b^(lm) = sum_r delta_rbl delta_rbm^T,

    one (c n_m) x B times B x (n~_l n~_m) matmul per chunk of c output units i of layer l:
    T[(i, j), (a, c)] = sum_b D_b[i, j] a~_bl[a] a~_bm[c]. About B P^2 flops in all
    (the diagonal blocks only for j >= i) instead of the 2 B m P^2 of the Gram matrix of the
    (B m, P) stacked gradients (m = k rows of S_b for the exact Fisher). Each chunk (about
    ``budget`` elements, cache-sized) is permuted to the row-major order (i, a, j, c) of
    [W, b], split into its W / b parts and written once into a fresh P x P result, with
    its transpose into the mirror block (:class:`_Assembly`).
    """
    deltas = backprop_to_layer_outputs(lin, cot)  # (m, B, n_out_l) per layer
    b = lin.outputs.shape[0]
    lay, off = [], 0
    for a, i, bias in layers:
        layer, p = lin.model.layers[i], _split(lin.model, lin.params)[i]
        g = layer_kron_rows(layer, p, lin.caches[i], deltas[i])[1][..., 0, :]  # (m, B, n_out)
        n, t = g.shape[2], a.shape[1]
        lay.append((xp.permute_dims(g, (1, 0, 2)), a, _Tensor(off, n, t - bias, bias)))  # delta (B, m, n)
        off += n * t
    out = _Assembly(xp, off, lin.outputs)
    for lp, (dl, al, rl) in enumerate(lay):
        for dm, am, rm in lay[lp:]:
            diag = rm is rl
            d = xp.matmul(xp.matrix_transpose(dl), dm) * scale  # (B, n_l, n_m)
            if diag:  # exactly symmetric factors give an exactly symmetric diagonal block
                d = 0.5 * (d + xp.matrix_transpose(d))
            tl, tm = al.shape[1], am.shape[1]
            y = xp.reshape(al[:, :, None] * am[:, None, :], (b, tl * tm))
            c = max(1, min(rl.n, budget // (rm.n * tl * tm)))
            for i0 in range(0, rl.n, c):
                i1, j0 = min(rl.n, i0 + c), (i0 if diag else 0)
                dc = xp.reshape(d[:, i0:i1, j0:], (b, (i1 - i0) * (rm.n - j0)))
                t = xp.reshape(xp.matmul(xp.matrix_transpose(dc), y), (i1 - i0, rm.n - j0, tl, tm))
                out.put(xp.permute_dims(t, (0, 2, 1, 3)), rl, rm, i0, j0, i1 if diag else 0)
    return out.result


@dataclass(frozen=True)
class _Tensor:
    """A layer's [W (n, n_in), b (n,)] in the flat order: W at ``off``, b right after."""

    off: int
    n: int
    n_in: int
    bias: bool

    def parts(self, i0, i1):
        """[(row range in the flat order, slice of the homogeneous coordinate)] of units i0:i1."""
        w = self.off + i0 * self.n_in, self.off + i1 * self.n_in
        out = [(w, slice(0, self.n_in))]
        if self.bias:
            b0 = self.off + self.n * self.n_in
            out.append(((b0 + i0, b0 + i1), slice(self.n_in, self.n_in + 1)))
        return out


class _Assembly:
    """A fresh P x P result filled block by block (``array_api_extra.at``; in place for
    writeable namespaces -- the array is ours --, functional updates otherwise)."""

    def __init__(self, xp, p, like):
        self.xp = xp
        self.result = xp.empty((p, p), dtype=like.dtype, device=backend.device_of(like))
        self.copy = False

    def _set(self, rows, cols, value):
        try:
            self.result = xpx.at(self.result)[rows[0]:rows[1], cols[0]:cols[1]].set(value, copy=self.copy)
        except ValueError:  # not writeable (e.g. JAX): functional updates
            if self.copy is None:
                raise
            self.copy = None
            self._set(rows, cols, value)

    def _put_view(self, src, rows, cols, js) -> bool:
        """Write the 4-D block ``src`` and (from its column unit ``js`` on) its transpose
        through reshaped views of the result (one strided copy each, no reshaped
        temporary); False where the namespace gives no such view (then :meth:`_set`)."""
        r0, r1, c0, c1 = rows[0], rows[1], cols[0], cols[1]
        dst = backend.writable_view(self.result[r0:r1, c0:c1], src.shape)
        if dst is None:
            return False
        dst[...] = src
        ci, ta, cj, tc = src.shape
        if js < cj:
            mir = backend.writable_view(self.result[c0 + js * tc:c1, r0:r1], (cj - js, tc, ci, ta))
            mir[...] = self.xp.permute_dims(src[:, :, js:, :], (2, 3, 0, 1))
        return True

    def put(self, t, rl, rm, i0, j0, mirror_from):
        """Write t (i1 - i0, n~_l, n_m - j0, n~_m) at rows i0:i1 of ``rl``, columns j0: of
        ``rm``, and its transpose at the mirror position for the columns j >= mirror_from
        (all of them off the diagonal: ``mirror_from = 0``)."""
        xp = self.xp
        ci, cj = t.shape[0], t.shape[2]
        for rows, sa in rl.parts(i0, i0 + ci):
            for cols, sc in rm.parts(j0, j0 + cj):
                src = t[:, sa, :, sc]  # (ci, n~_a, cj, n~_c): rows (i, a), columns (j, c)
                js = max(mirror_from - j0, 0)  # the first column unit mirrored
                if self._put_view(src, rows, cols, js):
                    continue
                blk = xp.reshape(src, (rows[1] - rows[0], cols[1] - cols[0]))
                self._set(rows, cols, blk)
                skip = js * (sc.stop - sc.start)
                if skip < blk.shape[1]:
                    self._set((cols[0] + skip, cols[1]), rows, xp.matrix_transpose(blk[:, skip:]))
