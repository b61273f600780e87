"""Summary tensors of the loss along a direction over a partition (Wolinski, GroupedNewton).

For a partition of the parameters into S groups (:mod:`arraycurv.params.partition`) and a
direction u, the restricted function phi(t) = L(theta + sum_s t_s u^(s)) (GN-2) has the
derivative tensors D^(d) = nabla^d phi(0) (GN-3):

* summary gradient  gbar_s = <g, u^(s)>                       (GN-4)
* summary Hessian   Hbar = V^T H V, Hbar_ij = u^(i)T H u^(j)  (GN-5), dense S x S
* order-3 diagonal  D3_sss = nabla^3 L[u^(s), u^(s), u^(s)]   (GN-6), d_s = |D3_sss|^(1/3)

plus the full order-3 tensor for small S (:func:`summary_third`) and the Taylor terms
T_d = D^(d)[eta, ..., eta] for a given eta without the S^d tensor (spec 2.2,
:func:`summary_taylor_terms`).

How they are computed (fast form, :func:`summary`). The reference code spends S
double-backward and S triple-backward passes. Here, for Sequential networks (and deep
linear networks, as a chain of bias-free Dense layers):

1. one forward pass keeps every layer's cache;
2. one Taylor-mode pass (:mod:`arraycurv.models.jets`) carries the S restricted
   directions at once, as a leading axis. A direction whose group starts at layer l is
   zero below l, so it joins the batch only at layer l (at its own layer its input jet
   is zero and it costs one matmul). Only the coefficients 1 and 2 are propagated: what
   each layer adds to the third one (its "source", y_3 at x_3 = 0) is contracted with
   the gradient cotangent at its output in step 3 (<g, f_3> = sum_l <dy_l, source_l>,
   the adjoint of the linear recursion of f_3). The loss jet gives gbar (order 1) and,
   with the sources, D3_sss (order 3) for all s;
3. one backward pass of the gradient cotangent and one batched R-operator pass
   (Pearlmutter 1994) carry the first-order tangents back down; direction j leaves the
   batch below its own first layer. At each layer the R-derivatives of the layer's
   parameter gradients are contracted with the restricted directions of the groups
   living there, which gives Hbar_ij for every pair with birth(j) <= birth(i); symmetry
   gives the rest. For Dense and Conv2d (bilinear in input and parameters) the
   contraction <u^(i), R{dp}^(j)> = <rdy^(j), J_p u^(i)> + <grad_x <dy, J_p u^(i)>, dx^(j)>
   avoids forming R{dp}; other layers go through
   :func:`~arraycurv.models.layers.layer_rop_vjp`.

Cost: about 1 forward + 1 backward + (jets and R-pass of the directions above their own
layer), 2.2-4.1 gradients for S = 6 on the MLPs of benchmarks/bench_summary.py, against
2S + 1 nested reverse passes. The default form for other model families uses
:func:`~arraycurv.models.jets.taylor` batched over S and ``hvp`` with S directions.

Every routine has the materialized reference :func:`summary_reference`:
gbar = V^T g, Hbar = V^T H V with the explicit Hessian, D3_sss by one plain jet per group.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, NamedTuple

from .. import backend
from ..losses import MSE, loss_grad, loss_hessian_vp
from ..models.base import param_shapes
from ..models.deep_linear import DeepLinear
from ..models.jets import _dense_chain, layer_jet, loss_jet, taylor
from ..models.layers import Conv2d, Dense, _conv_input_cot, layer_forward, layer_rop_vjp, layer_vjp
from ..models.sequential import Sequential, _split, layer_param_indices
from ..params import flatten
from ..params.partition import Partition, check_partition, group_masks, indicator_matrix, scale_groups
from ..validation import check_call, check_int
from .generic import hessian_matrix, hvp_matmat, value_and_grad

__all__ = [
    "Summary",
    "summary",
    "summary_reference",
    "summary_taylor_terms",
    "summary_third",
]


class Summary(NamedTuple):
    """The summary tensors at theta along u (Wolinski GN-4 to GN-6).

    Attributes
    ----------
    loss : 0-d array
        L(theta) on the batch.
    gbar : array (S,)
        Summary gradient, gbar_s = <g, u^(s)> (GN-4).
    hbar : array (S, S) or None
        Summary Hessian V^T H V (GN-5); None when ``order < 2``.
    d3 : array (S,) or None
        Signed diagonal D3_sss of the order-3 summary tensor (GN-6); None when ``order < 3``.
    """

    loss: Any
    gbar: Any
    hbar: Any = None
    d3: Any = None

    @property
    def d(self):
        """d_s = |D3_sss|^(1/3), the diagonal of the scaling matrix **D** (GN-6)."""
        if self.d3 is None:
            return None
        xp = backend.namespace_of(d3=self.d3)
        return xp.abs(self.d3) ** (1.0 / 3.0)


def _check_order(order, lo=1):
    return check_int(order, "order", lo=lo, hi=3, want=f"an int in [{lo}, 3]")


def _validate(model, params, batch, direction, partition, loss):
    xp = check_call(model, params, batch=batch, tangent=direction, loss=loss, names={"tangent": "direction"})
    if not isinstance(partition, Partition):
        raise TypeError(f"partition: expected a Partition (arraycurv.params.partition), got {type(partition).__name__}")
    if partition.shapes != tuple(tuple(s) for s in param_shapes(model)):
        raise ValueError(f"partition: expected a partition of the shapes {param_shapes(model)}, got one of "
                         f"{partition.shapes}")
    check_partition(partition, direction)
    return xp


def summary(model, params, batch, direction, partition, loss=MSE(), *, order: int = 3) -> Summary:
    """Summary gradient, Hessian and order-3 diagonal along ``direction`` (GN-4 to GN-6).

    Parameters
    ----------
    model
        Sequential (MLP, CNN), DeepLinear, or any model with ``taylor`` and ``hvp``.
    params : tuple of arrays
    batch : tuple (x, y)
    direction : tuple of arrays
        u, shaped like ``params`` (the minibatch gradient or its momentum, spec 5).
    partition : Partition
        The S groups (:mod:`arraycurv.params.partition`).
    loss : MSE or SoftmaxCrossEntropy
    order : int
        1 (gbar), 2 (and Hbar) or 3 (and the diagonal D3_sss).

    Returns
    -------
    Summary
        ``(loss, gbar, hbar, d3)`` in the namespace, dtype and device of ``params``;
        ``Summary.d`` is |D3_sss|^(1/3).
    """
    order = _check_order(order)
    xp = _validate(model, params, batch, direction, partition, loss)
    return _summary(model, xp, tuple(params), batch, tuple(direction), partition, loss, order)


# ----------------------------------------------------------------- default form
@functools.singledispatch
def _summary(model, xp, params, batch, direction, partition, loss, order):
    """Default: one jet of order ``order`` batched over S, and ``hvp_matmat`` on the S directions."""
    x, y = batch
    v = tuple(m * u[None, ...] for m, u in zip(group_masks(partition, direction[0]), direction))
    jet = taylor(model, params, x, v, order=order)
    lj = loss_jet(loss, jet, y)
    hbar = d3 = None
    if order >= 2:
        hv = hvp_matmat.trusted(model, params, batch, v, loss, xp=xp)  # one batched pass or a loop
        hbar = _contract(xp, v, hv)
        hbar = 0.5 * (hbar + xp.matrix_transpose(hbar))
    if order >= 3:
        d3 = lj[3]
    return Summary(lj[0], lj[1], hbar, d3)


def _contract(xp, a, b):
    """sum over tensors of a_i . b_j for stacks a (n, *shape), b (m, *shape) -> (n, m)."""
    out = None
    for ta, tb in zip(a, b):
        n, m = ta.shape[0], tb.shape[0]
        blk = xp.matmul(xp.reshape(ta, (n, -1)), xp.matrix_transpose(xp.reshape(tb, (m, -1))))
        out = blk if out is None else out + blk
    return out


# -------------------------------------------------------- Sequential fast form
class _Plan(NamedTuple):
    """Where each group lives: per layer, the groups with parameters there (``at``), the
    new batches of directions born there (``new``, lists of groups sharing tensors), the
    stack order of all directions (``order``) and the birth layer of each group."""

    at: tuple
    new: tuple
    order: tuple
    birth: tuple
    at_batches: tuple = ()


@functools.lru_cache(maxsize=128)
def _plan(model: Sequential, partition: Partition) -> _Plan:
    idx = layer_param_indices(model)
    at = tuple(tuple(sorted({g for i in range(a, b) for g in partition.tensor_groups(i)})) for a, b in idx)
    birth = [None] * partition.num_groups
    new, order, at_batches = [], [], []
    for li, groups in enumerate(at):
        fresh = [g for g in groups if birth[g] is None]
        for g in fresh:
            birth[g] = li
        a, b = idx[li]
        # batch the new directions by the set of tensors they touch
        sig: dict = {}
        for g in fresh:
            key = tuple(i for i in range(a, b) if g in partition.tensor_groups(i))
            sig.setdefault(key, []).append(g)
        batches = tuple(tuple(v) for v in sig.values())
        new.append(batches)
        order.extend(g for bt in batches for g in bt)
        sig_at: dict = {}
        for g in groups:
            sig_at.setdefault(tuple(i for i in range(a, b) if g in partition.tensor_groups(i)), []).append(g)
        at_batches.append(tuple(tuple(v) for v in sig_at.values()))
    return _Plan(at, tuple(new), tuple(order), tuple(birth), tuple(at_batches))


def _stack_dp(xp, masks, direction, groups, a, b, partition):
    """dp for a stack of directions on the tensors a..b-1 of one layer (None entries for
    tensors none of the groups touches); None if they touch no tensor of the layer."""
    dp, any_ = [], False
    for i in range(a, b):
        tg = partition.tensor_groups(i)
        if any(g in tg for g in groups):
            any_ = True
            dp.append(xp.stack([masks[i][g, ...] * direction[i] for g in groups], axis=0))
        else:
            dp.append(None)
    return tuple(dp) if any_ else None


def _concat_jets(xp, parts, y0):
    """Concatenate output jets of several direction batches along the lead axis."""
    k = len(parts[0][0])
    out = [y0]
    for j in range(1, k):
        items = [p[j] for p, _ in parts]
        if all(t is None for t in items):
            out.append(None)
            continue
        full = []
        for (_, m), t in zip(parts, items):
            full.append(t if t is not None else xp.zeros((m,) + tuple(y0.shape), dtype=y0.dtype,
                                                         device=backend.device_of(y0)))
        out.append(full[0] if len(full) == 1 else xp.concat(full, axis=0))
    return tuple(out)


def _forward(xp, model, params, x, direction, partition, plan, masks, order):
    """Forward pass, then the jets of the restricted directions (stack order of ``plan``)."""
    idx = layer_param_indices(model)
    ps = _split(model, params)
    jet = (x,) + (None,) * order
    m = 0  # number of active directions (the lead of jet[1:])
    caches, t_in, dps, prim, sources = [], [], [], [], []
    for li, layer in enumerate(model.layers):
        a, b = idx[li]
        y0, cache = layer_forward(layer, ps[li], jet[0])
        caches.append(cache)
        own: dict = {}
        prim.append((jet[0], y0, own))
        t_in.append(jet[1] if order >= 1 else None)
        parts, layer_dps = [], []
        if m:
            dp = _stack_dp(xp, masks, direction, plan.order[:m], a, b, partition) if b > a else None
            layer_dps.append(dp)
            parts.append((layer_jet(layer, ps[li], jet, dp, primal=(y0, cache)), m))
        x0_jet = (jet[0],) + (None,) * order
        for bt in plan.new[li]:
            dp = _stack_dp(xp, masks, direction, bt, a, b, partition)
            layer_dps.append(dp)
            out = layer_jet(layer, ps[li], x0_jet, dp, primal=(y0, cache))
            own[bt] = out[1]  # J_p u^(s) of the groups born here, reused by the R-pass
            parts.append((out, len(bt)))
            m += len(bt)
        dps.append(layer_dps)
        jet = _concat_jets(xp, parts, y0) if parts else (y0,) + (None,) * order
        if order == 3:  # y_3 with x_3 = 0 is the layer's own third-order source (adjoint trick)
            sources.append(jet[3])
            jet = jet[:3] + (None,)
    return jet, caches, t_in, dps, prim, sources


def _batched_loss_hvp(xp, loss, f0, v):
    k = f0.shape[-1]
    o = xp.reshape(xp.broadcast_to(f0, tuple(v.shape)), (-1, k))
    return xp.reshape(loss_hessian_vp.trusted(loss, o, xp.reshape(v, (-1, k))), tuple(v.shape))


def _rows_block(xp, masks, direction, groups, a, b, rdps, plan_tensors):
    """(len(groups), m) block sum_t <u^(i)|_t, R{dp_t}^(j)> for the tensors of one layer."""
    out = None
    for t, i in enumerate(range(a, b)):
        r = rdps[t]
        rows = [g for g in groups if g in plan_tensors[i]]
        if not rows:
            continue
        ui = xp.stack([masks[i][g, ...] * direction[i] for g in groups], axis=0)
        blk = xp.matmul(xp.reshape(ui, (len(groups), -1)), xp.matrix_transpose(xp.reshape(r, (r.shape[0], -1))))
        out = blk if out is None else out + blk
    return out


def _hbar_sequential(xp, model, params, y, direction, partition, plan, masks, fwd, f_jet, loss):
    """Batched R-operator pass: C[i, j] = <u^(i), H u^(j)> for birth(j) <= birth(i); symmetrized."""
    jet, caches, t_in, dps, prim, sources = fwd
    third = None  # sum over layers of <dy_l, source3_l>, in stack order
    idx = layer_param_indices(model)
    ps = _split(model, params)
    s_all = len(plan.order)
    nb = jet[0].shape[0]
    g = loss_grad(loss, jet[0], y) / nb
    rg = _batched_loss_hvp(xp, loss, jet[0], f_jet[1]) / nb
    tg = [partition.tensor_groups(i) for i in range(len(partition.shapes))]
    rows: dict = {}
    counts = [0]
    for li in range(len(model.layers)):
        counts.append(counts[-1] + sum(len(bt) for bt in plan.new[li]))
    for li in range(len(model.layers) - 1, -1, -1):
        layer, p, cache = model.layers[li], ps[li], caches[li]
        a, b = idx[li]
        m_act, m_all = counts[li], counts[li + 1]
        if sources and sources[li] is not None:
            src = sources[li]
            t3 = xp.sum(xp.reshape(g[None, ...] * src, (src.shape[0], -1)), axis=1)
            if m_all < s_all:
                t3 = xp.concat([t3, xp.zeros((s_all - m_all,), dtype=t3.dtype, device=backend.device_of(t3))])
            third = t3 if third is None else third + t3
        if b > a and plan.at[li] and isinstance(layer, _BILINEAR):
            blk, rdx = _bilinear_rows(xp, layer, p, cache, prim[li], (a, b), plan, li, masks, direction, partition,
                                      g, rg[:m_all, ...], t_in[li], dps[li][0] if m_act else None, m_act)
            if m_all < s_all:
                blk = xp.concat([blk, xp.zeros((blk.shape[0], s_all - m_all), dtype=blk.dtype,
                                               device=backend.device_of(blk))], axis=1)
            for r, grp in enumerate(_flat_at(plan, li)):
                rows[grp] = blk[r, :] if grp not in rows else rows[grp] + blk[r, :]
            if not m_act:
                break
            g, _ = layer_vjp(layer, p, cache, g, params_mode="none")
            rg = rdx
            continue
        rdx, rdp_parts, k = None, [], 0
        if m_act:
            rdx, rdp = layer_rop_vjp(layer, p, cache, dps[li][0], t_in[li], g, rg[:m_act, ...], input_grad=li > 0)
            rdp_parts.append((rdp, m_act))
            k = 1
        start = m_act
        for bt in plan.new[li]:
            _, rdp = layer_rop_vjp(layer, p, cache, dps[li][k], None, g, rg[start:start + len(bt), ...],
                                   input_grad=False)
            rdp_parts.append((rdp, len(bt)))
            start += len(bt)
            k += 1
        if b > a and plan.at[li]:
            shapes = partition.shapes[a:b]
            rdps = []
            for t in range(b - a):
                pieces = [r[t] if r[t].ndim > len(shapes[t]) else xp.broadcast_to(r[t], (n, *shapes[t]))
                          for r, n in rdp_parts]
                rdps.append(pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=0))
            blk = _rows_block(xp, masks, direction, plan.at[li], a, b, rdps, tg)
            if blk is not None:
                if m_all < s_all:
                    blk = xp.concat([blk, xp.zeros((blk.shape[0], s_all - m_all), dtype=blk.dtype,
                                                   device=backend.device_of(blk))], axis=1)
                for r, grp in enumerate(plan.at[li]):
                    rows[grp] = blk[r, :] if grp not in rows else rows[grp] + blk[r, :]
        if not m_act:
            break
        g, _ = layer_vjp(layer, p, cache, g, params_mode="none")
        rg = rdx
    return _assemble(xp, rows, plan, partition.num_groups, s_all, jet[0]), third


#: Layers linear in their input and in their parameters: their R-operator has no
#: input-input term, and <u_i, R{dp}^(j)> = <rdy^(j), J_p u_i> + <grad_x <dy, J_p u_i>, dx^(j)>.
_BILINEAR = (Dense, Conv2d)


def _flat_at(plan, li):
    return tuple(grp for bt in plan.at_batches[li] for grp in bt)


@functools.singledispatch
def _cross(layer, p, cache, dp, dy):
    """grad_x <dy, (dy/dp) dp> (the mixed second derivative of the layer), (*lead, B, *in)."""
    raise TypeError(f"layer: no mixed term for {type(layer).__name__}")


@_cross.register
def _(layer: Dense, p, cache, dp, dy):
    xp = backend.namespace_of(dy=dy)
    return None if dp[0] is None else xp.matmul(dy, dp[0])


@_cross.register
def _(layer: Conv2d, p, cache, dp, dy):
    if dp[0] is None:
        return None
    xp = backend.namespace_of(dy=dy)
    o = layer.out_channels
    dk2 = xp.reshape(dp[0], tuple(dp[0].shape[:-4]) + (1, o, -1))
    dy2 = xp.reshape(dy, tuple(dy.shape[:-3]) + (o, cache.out_hw[0] * cache.out_hw[1]))
    return _conv_input_cot(xp, layer, dk2, dy2, cache)


def _flat2(xp, t):
    return xp.reshape(t, (t.shape[0], -1))


def _bilinear_rows(xp, layer, p, cache, prim, ab, plan, li, masks, direction, partition, g, rg, dx_act, dp_act,
                   m_act):
    """Rows C[i, :] (i in the layer's groups) of a Dense/Conv2d layer without forming R{dp}, and
    the R-derivative of the input cotangent of the directions active below."""
    a, b = ab
    x0, y0, own = prim
    zs, ws = [], []
    for bt in plan.at_batches[li]:
        dp = _stack_dp(xp, masks, direction, bt, a, b, partition)
        z = own.get(bt)
        zs.append(z if z is not None else layer_jet(layer, p, (x0, None), dp, primal=(y0, cache))[1])
        w = _cross(layer, p, cache, dp, g)
        ws.append(w if w is not None else xp.zeros((len(bt),) + tuple(x0.shape), dtype=x0.dtype,
                                                   device=backend.device_of(x0)))
    z = zs[0] if len(zs) == 1 else xp.concat(zs, axis=0)
    blk = xp.matmul(_flat2(xp, z), xp.matrix_transpose(_flat2(xp, rg)))  # <rdy^(j), J_p u_i>
    rdx = None
    if m_act and dx_act is not None:
        w = ws[0] if len(ws) == 1 else xp.concat(ws, axis=0)
        cross = xp.matmul(_flat2(xp, w), xp.matrix_transpose(_flat2(xp, dx_act)))  # <grad_x.., dx^(j)>
        if rg.shape[0] > m_act:
            cross = xp.concat([cross, xp.zeros((cross.shape[0], rg.shape[0] - m_act), dtype=cross.dtype,
                                               device=backend.device_of(cross))], axis=1)
        blk = blk + cross
    if m_act and li > 0:
        rdx, _ = layer_vjp(layer, p, cache, rg[:m_act, ...], params_mode="none")
        if dp_act is not None:
            extra = _cross(layer, p, cache, dp_act, g)
            rdx = rdx if extra is None else rdx + extra
    return blk, rdx


def _assemble(xp, rows, plan, s, s_all, like):
    """Hbar from C (rows in group order, columns in stack order): C[i, j] where
    birth(j) <= birth(i), its transpose elsewhere, the mean of both on ties."""
    zero = xp.zeros((s_all,), dtype=like.dtype, device=backend.device_of(like))
    c = xp.stack([rows.get(i, zero) for i in range(s)], axis=0)
    pos = {grp: r for r, grp in enumerate(plan.order)}
    perm = xp.asarray([pos[j] for j in range(s)], dtype=xp.int64, device=backend.device_of(like))
    cg = xp.take(c, perm, axis=1)
    birth = xp.asarray(list(plan.birth), device=backend.device_of(like))
    lower = birth[None, :] <= birth[:, None]  # [i, j]: birth(j) <= birth(i)
    tie = birth[None, :] == birth[:, None]
    ct = xp.matrix_transpose(cg)
    return xp.where(tie, 0.5 * (cg + ct), xp.where(lower, cg, ct))


def _summary_seq(model, xp, params, batch, direction, partition, loss, order):
    x, y = batch
    plan = _plan(model, partition)
    masks = group_masks(partition, direction[0])
    fwd = _forward(xp, model, params, x, direction, partition, plan, masks, order)
    f_jet = fwd[0]
    lj = loss_jet(loss, f_jet, y)
    pos = {grp: r for r, grp in enumerate(plan.order)}
    perm = xp.asarray([pos[j] for j in range(partition.num_groups)], dtype=xp.int64,
                      device=backend.device_of(f_jet[0]))
    gbar = xp.take(lj[1], perm)
    hbar = d3 = None
    if order >= 2:
        hbar, third = _hbar_sequential(xp, model, params, y, direction, partition, plan, masks, fwd, f_jet, loss)
    if order >= 3:  # d^3 L = (loss terms with f_3 = 0) + <g, f_3>, <g, f_3> = sum_l <dy_l, source3_l>
        d3 = xp.take(lj[3] if third is None else lj[3] + third, perm)
    return Summary(lj[0], gbar, hbar, d3)


@_summary.register
def _(model: Sequential, xp, params, batch, direction, partition, loss, order):
    return _summary_seq(model, xp, params, batch, direction, partition, loss, order)


@_summary.register
def _(model: DeepLinear, xp, params, batch, direction, partition, loss, order):
    return _summary_seq(_dense_chain(model), xp, params, batch, direction, partition, loss, order)


# ------------------------------------------------------------------ references
def summary_reference(model, params, batch, direction, partition, loss=MSE()) -> Summary:
    """Materialized reference of :func:`summary`: gbar = V^T g, Hbar = V^T H V with the
    explicit P x P Hessian (:func:`~arraycurv.curvature.hessian_matrix`) and
    V = Diag(u) I_{P:S} (GN-1, GN-4, GN-5), and D3_sss from one unbatched jet of order 3
    per group (GN-6). For tests and small models."""
    xp = _validate(model, params, batch, direction, partition, loss)
    x, y = batch
    value, grad = value_and_grad(model, params, batch, loss)
    vmat = flatten(direction)[:, None] * indicator_matrix(partition, direction[0])
    gbar = xp.matmul(xp.matrix_transpose(vmat), flatten(grad))
    hbar = xp.matmul(xp.matrix_transpose(vmat), xp.matmul(hessian_matrix(model, params, batch, loss), vmat))
    masks = group_masks(partition, direction[0])
    d3 = []
    for s in range(partition.num_groups):
        us = tuple(m[s, ...] * u for m, u in zip(masks, direction))
        d3.append(loss_jet(loss, taylor(model, params, x, us, order=3), y)[3])
    return Summary(value, gbar, hbar, xp.stack(d3))


def summary_taylor_terms(model, params, batch, direction, partition, eta, loss=MSE(), *, order: int = 3):
    """Taylor terms T_d = D^(d)[eta, ..., eta] for d = 0..order without the S^d tensor.

    T_d = d^d/dtau^d L(theta + tau V eta) at 0 (spec 2.2, nested-directional form; here
    one jet of order ``order`` along v = V eta = sum_s eta_s u^(s)), so that
    L(theta - V eta) = sum_d (-1)^d T_d / d! + O(|eta|^4) (GN-7). Returns a tuple of
    ``order + 1`` 0-d arrays (T_0 = L). ``eta`` may carry leading axes (m, S): then
    each T_d (d >= 1) has shape (m,).
    """
    order = _check_order(order, lo=0)
    xp = _validate(model, params, batch, direction, partition, loss)
    if not backend.is_array(eta) or eta.ndim < 1 or eta.shape[-1] != partition.num_groups:
        got = tuple(eta.shape) if hasattr(eta, "shape") else type(eta).__name__
        raise ValueError(f"eta: expected shape (..., {partition.num_groups}), got {got}")
    backend.namespace_of_pairs([("params[0]", params[0]), ("eta", eta)])
    if eta.dtype != params[0].dtype:
        raise TypeError(f"eta: expected dtype {params[0].dtype} like params, got {eta.dtype}")
    backend.check_all_finite(xp, [("eta", eta)])
    if eta.ndim == 1:
        v = scale_groups(direction, eta, partition)
    else:
        lead = tuple(eta.shape[:-1])
        flat = xp.reshape(eta, (-1, partition.num_groups))
        vs = [scale_groups(direction, flat[i, :], partition) for i in range(flat.shape[0])]
        v = tuple(xp.reshape(xp.stack([t[k] for t in vs], axis=0), lead + tuple(direction[k].shape))
                  for k in range(len(direction)))
    x, y = batch
    return loss_jet(loss, taylor(model, params, x, v, order=order), y)


def summary_third(model, params, batch, direction, partition, loss=MSE()):
    """The full order-3 summary tensor D^(3) (S x S x S, symmetric; GN-3) for small S.

    By polarization of the cubic form T(a) = nabla^3 L[a, a, a] (one jet of order 3
    batched over the S + S(S-1) + S(S-1)(S-2)/6 directions u^(i), u^(i) +- u^(j) and
    u^(i) + u^(j) + u^(k)): D_iii = T(u_i), D_iij = [T(u_i + u_j) - T(u_i - u_j) - 2 T(u_j)] / 6,
    D_ijk = [T(u_i+u_j+u_k) - T(u_i+u_j) - T(u_i+u_k) - T(u_j+u_k) + T(u_i) + T(u_j) + T(u_k)] / 6.
    """
    xp = _validate(model, params, batch, direction, partition, loss)
    s = partition.num_groups
    masks = group_masks(partition, direction[0])
    combos = [((i, 1),) for i in range(s)]
    pairs = list(itertools.combinations(range(s), 2))
    combos += [((i, 1), (j, 1)) for i, j in pairs] + [((i, 1), (j, -1)) for i, j in pairs]
    triples = list(itertools.combinations(range(s), 3))
    combos += [((i, 1), (j, 1), (k, 1)) for i, j, k in triples]
    coef = xp.asarray([[float(sum(c for g, c in cb if g == grp)) for grp in range(s)] for cb in combos],
                      dtype=direction[0].dtype, device=backend.device_of(direction[0]))
    v = tuple(xp.reshape(xp.matmul(coef, xp.reshape(m * u[None, ...], (s, -1))), (len(combos), *u.shape))
              for m, u in zip(masks, direction))
    x, y = batch
    t = backend.to_numpy(loss_jet(loss, taylor(model, params, x, v, order=3), y)[3]).tolist()
    return _polarize(xp, t, s, pairs, triples, direction[0])


def _polarize(xp, t, s, pairs, triples, like):
    single = t[:s]
    plus = dict(zip(pairs, t[s:s + len(pairs)]))
    minus = dict(zip(pairs, t[s + len(pairs):s + 2 * len(pairs)]))
    trip = dict(zip(triples, t[s + 2 * len(pairs):]))
    d = {}
    for i in range(s):
        d[(i, i, i)] = single[i]
    for i, j in pairs:
        d[(i, i, j)] = (plus[(i, j)] - minus[(i, j)] - 2.0 * single[j]) / 6.0
        d[(i, j, j)] = (plus[(i, j)] + minus[(i, j)] - 2.0 * single[i]) / 6.0
    for i, j, k in triples:
        d[(i, j, k)] = (trip[(i, j, k)] - plus[(i, j)] - plus[(i, k)] - plus[(j, k)]
                        + single[i] + single[j] + single[k]) / 6.0
    vals = [[[d[tuple(sorted((i, j, k)))] for k in range(s)] for j in range(s)] for i in range(s)]
    return xp.asarray(vals, dtype=like.dtype, device=backend.device_of(like))
