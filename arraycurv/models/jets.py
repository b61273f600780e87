"""Taylor-mode (jet) forward passes of order <= 3, and third-order loss terms.

A *jet* of order K of a quantity z along a direction u of the parameters is the tuple
``(z_0, z_1, ..., z_K)`` of its directional derivatives z_k = d^k/dt^k z(theta + t u) at
t = 0 (derivatives, not Taylor coefficients: z(t) = sum_k z_k t^k / k!). It is what the
GroupedNewton summary tensors need beyond the Hessian (Wolinski, spec grouped_newton.md
GN-6, GN-7 and 2.2): d^3 L[u, u, u] along each restricted direction u^(s).

* :func:`taylor` -- generic over the model families: the output jet
  ``(f, d f[u], d^2 f[u, u], d^3 f[u, u, u])`` for a batch ``x``;
* :func:`layer_jet` -- generic over the layers (every layer of
  :mod:`arraycurv.models.layers`; :class:`~arraycurv.models.DeepLinear` goes through a
  chain of bias-free Dense layers);
* :func:`loss_jet` -- generic over the losses: ``(L, d L, d^2 L, d^3 L)`` of the mean loss
  along an output jet (MSE and softmax cross-entropy);
* :func:`activation_jet_derivatives` -- phi, phi', phi'', phi''' of every activation.

Several directions are pushed through at once: ``u`` (and every jet coefficient of order
k >= 1) may carry leading axes ``(m, ...)`` in front of the parameter shape (of the batch
axis); the zeroth coefficient has none. Inside the passes a coefficient may be ``None``,
meaning zero; the public :func:`taylor` returns arrays.

Rules used (Leibniz and Faa di Bruno; params are affine in t: theta + t u):

* Dense y = x W^T + b:  y_k = x_k W^T + k x_{k-1} dW^T (+ db for k = 1); Conv2d alike;
* elementwise phi:      y_1 = phi' x_1, y_2 = phi'' x_1^2 + phi' x_2,
  y_3 = phi''' x_1^3 + 3 phi'' x_1 x_2 + phi' x_3;
* linear layers (pooling, Flatten, and max pooling as the selection fixed at x_0): y_k = A x_k;
* LayerNorm: composition of jet means, products and (v + eps)^(-1/2).

Cost model (m directions, order K, F = cost of one forward pass of the batch). A Dense or
Conv2d layer costs one matmul of the forward size per nonzero input coefficient
x_1..x_K and one per nonzero x_0..x_{K-1} paired with a parameter tangent, i.e. at most
2K m F_layer; when the direction lives only in this layer (x_k = 0 at its input, the
restricted directions of the summary tensors) it costs m F_layer. Activations cost
O(K^2) elementwise products. A full order-3 jet of the network along m directions is
therefore at most about 6 m forward passes (3 m when no layer tangent is paired with an
input coefficient beyond the first layer), against 2-3 m gradients for m nested
reverse passes.
"""

from __future__ import annotations

import functools
import math

from .. import backend
from ..losses import MSE, SoftmaxCrossEntropy, _softmax_parts
from ..validation import check_call, check_int
from . import layers as _layers
from .base import param_shapes
from .deep_linear import DeepLinear
from .layers import Activation, AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, layer_forward, layer_jvp
from .sequential import Sequential, _split

try:  # added by the restructure; absent in older trees
    from .layers import LayerNorm
except ImportError:  # pragma: no cover
    LayerNorm = None

__all__ = ["activation_jet_derivatives", "layer_jet", "loss_jet", "taylor"]

MAX_ORDER = 3


# ----------------------------------------------------------------- jet arithmetic
_add = _layers._add  # sum of the non-None terms


def _mul(a, b):
    return None if a is None or b is None else a * b


def _jet_mul(a, b):
    """Leibniz: (a b)_k = sum_j C(k, j) a_j b_{k-j} for jets a, b of the same order."""
    out = []
    for k in range(len(a)):
        out.append(_add(*(_scale(math.comb(k, j), _mul(a[j], b[k - j])) for j in range(k + 1))))
    return tuple(out)


def _scale(c, t):
    return None if t is None else (t if c == 1 else c * t)


def _jet_unary(derivs, x_jet):
    """Faa di Bruno for y = phi(x) up to order 3, with derivs = (phi', phi'', phi''') at x_0."""
    k = len(x_jet) - 1
    if k > MAX_ORDER:
        raise ValueError(f"order: expected at most {MAX_ORDER}, got {k}")
    x1 = x_jet[1] if k >= 1 else None
    x2 = x_jet[2] if k >= 2 else None
    x3 = x_jet[3] if k >= 3 else None
    d1, d2, d3 = derivs
    out = []
    if k >= 1:
        out.append(_mul(d1, x1))
    sq = _mul(x1, x1) if k >= 2 else None
    if k >= 2:
        out.append(_add(_mul(d2, sq), _mul(d1, x2)))
    if k >= 3:
        out.append(_add(_mul(d3, _mul(sq, x1)), _mul(3.0 * d2, _mul(x1, x2)), _mul(d1, x3)))
    return tuple(out)


def _lead(x_jet, dp, p):
    """Leading (direction) axes of a jet and a parameter tangent."""
    x0 = x_jet[0]
    for t in x_jet[1:]:
        if t is not None:
            return tuple(t.shape[: t.ndim - x0.ndim])
    if dp is not None:
        for d, q in zip(dp, p):
            if d is not None:
                return tuple(d.shape[: d.ndim - q.ndim])
    return None


def _fill(xp, out, lead):
    """Broadcast the nonzero coefficients of order >= 1 to (*lead, *y0.shape)."""
    y0 = out[0]
    res = [y0]
    for t in out[1:]:
        if t is not None and tuple(t.shape) != tuple(lead) + tuple(y0.shape):
            t = xp.broadcast_to(t, tuple(lead) + tuple(y0.shape))
        res.append(t)
    return tuple(res)


# ----------------------------------------------------------------- activations
def _third_tanh(xp, x, d):
    y, d1 = d[0], d[1]
    return d1 * (6.0 * y * y - 2.0)


def _third_sigmoid(xp, x, d):
    y, d1 = d[0], d[1]
    return d1 * (1.0 - 6.0 * y + 6.0 * y * y)


def _third_zero(xp, x, d):
    return xp.zeros_like(x)


def _third_elu(xp, x, d):
    return d[2]  # exp(x) for x <= 0, 0 for x > 0: phi''' = phi''


def _third_softplus(xp, x, d):
    s = d[1]
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _third_gelu(xp, x, d):
    # 0.5 x (1 + T), T = tanh(u), u = c (x + a x^3): phi''' = 1.5 T'' + 0.5 x T''' with
    # T'' = s (u'' - 2 t u'^2), T''' = s (u''' - 6 t u' u'' + (4 t^2 - 2 s) u'^3), s = 1 - t^2
    c, a = math.sqrt(2.0 / math.pi), 0.044715
    u = c * (x + a * x * x * x)
    du, d2u, d3u = c * (1.0 + 3.0 * a * x * x), 6.0 * c * a * x, 6.0 * c * a
    t = xp.tanh(u)
    s = 1.0 - t * t
    t2 = s * (d2u - 2.0 * t * du * du)
    t3 = s * (d3u - 6.0 * t * du * d2u + (4.0 * t * t - 2.0 * s) * du * du * du)
    return 1.5 * t2 + 0.5 * x * t3


#: name -> phi''' given (phi, phi', phi'') at x.
_THIRD = {
    "identity": _third_zero,
    "relu": _third_zero,
    "tanh": _third_tanh,
    "sigmoid": _third_sigmoid,
    "elu": _third_elu,
    "softplus": _third_softplus,
    "gelu": _third_gelu,
}


def activation_jet_derivatives(name: str, x):
    """phi(x), phi'(x), phi''(x), phi'''(x) of the activation ``name``, elementwise.

    The first three come from :func:`arraycurv.models.layers.activation_derivatives`;
    phi''' is tanh: phi' (6 phi^2 - 2); sigmoid: phi' (1 - 6 phi + 6 phi^2); elu: phi''
    (exp(x) for x <= 0); softplus: s (1 - s) (1 - 2 s) with s the sigmoid; gelu (tanh
    form): the chain rule through tanh; identity and relu: 0.

    Raises
    ------
    NotImplementedError
        For an activation without a registered third derivative.
    """
    d = _layers.activation_derivatives(name, x, order=2)
    if name not in _THIRD:
        raise NotImplementedError(f"name: expected an activation with a third derivative {tuple(_THIRD)}, "
                                  f"got {name!r}")
    return (*d, _THIRD[name](backend.namespace_of(x=x), x, d))


# ------------------------------------------------------------------ layer jets
def _unknown(layer):
    raise TypeError(f"layer: layer_jet is not implemented for {type(layer).__name__}; register it, got {layer!r}")


@functools.singledispatch
def layer_jet(layer, p, x_jet, dp, *, primal=None):
    """Output jet of ``layer`` for the input jet ``x_jet`` and the parameter tangent ``dp``.

    Parameters
    ----------
    layer
        A layer dataclass.
    p : tuple of arrays
        The layer's parameters.
    x_jet : tuple
        ``(x_0, x_1, ..., x_K)``: x_0 (B, *in_shape), x_k (*lead, B, *in_shape) or None (zero).
    dp : tuple or None
        The direction on the layer's parameters (params move as p + t dp): a tuple like
        ``p`` whose entries are arrays (*lead, *shape) or None; None for no tangent.
    primal : tuple, optional
        ``(y_0, cache)`` of :func:`~arraycurv.models.layers.layer_forward` at x_0, when the
        caller already has it (saves the forward pass).

    Returns
    -------
    tuple
        ``(y_0, y_1, ..., y_K)`` with None for coefficients that are zero.
    """
    _unknown(layer)


def _primal(layer, p, x0, primal):
    return primal if primal is not None else layer_forward(layer, p, x0)


@layer_jet.register
def _(layer: Dense, p, x_jet, dp, *, primal=None):
    y0, _ = _primal(layer, p, x_jet[0], primal)
    xp = backend.namespace_of(x=x_jet[0])
    wt = xp.matrix_transpose(p[0])
    dw = None if dp is None else dp[0]
    db = dp[1] if dp is not None and layer.bias else None
    dwt = None if dw is None else xp.matrix_transpose(dw)
    out = [y0]
    for k in range(1, len(x_jet)):
        t = None if x_jet[k] is None else xp.matmul(x_jet[k], wt)
        if dwt is not None and x_jet[k - 1] is not None:
            t = _add(t, _scale(k, xp.matmul(x_jet[k - 1], dwt)))
        if k == 1 and db is not None:
            t = _add(t, db[..., None, :])
        out.append(t)
    return _fill(xp, out, _lead(x_jet, dp, p) or ())


def _conv_apply(xp, layer, k2, x, cache):
    """Convolution (no bias) of ``x`` (..., B, C, H, W) with kernel matrix k2 (..., o, CKK)."""
    cols = cache.cols if x is None else _layers._conv_cols(xp, layer, x, cache.out_hw)
    return xp.matmul(k2, cols)


@layer_jet.register
def _(layer: Conv2d, p, x_jet, dp, *, primal=None):
    y0, cache = _primal(layer, p, x_jet[0], primal)
    xp = backend.namespace_of(x=x_jet[0])
    o = layer.out_channels
    k2 = xp.reshape(p[0], (o, -1))
    dk = None if dp is None else dp[0]
    dk2 = None if dk is None else xp.reshape(dk, tuple(dk.shape[: dk.ndim - 4]) + (1, o, k2.shape[1]))
    db = dp[1] if dp is not None and layer.bias else None
    out = [y0]
    for k in range(1, len(x_jet)):
        t = None if x_jet[k] is None else _conv_apply(xp, layer, k2, x_jet[k], cache)
        if dk2 is not None and x_jet[k - 1] is not None:
            src = None if k == 1 else x_jet[k - 1]
            t = _add(t, _scale(k, _conv_apply(xp, layer, dk2, src, cache)))
        if t is not None:
            t = xp.reshape(t, tuple(t.shape[:-2]) + (o, *cache.out_hw))
        if k == 1 and db is not None:
            t = _add(t, db[..., None, :, None, None])
        out.append(t)
    return _fill(xp, out, _lead(x_jet, dp, p) or ())


def _from_primal(name, y, d1):
    """Second and third derivatives from phi and phi' where that is exact and cheaper."""
    if name == "tanh":
        return -2.0 * y * d1, d1 * (6.0 * y * y - 2.0)
    if name == "sigmoid":
        return d1 * (1.0 - 2.0 * y), d1 * (1.0 - 6.0 * y + 6.0 * y * y)
    return None


@layer_jet.register
def _(layer: Activation, p, x_jet, dp, *, primal=None):
    x0 = x_jet[0]
    if len(x_jet) == 1:
        return (layer_forward(layer, p, x0)[0] if primal is None else primal[0],)
    cache = None if primal is None else primal[1]
    fast = None
    if isinstance(cache, tuple) and len(cache) == 2:  # (x, phi') of layers.layer_forward
        fast = _from_primal(layer.name, primal[0], cache[1])
    if fast is not None:
        y0, d1, (d2, d3) = primal[0], cache[1], fast
    else:
        y0, d1, d2, d3 = activation_jet_derivatives(layer.name, x0)
        y0 = y0 if primal is None else primal[0]
    return (y0, *_jet_unary((d1, d2, d3), x_jet))


@layer_jet.register(AvgPool2d)
@layer_jet.register(MaxPool2d)
@layer_jet.register(Flatten)
def _(layer, p, x_jet, dp, *, primal=None):
    # linear maps (max pooling: the selection fixed at x_0): y_k = A x_k
    y0, cache = _primal(layer, p, x_jet[0], primal)
    return (y0, *(None if t is None else layer_jvp(layer, p, cache, None, t) for t in x_jet[1:]))


def _inv_sqrt_derivs(z):
    """(f', f'', f''') of f(z) = z^(-1/2)."""
    r = 1.0 / z
    f = r ** 0.5
    return (-0.5 * f * r, 0.75 * f * r * r, -1.875 * f * r * r * r)


def _layer_norm_jet(layer, p, x_jet, dp, *, primal=None):
    xp = backend.namespace_of(x=x_jet[0])
    axes = tuple(range(-len(layer.shape), 0))

    def mean(t):
        return None if t is None else xp.mean(t, axis=axes, keepdims=True)

    c = tuple(None if t is None else t - mean(t) for t in x_jet)
    v = tuple(mean(t) for t in _jet_mul(c, c))
    s_derivs = _inv_sqrt_derivs(v[0] + layer.eps)
    s = ((v[0] + layer.eps) ** -0.5, *_jet_unary(s_derivs, v))
    n = _jet_mul(c, s)
    gamma, beta = p
    dg = None if dp is None else dp[0]
    dbeta = None if dp is None else dp[1]
    y0 = primal[0] if primal is not None else n[0] * gamma + beta
    out = [y0]
    for k in range(1, len(x_jet)):
        t = None if n[k] is None else n[k] * gamma
        if dg is not None:
            t = _add(t, _scale(k, _mul(n[k - 1], _expand_param(xp, dg, layer))))
        if k == 1 and dbeta is not None:
            t = _add(t, _expand_param(xp, dbeta, layer))
        out.append(t)
    return _fill(xp, out, _lead(x_jet, dp, p) or ())


def _expand_param(xp, d, layer):
    """(*lead, *shape) -> (*lead, 1, *shape): broadcast over the batch axis."""
    nl = d.ndim - len(layer.shape)
    return xp.reshape(d, tuple(d.shape[:nl]) + (1,) + tuple(layer.shape))


if LayerNorm is not None:
    layer_jet.register(LayerNorm, _layer_norm_jet)


# ------------------------------------------------------------------ model jets
def _check_order(order):
    return check_int(order, "order", lo=0, hi=MAX_ORDER, want=f"an int in [0, {MAX_ORDER}]")


@functools.singledispatch
def taylor(model, params, x, u, order=3):
    """Output jet ``(f, d f[u], d^2 f[u, u], ..., d^order f[u, ..., u])`` of ``model``.

    Taylor-mode forward pass (Griewank & Walther 2008, ch. 13) along the parameter
    direction ``u`` (theta + t u), up to ``order`` <= 3: what the GroupedNewton order-3
    summary (spec grouped_newton.md GN-6, 2.2) needs.

    Parameters
    ----------
    model
        A model of arraycurv (Sequential MLP/CNN, DeepLinear).
    params : tuple of arrays
    x : array (B, *input_shape)
    u : tuple of arrays
        Shaped like ``params``; every tensor may carry the same leading axes ``(m, ...)``
        (m directions at once).
    order : int
        0 to 3.

    Returns
    -------
    tuple of arrays
        f of shape (B, k), then d^j f of shape (*lead, B, k) for j = 1..order.
    """
    raise TypeError(f"model: taylor is not implemented for {type(model).__name__}; expected a Sequential or "
                    f"DeepLinear, got {model!r}")


def _zeros_like_lead(xp, y0, lead):
    return xp.zeros(tuple(lead) + tuple(y0.shape), dtype=y0.dtype, device=backend.device_of(y0))


def _tangent_lead(model, u):
    t, s = u[0], param_shapes(model)[0]
    return tuple(t.shape[: t.ndim - len(s)])


@taylor.register
def _(model: Sequential, params, x, u, order=3):
    order = _check_order(order)
    xp = check_call(model, params, x=x, tangent=u, tangent_lead=True, names={"tangent": "u"})
    return _taylor_sequential(xp, model, params, x, u, order)


def _taylor_sequential(xp, model, params, x, u, order):
    jet = (x,) + (None,) * order
    for layer, p, dp in zip(model.layers, _split(model, tuple(params)), _split(model, tuple(u))):
        jet = layer_jet(layer, p, jet, dp if len(dp) else None)
    lead = _tangent_lead(model, u)
    return (jet[0],) + tuple(_zeros_like_lead(xp, jet[0], lead) if t is None else t for t in jet[1:])


@functools.lru_cache(maxsize=64)
def _dense_chain(model: DeepLinear) -> Sequential:
    w = model.widths
    return Sequential(tuple(Dense(w[i], w[i + 1], bias=False) for i in range(len(w) - 1)), (w[0],))


@taylor.register
def _(model: DeepLinear, params, x, u, order=3):
    order = _check_order(order)
    xp = check_call(model, params, x=x, tangent=u, tangent_lead=True, names={"tangent": "u"})
    return _taylor_sequential(xp, _dense_chain(model), params, x, u, order)


# ------------------------------------------------------------------- loss jets
@functools.singledispatch
def loss_jet(loss, f_jet, y):
    """Jet ``(L, d L, ..., d^K L)`` of the mean loss along the output jet ``f_jet``.

    ``f_jet = (f_0, f_1, ..., f_K)`` with f_0 (B, k) and f_j (*lead, B, k) (or None for
    zero), K <= 3; ``y`` the targets. Returns 0-d L and arrays of shape ``lead`` for
    the derivatives (chain rule through the per-sample loss, mean over the batch).
    """
    raise TypeError(f"loss: expected MSE() or SoftmaxCrossEntropy(), got {loss!r} in loss_jet")


def _bsum(xp, t, nb):
    """Sum over the batch and output axes, divided by the batch size."""
    return xp.sum(t, axis=(-2, -1)) / nb


def _zero_lead(xp, f0, f_jet):
    for t in f_jet[1:]:
        if t is not None:
            return xp.zeros(tuple(t.shape[:-2]), dtype=f0.dtype, device=backend.device_of(f0))
    return xp.zeros((), dtype=f0.dtype, device=backend.device_of(f0))


def _or_zero(v, zero):
    return zero if v is None else v + zero


@loss_jet.register
def _(loss: MSE, f_jet, y):
    """l = 1/2 ||f - y||^2: L_1 = <r, f_1>, L_2 = <f_1, f_1> + <r, f_2>,
    L_3 = 3 <f_1, f_2> + <r, f_3> with r = f_0 - y (batch means)."""
    f0 = f_jet[0]
    xp = backend.namespace_of(f0=f0, y=y)
    nb = f0.shape[0]
    r = f0 - y
    f = tuple(f_jet) + (None,) * (MAX_ORDER + 1 - len(f_jet))
    zero = _zero_lead(xp, f0, f_jet)
    terms = [
        _mul(r, f[1]),
        _add(_mul(f[1], f[1]), _mul(r, f[2])),
        _add(_scale(3, _mul(f[1], f[2])), _mul(r, f[3])),
    ]
    out = [0.5 * xp.sum(r * r) / nb]
    for k in range(1, len(f_jet)):
        out.append(_or_zero(None if terms[k - 1] is None else _bsum(xp, terms[k - 1], nb), zero))
    return tuple(out)


@loss_jet.register
def _(loss: SoftmaxCrossEntropy, f_jet, y):
    """l = logsumexp(f) - f[y]. With p = softmax(f_0), E[a] = <p, a> and centred
    c_1 = f_1 - E[f_1]: L_1 = <p - e_y, f_1>, L_2 = E[c_1 f_1] + <p - e_y, f_2>,
    L_3 = E[c_1^3] + 3 E[c_1 f_2] + <p - e_y, f_3> (cumulants of the logits under p)."""
    f0 = f_jet[0]
    xp = backend.namespace_of(f0=f0, y=y)
    nb = f0.shape[0]
    m, p, q, amax, log_s = _softmax_parts(xp, f0)
    hot = xp.astype(xp.astype(y, xp.int64)[:, None] == xp.arange(f0.shape[1], device=backend.device_of(f0))[None, :],
                    f0.dtype)
    g = xp.where(hot > 0, -q, p)
    value = xp.sum((m[:, 0] - xp.sum(hot * f0, axis=-1)) + log_s[:, 0]) / nb
    f = tuple(f_jet) + (None,) * (MAX_ORDER + 1 - len(f_jet))
    c1 = None if f[1] is None else f[1] - xp.sum(p * f[1], axis=-1, keepdims=True)
    zero = _zero_lead(xp, f0, f_jet)
    terms = [
        _mul(g, f[1]),
        _add(_mul(p, _mul(c1, f[1])), _mul(g, f[2])),
        _add(_mul(p, _mul(c1, _mul(c1, c1))), _scale(3, _mul(p, _mul(c1, f[2]))), _mul(g, f[3])),
    ]
    out = [value]
    for k in range(1, len(f_jet)):
        out.append(_or_zero(None if terms[k - 1] is None else _bsum(xp, terms[k - 1], nb), zero))
    return tuple(out)
