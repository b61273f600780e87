"""Layers with hand-written forward, tangent (JVP), reverse (VJP) and R-operator passes
(spec 2.2-2.4), written only against the array API standard.

A layer is a small frozen dataclass describing its architecture; its parameters are a
tuple of arrays (``()`` for layers without parameters). Every pass is a generic function
dispatching on the layer type (``functools.singledispatch``), so a new layer is added by
registering

* :func:`layer_param_shapes` -- shapes of its parameter tensors;
* :func:`layer_output_shape` -- output shape (without batch) for an input shape;
* :func:`layer_forward` -- ``(y, cache)`` for a batch ``x``;
* :func:`layer_jvp` -- tangent of the output for tangents of the parameters *and* input;
* :func:`layer_vjp` -- cotangents of the input and of the parameters;
* :func:`layer_rop_vjp` -- Pearlmutter's (1994) R-operator applied to the backward pass:
  given the forward tangents ``(dp, dx)``, the output cotangent ``dy`` and its
  R-derivative ``rdy``, returns ``R{dx}`` and ``R{dp}``. It is the backward pass of the
  linearized cotangent ``rdy`` plus the second-order terms of the layer (the bilinear
  terms of Dense/Conv2d, the phi'' term of activations, nothing for linear or piecewise
  linear layers).

Shapes: activations have the batch on the leading axis, ``x`` of shape ``(B, *in_shape)``
with ``in_shape = (n,)`` for vectors and ``(C, H, W)`` for images (NCHW). Tangents,
cotangents and R-derivatives may carry extra *leading* axes in front of the batch
(``(*lead, B, ...)`` for activations and ``(*lead, *p.shape)`` for parameter tangents), so
that several directions are pushed through at once; parameter cotangents keep those
axes and sum over the batch axis (``params_mode="sum"``) or keep it
(``params_mode="per_sample"``, per-sample gradients of shape ``(*lead, B, *p.shape)``).
``None`` as a tangent means zero.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..validation import check_params
from ._image import _col2im, _im2col, _pad2d

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "MaxPool2d",
    "activation_derivatives",
    "layer_forward",
    "layer_jvp",
    "layer_output_shape",
    "layer_param_shapes",
    "layer_rop_vjp",
    "layer_vjp",
]


#: Names accepted by :class:`Activation`.
ACTIVATIONS = ("identity", "tanh", "relu", "elu", "sigmoid")


_PARAMS_MODES = ("sum", "per_sample", "none")


# ------------------------------------------------------------------------ helpers
def _pos_int(v: Any, name: str, *, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        want = "a non-negative int" if allow_zero else "a positive int"
        raise ValueError(f"{name}: expected {want}, got {v!r}")
    return v


def _pair(v: Any, name: str, *, allow_zero: bool = False) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}")
        return (_pos_int(v[0], name, allow_zero=allow_zero), _pos_int(v[1], name, allow_zero=allow_zero))
    v = _pos_int(v, name, allow_zero=allow_zero)
    return (v, v)


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_input(layer, x, in_ndim: int, feature_shape=None) -> None:
    """``x`` must be (B, *feature_shape) with ``in_ndim`` feature axes."""
    if not hasattr(x, "shape") or x.ndim != 1 + in_ndim or (
        feature_shape is not None and tuple(x.shape[1:]) != tuple(feature_shape)
    ):
        want = "(*, " + ", ".join(str(s) for s in feature_shape) + ")" if feature_shape else f"{1 + in_ndim} axes"
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"x: expected shape {want} for the input of {layer!r}, got {got}")


def _check_layer_params(layer, p):
    check_params(p, layer_param_shapes(layer), "params")
    if len(p):
        return backend.namespace_of(params=tuple(p))
    return None


def _check_trailing(a, shape, name: str, layer) -> None:
    shape = tuple(shape)
    if a is None:
        return
    if a.ndim < len(shape) or tuple(a.shape[a.ndim - len(shape):]) != shape:
        raise ValueError(
            f"{name}: expected shape (..., {', '.join(map(str, shape))}) for {layer!r}, got {tuple(a.shape)}"
        )


def _check_tangent(dp, p, name: str, layer) -> None:
    if dp is None:
        return
    if not isinstance(dp, (tuple, list)) or len(dp) != len(p):
        raise ValueError(f"{name}: expected None or a tuple of {len(p)} arrays like params of {layer!r}, got {dp!r}")
    for i, (t, q) in enumerate(zip(dp, p)):
        _check_trailing(t, q.shape, f"{name}[{i}]", layer)


def _check_mode(params_mode: str) -> None:
    if params_mode not in _PARAMS_MODES:
        raise ValueError(f"params_mode: expected one of {_PARAMS_MODES}, got {params_mode!r}")


def _add(*terms):
    """Sum of the non-None terms (None if all are None)."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


def _ns(**arrays):
    return backend.namespace_of(**{k: v for k, v in arrays.items() if v is not None})


def _lead(a, n_trailing: int) -> tuple[int, ...]:
    return tuple(a.shape[: a.ndim - n_trailing])


def _batch_sum_matmul(xp, a, c):
    """sum_b a[..., b, :, :] @ c[..., b, :, :] for a (*la, B, m, L) and c (*lc, B, L, n)."""
    nla, nlc = a.ndim - 3, c.ndim - 3
    b, m, el = a.shape[-3:]
    n = c.shape[-1]
    a2 = xp.permute_dims(a, tuple(range(nla)) + (nla + 1, nla, nla + 2))
    a2 = xp.reshape(a2, tuple(a.shape[:nla]) + (m, b * el))
    c2 = xp.reshape(c, tuple(c.shape[:nlc]) + (b * el, n))
    return xp.matmul(a2, c2)


# ------------------------------------------------------------------------ layers
@dataclass(frozen=True)
class Dense:
    """Fully connected layer y = x W^T + b (spec Conventions: W of shape (n_out, n_in)).

    Parameters ``(W, b)`` with W (n_out, n_in), b (n_out,); ``(W,)`` if ``bias=False``.
    """

    n_in: int
    n_out: int
    bias: bool = True

    def __post_init__(self):
        _pos_int(self.n_in, "n_in")
        _pos_int(self.n_out, "n_out")


@dataclass(frozen=True)
class Activation:
    """Elementwise nonlinearity phi, one of :data:`ACTIVATIONS` (no parameters).

    elu uses alpha = 1; relu'(0) = 0 (the derivative is taken from the right only for
    x > 0), and the second derivative of relu is 0 everywhere.
    """

    name: str

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"name: expected an activation in {ACTIVATIONS}, got {self.name!r}")


@dataclass(frozen=True)
class Conv2d:
    """2-D convolution (cross-correlation, as in deep-learning libraries), NCHW layout.

    y[b, o, u, v] = b_o + sum_{c,i,j} K[o, c, i, j] x_pad[b, c, s_h u + i, s_w v + j],
    with x_pad the input padded by ``padding`` zeros on each side. Parameters ``(K, b)``
    with K (out_channels, in_channels, kh, kw), b (out_channels,). ``kernel_size``,
    ``stride`` and ``padding`` accept an int or a pair and are stored as pairs.
    Implemented as an im2col gather (static slices + one stack) and one matmul.
    """

    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    bias: bool = True

    def __post_init__(self):
        _pos_int(self.in_channels, "in_channels")
        _pos_int(self.out_channels, "out_channels")
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "padding", allow_zero=True))


@dataclass(frozen=True)
class _Pool2d:
    """Window geometry shared by the pooling layers: ``kernel_size`` and ``stride``
    (each an int or a pair; the stride defaults to the kernel)."""

    kernel_size: Any
    stride: Any = None

    def __post_init__(self):
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        s = self.kernel_size if self.stride is None else _pair(self.stride, "stride")
        object.__setattr__(self, "stride", s)


@dataclass(frozen=True)
class AvgPool2d(_Pool2d):
    """Average pooling over kh x kw windows with the given stride (default: the kernel),
    no padding; windows that do not fit at the bottom/right edge are dropped (floor)."""


@dataclass(frozen=True)
class MaxPool2d(_Pool2d):
    """Max pooling over kh x kw windows (stride defaults to the kernel, no padding).

    The derivative routes each window's cotangent to its argmax. Ties are broken by the
    *first* maximal entry in row-major order within the window (``xp.argmax`` semantics),
    so the pass is a fixed linear selection at the current input (its second derivative
    is zero almost everywhere). Overlapping windows add their contributions.
    """


@dataclass(frozen=True)
class Flatten:
    """Reshape (B, *shape) -> (B, prod(shape)) in C order (no parameters)."""


# ------------------------------------------------------------ generic functions
def _unknown(fn: str, layer):
    raise TypeError(
        f"layer: {fn} is not implemented for {type(layer).__name__}; expected one of Dense, Activation, "
        f"Conv2d, AvgPool2d, MaxPool2d, Flatten (or register it), got {layer!r}"
    )


@functools.singledispatch
def layer_param_shapes(layer) -> tuple[tuple[int, ...], ...]:
    """Shapes of the parameter tensors of ``layer`` in order (``()`` if it has none)."""
    _unknown("layer_param_shapes", layer)


@functools.singledispatch
def layer_output_shape(layer, input_shape) -> tuple[int, ...]:
    """Output shape (without batch) of ``layer`` for an input of shape ``input_shape``.

    Raises ``ValueError`` naming ``input_shape`` (or ``kernel_size`` when a kernel does not
    fit into the padded image).
    """
    _unknown("layer_output_shape", layer)


@functools.singledispatch
def layer_forward(layer, p, x):
    """Forward pass: ``(y, cache)`` for a batch ``x`` of shape (B, *in_shape).

    ``p`` is the layer's tuple of parameters; ``cache`` is an opaque object holding what
    the derivative passes need (e.g. the input, its im2col gather, an argmax mask).
    """
    _unknown("layer_forward", layer)


@functools.singledispatch
def layer_jvp(layer, p, cache, dp, dx):
    """Tangent of the output: dy = (d y / d p) dp + (d y / d x) dx.

    ``dp`` is a tuple like ``p`` (or None for zero), ``dx`` like the input (or None);
    both may carry leading axes. Returns None when both are None.
    """
    _unknown("layer_jvp", layer)


@functools.singledispatch
def layer_vjp(layer, p, cache, dy, *, params_mode="sum", input_grad=True):
    """Reverse pass: ``(dx, dp)`` with dx = (dy/dx)^T dy and dp = (dy/dp)^T dy.

    ``dy`` has shape (*lead, B, *out_shape). ``params_mode``: ``"sum"`` sums the parameter
    cotangents over the batch axis (keeping lead axes), ``"per_sample"`` keeps it (shape
    (*lead, B, *p.shape)), ``"none"`` skips them (dp = None). ``input_grad=False`` skips dx.
    """
    _unknown("layer_vjp", layer)


@functools.singledispatch
def layer_rop_vjp(layer, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    """Pearlmutter's R-operator of the backward pass: ``(R{dx}, R{dp})``.

    With forward tangents ``dp`` (parameters) and ``dx`` (input; None for zero), the
    output cotangent ``dy`` and its R-derivative ``rdy``,
    R{dx} = (dy/dx)^T rdy + R{(dy/dx)^T} dy and R{dp} = (dy/dp)^T rdy + R{(dy/dp)^T} dy
    (parameter part summed over the batch axis). Pearlmutter (1994), Neural Comput. 6.
    """
    _unknown("layer_rop_vjp", layer)


# ---------------------------------------------------------------------- Dense
@layer_param_shapes.register
def _(layer: Dense):
    if layer.bias:
        return ((layer.n_out, layer.n_in), (layer.n_out,))
    return ((layer.n_out, layer.n_in),)


@layer_output_shape.register
def _(layer: Dense, input_shape):
    if tuple(input_shape) != (layer.n_in,):
        raise ValueError(f"input_shape: expected ({layer.n_in},) for {layer!r}, got {_fmt(tuple(input_shape))}")
    return (layer.n_out,)


@layer_forward.register
def _(layer: Dense, p, x):
    _check_input(layer, x, 1, (layer.n_in,))
    _check_layer_params(layer, p)
    xp = backend.namespace_of(params=tuple(p), x=x)
    y = xp.matmul(x, xp.matrix_transpose(p[0]))
    if layer.bias:
        y = y + p[1]
    return y, x


@layer_jvp.register
def _(layer: Dense, p, cache, dp, dx):
    _check_tangent(dp, p, "dp", layer)
    _check_trailing(dx, (cache.shape[0], layer.n_in), "dx", layer)
    xp = backend.namespace_of(params=tuple(p))
    x = cache
    t_in = None if dx is None else xp.matmul(dx, xp.matrix_transpose(p[0]))
    t_w = t_b = None
    if dp is not None:
        t_w = xp.matmul(x, xp.matrix_transpose(dp[0]))
        if layer.bias:
            t_b = dp[1][..., None, :]
    return _add(t_in, t_w, t_b)


def _dense_param_cot(xp, layer, x, dy, params_mode):
    if params_mode == "none":
        return None
    if params_mode == "sum":
        dw = xp.matmul(xp.matrix_transpose(dy), x)
        return (dw, xp.sum(dy, axis=-2)) if layer.bias else (dw,)
    dw = dy[..., :, None] * x[:, None, :]
    return (dw, dy) if layer.bias else (dw,)


@layer_vjp.register
def _(layer: Dense, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    _check_trailing(dy, (cache.shape[0], layer.n_out), "dy", layer)
    xp = backend.namespace_of(params=tuple(p), dy=dy)
    dx = xp.matmul(dy, p[0]) if input_grad else None
    return dx, _dense_param_cot(xp, layer, cache, dy, params_mode)


@layer_rop_vjp.register
def _(layer: Dense, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    _check_tangent(dp, p, "dp", layer)
    b = cache.shape[0]
    _check_trailing(dx, (b, layer.n_in), "dx", layer)
    _check_trailing(dy, (b, layer.n_out), "dy", layer)
    _check_trailing(rdy, (b, layer.n_out), "rdy", layer)
    xp = backend.namespace_of(params=tuple(p), dy=dy, rdy=rdy)
    x, w = cache, p[0]
    rdx = None
    if input_grad:
        # R{dy W} = rdy W + dy V_W
        rdx = _add(xp.matmul(rdy, w), None if dp is None else xp.matmul(dy, dp[0]))
    # R{dy^T x} = rdy^T x + dy^T R{x};  R{sum_b dy} = sum_b rdy
    rdw = xp.matmul(xp.matrix_transpose(rdy), x)
    if dx is not None:
        rdw = rdw + xp.matmul(xp.matrix_transpose(dy), dx)
    rdp = (rdw, xp.sum(rdy, axis=-2)) if layer.bias else (rdw,)
    return rdx, rdp


# ----------------------------------------------------------------- Activation
def activation_derivatives(name: str, x, *, order: int = 2):
    """phi(x), phi'(x) and (order 2) phi''(x) of the activation ``name``, elementwise.

    Stable forms: sigmoid via exp(-|x|), elu via expm1(min(x, 0)). Returns a tuple of
    ``order + 1`` arrays like ``x``.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"name: expected an activation in {ACTIVATIONS}, got {name!r}")
    xp = backend.namespace_of(x=x)
    one = xp.ones_like(x)
    zero = xp.zeros_like(x)
    if name == "identity":
        out = (x, one, zero)
    elif name == "tanh":
        y = xp.tanh(x)
        d1 = 1.0 - y * y
        out = (y, d1, -2.0 * y * d1)
    elif name == "relu":
        pos = x > 0
        out = (xp.where(pos, x, zero), xp.where(pos, one, zero), zero)
    elif name == "elu":
        pos = x > 0
        em1 = xp.expm1(xp.minimum(x, zero))
        out = (xp.where(pos, x, em1), xp.where(pos, one, em1 + 1.0), xp.where(pos, zero, em1 + 1.0))
    else:  # sigmoid
        e = xp.exp(-xp.abs(x))
        y = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        d1 = y * (1.0 - y)
        out = (y, d1, d1 * (1.0 - 2.0 * y))
    return out[: order + 1]


@layer_param_shapes.register
def _(layer: Activation):
    return ()


@layer_output_shape.register
def _(layer: Activation, input_shape):
    return tuple(input_shape)


@layer_forward.register
def _(layer: Activation, p, x):
    if not hasattr(x, "ndim") or x.ndim < 2:
        _check_input(layer, x, 1)
    _check_layer_params(layer, p)
    y, d1 = activation_derivatives(layer.name, x, order=1)
    return y, (x, d1)


@layer_jvp.register
def _(layer: Activation, p, cache, dp, dx):
    if dx is None:
        return None
    _check_trailing(dx, cache[0].shape, "dx", layer)
    return dx * cache[1]


@layer_vjp.register
def _(layer: Activation, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    _check_trailing(dy, cache[0].shape, "dy", layer)
    return (dy * cache[1] if input_grad else None), (None if params_mode == "none" else ())


@layer_rop_vjp.register
def _(layer: Activation, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    x, d1 = cache
    _check_trailing(dx, x.shape, "dx", layer)
    _check_trailing(dy, x.shape, "dy", layer)
    _check_trailing(rdy, x.shape, "rdy", layer)
    if not input_grad:
        return None, ()
    rdx = rdy * d1
    if dx is not None and layer.name not in ("identity", "relu"):
        d2 = activation_derivatives(layer.name, x)[2]
        rdx = rdx + dy * d2 * dx  # R{dy phi'(x)} = rdy phi' + dy phi'' R{x}
    return rdx, ()


# --------------------------------------------------------------------- Conv2d
def _conv_out_hw(layer, input_shape, what="input_shape"):
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"{what}: expected (C, H, W) for {layer!r}, got {_fmt(tuple(input_shape))}")
    c, h, w = input_shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    ph, pw = getattr(layer, "padding", (0, 0))
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"kernel_size: expected at most the padded input size ({h + 2 * ph}, {w + 2 * pw}) "
            f"for {layer!r} on input (C, H, W) = {_fmt(tuple(input_shape))}, got ({kh}, {kw})"
        )
    return ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


@layer_param_shapes.register
def _(layer: Conv2d):
    k = (layer.out_channels, layer.in_channels, *layer.kernel_size)
    return (k, (layer.out_channels,)) if layer.bias else (k,)


@layer_output_shape.register
def _(layer: Conv2d, input_shape):
    ho, wo = _conv_out_hw(layer, input_shape)
    if input_shape[0] != layer.in_channels:
        raise ValueError(
            f"input_shape: expected {layer.in_channels} channels (C, H, W) for {layer!r}, got {_fmt(input_shape)}"
        )
    return (layer.out_channels, ho, wo)


@dataclass(frozen=True, eq=False)
class _ConvCache:
    cols: Any  # (B, C*kh*kw, Ho*Wo) gather of the padded input
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def _conv_cols(xp, layer, x, out_hw):
    """(..., C, H, W) -> (..., C*kh*kw, Ho*Wo) gather of the zero-padded input."""
    c = x.shape[-3]
    xpad = _pad2d(xp, x, *layer.padding)
    cols = _im2col(xp, xpad, layer.kernel_size, layer.stride, out_hw)  # (..., C, kk, ho, wo)
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    return xp.reshape(cols, tuple(x.shape[:-3]) + (c * kk, out_hw[0] * out_hw[1]))


def _conv_input_cot(xp, layer, k2, dy2, cache):
    """(d conv / d x)^T: (..., out, L) cotangent with kernel matrix k2 (..., out, CKK)."""
    dcols = xp.matmul(xp.matrix_transpose(k2), dy2)  # (..., CKK, L)
    c = layer.in_channels
    (kh, kw), (ho, wo), (h, w), (ph, pw) = layer.kernel_size, cache.out_hw, cache.in_hw, layer.padding
    dcols = xp.reshape(dcols, tuple(dcols.shape[:-2]) + (c, kh * kw, ho, wo))
    dxp = _col2im(xp, dcols, layer.kernel_size, layer.stride, (h + 2 * ph, w + 2 * pw))
    return dxp[..., ph : ph + h, pw : pw + w]


@layer_forward.register
def _(layer: Conv2d, p, x):
    if not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1] != layer.in_channels:
        _check_input(layer, x, 3, (layer.in_channels, "H", "W"))
    out_hw = _conv_out_hw(layer, tuple(x.shape[1:]))
    _check_layer_params(layer, p)
    xp = backend.namespace_of(params=tuple(p), x=x)
    b = x.shape[0]
    cols = _conv_cols(xp, layer, x, out_hw)
    k2 = xp.reshape(p[0], (layer.out_channels, -1))
    y = xp.reshape(xp.matmul(k2, cols), (b, layer.out_channels, *out_hw))
    if layer.bias:
        y = y + p[1][:, None, None]
    return y, _ConvCache(cols, tuple(x.shape[2:]), out_hw)


@layer_jvp.register
def _(layer: Conv2d, p, cache, dp, dx):
    _check_tangent(dp, p, "dp", layer)
    b = cache.cols.shape[0]
    _check_trailing(dx, (b, layer.in_channels, *cache.in_hw), "dx", layer)
    xp = backend.namespace_of(params=tuple(p))
    o = layer.out_channels
    k2 = xp.reshape(p[0], (o, -1))
    t = None
    if dx is not None:
        t = xp.matmul(k2, _conv_cols(xp, layer, dx, cache.out_hw))
    if dp is not None:
        dk2 = xp.reshape(dp[0], _lead(dp[0], 4) + (1, o, k2.shape[1]))
        t = _add(t, xp.matmul(dk2, cache.cols))
    if t is None:
        return None
    t = xp.reshape(t, tuple(t.shape[:-2]) + (o, *cache.out_hw))
    if dp is not None and layer.bias:
        t = t + dp[1][..., None, :, None, None]
    return t


def _conv_param_cot(xp, layer, cols, dy2, params_mode, dy):
    if params_mode == "none":
        return None
    kshape = layer_param_shapes(layer)[0]
    if params_mode == "sum":
        dk = _batch_sum_matmul(xp, dy2, xp.matrix_transpose(cols))
        dk = xp.reshape(dk, tuple(dk.shape[:-2]) + kshape)
        return (dk, xp.sum(dy, axis=(-4, -2, -1))) if layer.bias else (dk,)
    dk = xp.matmul(dy2, xp.matrix_transpose(cols))  # (*lead, B, out, CKK)
    dk = xp.reshape(dk, tuple(dk.shape[:-2]) + kshape)
    return (dk, xp.sum(dy, axis=(-2, -1))) if layer.bias else (dk,)


@layer_vjp.register
def _(layer: Conv2d, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    b = cache.cols.shape[0]
    _check_trailing(dy, (b, layer.out_channels, *cache.out_hw), "dy", layer)
    xp = backend.namespace_of(params=tuple(p), dy=dy)
    o = layer.out_channels
    dy2 = xp.reshape(dy, _lead(dy, 3) + (o, cache.out_hw[0] * cache.out_hw[1]))
    dx = None
    if input_grad:
        dx = _conv_input_cot(xp, layer, xp.reshape(p[0], (o, -1)), dy2, cache)
    return dx, _conv_param_cot(xp, layer, cache.cols, dy2, params_mode, dy)


@layer_rop_vjp.register
def _(layer: Conv2d, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    _check_tangent(dp, p, "dp", layer)
    b = cache.cols.shape[0]
    out_full = (b, layer.out_channels, *cache.out_hw)
    _check_trailing(dx, (b, layer.in_channels, *cache.in_hw), "dx", layer)
    _check_trailing(dy, out_full, "dy", layer)
    _check_trailing(rdy, out_full, "rdy", layer)
    xp = backend.namespace_of(params=tuple(p), dy=dy, rdy=rdy)
    o, el = layer.out_channels, cache.out_hw[0] * cache.out_hw[1]
    dy2 = xp.reshape(dy, _lead(dy, 3) + (o, el))
    rdy2 = xp.reshape(rdy, _lead(rdy, 3) + (o, el))
    k2 = xp.reshape(p[0], (o, -1))
    rdx = None
    if input_grad:
        # R{conv^T(dy; K)} = conv^T(rdy; K) + conv^T(dy; V_K)
        rdx = _conv_input_cot(xp, layer, k2, rdy2, cache)
        if dp is not None:
            dk2 = xp.reshape(dp[0], _lead(dp[0], 4) + (1, o, k2.shape[1]))
            rdx = rdx + _conv_input_cot(xp, layer, dk2, dy2, cache)
    # R{corr(dy, x)} = corr(rdy, x) + corr(dy, R{x})
    rdk = _batch_sum_matmul(xp, rdy2, xp.matrix_transpose(cache.cols))
    if dx is not None:
        dcols = _conv_cols(xp, layer, dx, cache.out_hw)
        rdk = rdk + _batch_sum_matmul(xp, dy2, xp.matrix_transpose(dcols))
    kshape = layer_param_shapes(layer)[0]
    rdk = xp.reshape(rdk, tuple(rdk.shape[:-2]) + kshape)
    rdp = (rdk, xp.sum(rdy, axis=(-4, -2, -1))) if layer.bias else (rdk,)
    return rdx, rdp


# -------------------------------------------------------------------- pooling
@dataclass(frozen=True, eq=False)
class _PoolCache:
    in_shape: tuple[int, ...]  # (B, C, H, W)
    out_hw: tuple[int, int]
    mask: Any = None  # max pooling: one-hot argmax (B, C, kk, Ho, Wo)


@layer_param_shapes.register(AvgPool2d)
@layer_param_shapes.register(MaxPool2d)
def _(layer):
    return ()


@layer_output_shape.register(AvgPool2d)
@layer_output_shape.register(MaxPool2d)
def _(layer, input_shape):
    ho, wo = _conv_out_hw(layer, input_shape)
    return (input_shape[0], ho, wo)


def _pool_forward_common(layer, p, x):
    if not hasattr(x, "ndim") or x.ndim != 4:
        _check_input(layer, x, 3, ("C", "H", "W"))
    out_hw = _conv_out_hw(layer, tuple(x.shape[1:]))
    _check_layer_params(layer, p)
    xp = backend.namespace_of(x=x)
    return xp, out_hw, _im2col(xp, x, layer.kernel_size, layer.stride, out_hw)


def _pool_scatter(xp, layer, cache, dcols):
    return _col2im(xp, dcols, layer.kernel_size, layer.stride, cache.in_shape[2:])


@layer_forward.register
def _(layer: AvgPool2d, p, x):
    xp, out_hw, cols = _pool_forward_common(layer, p, x)
    return xp.mean(cols, axis=-3), _PoolCache(tuple(x.shape), out_hw)


@layer_forward.register
def _(layer: MaxPool2d, p, x):
    xp, out_hw, cols = _pool_forward_common(layer, p, x)
    kk = cols.shape[-3]
    idx = xp.argmax(cols, axis=-3)  # first maximum on ties
    ar = xp.arange(kk, device=backend.device_of(x))[:, None, None]
    mask = xp.astype(ar == idx[..., None, :, :], x.dtype)
    return xp.sum(mask * cols, axis=-3), _PoolCache(tuple(x.shape), out_hw, mask)


def _pool_check_out(layer, cache, a, name):
    b, c = cache.in_shape[:2]
    _check_trailing(a, (b, c, *cache.out_hw), name, layer)


@layer_jvp.register(AvgPool2d)
@layer_jvp.register(MaxPool2d)
def _(layer, p, cache, dp, dx):
    if dx is None:
        return None
    _check_trailing(dx, cache.in_shape, "dx", layer)
    xp = backend.namespace_of(dx=dx)
    cols = _im2col(xp, dx, layer.kernel_size, layer.stride, cache.out_hw)
    if cache.mask is None:
        return xp.mean(cols, axis=-3)
    return xp.sum(cache.mask * cols, axis=-3)


def _pool_input_cot(layer, cache, dy):
    xp = backend.namespace_of(dy=dy)
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    if cache.mask is None:
        dcols = xp.broadcast_to(dy[..., None, :, :] / kk, tuple(dy.shape[:-2]) + (kk, *dy.shape[-2:]))
    else:
        dcols = cache.mask * dy[..., None, :, :]
    return _pool_scatter(xp, layer, cache, dcols)


@layer_vjp.register(AvgPool2d)
@layer_vjp.register(MaxPool2d)
def _(layer, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    _pool_check_out(layer, cache, dy, "dy")
    return (_pool_input_cot(layer, cache, dy) if input_grad else None), (None if params_mode == "none" else ())


@layer_rop_vjp.register(AvgPool2d)
@layer_rop_vjp.register(MaxPool2d)
def _(layer, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    # linear (avg) or a fixed selection at the current input (max): no second-order term
    _check_trailing(dx, cache.in_shape, "dx", layer)
    _pool_check_out(layer, cache, dy, "dy")
    _pool_check_out(layer, cache, rdy, "rdy")
    return (_pool_input_cot(layer, cache, rdy) if input_grad else None), ()


# -------------------------------------------------------------------- Flatten
@layer_param_shapes.register
def _(layer: Flatten):
    return ()


@layer_output_shape.register
def _(layer: Flatten, input_shape):
    return (math.prod(input_shape),)


@layer_forward.register
def _(layer: Flatten, p, x):
    if not hasattr(x, "ndim") or x.ndim < 2:
        _check_input(layer, x, 1)
    _check_layer_params(layer, p)
    xp = backend.namespace_of(x=x)
    in_shape = tuple(x.shape[1:])
    return xp.reshape(x, (x.shape[0], math.prod(in_shape))), in_shape


@layer_jvp.register
def _(layer: Flatten, p, cache, dp, dx):
    if dx is None:
        return None
    _check_trailing(dx, cache, "dx", layer)
    xp = backend.namespace_of(dx=dx)
    return xp.reshape(dx, _lead(dx, len(cache)) + (math.prod(cache),))


def _unflatten_cot(layer, cache, dy, name):
    _check_trailing(dy, (math.prod(cache),), name, layer)
    xp = backend.namespace_of(**{name: dy})
    return xp.reshape(dy, _lead(dy, 1) + tuple(cache))


@layer_vjp.register
def _(layer: Flatten, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    dx = _unflatten_cot(layer, cache, dy, "dy")
    return (dx if input_grad else None), (None if params_mode == "none" else ())


@layer_rop_vjp.register
def _(layer: Flatten, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    rdx = _unflatten_cot(layer, cache, rdy, "rdy")
    return (rdx if input_grad else None), ()
