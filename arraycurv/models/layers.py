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
  terms of Dense/Conv2d, the phi'' term of activations, the curvature of the
  normalization of LayerNorm, nothing for linear or piecewise linear layers).

and, where they apply, the per-layer capabilities the model-level code asks for:

* :func:`layer_init` -- seeded initial parameters (default: ``()`` for parameter-free
  layers);
* :func:`layer_kron_rows` -- the input and output-cotangent rows of a layer whose weight
  gradient is a sum of outer products (Dense, Conv2d): its K-FAC factors (default: None,
  no Kronecker-factored block);
* :func:`layer_cost` -- elements per sample the passes keep for the layer (default: twice
  its input), which sizes the batched Pearlmutter passes.

With these registered, a new layer gets the Jacobian, GGN, Hessian-vector products, the
explicit Hessian, the Fisher variants and (with :func:`layer_kron_rows`) K-FAC of every
:class:`~arraycurv.models.sequential.Sequential` network that contains it.

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

import contextvars
import functools
import math
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..validation import check_int, check_params, check_real
from ._image import _col2im, _im2col, _pad2d

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "AvgPool2d",
    "Conv2d",
    "Dense",
    "Flatten",
    "LayerNorm",
    "MaxPool2d",
    "activation_derivatives",
    "layer_cost",
    "layer_forward",
    "layer_init",
    "layer_jvp",
    "layer_kron_rows",
    "layer_output_shape",
    "layer_param_shapes",
    "layer_rop_prepare",
    "layer_rop_vjp",
    "layer_vjp",
]




_PARAMS_MODES = ("sum", "per_sample", "none")

#: The namespace of the pass in progress when a model's pass (validated once at the public
#: boundary, docs/design.md "Validation at the boundary") runs the layers: then the layers
#: skip their own argument checks and namespace look-ups. None (the default) when a layer
#: function is called directly, which checks its arguments.
_TRUSTED_XP: contextvars.ContextVar = contextvars.ContextVar("arraycurv_trusted_layer_xp", default=None)


class _trusted_layers:  # noqa: N801 (used as a context manager, like contextlib's)
    """Within this context the layer functions trust their arguments and use ``xp``.

    The passes of :class:`~arraycurv.models.Sequential` (whose inputs were validated once)
    run their layers inside it; a direct call of ``layer_forward`` & co. outside it checks
    shapes, dtypes and namespaces itself. (A class rather than a generator-based
    ``contextlib.contextmanager``: it is entered once per pass, and the generator costs
    a few microseconds, which matters on small networks.)
    """

    __slots__ = ("_xp", "_token")

    def __init__(self, xp):
        self._xp = xp

    def __enter__(self):
        self._token = _TRUSTED_XP.set(self._xp)
        return self._xp

    def __exit__(self, *exc):
        _TRUSTED_XP.reset(self._token)
        return False


def _xp(**arrays):
    """The trusted namespace of the pass in progress, else that of ``arrays`` (checked)."""
    xp = _TRUSTED_XP.get()
    return backend.namespace_of(**arrays) if xp is None else xp


# ------------------------------------------------------------------------ helpers
def _pair(v: Any, name: str, *, allow_zero: bool = False) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {v!r}")
        lo = 0 if allow_zero else 1
        return (check_int(v[0], name, lo=lo), check_int(v[1], name, lo=lo))
    v = check_int(v, name, lo=0 if allow_zero else 1)
    return (v, v)


def _fmt(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_input(layer, x, in_ndim: int, feature_shape=None) -> None:
    """``x`` must be (B, *feature_shape) with ``in_ndim`` feature axes."""
    if _TRUSTED_XP.get() is not None:
        return
    if not hasattr(x, "shape") or x.ndim != 1 + in_ndim or (
        feature_shape is not None and tuple(x.shape[1:]) != tuple(feature_shape)
    ):
        want = "(*, " + ", ".join(str(s) for s in feature_shape) + ")" if feature_shape else f"{1 + in_ndim} axes"
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"x: expected shape {want} for the input of {layer!r}, got {got}")


def _check_layer_params(layer, p):
    if _TRUSTED_XP.get() is not None:
        return None
    check_params(p, layer_param_shapes(layer), "params")
    if len(p):
        return backend.namespace_of(params=tuple(p))
    return None


def _check_trailing(a, shape, name: str, layer) -> None:
    if a is None or _TRUSTED_XP.get() is not None:
        return
    shape = tuple(shape)
    if a.ndim < len(shape) or tuple(a.shape[a.ndim - len(shape):]) != shape:
        raise ValueError(
            f"{name}: expected shape (..., {', '.join(map(str, shape))}) for {layer!r}, got {tuple(a.shape)}"
        )


def _check_tangent(dp, p, name: str, layer) -> None:
    if dp is None or _TRUSTED_XP.get() is not None:
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


def _batch_sum(xp, a):
    """sum_b a[..., b, :] for a (*lead, B, n): from B = 32 on a ones-vector product (one
    GEMV, like the weight cotangent's GEMM over the same batch axis; about 3x faster than
    ``xp.sum`` on a 256 x 64 array), below that ``xp.sum`` (cheaper than making the ones)."""
    if a.shape[-2] < 32:
        return xp.sum(a, axis=-2)
    return xp.ones((a.shape[-2],), dtype=a.dtype, device=backend.device_of(a)) @ a


def _batch_sum_matmul(xp, a, c):
    """sum_b a[..., b, :, :] @ c[..., b, :, :] for a (*la, B, m, L) and c (*lc, B, L, n).

    One batched product and a sum over the batch: B small GEMMs on the operands as they
    are (a transposed view of the cached im2col gather included). Joining the batch into
    the contraction instead (one (m, B L) x (B L, n) GEMM) needs a copy of that gather,
    which cost 5-7x the whole product on LeNet-5's first convolution.
    """
    return xp.sum(xp.matmul(a, c), axis=-3)


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
        check_int(self.n_in, "n_in", lo=1)
        check_int(self.n_out, "n_out", lo=1)


@dataclass(frozen=True)
class Activation:
    """Elementwise nonlinearity phi, one of :data:`ACTIVATIONS` (no parameters).

    elu uses alpha = 1; relu'(0) = 0 (the derivative is taken from the right only for
    x > 0), and the second derivative of relu is 0 everywhere; gelu is the tanh
    approximation (:func:`activation_derivatives`).
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
        check_int(self.in_channels, "in_channels", lo=1)
        check_int(self.out_channels, "out_channels", lo=1)
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


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalization over the feature axes with affine parameters (Ba et al. 2016):

        y = gamma * (x - mu) / sqrt(var + eps) + beta,

    with mu and var the mean and the (biased) variance of each sample over all its
    feature axes. Parameters ``(gamma, beta)``, both shaped like the features
    ``shape`` (an int or a tuple; the input of the layer must have exactly that shape).
    It is not a Kronecker-factored layer (no K-FAC block).
    """

    shape: Any
    eps: float = 1e-5

    def __post_init__(self):
        shp = (self.shape,) if isinstance(self.shape, int) and not isinstance(self.shape, bool) else self.shape
        if not isinstance(shp, (tuple, list)) or len(shp) == 0:
            raise ValueError(f"shape: expected a positive int or a tuple of them, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(check_int(s, "shape", lo=1) for s in shp))
        eps = check_real(self.eps, "eps", lo=0, lo_open=True, want="a finite real number > 0")
        object.__setattr__(self, "eps", eps)


# ------------------------------------------------------------ generic functions
def _unknown(fn: str, layer):
    raise TypeError(
        f"layer: {fn} is not implemented for {type(layer).__name__}; expected one of Dense, Activation, "
        f"Conv2d, AvgPool2d, MaxPool2d, Flatten, LayerNorm (or register it), got {layer!r}"
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


@functools.singledispatch
def layer_rop_prepare(layer, p, cache, dy):
    """The part of :func:`layer_rop_vjp` that depends on the output cotangent ``dy`` alone
    (not on the tangents), or None (the default: nothing worth keeping).

    Repeated R-operator products at one point with one ``dy`` (the gradient's: Lanczos or
    CG on the Hessian) compute it once and hand it to every call as
    ``layer_rop_vjp(..., prepared=...)``; a layer that registers it must accept that
    keyword. Activation: dy phi''(x), the coefficient of dx in its second-order term.
    """
    return None


@functools.singledispatch
def layer_init(layer, g, xp, *, dtype, device=None, method="gaussian", gain=1.0) -> tuple:
    """Seeded initial parameters of ``layer`` drawn from the NumPy generator ``g``.

    ``method`` is ``"gaussian"`` (weights N(0, gain^2 / fan_in)) or ``"orthogonal"`` (gain
    times a (semi-)orthogonal matrix; Saxe et al. 2013, Huh 2020 S.I.3); what a layer
    does with them is its own (biases and LayerNorm's beta are zero, gamma is one). The
    default returns ``()`` for a parameter-free layer and raises ``TypeError`` otherwise.
    """
    if layer_param_shapes(layer):
        _unknown("layer_init", layer)
    return ()


@functools.singledispatch
def layer_kron_rows(layer, p, cache, dy=None):
    """The Kronecker rows of a layer whose weight gradient is a sum of outer products.

    For a layer with parameters ``(W[, b])``, W reshaped to (n_out, n_in), whose
    per-sample weight gradient is sum_t g_bt a_bt^T over T locations (Dense: T = 1;
    Conv2d: the output pixels; Grosse & Martens 2016), returns ``(a, g)`` with the input
    rows ``a`` of shape (B, T, n_in [+1]) (a homogeneous 1 appended when there is a bias,
    so the rows cover ``[W, b]``) and the rows ``g`` of the output cotangent ``dy``
    (*lead, B, *out_shape), of shape (*lead, B, T, n_out) (None when ``dy`` is None).
    The default returns None: the layer has no Kronecker-factored (K-FAC) block.
    """
    return None


@functools.singledispatch
def layer_cost(layer, input_shape) -> int:
    """Elements per sample that the passes keep for ``layer`` on an input ``input_shape``.

    Sizes the chunks of batched Pearlmutter passes. The default is twice the input (the
    input and one intermediate); gathers (convolution, pooling) are kh*kw times their
    input.
    """
    return 2 * math.prod(input_shape)


def _init_weight(g, s, xp, dtype, device, method, gain):
    fan_in = math.prod(s[1:])
    if method == "gaussian":
        return backend.normal(g, s, xp, dtype=dtype, device=device, scale=gain / math.sqrt(fan_in))
    return xp.reshape(backend.orthogonal(g, (s[0], fan_in), xp, gain=gain, dtype=dtype, device=device), s)


def _full(xp, s, value, dtype, device):
    return xp.full(s, value, dtype=dtype) if device is None else xp.full(s, value, dtype=dtype, device=device)


def _init_weight_bias(layer, g, xp, *, dtype, device=None, method="gaussian", gain=1.0):
    """Weight (fan_in = prod of all but the first axis) and a zero bias."""
    shapes = layer_param_shapes(layer)
    w = _init_weight(g, shapes[0], xp, dtype, device, method, gain)
    return (w,) + tuple(_full(xp, s, 0.0, dtype, device) for s in shapes[1:])


def _with_ones(xp, rows):
    one = xp.ones(tuple(rows.shape[:-1]) + (1,), dtype=rows.dtype, device=backend.device_of(rows))
    return xp.concat([rows, one], axis=-1)


# ---------------------------------------------------------------------- Dense
@layer_param_shapes.register(Dense)
def _(layer: Dense):
    if layer.bias:
        return ((layer.n_out, layer.n_in), (layer.n_out,))
    return ((layer.n_out, layer.n_in),)


@layer_output_shape.register(Dense)
def _(layer: Dense, input_shape):
    if tuple(input_shape) != (layer.n_in,):
        raise ValueError(f"input_shape: expected ({layer.n_in},) for {layer!r}, got {_fmt(tuple(input_shape))}")
    return (layer.n_out,)


def _mT(xp, a):
    """The matrix transpose of ``a``: the ``.T`` view of a matrix, else
    ``xp.matrix_transpose`` (the layers' products are ``@`` on such views: the operator
    and ``.T`` skip the compatibility wrappers, which cost more than a small product)."""
    return a.T if a.ndim == 2 else xp.matrix_transpose(a)


@layer_forward.register(Dense)
def _(layer: Dense, p, x):
    xp = _TRUSTED_XP.get()
    if xp is None:
        _check_input(layer, x, 1, (layer.n_in,))
        _check_layer_params(layer, p)
        _xp(params=tuple(p), x=x)
    y = x @ p[0].T
    if layer.bias:
        y = y + p[1]
    return y, x


@layer_jvp.register(Dense)
def _(layer: Dense, p, cache, dp, dx):
    xp = _TRUSTED_XP.get()
    if xp is None:
        _check_tangent(dp, p, "dp", layer)
        _check_trailing(dx, (cache.shape[0], layer.n_in), "dx", layer)
        xp = _xp(params=tuple(p))
    x = cache
    t = None if dx is None else dx @ p[0].T
    if dp is not None:
        t_w = x @ _mT(xp, dp[0])
        t = t_w if t is None else t + t_w
        if layer.bias:
            t = t + dp[1][..., None, :]
    return t


def _dense_param_cot(xp, layer, x, dy, params_mode):
    if params_mode == "none":
        return None
    if params_mode == "sum":
        dw = _mT(xp, dy) @ x
        return (dw, _batch_sum(xp, dy)) if layer.bias else (dw,)
    dw = dy[..., :, None] * x[:, None, :]
    return (dw, dy) if layer.bias else (dw,)


@layer_vjp.register(Dense)
def _(layer: Dense, p, cache, dy, *, params_mode="sum", input_grad=True):
    xp = _TRUSTED_XP.get()
    if xp is None:
        _check_mode(params_mode)
        _check_trailing(dy, (cache.shape[0], layer.n_out), "dy", layer)
        xp = _xp(params=tuple(p), dy=dy)
    dx = dy @ p[0] if input_grad else None
    return dx, _dense_param_cot(xp, layer, cache, dy, params_mode)


@layer_rop_vjp.register(Dense)
def _(layer: Dense, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    xp = _TRUSTED_XP.get()
    if xp is None:
        _check_tangent(dp, p, "dp", layer)
        b = cache.shape[0]
        _check_trailing(dx, (b, layer.n_in), "dx", layer)
        _check_trailing(dy, (b, layer.n_out), "dy", layer)
        _check_trailing(rdy, (b, layer.n_out), "rdy", layer)
        xp = _xp(params=tuple(p), dy=dy, rdy=rdy)
    x, w = cache, p[0]
    rdx = None
    if input_grad:
        # R{dy W} = rdy W + dy V_W
        rdx = rdy @ w
        if dp is not None:
            rdx = rdx + dy @ dp[0]
    # R{dy^T x} = rdy^T x + dy^T R{x};  R{sum_b dy} = sum_b rdy
    rdw = _mT(xp, rdy) @ x
    if dx is not None:
        rdw = rdw + _mT(xp, dy) @ dx
    rdp = (rdw, _batch_sum(xp, rdy)) if layer.bias else (rdw,)
    return rdx, rdp


layer_init.register(Dense)(_init_weight_bias)


@layer_kron_rows.register(Dense)
def _(layer: Dense, p, cache, dy=None):
    xp = _xp(x=cache)
    a = _with_ones(xp, cache) if layer.bias else cache
    return a[:, None, :], (None if dy is None else dy[..., None, :])


# ----------------------------------------------------------------- Activation
def _act_identity(xp, x):
    return x, xp.ones_like(x), xp.zeros_like(x)


def _act_tanh(xp, x):
    y = xp.tanh(x)
    d1 = 1.0 - y * y
    return y, d1, -2.0 * y * d1


def _act_relu(xp, x):
    pos, one, zero = x > 0, xp.ones_like(x), xp.zeros_like(x)
    return xp.where(pos, x, zero), xp.where(pos, one, zero), zero


def _act_elu(xp, x):
    pos, zero = x > 0, xp.zeros_like(x)
    em1 = xp.expm1(xp.minimum(x, zero))
    return xp.where(pos, x, em1), xp.where(pos, xp.ones_like(x), em1 + 1.0), xp.where(pos, zero, em1 + 1.0)


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _act_sigmoid(xp, x):
    y = _sigmoid(xp, x)
    d1 = y * (1.0 - y)
    return y, d1, d1 * (1.0 - 2.0 * y)


def _act_softplus(xp, x):
    # log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}); its derivative is the sigmoid
    s = _sigmoid(xp, x)
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x))), s, s * (1.0 - s)


_GELU_C, _GELU_A = math.sqrt(2.0 / math.pi), 0.044715


def _act_gelu(xp, x):
    # tanh form 0.5 x (1 + tanh(u)), u = c (x + a x^3) (Hendrycks & Gimpel 2016 eq. 2)
    u = _GELU_C * (x + _GELU_A * x * x * x)
    du = _GELU_C * (1.0 + 3.0 * _GELU_A * x * x)
    t = xp.tanh(u)
    sech2 = 1.0 - t * t
    dt = sech2 * du  # d tanh(u) / dx
    d2t = sech2 * (6.0 * _GELU_C * _GELU_A * x) - 2.0 * t * dt * du
    return 0.5 * x * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * x * dt, dt + 0.5 * x * d2t


#: name -> function ``(xp, x) -> (phi, phi', phi'')`` of the activations of :class:`Activation`.
_ACTIVATION_FNS = {
    "identity": _act_identity,
    "tanh": _act_tanh,
    "relu": _act_relu,
    "elu": _act_elu,
    "sigmoid": _act_sigmoid,
    "softplus": _act_softplus,
    "gelu": _act_gelu,
}

#: Names accepted by :class:`Activation`.
ACTIVATIONS = tuple(_ACTIVATION_FNS)

#: Activations with phi'' = 0 wherever they are differentiable (no R-op second-order term).
_PIECEWISE_LINEAR = frozenset({"identity", "relu"})


def activation_derivatives(name: str, x, *, order: int = 2):
    """phi(x), phi'(x) and (order 2) phi''(x) of the activation ``name``, elementwise.

    Stable forms: sigmoid via exp(-|x|), elu via expm1(min(x, 0)), softplus as
    max(x, 0) + log1p(exp(-|x|)) with phi' = sigmoid. ``gelu`` is the tanh approximation
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) of Hendrycks & Gimpel (2016) eq. (2)
    (the array API has no erf, so the exact x Phi(x) form is not offered). Returns a
    tuple of ``order + 1`` arrays like ``x``.
    """
    if name not in _ACTIVATION_FNS:
        raise ValueError(f"name: expected an activation in {ACTIVATIONS}, got {name!r}")
    return _ACTIVATION_FNS[name](backend.namespace_of(x=x), x)[: order + 1]


def _tanh_first(xp, x):
    y = xp.tanh(x)
    return y, 1.0 - y * y


def _sigmoid_first(xp, x):
    y = _sigmoid(xp, x)
    return y, y * (1.0 - y)


#: (phi, phi') without phi'' for the forward pass (the others slice :data:`_ACTIVATION_FNS`).
_FIRST_FNS = {"tanh": _tanh_first, "sigmoid": _sigmoid_first}


def _act_first(name, xp, x):
    fn = _FIRST_FNS.get(name)
    return fn(xp, x) if fn is not None else _ACTIVATION_FNS[name](xp, x)[:2]


def _act_second(name, xp, cache):
    """phi'' at the cached input, from the cached phi and phi' where they determine it
    (tanh: -2 phi phi'; sigmoid: phi' (1 - 2 phi)), else recomputed."""
    x, d1 = cache[0], cache[1]
    if len(cache) > 2 and name == "tanh":
        return -2.0 * cache[2] * d1
    if len(cache) > 2 and name == "sigmoid":
        return d1 * (1.0 - 2.0 * cache[2])
    return _ACTIVATION_FNS[name](xp, x)[2]


@layer_param_shapes.register(Activation)
def _(layer: Activation):
    return ()


@layer_output_shape.register(Activation)
def _(layer: Activation, input_shape):
    return tuple(input_shape)


@layer_forward.register(Activation)
def _(layer: Activation, p, x):
    if not hasattr(x, "ndim") or x.ndim < 2:
        _check_input(layer, x, 1)
    _check_layer_params(layer, p)
    y, d1 = _act_first(layer.name, _xp(x=x), x)
    return y, (x, d1, y)


@layer_jvp.register(Activation)
def _(layer: Activation, p, cache, dp, dx):
    if dx is None:
        return None
    _check_trailing(dx, cache[0].shape, "dx", layer)
    return dx * cache[1]


@layer_vjp.register(Activation)
def _(layer: Activation, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    _check_trailing(dy, cache[0].shape, "dy", layer)
    return (dy * cache[1] if input_grad else None), (None if params_mode == "none" else ())


@layer_rop_prepare.register(Activation)
def _(layer: Activation, p, cache, dy):
    _check_trailing(dy, cache[0].shape, "dy", layer)
    if layer.name in _PIECEWISE_LINEAR:
        return None
    return dy * _act_second(layer.name, _xp(x=cache[0]), cache)  # dy phi''(x)


@layer_rop_vjp.register(Activation)
def _(layer: Activation, p, cache, dp, dx, dy, rdy, *, input_grad=True, prepared=None):
    x, d1 = cache[0], cache[1]
    _check_trailing(dx, x.shape, "dx", layer)
    _check_trailing(dy, x.shape, "dy", layer)
    _check_trailing(rdy, x.shape, "rdy", layer)
    if not input_grad:
        return None, ()
    rdx = rdy * d1
    if dx is not None and layer.name not in _PIECEWISE_LINEAR:
        if prepared is None:  # dy phi''(x) (layer_rop_prepare)
            prepared = dy * _act_second(layer.name, _xp(x=x), cache)
        rdx = rdx + prepared * dx  # R{dy phi'(x)} = rdy phi' + dy phi'' R{x}
    return rdx, ()


# --------------------------------------------------------------------- Conv2d
def _conv_out_hw(layer, input_shape, padding=(0, 0), what="input_shape"):
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"{what}: expected (C, H, W) for {layer!r}, got {_fmt(tuple(input_shape))}")
    c, h, w = input_shape
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    ph, pw = padding
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"kernel_size: expected at most the padded input size ({h + 2 * ph}, {w + 2 * pw}) "
            f"for {layer!r} on input (C, H, W) = {_fmt(tuple(input_shape))}, got ({kh}, {kw})"
        )
    return ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


@layer_param_shapes.register(Conv2d)
def _(layer: Conv2d):
    k = (layer.out_channels, layer.in_channels, *layer.kernel_size)
    return (k, (layer.out_channels,)) if layer.bias else (k,)


@layer_output_shape.register(Conv2d)
def _(layer: Conv2d, input_shape):
    ho, wo = _conv_out_hw(layer, input_shape, layer.padding)
    if input_shape[0] != layer.in_channels:
        raise ValueError(
            f"input_shape: expected {layer.in_channels} channels (C, H, W) for {layer!r}, got {_fmt(input_shape)}"
        )
    return (layer.out_channels, ho, wo)


#: Output pixels per sample from which Conv2d's forward pass stores its im2col gather
#: batch-inner (:func:`arraycurv.backend.window_gather`).
_BATCH_INNER_MIN_PIXELS = 256


@dataclass(frozen=True, eq=False)
class _ConvCache:
    cols: Any  # (B, C*kh*kw, Ho*Wo) gather of the padded input
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    #: the same gather as one (C*kh*kw, B*Ho*Wo) matrix where it is stored batch-inner
    #: (NumPy, wide layers: :func:`arraycurv.backend.batch_inner_matrix`), else None
    cols_mat: Any = None


def _kernel_times_cols(xp, k2, cache):
    """k2 (*lead, out, CKK) times every sample's columns: (*lead, B, out, L).

    With the batch-inner matrix one GEMM over the whole batch, whose result is returned
    as a transposed view (out-major in memory); else B per-sample products."""
    if cache.cols_mat is None:
        return xp.matmul(k2[..., None, :, :], cache.cols)
    lead, o = tuple(k2.shape[:-2]), k2.shape[-2]
    n, (b, _, el) = len(lead), cache.cols.shape
    t = xp.reshape(k2 @ cache.cols_mat, lead + (o, b, el))
    return xp.permute_dims(t, tuple(range(n)) + (n + 1, n, n + 2))


def _conv_cols(xp, layer, x, out_hw, batch_inner=False):
    """(..., C, H, W) -> (..., C*kh*kw, Ho*Wo) gather of the zero-padded input
    (``batch_inner``: stored batch-inner where the namespace allows, see
    :func:`arraycurv.backend.window_gather`; the forward pass caches it so)."""
    c = x.shape[-3]
    xpad = _pad2d(xp, x, *layer.padding)
    cols = _im2col(xp, xpad, layer.kernel_size, layer.stride, out_hw, batch_inner)  # (..., C, kk, ho, wo)
    kk = layer.kernel_size[0] * layer.kernel_size[1]
    return xp.reshape(cols, tuple(x.shape[:-3]) + (c * kk, out_hw[0] * out_hw[1]))


def _conv_cols_adjoint(xp, layer, dcols, cache):
    """Adjoint of the im2col gather (:func:`_conv_cols`): (..., CKK, L) column cotangents
    scatter-added into the (unpadded) input, (..., C, H, W)."""
    c = layer.in_channels
    (kh, kw), (ho, wo), (h, w), (ph, pw) = layer.kernel_size, cache.out_hw, cache.in_hw, layer.padding
    dcols = xp.reshape(dcols, tuple(dcols.shape[:-2]) + (c, kh * kw, ho, wo))
    dxp = _col2im(xp, dcols, layer.kernel_size, layer.stride, (h + 2 * ph, w + 2 * pw))
    return dxp[..., ph : ph + h, pw : pw + w]


def _conv_input_cot(xp, layer, k2, dy2, cache):
    """(d conv / d x)^T: (..., out, L) cotangent with kernel matrix k2 (..., out, CKK)."""
    return _conv_cols_adjoint(xp, layer, xp.matmul(xp.matrix_transpose(k2), dy2), cache)


@layer_forward.register(Conv2d)
def _(layer: Conv2d, p, x):
    if not hasattr(x, "ndim") or x.ndim != 4 or x.shape[1] != layer.in_channels:
        _check_input(layer, x, 3, (layer.in_channels, "H", "W"))
    out_hw = _conv_out_hw(layer, tuple(x.shape[1:]), layer.padding)
    _check_layer_params(layer, p)
    xp = _xp(params=tuple(p), x=x)
    b = x.shape[0]
    # batch-inner storage pays where each sample's column block is wide (a first layer's
    # many output pixels: LeNet-5's 28 x 28); for narrow ones (its second layer's 10 x 10)
    # the per-sample layout multiplies faster (measured, benchmarks/compare_peers.py)
    wide = out_hw[0] * out_hw[1] >= _BATCH_INNER_MIN_PIXELS
    cols = _conv_cols(xp, layer, x, out_hw, batch_inner=wide)
    cache = _ConvCache(cols, tuple(x.shape[2:]), out_hw, backend.batch_inner_matrix(cols) if wide else None)
    k2 = xp.reshape(p[0], (layer.out_channels, -1))
    y = xp.reshape(_kernel_times_cols(xp, k2, cache), (b, layer.out_channels, *out_hw))
    if layer.bias:
        y = y + p[1][:, None, None]
    return y, cache


@layer_jvp.register(Conv2d)
def _(layer: Conv2d, p, cache, dp, dx):
    _check_tangent(dp, p, "dp", layer)
    b = cache.cols.shape[0]
    _check_trailing(dx, (b, layer.in_channels, *cache.in_hw), "dx", layer)
    xp = _xp(params=tuple(p))
    o = layer.out_channels
    k2 = xp.reshape(p[0], (o, -1))
    t = None
    if dx is not None:
        t = xp.matmul(k2, _conv_cols(xp, layer, dx, cache.out_hw))
    if dp is not None:
        dk2 = xp.reshape(dp[0], _lead(dp[0], 4) + (o, k2.shape[1]))
        t = _add(t, _kernel_times_cols(xp, dk2, cache))
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


@layer_vjp.register(Conv2d)
def _(layer: Conv2d, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    b = cache.cols.shape[0]
    _check_trailing(dy, (b, layer.out_channels, *cache.out_hw), "dy", layer)
    xp = _xp(params=tuple(p), dy=dy)
    o = layer.out_channels
    dy2 = xp.reshape(dy, _lead(dy, 3) + (o, cache.out_hw[0] * cache.out_hw[1]))
    dx = None
    if input_grad:
        dx = _conv_input_cot(xp, layer, xp.reshape(p[0], (o, -1)), dy2, cache)
    return dx, _conv_param_cot(xp, layer, cache.cols, dy2, params_mode, dy)


@layer_rop_vjp.register(Conv2d)
def _(layer: Conv2d, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    _check_tangent(dp, p, "dp", layer)
    b = cache.cols.shape[0]
    out_full = (b, layer.out_channels, *cache.out_hw)
    _check_trailing(dx, (b, layer.in_channels, *cache.in_hw), "dx", layer)
    _check_trailing(dy, out_full, "dy", layer)
    _check_trailing(rdy, out_full, "rdy", layer)
    xp = _xp(params=tuple(p), dy=dy, rdy=rdy)
    o, el = layer.out_channels, cache.out_hw[0] * cache.out_hw[1]
    dy2 = xp.reshape(dy, _lead(dy, 3) + (o, el))
    rdy2 = xp.reshape(rdy, _lead(rdy, 3) + (o, el))
    k2 = xp.reshape(p[0], (o, -1))
    rdx = None
    if input_grad:
        # R{conv^T(dy; K)} = conv^T(rdy; K) + conv^T(dy; V_K): the column cotangents of
        # both, then one scatter-add (the gather's adjoint is linear)
        dcols = xp.matmul(xp.matrix_transpose(k2), rdy2)
        if dp is not None:
            dk2 = xp.reshape(dp[0], _lead(dp[0], 4) + (1, o, k2.shape[1]))
            dcols = dcols + xp.matmul(xp.matrix_transpose(dk2), dy2)
        rdx = _conv_cols_adjoint(xp, layer, dcols, cache)
    # R{corr(dy, x)} = corr(rdy, x) + corr(dy, R{x})
    rdk = _batch_sum_matmul(xp, rdy2, xp.matrix_transpose(cache.cols))
    if dx is not None:
        dcols = _conv_cols(xp, layer, dx, cache.out_hw)
        rdk = rdk + _batch_sum_matmul(xp, dy2, xp.matrix_transpose(dcols))
    kshape = layer_param_shapes(layer)[0]
    rdk = xp.reshape(rdk, tuple(rdk.shape[:-2]) + kshape)
    rdp = (rdk, xp.sum(rdy, axis=(-4, -2, -1))) if layer.bias else (rdk,)
    return rdx, rdp


layer_init.register(Conv2d)(_init_weight_bias)


@layer_kron_rows.register(Conv2d)
def _(layer: Conv2d, p, cache, dy=None):
    # the im2col gather of the forward pass is the patch matrix of KFC
    xp = _xp(cols=cache.cols)
    a = xp.permute_dims(cache.cols, (0, 2, 1))  # (B, T, C*kh*kw)
    a = _with_ones(xp, a) if layer.bias else a
    if dy is None:
        return a, None
    el = cache.out_hw[0] * cache.out_hw[1]
    g = xp.reshape(dy, _lead(dy, 3) + (layer.out_channels, el))
    return a, xp.matrix_transpose(g)  # (*lead, B, T, out)


def _gather_cost(layer, input_shape):
    kh, kw = layer.kernel_size
    return math.prod(input_shape) * (1 + kh * kw)


layer_cost.register(Conv2d)(_gather_cost)


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


layer_cost.register(AvgPool2d)(_gather_cost)
layer_cost.register(MaxPool2d)(_gather_cost)


@layer_output_shape.register(AvgPool2d)
@layer_output_shape.register(MaxPool2d)
def _(layer, input_shape):
    ho, wo = _conv_out_hw(layer, input_shape)
    return (input_shape[0], ho, wo)


def _pool_input(layer, p, x):
    """The checks of a pooling layer's input: ``(xp, out_hw)``."""
    if not hasattr(x, "ndim") or x.ndim != 4:
        _check_input(layer, x, 3, ("C", "H", "W"))
    out_hw = _conv_out_hw(layer, tuple(x.shape[1:]))
    _check_layer_params(layer, p)
    return _xp(x=x), out_hw


def _pool_scatter(xp, layer, cache, dcols):
    return _col2im(xp, dcols, layer.kernel_size, layer.stride, cache.in_shape[2:])


def _avg_windows(xp, layer, x, out_hw):
    """Mean over each pooling window of ``x`` (..., H, W) -> (..., Ho, Wo), separably: the
    kh strided row slices summed, then the kw strided column slices of that (kh + kw - 2
    additions of shrinking arrays, no kh*kw gather; about 1.8x faster than the mean of the
    im2col gather for LeNet's 2 x 2 pooling)."""
    (kh, kw), (sh, sw), (ho, wo) = layer.kernel_size, layer.stride, out_hw
    span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    rows = _add(*[x[..., i : i + span_h : sh, :] for i in range(kh)])
    return _add(*[rows[..., j : j + span_w : sw] for j in range(kw)]) * (1.0 / (kh * kw))


@layer_forward.register(AvgPool2d)
def _(layer: AvgPool2d, p, x):
    xp, out_hw = _pool_input(layer, p, x)
    return _avg_windows(xp, layer, x, out_hw), _PoolCache(tuple(x.shape), out_hw)


@layer_forward.register(MaxPool2d)
def _(layer: MaxPool2d, p, x):
    xp, out_hw = _pool_input(layer, p, x)
    cols = _im2col(xp, x, layer.kernel_size, layer.stride, out_hw)
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
    xp = _xp(dx=dx)
    if cache.mask is None:
        return _avg_windows(xp, layer, dx, cache.out_hw)
    cols = _im2col(xp, dx, layer.kernel_size, layer.stride, cache.out_hw)
    return xp.sum(cache.mask * cols, axis=-3)


def _pool_input_cot(layer, cache, dy):
    xp = _xp(dy=dy)
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
@layer_param_shapes.register(Flatten)
def _(layer: Flatten):
    return ()


@layer_output_shape.register(Flatten)
def _(layer: Flatten, input_shape):
    return (math.prod(input_shape),)


@layer_forward.register(Flatten)
def _(layer: Flatten, p, x):
    if not hasattr(x, "ndim") or x.ndim < 2:
        _check_input(layer, x, 1)
    _check_layer_params(layer, p)
    xp = _xp(x=x)
    in_shape = tuple(x.shape[1:])
    return xp.reshape(x, (x.shape[0], math.prod(in_shape))), in_shape


@layer_jvp.register(Flatten)
def _(layer: Flatten, p, cache, dp, dx):
    if dx is None:
        return None
    _check_trailing(dx, cache, "dx", layer)
    xp = _xp(dx=dx)
    return xp.reshape(dx, _lead(dx, len(cache)) + (math.prod(cache),))


def _unflatten_cot(layer, cache, dy, name):
    _check_trailing(dy, (math.prod(cache),), name, layer)
    xp = _xp(**{name: dy})
    return xp.reshape(dy, _lead(dy, 1) + tuple(cache))


@layer_vjp.register(Flatten)
def _(layer: Flatten, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    dx = _unflatten_cot(layer, cache, dy, "dy")
    return (dx if input_grad else None), (None if params_mode == "none" else ())


@layer_rop_vjp.register(Flatten)
def _(layer: Flatten, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    rdx = _unflatten_cot(layer, cache, rdy, "rdy")
    return (rdx if input_grad else None), ()


# ------------------------------------------------------------------ LayerNorm
@dataclass(frozen=True, eq=False)
class _NormCache:
    xhat: Any  # (B, *shape) normalized input
    r: Any  # (B, 1, ..., 1) reciprocal standard deviation 1 / sqrt(var + eps)
    axes: tuple  # the feature axes, counted from the end


@layer_param_shapes.register(LayerNorm)
def _(layer: LayerNorm):
    return (layer.shape, layer.shape)


@layer_output_shape.register(LayerNorm)
def _(layer: LayerNorm, input_shape):
    if tuple(input_shape) != layer.shape:
        raise ValueError(f"input_shape: expected {_fmt(layer.shape)} for {layer!r}, got {_fmt(tuple(input_shape))}")
    return layer.shape


@layer_init.register(LayerNorm)
def _(layer: LayerNorm, g, xp, *, dtype, device=None, method="gaussian", gain=1.0):
    return (_full(xp, layer.shape, 1.0, dtype, device), _full(xp, layer.shape, 0.0, dtype, device))


def _fmean(xp, a, axes):
    return xp.mean(a, axis=axes, keepdims=True)


def _norm_proj(xp, cache, u):
    """The Jacobian of xhat in x applied to u: r (u - mean(u) - xhat mean(xhat u)) (symmetric)."""
    xh, ax = cache.xhat, cache.axes
    return cache.r * (u - _fmean(xp, u, ax) - xh * _fmean(xp, xh * u, ax))


def _expand_batch(xp, t, n_feat):
    """(*lead, *shape) parameter tangent -> (*lead, 1, *shape), broadcasting over the batch."""
    return xp.expand_dims(t, axis=t.ndim - n_feat)


@layer_forward.register(LayerNorm)
def _(layer: LayerNorm, p, x):
    _check_input(layer, x, len(layer.shape), layer.shape)
    _check_layer_params(layer, p)
    xp = _xp(params=tuple(p), x=x)
    axes = tuple(range(-len(layer.shape), 0))
    xc = x - _fmean(xp, x, axes)
    r = 1.0 / xp.sqrt(_fmean(xp, xc * xc, axes) + layer.eps)
    xh = xc * r
    return p[0] * xh + p[1], _NormCache(xh, r, axes)


@layer_jvp.register(LayerNorm)
def _(layer: LayerNorm, p, cache, dp, dx):
    _check_tangent(dp, p, "dp", layer)
    _check_trailing(dx, cache.xhat.shape, "dx", layer)
    xp = _xp(params=tuple(p))
    n = len(layer.shape)
    t = None if dx is None else p[0] * _norm_proj(xp, cache, dx)
    if dp is not None:
        t = _add(t, _expand_batch(xp, dp[0], n) * cache.xhat + _expand_batch(xp, dp[1], n))
    return t


def _norm_param_cot(xp, layer, cache, dy, params_mode):
    if params_mode == "none":
        return None
    if params_mode == "per_sample":
        return (dy * cache.xhat, dy)
    b_axis = -(len(layer.shape) + 1)
    return (xp.sum(dy * cache.xhat, axis=b_axis), xp.sum(dy, axis=b_axis))


@layer_vjp.register(LayerNorm)
def _(layer: LayerNorm, p, cache, dy, *, params_mode="sum", input_grad=True):
    _check_mode(params_mode)
    _check_trailing(dy, cache.xhat.shape, "dy", layer)
    xp = _xp(params=tuple(p), dy=dy)
    dx = _norm_proj(xp, cache, p[0] * dy) if input_grad else None
    return dx, _norm_param_cot(xp, layer, cache, dy, params_mode)


@layer_rop_vjp.register(LayerNorm)
def _(layer: LayerNorm, p, cache, dp, dx, dy, rdy, *, input_grad=True):
    """R{dx} = P(R{u}) + R{r} q - r (R{xh} mean(xh u) + xh mean(R{xh} u)) with u = gamma dy,
    q = u - mean(u) - xh mean(xh u) (so that dx = r q), R{xh} the tangent of xh and
    R{r} = -r^2 mean(xh dx); R{dgamma} = sum_b rdy xh + dy R{xh}, R{dbeta} = sum_b rdy."""
    _check_tangent(dp, p, "dp", layer)
    for a, name in ((dx, "dx"), (dy, "dy"), (rdy, "rdy")):
        _check_trailing(a, cache.xhat.shape, name, layer)
    xp = _xp(params=tuple(p), dy=dy, rdy=rdy)
    n, xh, ax = len(layer.shape), cache.xhat, cache.axes
    b_axis = -(n + 1)
    rxh = None if dx is None else _norm_proj(xp, cache, dx)
    rdp = (xp.sum(_add(rdy * xh, None if rxh is None else dy * rxh), axis=b_axis), xp.sum(rdy, axis=b_axis))
    if not input_grad:
        return None, rdp
    u = p[0] * dy
    ru = _add(p[0] * rdy, None if dp is None else _expand_batch(xp, dp[0], n) * dy)
    rdx = _norm_proj(xp, cache, ru)
    if rxh is not None:
        m_u = _fmean(xp, xh * u, ax)
        q = u - _fmean(xp, u, ax) - xh * m_u
        rr = -(cache.r * cache.r) * _fmean(xp, xh * dx, ax)
        rdx = rdx + rr * q - cache.r * (rxh * m_u + xh * _fmean(xp, rxh * u, ax))
    return rdx, rdp
