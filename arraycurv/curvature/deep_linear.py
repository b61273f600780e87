"""Closed-form curvature of deep linear networks (spec 3.1-3.4): the fast forms of the
curvature verbs for :class:`arraycurv.models.DeepLinear`.

Gradient g_i = W_{>i}^T E W_{<i}^T, GGN product (Huh eq 3), exact Hessian product with the
residual term (Huh eq 2), GGN blocks kron(W_{>i}^T W_{>j}, W_{<i} Sxx W_{<j}^T)
(Bernacchia eq 22), the explicit Jacobian, Hessian and the map Jacobian, and the
null-space directions of the GGN. Notation and conventions: :mod:`arraycurv.models.deep_linear`.
"""

from __future__ import annotations

from .. import backend
from ..linalg.kronecker import _kron as _kron_trusted
from ..losses import MSE, loss_grad, loss_hessian_vp
from ..models import base as _models
from ..models.deep_linear import (
    DeepLinear,
    _back,
    _batch_stats,
    _chain_widths,
    _eye,
    _outer,
    _prefixes,
    _suffixes,
)
from ..validation import ArgumentTypeError, check_call, check_int
from . import generic as _itf

__all__ = ['fisher_kron_factors', 'map_jacobian', 'null_space_basis', 'null_space_direction']


# ============================================================================ interface: curvature
@_itf.value_and_grad.register(DeepLinear)
def _value_and_grad(model, params, batch, loss=MSE(), *, xp):
    """Mean MSE loss and gradient g_i = W_{>i}^T E W_{<i}^T with the residual moment
    E = <(f(x) - y) x^T> = w̄ Sxx - Syx (Huh 2020 Sec. 2: g = J Delta for Sxx = I;
    Bernacchia 2018 eq 13). ``batch`` is (x, y) or :class:`LinearMoments`. Other losses
    defer to the generic default."""
    if not isinstance(loss, MSE):
        return _itf.value_and_grad.default(model, params, batch, loss, xp=xp)
    st = _batch_stats(xp, model, params, batch, need_sxx=False, need_e=True, need_loss=True)
    rs = _back(params, st.e)
    return st.loss, _outer(rs, st.prefix)


@_itf.jacobian.register(DeepLinear)
def _jacobian(model, params, x, *, xp):
    """Explicit output Jacobian (B, nL, P) in closed form:
    d f_o(x_b) / d (W_i)_{ac} = (W_{>i})_{oa} (W_{<i} x_b)_c (spec 3.1)."""
    b, nl = x.shape[0], model.widths[-1]
    pre = _prefixes(xp, params)
    suf = _suffixes(xp, params)
    blocks = []
    for (ni, nim1), p, s in zip(model.shapes, pre, suf):
        h = x @ p.T if p is not pre[0] else x  # (B, n_{i-1}) activations entering layer i
        blk = xp.reshape(s, (1, nl, ni, 1)) * xp.reshape(h, (b, 1, 1, nim1))
        blocks.append(xp.reshape(blk, (b, nl, ni * nim1)))
    return xp.concat(blocks, axis=-1)


def map_jacobian(model, params):
    """Explicit Jacobian of the total map, d vec_r(w̄) / d theta, shape (nL*n0, P).

    Its layer-i block is kron(W_{>i}, W_{<i}^T) (row-major vec: w̄ = W_{>i} W_i W_{<i}
    gives vec_r(dw̄) = kron(W_{>i}, W_{<i}^T) vec_r(dW_i)); this is Huh's J (Sec. 2,
    J_i = d w̄ / d w_i), and G = J^T kron(I, Sxx) J.

    Parameters
    ----------
    model : DeepLinear
    params : tuple of arrays

    Returns
    -------
    array (nL * n0, P)
    """
    xp = check_call(model, params)
    n0, nl = model.widths[0], model.widths[-1]
    pre = _prefixes(xp, params)
    suf = _suffixes(xp, params)
    blocks = []
    for (ni, nim1), p, s in zip(model.shapes, pre, suf):
        blk = xp.reshape(s, (nl, 1, ni, 1)) * xp.reshape(p.T, (1, n0, 1, nim1))
        blocks.append(xp.reshape(blk, (nl * n0, ni * nim1)))
    return xp.concat(blocks, axis=1)


def _map_tangent(xp, params, v, pre):
    """dw̄ = sum_j W_{>j} V_j W_{<j} by the forward recursion T_{l+1} = W_{l+1} T_l + V_{l+1} W_{<l+1}.

    Returns the list [dW_{<1} = 0, dW_{<2}, ..., dW_{<L}, dw̄] (first entry None).
    """
    out = [None, v[0]]
    for w, vv, p in zip(params[1:], v[1:], pre[1:]):
        out.append(w @ out[-1] + vv @ p)
    return out


@_itf.ggn_vp.register(DeepLinear)
def _ggn_vp(model, params, batch, v, loss=MSE(), *, xp):
    """Matrix-free GGN product (Huh 2020 eq 3 generalized to depth L and Sigma_x):
    Gv_i = W_{>i}^T dw̄ Sxx W_{<i}^T with dw̄ = sum_j W_{>j} V_j W_{<j}.

    Cost: about 5L small matrix products (vs 3L for the gradient) once Sxx is formed.
    Other losses than MSE defer to the generic default.
    """
    if not isinstance(loss, MSE):
        return _itf.ggn_vp.default(model, params, batch, v, loss, xp=xp)
    st = _batch_stats(xp, model, params, batch, need_sxx=True, need_e=False, need_loss=False)
    pre = [None, params[0]]  # W_{<1} = I is never multiplied
    for w in params[1:-1]:
        pre.append(w @ pre[-1])
    dw = _map_tangent(xp, params, v, pre)[-1]
    rs = _back(params, dw @ st.sxx)
    return _outer(rs, pre)


@_models.hvp.register(DeepLinear)
def _hvp(model, params, batch, v, loss=MSE(), *, xp):
    """Exact Hessian-vector product (Huh 2020 eq 2 generalized to depth L and Sigma_x):

    Hv_i = d/dt [W_{>i}^T E W_{<i}^T] = W_{>i}^T (dw̄ Sxx) W_{<i}^T      (GGN, Huh eq 3)
           + dW_{>i}^T E W_{<i}^T + W_{>i}^T E dW_{<i}^T                 (J' Delta term)

    with E = w̄ Sxx - Syx the residual moment and dW_{<i}, dW_{>i} the derivatives of the
    partial products along V (forward-over-reverse, about 8L small products). For any
    other loss the same recursion holds with E = <g_b x_b^T> (g_b the output gradient
    of sample b) and dw̄ Sxx replaced by <H_b (dw̄ x_b) x_b^T> (H_b the output Hessian):
    the network is linear in each W_i, so only the loss enters through g_b and H_b.
    """
    pre = _prefixes(xp, params)
    dpre = _map_tangent(xp, params, v, pre)
    if isinstance(loss, MSE):
        st = _batch_stats(xp, model, params, batch, need_sxx=True, need_e=True, need_loss=False, prefix=pre)
        e, de = st.e, dpre[-1] @ st.sxx
    else:
        e, de = _loss_moments(loss, batch, pre[-1], dpre[-1])
    st_e = e
    # reverse pass and its tangent: R_i = W_{>i}^T E, dR_i = dW_{>i}^T E + W_{>i}^T dE
    r, dr = st_e, de
    out = [None] * len(params)
    last = len(params) - 1
    for i in range(last, 0, -1):
        out[i] = dr @ pre[i].T + r @ dpre[i].T
        w = params[i]
        dr = w.T @ dr + v[i].T @ r
        r = w.T @ r
    out[0] = dr  # W_{<1} = I and dW_{<1} = 0
    return tuple(out)


def _loss_moments(loss, batch, wbar, dwbar):
    """E = <g_b x_b^T> and dE = <H_b (dw̄ x_b) x_b^T> for a batch (x, y) and any loss."""
    x, y = batch
    b = x.shape[0]
    out = x @ wbar.T
    g = loss_grad(loss, out, y)
    hjv = loss_hessian_vp.trusted(loss, out, x @ dwbar.T)
    return (g.T @ x) / b, (hjv.T @ x) / b


# ---------------------------------------------------------------- Kronecker structure
def _kron(xp, a, b):
    """kron(a, b) for 2-D arrays, row-major (array-api-extra's ``kron``, trusted path)."""
    return _kron_trusted(xp, a, b)


def _ggn_factors(xp, model, params, batch):
    """(prefix list, suffix list, Sxx) for the Kronecker forms."""
    st = _batch_stats(xp, model, params, batch, need_sxx=True, need_e=False, need_loss=False)
    pre = _prefixes(xp, params)[:-1]
    suf = _suffixes(xp, params)
    return pre, suf, st.sxx


def _cross_factors(xp, pre, suf, sxx):
    """All-pairs factors: A[i][j] = W_{>i}^T W_{>j}, C[i][j] = W_{<i} Sxx W_{<j}^T, from two
    products of stacked factors (rows/columns sliced per layer)."""
    st = xp.concat([s.T for s in suf], axis=0)  # (sum n_i, nL)
    pc = xp.concat(pre, axis=0)  # (sum n_{i-1}, n0)
    a_all = st @ st.T
    c_all = (pc @ sxx) @ pc.T
    ra = _offsets([s.shape[1] for s in suf])
    rc = _offsets([p.shape[0] for p in pre])
    return a_all, c_all, ra, rc


def _offsets(sizes):
    out, start = [], 0
    for n in sizes:
        out.append((start, start + n))
        start += n
    return out


@_itf.ggn_matrix.register(DeepLinear)
def _ggn_matrix(model, params, batch, loss=MSE(), *, xp):
    """Explicit P x P GGN through its Kronecker structure (Bernacchia 2018 eq 22):
    block (i, j) = kron(W_{>i}^T W_{>j}, W_{<i} Sxx W_{<j}^T) in the row-major flat order.

    Equal widths: one broadcasted product of shape (L, n, n, L, n^2) reshaped to (P, P);
    general widths: Kronecker blocks concatenated. Cost O(P^2) memory writes plus
    O(L^2 n^3) for the factors W_{>i}^T W_{>j} and W_{<i} Sxx W_{<j}^T.
    """
    if not isinstance(loss, MSE):
        return _itf.ggn_matrix.default(model, params, batch, loss, xp=xp)
    pre, suf, sxx = _ggn_factors(xp, model, params, batch)
    a_all, c_all, ra, rc = _cross_factors(xp, pre, suf, sxx)
    L = model.depth
    n = model.widths[0]
    if all(w == n for w in model.widths):
        # G[i, a, c, j, a', c'] = A[i, a, j, a'] C[i, c, j, c']. Expanding both factors over the
        # merged last axis (a', c') first (2 L^2 n^3 entries) lets the product run over
        # contiguous rows of length n^2 instead of n: about twice as fast as a plain broadcast.
        nn = n * n
        ae = xp.reshape(xp.broadcast_to(xp.reshape(a_all, (L, n, L, n, 1)), (L, n, L, n, n)), (L, n, 1, L, nn))
        ce = xp.reshape(xp.broadcast_to(xp.reshape(c_all, (L, n, L, 1, n)), (L, n, L, n, n)), (L, 1, n, L, nn))
        p = L * nn
        return xp.reshape(ae * ce, (p, p))
    rows = []
    for (a0, a1), (c0, c1) in zip(ra, rc):
        rows.append(
            xp.concat([_kron(xp, a_all[a0:a1, b0:b1], c_all[c0:c1, d0:d1]) for (b0, b1), (d0, d1) in zip(ra, rc)],
                      axis=1)
        )
    return xp.concat(rows, axis=0)


@_itf.ggn_blocks.register(DeepLinear)
def _ggn_blocks(model, params, batch, loss=MSE(), *, xp):
    """GGN layer blocks G_ij = kron(W_{>i}^T W_{>j}, W_{<i} Sxx W_{<j}^T) (Bernacchia 2018
    eq 22 in row-major order); ``blocks[i][j]`` has shape (P_i, P_j)."""
    if not isinstance(loss, MSE):
        return _itf.ggn_blocks.default(model, params, batch, loss, xp=xp)
    pre, suf, sxx = _ggn_factors(xp, model, params, batch)
    a_all, c_all, ra, rc = _cross_factors(xp, pre, suf, sxx)
    return tuple(
        tuple(_kron(xp, a_all[a0:a1, b0:b1], c_all[c0:c1, d0:d1]) for (b0, b1), (d0, d1) in zip(ra, rc))
        for (a0, a1), (c0, c1) in zip(ra, rc)
    )


@_itf.ggn_block_diag.register(DeepLinear)
def _ggn_block_diag(model, params, batch, loss=MSE(), *, xp):
    """Diagonal GGN blocks G_ii = kron(E_i, A_i) (Bernacchia 2018 eqs 14, 15, 22)."""
    if not isinstance(loss, MSE):
        return _itf.ggn_block_diag.default(model, params, batch, loss, xp=xp)
    pre, suf, sxx = _ggn_factors(xp, model, params, batch)
    return tuple(_kron(xp, s.T @ s, (p @ sxx) @ p.T) for p, s in zip(pre, suf))


def fisher_kron_factors(model, params, batch, loss=MSE()):
    """Kronecker factors of the diagonal Fisher (= GGN) blocks of a deep linear network.

    The former name of :func:`arraycurv.curvature.kron.kron_factors` for DeepLinear under
    MSE (kept as a thin alias): ``(f.G, f.A)`` of each of its ``KFactors``. For each layer
    i returns ``(E_i, A_i)`` with

    * A_i = <x_{i-1} x_{i-1}^T> = W_{<i} Sxx W_{<i}^T, the input covariance of layer i
      (Bernacchia 2018 eq 15), shape (n_{i-1}, n_{i-1});
    * E_i = <e_i e_i^T> = W_{>i}^T W_{>i}, the covariance of the back-propagated error
      under the model's predictive distribution N(f(x), I) (Bernacchia eq 14 with
      Sigma~ = I), shape (n_i, n_i);

    so that the diagonal GGN block is G_ii = kron(E_i, A_i) in the library's row-major
    flat order. Bernacchia eq 22 writes F_ii = <x x^T> kron <e e^T>, which is the same
    matrix for the column-major vec of W_i.

    Parameters
    ----------
    model : DeepLinear
    params : tuple of arrays
    batch : tuple (x, y) or LinearMoments
        Only Sxx is used (targets never enter the Fisher, Bernacchia Sec. 5).
    loss : MSE, optional

    Returns
    -------
    tuple of (E_i, A_i) pairs, one per layer.
    """
    if not isinstance(model, DeepLinear):
        raise ArgumentTypeError(f"model: expected a DeepLinear, got {type(model).__name__}")
    if not isinstance(loss, MSE):
        raise ArgumentTypeError(
            f"loss: expected losses.MSE() (the Kronecker factorization of the GGN blocks is exact for the "
            f"squared error only, Bernacchia eq 22), got {loss!r}"
        )
    from .kron import kron_factors

    xp = check_call(model, params, batch=batch, loss=loss)
    return tuple((f.G, f.A) for f in kron_factors.trusted(model, params, batch, loss, xp=xp))


@_itf.hessian_matrix.register(DeepLinear)
def _hessian_matrix(model, params, batch, loss=MSE(), *, xp):
    """Explicit P x P Hessian in closed form: GGN (Bernacchia eq 22) plus the J' Delta term
    (Huh 2020 Sec. 2, H = J J^T + J' Delta). For layers i < j the second term's block is

        T_ij[(a, c), (q, p)] = (W_{j-1} ... W_{i+1})_{pa} (W_{>j}^T E W_{<i}^T)_{qc},

    T_ji = T_ij^T, T_ii = 0, with E = w̄ Sxx - Syx. Other losses defer to the generic
    default (columns of the closed-form Hessian-vector product).
    """
    if not isinstance(loss, MSE):
        return _itf.hessian_matrix.default(model, params, batch, loss, xp=xp)
    pre_all = _prefixes(xp, params)
    st = _batch_stats(xp, model, params, batch, need_sxx=True, need_e=True, need_loss=False, prefix=pre_all)
    pre = pre_all[:-1]
    suf = _suffixes(xp, params)
    a_all, c_all, ra, rc = _cross_factors(xp, pre, suf, st.sxx)
    rs = _back(params, st.e)  # R_j = W_{>j}^T E
    L = model.depth
    shapes = model.shapes
    blocks = [[None] * L for _ in range(L)]
    for i in range(L):
        (a0, a1), (c0, c1) = ra[i], rc[i]
        blocks[i][i] = _kron(xp, a_all[a0:a1, a0:a1], c_all[c0:c1, c0:c1])
        ni, nim1 = shapes[i]
        m = _eye(xp, ni, params[0])  # W_{j-1} ... W_{i+1} for j = i+1
        for j in range(i + 1, L):
            (b0, b1), (d0, d1) = ra[j], rc[j]
            nj, njm1 = shapes[j]
            k = rs[j] @ pre[i].T  # (n_j, n_{i-1})
            t = xp.reshape(xp.reshape(m.T, (ni, 1, 1, njm1)) * xp.reshape(k.T, (1, nim1, nj, 1)),
                           (ni * nim1, nj * njm1))
            g = _kron(xp, a_all[a0:a1, b0:b1], c_all[c0:c1, d0:d1])
            blocks[i][j] = g + t
            blocks[j][i] = blocks[i][j].T
            m = params[j] @ m
    return xp.concat([xp.concat(row, axis=1) for row in blocks], axis=0)


# ============================================================================ null space
def null_space_direction(params, i, m):
    """Null-update of Huh 2020 Sec. 2: the tangent that is ``m W_i`` at layer i,
    ``-W_{i+1} m`` at layer i+1 and zero elsewhere.

    It is the derivative at t = 0 of the symmetry W_i -> (I + t m) W_i,
    W_{i+1} -> W_{i+1} (I + t m)^{-1}, which leaves w̄ unchanged, so it lies in the null
    space of the GGN (Hessian+): G n = 0.

    Parameters
    ----------
    params : tuple of arrays
        (W_1, ..., W_L) with L >= 2.
    i : int
        Hidden layer, 1-based: 1 <= i <= L-1 (between W_i and W_{i+1}).
    m : array (n_i, n_i)
        Any square matrix.

    Returns
    -------
    tuple of arrays shaped like ``params``.
    """
    widths = _chain_widths(params)
    L = len(widths) - 1
    check_int(i, "i", lo=1, hi=L - 1, want=f"a hidden layer index 1 <= i <= {L - 1} (L = {L})")
    xp = check_call(DeepLinear(widths), params, arrays=(("m", m, (widths[i], widths[i])),))
    out = [xp.zeros_like(p) for p in params]
    out[i - 1] = m @ params[i - 1]
    out[i] = -(params[i] @ m)
    return tuple(out)


def null_space_basis(model, params):
    """All null-updates of Huh 2020 Sec. 2 for elementary matrices m = e_a e_b^T, stacked.

    Row k is the flat tangent (row-major, like :func:`arraycurv.flatten`) of
    :func:`null_space_direction` for hidden layer i and m = e_a e_b^T, in the order
    i = 1..L-1, a = 0..n_i-1, b = 0..n_i-1. The rows span the symmetry directions
    (they need not be linearly independent, e.g. at rank-deficient weights) and every
    one is annihilated by the GGN and by the map Jacobian.

    Returns
    -------
    array (K, P), K = sum_{i=1}^{L-1} n_i^2 (K = 0 for depth 1).
    """
    xp = check_call(model, params)
    shapes = model.shapes
    P = model.num_params
    offs = _offsets([a * b for a, b in shapes])
    rows = []
    for i in range(1, model.depth):
        ni = model.widths[i]
        wi, wn = params[i - 1], params[i]
        nim1, nip1 = shapes[i - 1][1], shapes[i][0]
        eye = _eye(xp, ni, wi)
        # m W_i for m = e_a e_b^T: row a equals row b of W_i
        d1 = xp.reshape(xp.reshape(eye, (ni, 1, ni, 1)) * xp.reshape(wi, (1, ni, 1, nim1)), (ni * ni, ni * nim1))
        # -W_{i+1} m: column b equals -(column a of W_{i+1})
        d2 = -xp.reshape(xp.reshape(wn.T, (ni, 1, nip1, 1)) * xp.reshape(eye, (1, ni, 1, ni)), (ni * ni, nip1 * ni))
        parts = []
        if offs[i - 1][0] > 0:
            parts.append(xp.zeros((ni * ni, offs[i - 1][0]), dtype=wi.dtype, device=backend.device_of(wi)))
        parts += [d1, d2]
        if offs[i][1] < P:
            parts.append(xp.zeros((ni * ni, P - offs[i][1]), dtype=wi.dtype, device=backend.device_of(wi)))
        rows.append(xp.concat(parts, axis=1))
    if not rows:
        return xp.zeros((0, P), dtype=params[0].dtype, device=backend.device_of(params[0]))
    return xp.concat(rows, axis=0)
