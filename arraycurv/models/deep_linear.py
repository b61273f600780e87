"""Deep linear networks with exact, closed-form curvature (spec 2.1, 3.1-3.4).

A deep linear network (DLN) of depth L has weights W_1, ..., W_L, W_l of shape
(n_l, n_{l-1}), no biases, and computes f(x) = w̄ x with the total map
w̄ = W_L ... W_1 (Huh 2020 Sec. 2). With the mean squared error
L = (1/B) sum_b 1/2 ||f(x_b) - y_b||^2 the loss is a quadratic function of w̄ (Huh eq 1):

    L = 1/2 Tr[w̄ Sxx w̄^T] - Tr[w̄ Syx^T] + 1/2 syy,

with the batch moments Sxx = <x x^T>, Syx = <y x^T>, syy = <||y||^2>. Everything here is
written through these statistics and the partial products

    W_{<i} = W_{i-1} ... W_1   (n_{i-1}, n0),     W_{>i} = W_L ... W_{i+1}   (nL, n_i),

so that w̄ = W_{>i} W_i W_{<i} for every layer i. With the residual moment
E = w̄ Sxx - Syx = <(f(x) - y) x^T> (= Delta Sigma_x of Huh eq 1):

* gradient            g_i  = W_{>i}^T E W_{<i}^T                      (Huh Sec. 2, g = J Delta)
* GGN product         Gv_i = W_{>i}^T (sum_j W_{>j} V_j W_{<j}) Sxx W_{<i}^T   (Huh eq 3)
* Hessian product     Hv_i = Gv_i + dW_{>i}^T E W_{<i}^T + W_{>i}^T E dW_{<i}^T (Huh eq 2)
* GGN blocks          G_ij = kron(W_{>i}^T W_{>j}, W_{<i} Sxx W_{<j}^T)   (Bernacchia eq 22)

where dW_{<i}, dW_{>i} are the directional derivatives of the partial products along V.
Kronecker products and flat vectors follow the library convention: parameters are
flattened in row-major (C) order, vec_r(A X B) = kron(A, B^T) vec_r(X). Bernacchia (2018)
writes F_ij = <x_{i-1} x_{j-1}^T> kron <e_i e_j^T> for the column-major vec; the two
are the same matrix up to the row/column permutation between the orders.

Every curvature function accepts ``batch`` either as a tuple ``(x, y)`` or as
:class:`LinearMoments`. From a raw batch, the O(B) work is one pass that forms the
statistics the routine needs (Sxx, the residual moment E from the residuals f(x) - y,
which avoids the cancellation of w̄ Sxx - Syx near a minimum, and the loss); everything
after that costs the same for any batch size.

The closed forms are those of the squared error (``losses.MSE()``). With any other loss
(softmax cross-entropy) the curvature verbs defer to the generic defaults built from the
passes below, and the Hessian-vector product uses the same recursion with the loss's
output gradients and Hessians; :class:`LinearMoments` batches need the squared error.
Arguments are validated once by :func:`arraycurv.validation.check_call` (this module
registers the input/output shapes and the LinearMoments batch type).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..losses import MSE
from ..params import num_params
from ..validation import (
    ArgumentTypeError,
    batch_leaves,
    check_call,
    check_finite,
    check_ndim,
    check_shape,
    check_symmetric,
)
from . import base as _itf

__all__ = ['DeepLinear', 'LinearMoments', 'moments', 'partial_products', 'total_map', 'whitened_moments']


# ============================================================================ data types
@dataclass(frozen=True)
class DeepLinear:
    """Deep linear network f(x) = W_L ... W_1 x without biases (Huh 2020 Sec. 2;
    Bernacchia 2018 eqs 1, 11).

    Parameters
    ----------
    widths : tuple of int
        (n0, n1, ..., nL): input width, hidden widths and output width; the depth is
        L = len(widths) - 1 >= 1 and W_l has shape (n_l, n_{l-1}).

    Raises
    ------
    ValueError
        If ``widths`` is not a sequence of at least two positive integers.
    """

    widths: tuple[int, ...]

    def __post_init__(self):
        w = self.widths
        ok = isinstance(w, (tuple, list)) and len(w) >= 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in w
        )
        if not ok:
            raise ValueError(
                f"widths: expected a tuple of at least 2 positive integers (n0, ..., nL), got {w!r}"
            )
        object.__setattr__(self, "widths", tuple(int(n) for n in w))

    @property
    def depth(self) -> int:
        """Number of weight matrices L."""
        return len(self.widths) - 1

    @functools.cached_property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Shapes (n_l, n_{l-1}) of W_1, ..., W_L."""
        return tuple((self.widths[i + 1], self.widths[i]) for i in range(self.depth))

    @functools.cached_property
    def num_params(self) -> int:
        """Total number of parameters P = sum_l n_l n_{l-1}."""
        return num_params(self.shapes)


@dataclass(frozen=True)
class LinearMoments:
    """Second moments of a batch, all that the MSE loss of a deep linear network depends
    on (Huh 2020 eq 1): L = 1/2 Tr[w̄ sxx w̄^T] - Tr[w̄ syx^T] + 1/2 syy.

    Attributes
    ----------
    sxx : array (n0, n0)
        Input correlation <x x^T> = (1/B) sum_b x_b x_b^T (Huh's Sigma_x).
    syx : array (nL, n0)
        Input-output correlation <y x^T>.
    syy : 0-d array or real number
        Mean squared target norm <||y||^2>; enters only the loss value.
    count : int or None
        Batch size B the moments were formed from (None for population moments such as
        :func:`whitened_moments`).
    """

    sxx: Any
    syx: Any
    syy: Any
    count: int | None = None


def moments(x, y) -> LinearMoments:
    """Batch moments sxx = <x x^T>, syx = <y x^T>, syy = <||y||^2> (Huh 2020 eq 1).

    Parameters
    ----------
    x : array (B, n0)
        Inputs, batch on the leading axis.
    y : array (B, nL)
        Targets.

    Returns
    -------
    LinearMoments
        With ``count = B``; arrays in the namespace, dtype and device of ``x``.
    """
    xp = backend.namespace_of(x=x, y=y)
    check_ndim(x, 2, "x")
    check_ndim(y, 2, "y")
    backend.check_float(x, "x", xp)
    if y.dtype != x.dtype:
        raise TypeError(f"y: expected dtype {x.dtype} (like x), got {y.dtype}")
    b = x.shape[0]
    if b < 1:
        raise ValueError(f"x: expected a batch of at least one sample, got shape {tuple(x.shape)}")
    if y.shape[0] != b:
        raise ValueError(f"y: expected {b} rows (the batch size of x), got shape {tuple(y.shape)}")
    check_finite(x, "x", xp)
    check_finite(y, "y", xp)
    xt = x.T
    return LinearMoments(sxx=(xt @ x) / b, syx=(y.T @ x) / b, syy=xp.asarray(xp.sum(y * y) / b), count=b)


def whitened_moments(target_map, syy=None) -> LinearMoments:
    """Population moments of whitened inputs, sxx = I, syx = target_map (Huh 2020 eq 1 with
    Sigma_x = I and w̄_* = target_map).

    Parameters
    ----------
    target_map : array (nL, n0)
        The desired map w̄_* = <y x^T> Sigma_x^{-1}.
    syy : float or 0-d array, optional
        <||y||^2>. Defaults to ||target_map||_F^2 (noiseless targets y = w̄_* x), so that
        the loss is exactly 1/2 ||w̄ - w̄_*||_F^2 = 1/2 Tr[Delta Delta^T].

    Returns
    -------
    LinearMoments
        With ``count = None``.
    """
    xp = backend.namespace_of(target_map=target_map)
    check_ndim(target_map, 2, "target_map")
    backend.check_float(target_map, "target_map", xp)
    check_finite(target_map, "target_map", xp)
    dev = backend.device_of(target_map)
    eye = xp.eye(target_map.shape[1], dtype=target_map.dtype, device=dev)
    if syy is None:
        s = xp.asarray(xp.sum(target_map * target_map))
    else:
        s = xp.asarray(syy, dtype=target_map.dtype, device=dev)
        if s.ndim != 0:
            raise ValueError(f"syy: expected a scalar, got shape {tuple(s.shape)}")
        check_finite(s, "syy", xp)
    return LinearMoments(sxx=eye, syx=target_map, syy=s, count=None)


# ============================================================================ validation hooks
# The front end is validation.check_call; deep linear networks add their input/output
# shapes and their second batch type, LinearMoments (checked here once, at the boundary).
@_itf.input_shape.register(DeepLinear)
def _input_shape(model):
    return (model.widths[0],)


@_itf.output_shape.register(DeepLinear)
def _output_shape(model):
    return (model.widths[-1],)


def _is_real_scalar(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not backend.is_array(v)


@batch_leaves.register(LinearMoments)
def _moment_leaves(batch, model, loss, name="batch"):
    """Shapes of the moments against the model (sxx symmetric); the arrays to check."""
    if not isinstance(model, DeepLinear):
        raise ArgumentTypeError(f"{name}: expected a tuple (x, y) for {type(model).__name__}, got LinearMoments")
    if loss is not None and not isinstance(loss, MSE):
        raise ArgumentTypeError(
            f"{name}: expected a tuple (x, y) for loss {loss!r} (LinearMoments hold the statistics of the "
            f"squared error only, Huh eq 1), got LinearMoments"
        )
    n0, nl = model.widths[0], model.widths[-1]
    pairs = []
    for field, shape in (("sxx", (n0, n0)), ("syx", (nl, n0))):
        a = getattr(batch, field)
        check_shape(a, shape, f"{name}.{field}")
        pairs.append((f"{name}.{field}", a))
    syy = batch.syy
    if _is_real_scalar(syy):
        if not math.isfinite(float(syy)):
            raise ValueError(f"{name}.syy: expected a finite value, got {syy!r}")
    else:
        check_shape(syy, (), f"{name}.syy")
        pairs.append((f"{name}.syy", syy))
    check_symmetric(batch.sxx, f"{name}.sxx")
    return None, None, None, None, tuple(pairs)


def _chain_widths(params, name="params"):
    """Widths (n0, ..., nL) implied by a parameter tuple, checking the chain of shapes."""
    if not isinstance(params, (tuple, list)) or len(params) < 1:
        raise TypeError(f"{name}: expected a non-empty tuple of matrices (W_1, ..., W_L), got {params!r}")
    for i, p in enumerate(params):
        check_ndim(p, 2, f"{name}[{i}]")
    widths = [params[0].shape[1]] + [p.shape[0] for p in params]
    for i in range(1, len(params)):
        if params[i].shape[1] != params[i - 1].shape[0]:
            raise ValueError(
                f"{name}[{i}]: expected shape (*, {params[i - 1].shape[0]}) "
                f"(columns = rows of {name}[{i - 1}]), got {tuple(params[i].shape)}"
            )
    return tuple(widths)


def _check_chain(params, **arrays):
    """Validate a parameter chain given without its model (and extra named arrays); xp."""
    model = DeepLinear(_chain_widths(params))
    return check_call(model, params, arrays=tuple(arrays.items()))


# ============================================================================ products
def _eye(xp, n, like):
    return xp.eye(n, dtype=like.dtype, device=backend.device_of(like))


def _prefixes(xp, params):
    """[W_{<1}, ..., W_{<L}, w̄]: W_{<1} = I, W_{<i+1} = W_i W_{<i}; the last is the total map."""
    out = [_eye(xp, params[0].shape[1], params[0]), params[0]]
    for w in params[1:]:
        out.append(w @ out[-1])
    return out


def _suffixes(xp, params):
    """[W_{>1}, ..., W_{>L}]: W_{>L} = I, W_{>i-1} = W_{>i} W_i."""
    out = [_eye(xp, params[-1].shape[0], params[-1])]
    for w in params[:0:-1]:
        out.append(out[-1] @ w)
    return out[::-1]


def _back(params, top):
    """[W_{>1}^T top, ..., W_{>L}^T top] by the reverse recursion R_{i-1} = W_i^T R_i."""
    out = [top]
    for w in params[:0:-1]:
        out.append(w.T @ out[-1])
    return out[::-1]


def _outer(rs, pre):
    """(R_1, R_2 W_{<2}^T, ..., R_L W_{<L}^T): the layer gradients W_{>i}^T M W_{<i}^T from
    R_i = W_{>i}^T M (W_{<1} = I needs no product)."""
    return (rs[0],) + tuple(r @ p.T for r, p in zip(rs[1:], pre[1:]))


def total_map(params):
    """Input-output map w̄ = W_L ... W_1 of a deep linear network (Huh 2020 Sec. 2).

    Parameters
    ----------
    params : tuple of arrays
        (W_1, ..., W_L), W_l of shape (n_l, n_{l-1}).

    Returns
    -------
    array (nL, n0)
    """
    xp = _check_chain(params)
    out = params[0]
    for w in params[1:]:
        out = w @ out
    return xp.asarray(out, copy=True) if out is params[0] else out


def partial_products(params):
    """Prefix and suffix products of the weights (Bernacchia 2018 eqs 11-12).

    Returns ``(prefix, suffix)``, two tuples of length L indexed like ``params``:
    ``prefix[k] = W_{<k+1} = W_k ... W_1`` (the map into layer k+1; identity for k = 0)
    and ``suffix[k] = W_{>k+1} = W_L ... W_{k+2}`` (the map out of layer k+1; identity
    for k = L-1), so that ``suffix[k] @ params[k] @ prefix[k]`` is the total map for every
    k. In the 1-based notation of the papers, prefix[i-1] = W_{<i}, suffix[i-1] = W_{>i}.

    Parameters
    ----------
    params : tuple of arrays
        (W_1, ..., W_L).

    Returns
    -------
    prefix, suffix : tuple of arrays
        prefix[k] of shape (n_k, n0), suffix[k] of shape (nL, n_{k+1}).
    """
    xp = _check_chain(params)
    pre = _prefixes(xp, params)[:-1]
    if len(pre) > 1:
        pre[1] = xp.asarray(pre[1], copy=True)  # W_{<2} = W_1: do not hand out the caller's array
    return tuple(pre), tuple(_suffixes(xp, params))


# ============================================================================ batch statistics
class _Stats:
    """Batch statistics for the closed forms: sxx, residual moment e, loss, total map."""

    __slots__ = ("sxx", "e", "loss", "wbar", "prefix")


def _batch_stats(xp, model, params, batch, *, need_sxx, need_e, need_loss, prefix=None):
    """Statistics of ``batch`` (tuple (x, y) or LinearMoments) needed by a routine (the
    batch was validated by :func:`arraycurv.validation.check_call`).

    ``prefix`` = [W_{<1}, ..., W_{<L}, w̄] when the caller has it (needed for e and loss).
    From a raw batch: sxx = x^T x / B; residual r = x w̄^T - y, e = r^T x / B,
    loss = sum(r^2) / (2B). From moments: e = w̄ sxx - syx, loss by Huh eq 1.
    """
    st = _Stats()
    st.sxx = st.e = st.loss = None
    if (need_e or need_loss) and prefix is None:
        prefix = _prefixes(xp, params)
    st.prefix = prefix
    st.wbar = prefix[-1] if prefix is not None else None
    if isinstance(batch, LinearMoments):
        sxx, syx, syy = batch.sxx, batch.syx, batch.syy
        if _is_real_scalar(syy):
            syy = xp.asarray(float(syy), dtype=params[0].dtype, device=backend.device_of(params[0]))
        st.sxx = sxx
        if need_e or need_loss:
            ws = st.wbar @ sxx
            if need_e:
                st.e = ws - syx
            if need_loss:
                st.loss = xp.asarray(0.5 * xp.sum(ws * st.wbar) - xp.sum(st.wbar * syx) + 0.5 * syy)
        return st
    x, y = batch
    b = x.shape[0]
    if need_sxx:
        st.sxx = (x.T @ x) / b
    if need_e or need_loss:
        r = x @ st.wbar.T - y
        if need_e:
            st.e = (r.T @ x) / b
        if need_loss:
            st.loss = xp.asarray(0.5 * xp.sum(r * r) / b)
    return st


# ============================================================================ interface: passes
@_itf.param_shapes.register(DeepLinear)
def _param_shapes(model):
    """Shapes (n_l, n_{l-1}) of W_1, ..., W_L."""
    return model.shapes


@_itf.init_params.register(DeepLinear)
def _init_params(model, seed, xp=None, *, dtype=None, device=None, scale=1.0, method="gaussian"):
    """Seeded weights: ``method="gaussian"`` draws W_l ~ N(0, scale^2 / n_{l-1}) entrywise;
    ``method="orthogonal"`` gives (semi-)orthogonal W_l times ``scale`` (Saxe et al. 2013,
    Huh S.I.3). Same values on every namespace for the same seed."""
    if xp is None:
        xp = backend.namespace_by_name("numpy")
    elif isinstance(xp, str):
        raise ArgumentTypeError(
            f"xp: expected an array namespace (e.g. array_api_strict, or "
            f"arraycurv.backend.namespace_by_name({xp!r})), got the string {xp!r}"
        )
    dt = backend.float_dtype(xp, dtype)
    g = backend.rng(seed)
    if method == "gaussian":
        return tuple(
            backend.normal(g, s, xp, dtype=dt, device=device, scale=scale / math.sqrt(s[1])) for s in model.shapes
        )
    if method == "orthogonal":
        return tuple(backend.orthogonal(g, s, xp, gain=scale, dtype=dt, device=device) for s in model.shapes)
    raise ValueError(f"method: expected 'gaussian' or 'orthogonal', got {method!r}")


@_itf.forward.register(DeepLinear)
def _forward(model, params, x, *, xp):
    """f(x) = x W_1^T ... W_L^T for a batch x of shape (B, n0); returns (B, nL)."""
    h = x
    for w in params:
        h = h @ w.T
    return h


@_itf.jvp.register(DeepLinear)
def _jvp(model, params, x, tangent, *, xp):
    """Tangent pass: h_l = h_{l-1} W_l^T, t_l = t_{l-1} W_l^T + h_{l-1} V_l^T with t_0 = 0.

    Returns ``(f(x), J tangent)``, both (B, nL).
    """
    h = x @ params[0].T
    t = x @ tangent[0].T
    for w, v in zip(params[1:], tangent[1:]):
        t = t @ w.T + h @ v.T
        h = h @ w.T
    return h, t


@_itf.vjp.register(DeepLinear)
def _vjp(model, params, x, cotangent, *, xp):
    """Reverse pass: with c_L = cotangent, grad_l = c_l^T h_{l-1}, c_{l-1} = c_l W_l.

    Returns sum_b J_b^T cotangent_b shaped like ``params`` (no 1/B).
    """
    hs = [x]
    for w in params[:-1]:
        hs.append(hs[-1] @ w.T)
    c = cotangent
    grads = []
    for w, h in zip(params[::-1], hs[::-1]):
        grads.append(c.T @ h)
        c = c @ w
    return tuple(grads[::-1])
