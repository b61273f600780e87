"""Sequential networks (MLP, LeNet-style CNN) with hand-written passes (spec 2.2-2.4, 3.1,
3.3): forward, JVP, VJP, Pearlmutter's exact Hessian-vector product, explicit Jacobian
and Hessian, and a cached linearization for fast GGN products, K-FAC and linear
operators.

Parameters are a flat tuple over all layers in order (W1, b1, W2, b2, ...); layers
without parameters contribute nothing. The model's input is ``x`` of shape
``(B, *input_shape)``; its output ``f(x)`` has shape ``(B, k)``.

A :class:`SequentialLinearization` (what the generic :func:`arraycurv.linearize` returns
for a Sequential, one forward pass) holds every layer's
input and cache, so that any number of Jacobian-vector products
(:func:`jvp_linearized`), vector-Jacobian products (:func:`vjp_linearized`) or
backpropagations to the layer outputs (:func:`backprop_to_layer_outputs`, what K-FAC
needs) reuse it. Tangents and cotangents may carry extra *leading* axes to push several
directions through at once: a tangent ``(m, *p.shape)`` per tensor gives ``J v`` of
shape ``(m, B, k)``; a cotangent ``(m, B, k)`` gives ``(m, *p.shape)`` per tensor.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import backend
from ..losses import MSE, check_target_shape, loss_hessian_vp, loss_value_and_grad
from ..validation import check_bool, check_int, check_real
from .base import (
    Linearization,
    forward,
    hvp,
    init_params,
    input_shape,
    jvp,
    linearize,
    output_shape,
    param_shapes,
    stacked_tangents,
    vjp,
)
from .deep_linear import DeepLinear
from .layers import (
    ACTIVATIONS,
    Activation,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    _trusted_layers,
    layer_forward,
    layer_init,
    layer_jvp,
    layer_output_shape,
    layer_param_shapes,
    layer_rop_prepare,
    layer_rop_vjp,
    layer_vjp,
)

__all__ = [
    "Sequential",
    "SequentialLinearization",
    "as_sequential",
    "backprop_to_layer_outputs",
    "hvp_linearized",
    "jvp_linearized",
    "layer_inputs",
    "layer_param_indices",
    "lenet5",
    "linearize",
    "mlp",
    "vjp_linearized",
]


# ------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Sequential:
    """A chain of layers (:mod:`arraycurv.layers`) applied in order.

    Parameters
    ----------
    layers : tuple
        Layer dataclasses (Dense, Activation, Conv2d, AvgPool2d, MaxPool2d, Flatten, LayerNorm, or
        any layer type registered with the generic functions of :mod:`arraycurv.layers`).
    input_shape : tuple of int
        Shape of one input without the batch axis: ``(n0,)`` or ``(C, H, W)``.

    The chain is checked at construction (shapes, kernel sizes); the last layer must
    output a vector ``(k,)`` (add :class:`~arraycurv.layers.Flatten` after images).
    """

    layers: tuple
    input_shape: tuple

    def __post_init__(self):
        if not isinstance(self.layers, (tuple, list)) or len(self.layers) == 0:
            raise ValueError(f"layers: expected a non-empty tuple of layers, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        shp = self.input_shape
        if (
            not isinstance(shp, (tuple, list))
            or len(shp) == 0
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shp)
        ):
            raise ValueError(f"input_shape: expected a tuple of positive ints like (n0,) or (C, H, W), got {shp!r}")
        object.__setattr__(self, "input_shape", tuple(shp))
        _shapes(self)  # validates the chain

    def __hash__(self):
        # The hot paths look the model up in small caches (shapes, parameter ranges) on
        # every call: hash the layers once per instance, not at every look-up.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.layers, self.input_shape))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self):
        # string hashes differ between processes: a pickled model recomputes its own
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}


@functools.lru_cache(maxsize=256)
def _shapes(model: Sequential):
    """(input shape of each layer, output shape of the model); validates the chain."""
    shape = model.input_shape
    ins = []
    for i, layer in enumerate(model.layers):
        ins.append(shape)
        try:
            shape = tuple(layer_output_shape(layer, shape))
        except ValueError as exc:
            head, _, rest = str(exc).partition(": ")
            raise ValueError(f"layers[{i}]: {rest} ({head} of layers[{i}] of the Sequential)") from None
        except TypeError:
            raise TypeError(
                f"layers[{i}]: expected a layer (Dense, Activation, Conv2d, ... or a type registered with "
                f"layer_output_shape), got {type(layer).__name__}"
            ) from None
    if len(shape) != 1:
        raise ValueError(
            f"layers: expected the last layer to output a vector (k,), got shape {shape}; add Flatten() after images"
        )
    return tuple(ins), shape


@functools.lru_cache(maxsize=256)
def layer_param_indices(model: Sequential) -> tuple[tuple[int, int], ...]:
    """For each layer, the range ``(start, stop)`` of its tensors in the parameter tuple.

    Layers without parameters get an empty range. Example: mlp((3, 4, 2)) gives
    ``((0, 2), (2, 2), (2, 4))`` for (Dense, Activation, Dense).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a Sequential network (mlp, lenet5, ...), got {type(model).__name__}")
    out, start = [], 0
    for layer in model.layers:
        n = len(layer_param_shapes(layer))
        out.append((start, start + n))
        start += n
    return tuple(out)


@param_shapes.register(Sequential)
@functools.lru_cache(maxsize=256)
def _(model: Sequential):
    return tuple(tuple(s) for layer in model.layers for s in layer_param_shapes(layer))


@input_shape.register(Sequential)
def _(model: Sequential):
    return model.input_shape


@output_shape.register(Sequential)
def _(model: Sequential):
    return _shapes(model)[1]


@stacked_tangents.register(Sequential)
def _(model: Sequential):
    return True


def _split(model, params):
    return tuple(params[a:b] if isinstance(params, tuple) else tuple(params[a:b])
                 for a, b in layer_param_indices(model))


class _Step(NamedTuple):
    """One layer of a :func:`_plan`: its parameter range and registered implementations."""

    layer: Any
    lo: int
    hi: int
    forward: Any
    jvp: Any
    vjp: Any
    rop_vjp: Any
    rop_prepare: Any


@functools.lru_cache(maxsize=256)
def _plan(model: Sequential) -> tuple:
    """Each layer with its parameter range ``[lo, hi)`` and its implementations of the
    generic layer functions the passes call, looked up once per model instead of once per layer and pass
    (the passes of small networks are dominated by such per-layer Python costs).

    The look-up is that of the generic functions at the model's first pass: register a
    layer type's implementations before using it in a model.
    """
    steps = []
    for layer, (lo, hi) in zip(model.layers, layer_param_indices(model)):
        cls = layer.__class__
        steps.append(_Step(layer, lo, hi, layer_forward.dispatch(cls), layer_jvp.dispatch(cls),
                           layer_vjp.dispatch(cls), layer_rop_vjp.dispatch(cls), layer_rop_prepare.dispatch(cls)))
    return tuple(steps)


def _tangent_lead(model, tangent) -> tuple:
    """Leading axes of a (validated) tangent tree: those of its first tensor."""
    t, s = tangent[0], param_shapes(model)[0]
    return tuple(t.shape[: t.ndim - len(s)])


def _check_tangent_tree(model, params, tangent, name):
    """Tangent tuple like params, each tensor (*lead, *shape) with a common lead."""
    shapes = param_shapes(model)
    if not isinstance(tangent, (tuple, list)) or len(tangent) != len(shapes):
        got = f"{len(tangent)} arrays" if isinstance(tangent, (tuple, list)) else type(tangent).__name__
        raise ValueError(f"{name}: expected a tuple of {len(shapes)} arrays shaped like params, got {got}")
    pairs = []
    for i, t in enumerate(tangent):
        if not backend.is_array(t):
            raise ValueError(f"{name}[{i}]: expected an array, got {type(t).__name__}")
        pairs.append((f"{name}[{i}]", t))
    xp = backend.namespace_of_pairs([("params[0]", params[0])] + pairs)
    lead = None
    for i, (t, s) in enumerate(zip(tangent, shapes)):
        n = len(s)
        if t.ndim < n or tuple(t.shape[t.ndim - n:]) != tuple(s):
            raise ValueError(f"{name}[{i}]: expected shape (..., {', '.join(map(str, s))}), got {tuple(t.shape)}")
        if t.dtype != params[i].dtype:
            raise TypeError(f"{name}[{i}]: expected dtype {params[i].dtype} like params[{i}], got {t.dtype}")
        this = tuple(t.shape[: t.ndim - n])
        if lead is None:
            lead = this
        elif this != lead:
            raise ValueError(f"{name}[{i}]: expected leading axes {lead} like {name}[0], got shape {tuple(t.shape)}")
    backend.check_all_finite(xp, pairs)
    return lead or ()


def _check_lin(lin, name="lin"):
    if not isinstance(lin, SequentialLinearization):
        raise TypeError(
            f"{name}: expected a SequentialLinearization (arraycurv.linearize of a Sequential network), "
            f"got {type(lin).__name__}"
        )


def _check_cotangent(lin, cotangent, name="cotangent"):
    _check_lin(lin)
    if not backend.is_array(cotangent):
        raise TypeError(f"{name}: expected an array, got {type(cotangent).__name__}")
    xp = backend.namespace_of_pairs([("outputs", lin.outputs), (name, cotangent)])
    b, k = lin.outputs.shape
    if cotangent.ndim < 2 or tuple(cotangent.shape[-2:]) != (b, k):
        raise ValueError(f"{name}: expected shape ({b}, {k}) or (m, {b}, {k}), got {tuple(cotangent.shape)}")
    if cotangent.dtype != lin.outputs.dtype:
        raise TypeError(f"{name}: expected dtype {lin.outputs.dtype} like the outputs, got {cotangent.dtype}")
    backend.check_all_finite(xp, [(name, cotangent)])


# --------------------------------------------------------------------- builders
def mlp(sizes, activation: str = "tanh", bias: bool = True) -> Sequential:
    """Multilayer perceptron a_l = phi(W_l a_{l-1} + b_l) (spec 2.2), last layer linear.

    Parameters
    ----------
    sizes : sequence of int
        Widths (n0, n1, ..., nL), L >= 1.
    activation : str
        One of :data:`arraycurv.models.layers.ACTIVATIONS` (identity, tanh, relu, elu,
        sigmoid, softplus, gelu), applied after every layer but the last.
    bias : bool
        Whether the dense layers have biases.
    """
    sizes = tuple(sizes) if isinstance(sizes, (tuple, list)) else (sizes,)
    if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes: expected at least two positive ints (n0, ..., nL), got {sizes!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    check_bool(bias, "bias")
    act = Activation(activation)
    layers = []
    for i in range(len(sizes) - 1):
        if i:
            layers.append(act)
        layers.append(Dense(sizes[i], sizes[i + 1], bias=bias))
    return Sequential(tuple(layers), (sizes[0],))


def lenet5(
    input_shape=(1, 28, 28),
    num_classes: int = 10,
    activation: str = "tanh",
    pool: str = "avg",
    padding=None,
) -> Sequential:
    """LeNet-5 style CNN (LeCun et al. 1998; spec 2.3).

    conv 5x5 (6 channels) -> phi -> pool 2 -> conv 5x5 (16) -> phi -> pool 2 -> flatten
    -> dense 120 -> phi -> dense 84 -> phi -> dense ``num_classes`` (linear).

    ``padding=None`` chooses the paddings (p1, p2) of the two convolutions so that small
    images work: p1 = 2 ("same") if the image is smaller than 32 in either side, else 0;
    p2 = 2 if the pooled map entering the second convolution is smaller than 10, else 0.
    So 32x32 and 28x28 inputs give the classic 16 x 5 x 5 = 400 features, 8x8 digits give
    16 x 2 x 2 = 64 and 16x16 inputs 16 x 4 x 4. Pass ``padding=(p1, p2)`` to override.
    ``pool`` is ``"avg"`` (the original subsampling) or ``"max"``.
    """
    if pool not in ("avg", "max"):
        raise ValueError(f"pool: expected 'avg' or 'max', got {pool!r}")
    input_shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (input_shape,)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: expected (C, H, W), got {input_shape!r}")
    check_int(num_classes, "num_classes", lo=1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    c, h, w = input_shape
    if padding is None:
        p1 = 2 if min(h, w) < 32 else 0
        h1 = (h + 2 * p1 - 4) // 2
        w1 = (w + 2 * p1 - 4) // 2
        p2 = 2 if min(h1, w1) < 10 else 0
    elif not isinstance(padding, (tuple, list)) or len(padding) != 2:
        raise ValueError(f"padding: expected None or a pair (p1, p2) of non-negative ints, got {padding!r}")
    else:
        p1, p2 = padding
    pool_cls = AvgPool2d if pool == "avg" else MaxPool2d
    act = Activation(activation)
    head = (Conv2d(c, 6, 5, padding=p1), act, pool_cls(2), Conv2d(6, 16, 5, padding=p2), act, pool_cls(2), Flatten())
    try:
        feat = Sequential(head, input_shape)
    except ValueError as exc:
        raise ValueError(f"input_shape: expected an image (C, H, W) large enough for LeNet-5 with paddings "
                         f"{(p1, p2)}, got {input_shape!r} ({exc})") from None
    n_feat = _shapes(feat)[1][0]
    tail = (Dense(n_feat, 120), act, Dense(120, 84), act, Dense(84, num_classes))
    return Sequential(head + tail, input_shape)


# ------------------------------------------------------------------ initialization
@init_params.register(Sequential)
def _(model: Sequential, seed, xp=None, *, dtype=None, device=None, method="gaussian", gain=1.0):
    """Seeded parameters, layer by layer (:func:`arraycurv.models.layers.layer_init`):
    weights N(0, gain^2 / fan_in) (``"gaussian"``) or gain times a (semi-)orthogonal
    matrix (``"orthogonal"``, Saxe et al. 2013; Huh S.I.3), biases zero.

    fan_in = n_in for dense layers and in_channels * kh * kw for convolutions, whose
    orthogonal init is applied to the (out, in*kh*kw) reshape. The draws come from one
    NumPy generator in layer order, so the same seed gives the same values on every
    namespace.
    """
    if method not in ("gaussian", "orthogonal"):
        raise ValueError(f"method: expected 'gaussian' or 'orthogonal', got {method!r}")
    xp = backend.namespace_by_name("numpy") if xp is None else xp
    dt = backend.float_dtype(xp, dtype)
    gain = check_real(gain, "gain", lo=0)
    g = backend.rng(seed)
    return tuple(t for layer in model.layers
                 for t in layer_init(layer, g, xp, dtype=dt, device=device, method=method, gain=gain))


# ----------------------------------------------------------------- linearization
@dataclass(frozen=True, eq=False)
class SequentialLinearization(Linearization):
    """A Sequential network linearized at ``(params, x)``: everything one forward pass computes.

    Its products (:meth:`jvp`, :meth:`vjp`, :meth:`hvp`, and the module functions
    :func:`jvp_linearized`, :func:`vjp_linearized`, :func:`hvp_linearized`,
    :func:`backprop_to_layer_outputs`) reuse the caches instead of running the forward
    pass again.

    Attributes
    ----------
    model, params, x, outputs
        As in :class:`arraycurv.models.base.Linearization`.
    inputs : tuple
        The input activation of each layer (``inputs[0] is x``).
    caches : tuple
        Each layer's cache from :func:`~arraycurv.models.layers.layer_forward`.
    xp : namespace
        The array namespace of the arrays (found once, when the linearization is built).
    """

    inputs: tuple = ()
    caches: tuple = ()
    xp: Any = None
    #: loss -> (a copy of the targets, their :class:`_GradientPass`: the gradient's cotangent
    #: at every layer output and the layers' preparations of it): the part of Pearlmutter's
    #: HVP that does not depend on v, kept for repeated products
    _grad_cots: dict = field(default_factory=dict, init=False, repr=False)

    def jvp(self, tangent):
        return jvp_linearized(self, tangent)

    def vjp(self, cotangent, *, per_sample: bool = False):
        return vjp_linearized(self, cotangent, per_sample=per_sample)

    def hvp(self, y, v, loss=MSE()):
        return hvp_linearized(self, y, v, loss)

    def ggn_vp(self, v, loss=MSE()):
        """G v = (1/B) sum_b J_b^T H_b J_b v from the caches (one check of ``v``, then a
        tangent pass, the output-Hessian products and a reverse pass; Huh eq (3))."""
        _check_tangent_tree(self.model, self.params, v, "v")
        return _ggn_vp_linearized(self, v, loss)

    def value_and_grad(self, y, loss=MSE()):
        """Mean loss on ``(x, y)`` and its gradient from the caches (one reverse pass)."""
        _check_targets_lin(self, y, loss)
        return _value_and_grad_linearized(self, y, loss)


@linearize.register(Sequential)
def _(model: Sequential, params, x, *, xp=None) -> SequentialLinearization:
    """One forward pass of ``model`` at ``(params, x)`` keeping every layer's input and cache."""
    xp = backend.namespace_of(params=tuple(params), x=x) if xp is None else xp
    params = tuple(params)
    a = x
    inputs, caches = [], []
    with _trusted_layers(xp):
        for st in _plan(model):
            inputs.append(a)
            a, cache = st.forward(st.layer, params[st.lo:st.hi], a)
            caches.append(cache)
    return SequentialLinearization(model, params, x, a, tuple(inputs), tuple(caches), xp)


def _lin_xp(lin):
    return lin.xp if lin.xp is not None else backend.namespace_of(outputs=lin.outputs)


# ------------------------------------------------------------------ as Sequential
@functools.singledispatch
def as_sequential(model) -> Sequential:
    """The :class:`Sequential` network computing the same function with the same parameters.

    A Sequential is itself; a :class:`~arraycurv.models.DeepLinear` is Dense(bias=False)
    layers with identity activations between them (Huh 2020 Sec. 2). Families register
    it to get the layer-wise routines (K-FAC) of Sequential networks.
    """
    raise TypeError(
        f"model: expected a Sequential network (mlp, lenet5, ...) or a DeepLinear, got {type(model).__name__}"
    )


@as_sequential.register(Sequential)
def _(model: Sequential) -> Sequential:
    return model


@as_sequential.register(DeepLinear)
def _(model: DeepLinear) -> Sequential:
    return mlp(model.widths, activation="identity", bias=False)


def layer_inputs(lin: SequentialLinearization) -> tuple:
    """The input activation of each layer, shape (B, *in_shape_l) (K-FAC's a_{l-1})."""
    _check_lin(lin)
    return lin.inputs


def _forward_tangents(lin, tangent, keep: bool = True):
    """Tangent pass: (tangent of each layer's input, tangent of the output).

    ``keep=False`` (J v alone) lets each intermediate tangent go once the next layer has
    it (the tuple is then empty): the memory stays warm in the cache for the next one.
    """
    tangent, params = tuple(tangent), lin.params
    da = None
    t_in = []
    with _trusted_layers(_lin_xp(lin)):
        for st, cache in zip(_plan(lin.model), lin.caches):
            if keep:
                t_in.append(da)
            da = st.jvp(st.layer, params[st.lo:st.hi], cache, tangent[st.lo:st.hi] if st.hi > st.lo else None, da)
    return tuple(t_in), da


def _zeros_out(lin, lead):
    xp = _lin_xp(lin)
    return xp.zeros(tuple(lead) + tuple(lin.outputs.shape), dtype=lin.outputs.dtype,
                    device=backend.device_of(lin.outputs))


def jvp_linearized(lin: SequentialLinearization, tangent) -> Any:
    """Jacobian-vector product J v at the linearization point, shape (B, k).

    ``tangent`` is a tuple shaped like the parameters; each tensor may carry the same
    leading axes ``(m, ...)``, giving an (m, B, k) result (m products at once).
    """
    _check_lin(lin)
    _check_tangent_tree(lin.model, lin.params, tangent, "tangent")
    return _jvp_trusted(lin, tangent)


def _backward(lin, cotangent, params_mode):
    """Backward pass; returns each layer's parameter cotangents (None for none)."""
    plan, params = _plan(lin.model), lin.params
    g = cotangent
    grads = [None] * len(plan)
    with _trusted_layers(_lin_xp(lin)):
        for i in range(len(plan) - 1, -1, -1):
            st = plan[i]
            mode = params_mode if st.hi > st.lo else "none"
            if mode == "none" and i == 0:
                break
            g, grads[i] = st.vjp(st.layer, params[st.lo:st.hi], lin.caches[i], g, params_mode=mode, input_grad=i > 0)
    return grads


def _jvp_trusted(lin, tangent):
    """J v at a linearization for a validated tangent (no checks)."""
    _, out = _forward_tangents(lin, tangent, keep=False)
    return _zeros_out(lin, _tangent_lead(lin.model, tangent)) if out is None else out


def _ggn_vp_linearized(lin, v, loss):
    """G v at a linearization for a validated ``v`` (spec 3.2; Huh eq (3))."""
    jv = _jvp_trusted(lin, v)
    return _vjp_trusted(lin, _loss_hvp(loss, lin.outputs, jv, _lin_xp(lin)) / lin.x.shape[0])


def _value_and_grad_linearized(lin, y, loss):
    """Mean loss on ``(lin.x, y)`` and its gradient for validated targets."""
    value, g = loss_value_and_grad.trusted(loss, lin.outputs, y, _lin_xp(lin))
    return value, _vjp_trusted(lin, g / lin.x.shape[0])


def _vjp_trusted(lin, cotangent, per_sample=False):
    """sum_b J_b^T u_b (or per sample) for a validated cotangent (no checks)."""
    grads = _backward(lin, cotangent, "per_sample" if per_sample else "sum")
    return tuple(t for dp in grads if dp for t in dp)


def vjp_linearized(lin: SequentialLinearization, cotangent, *, per_sample: bool = False) -> tuple:
    """Vector-Jacobian product sum_b J_b^T u_b at the linearization point (no 1/B).

    ``cotangent`` has shape (B, k) or (m, B, k); leading axes are kept, so an (m, B, k)
    cotangent gives tensors of shape (m, *p.shape). With ``per_sample=True`` the batch
    axis is kept too: tensors of shape (*lead, B, *p.shape) holding J_b^T u_b.
    """
    check_bool(per_sample, "per_sample")
    _check_cotangent(lin, cotangent)
    return _vjp_trusted(lin, cotangent, per_sample)


def backprop_to_layer_outputs(lin: SequentialLinearization, cotangent) -> tuple:
    """Cotangent at every layer's output, per sample (what K-FAC's output factors need).

    ``cotangent`` (B, k) or (m, B, k) (e.g. the k columns of a loss-Hessian factor) is
    propagated backwards; entry l has shape (*lead, B, *out_shape_l), the last entry is
    ``cotangent`` itself. No 1/B factor is applied.
    """
    _check_cotangent(lin, cotangent)
    return _output_cotangents(lin, cotangent)


# ---------------------------------------------------------------- generic passes
@forward.register(Sequential)
def _(model: Sequential, params, x, *, xp=None):
    xp = backend.namespace_of(params=tuple(params), x=x) if xp is None else xp
    a, params = x, tuple(params)
    with _trusted_layers(xp):
        for st in _plan(model):
            a, _ = st.forward(st.layer, params[st.lo:st.hi], a)
    return a


@jvp.register(Sequential)
def _(model: Sequential, params, x, tangent, *, xp=None):
    lin = linearize.trusted(model, params, x, xp=xp)
    return lin.outputs, _jvp_trusted(lin, tangent)


@vjp.register(Sequential)
def _(model: Sequential, params, x, cotangent, *, xp=None):
    return _vjp_trusted(linearize.trusted(model, params, x, xp=xp), cotangent)


def _loss_hvp(loss, outputs, v, xp=None):
    """Per-sample H_b v_b for v of shape (B, k) or (*lead, B, k)."""
    if v.ndim == 2:
        return loss_hessian_vp.trusted(loss, outputs, v)
    xp = backend.namespace_of(outputs=outputs, v=v) if xp is None else xp
    k = outputs.shape[-1]
    o = xp.reshape(xp.broadcast_to(outputs, tuple(v.shape)), (-1, k))
    return xp.reshape(loss_hessian_vp.trusted(loss, o, xp.reshape(v, (-1, k))), tuple(v.shape))


def hvp_linearized(lin: SequentialLinearization, y, v, loss=MSE()) -> tuple:
    """Exact Hessian-vector product H v of the mean loss at a linearization (spec 3.3).

    Pearlmutter's (1994) R-operator reusing the caches of :func:`linearize`: a forward
    tangent pass (every layer's input tangent and J v), then the backward pass of the
    gradient together with its R-derivative (:func:`~arraycurv.layers.layer_rop_vjp`),
    started from R{dL/df} = H_l J v / B. ``y`` are the targets of the batch ``lin.x``;
    ``v`` is shaped like the parameters and may carry leading axes (m products at once).
    """
    xp = _check_targets_lin(lin, y, loss)
    _check_tangent_tree(lin.model, lin.params, v, "v")
    return _hvp_linearized(lin, v, loss, _kept_grad_cotangents(lin, y, loss, xp))


class _GradientPass(NamedTuple):
    """The part of Pearlmutter's HVP that does not depend on v: the gradient's cotangent
    (1/B) dL/d(output of layer i) at every layer, and each layer's
    :func:`~arraycurv.models.layers.layer_rop_prepare` of it (None where nothing is kept)."""

    cots: tuple
    preps: tuple


def _grad_cotangents(lin, y, loss, xp, prepare=True):
    """The :class:`_GradientPass` of ``lin`` at targets ``y`` (trusted inputs); with
    ``prepare=False`` (a single product: nothing to reuse) no layer preparations."""
    g = loss_value_and_grad.trusted(loss, lin.outputs, y, xp, value=False)[1] / lin.x.shape[0]
    cots = _output_cotangents(lin, g)
    plan, params = _plan(lin.model), lin.params
    if not prepare:
        return _GradientPass(cots, (None,) * len(plan))
    with _trusted_layers(xp):
        preps = tuple(st.rop_prepare(st.layer, params[st.lo:st.hi], cache, dy)
                      for st, cache, dy in zip(plan, lin.caches, cots))
    return _GradientPass(cots, preps)


def _kept_grad_cotangents(lin, y, loss, xp):
    """:func:`_grad_cotangents`, computed once per linearization, loss and target values
    and kept for repeated HVPs at one point (e.g. Lanczos). The targets are compared by
    value with a copy of those of the first call, so changing them in place is seen."""
    try:
        hit = lin._grad_cots.get(loss)
    except TypeError:  # an unhashable loss object: no reuse
        return _grad_cotangents(lin, y, loss, xp, prepare=False)
    if hit is not None and tuple(hit[0].shape) == tuple(y.shape) and bool(xp.all(hit[0] == y)):
        return hit[1]
    cots = _grad_cotangents(lin, y, loss, xp)
    lin._grad_cots.clear()  # one loss and target at a time: bounded memory
    lin._grad_cots[loss] = (xp.asarray(y, copy=True), cots)
    return cots


def _output_cotangents(lin, g):
    """The cotangent at every layer's output from ``g`` at the model output (trusted)."""
    plan, params = _plan(lin.model), lin.params
    outs = [None] * len(plan)
    with _trusted_layers(_lin_xp(lin)):
        for i in range(len(plan) - 1, -1, -1):
            outs[i] = g
            if i > 0:
                st = plan[i]
                g, _ = st.vjp(st.layer, params[st.lo:st.hi], lin.caches[i], g, params_mode="none")
    return tuple(outs)


def _check_targets_lin(lin, y, loss):
    """Targets ``y`` of the batch ``lin.x`` for ``loss``: shape, and for real targets dtype
    and finiteness (labels: range); returns the namespace."""
    _check_lin(lin)
    xp = _lin_xp(lin)
    if check_target_shape(loss, y, tuple(lin.outputs.shape), "y"):  # real targets (labels: range-checked)
        if not backend.is_array(y):
            raise TypeError(f"y: expected an array, got {type(y).__name__}")
        xp = backend.namespace_of_pairs([("outputs", lin.outputs), ("y", y)])
        if y.dtype != lin.outputs.dtype:
            raise TypeError(f"y: expected dtype {lin.outputs.dtype} like the outputs, got {y.dtype}")
        backend.check_all_finite(xp, [("y", y)])
    return xp


def _hvp_linearized(lin, v, loss, grad_cots):
    """Pearlmutter's R-operator: R{grad} along v = H v of the mean loss (trusted inputs),
    with ``grad_cots`` the v-independent :class:`_GradientPass` (:func:`_grad_cotangents`)."""
    model = lin.model
    b = lin.x.shape[0]
    lead = _tangent_lead(model, v)
    t_in, jv = _forward_tangents(lin, v)
    if jv is None:
        jv = _zeros_out(lin, lead)
    xp = _lin_xp(lin)
    rg = _loss_hvp(loss, lin.outputs, jv, xp) / b  # R{d L / d f} = H_l J v / B
    plan, params, v = _plan(model), lin.params, tuple(v)
    res = [None] * len(plan)
    t_in = list(t_in)
    with _trusted_layers(xp):
        for i in range(len(plan) - 1, -1, -1):
            st = plan[i]
            need_in = i > 0
            dp = v[st.lo:st.hi] if st.hi > st.lo else None
            prep = grad_cots.preps[i]
            kw = {"input_grad": need_in} if prep is None else {"input_grad": need_in, "prepared": prep}
            rdx, rdp = st.rop_vjp(st.layer, params[st.lo:st.hi], lin.caches[i], dp, t_in[i], grad_cots.cots[i], rg,
                                  **kw)
            t_in[i] = None  # used: let it go
            res[i] = rdp
            rg = rdx
    out = tuple(t for rdp in res for t in rdp)
    # parameters whose R-derivative does not depend on the lead axes get them broadcast
    return tuple(t if t.ndim == len(s) + len(lead) else xp.broadcast_to(t, tuple(lead) + tuple(s))
                 for t, s in zip(out, param_shapes(model)))


@hvp.register(Sequential)
def _(model: Sequential, params, batch, v, loss=MSE(), *, xp=None):
    """Exact Hessian-vector product H v of the mean loss (spec 2.4, 3.3).

    Pearlmutter's (1994) R-operator: a forward tangent pass (J v and every layer's input
    tangent), the backward pass, and the R-backward pass (:func:`layer_rop_vjp`) that
    adds the second-order terms (bilinear terms of dense/conv layers, phi'' of the
    activations) to H_l J v / B. ``v`` may carry leading axes (m products at once).
    """
    x, y = batch
    lin = linearize.trusted(model, params, x, xp=xp)
    return _hvp_linearized(lin, v, loss, _grad_cotangents(lin, y, loss, _lin_xp(lin), prepare=False))
