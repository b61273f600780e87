"""The problems of ``compare_peers.py`` and their implementations in arraycurv, JAX, PyTorch
(``torch.func``) and curvlinops (not part of the library).

Every peer builds its network from the layers of the arraycurv model (Dense, Activation,
Conv2d, AvgPool2d/MaxPool2d, Flatten; a DeepLinear through ``as_sequential``) with the
same parameter tuple, so the results can be compared entry by entry:

* Dense ``y = x W^T + b``, W (n_out, n_in);
* Conv2d: cross-correlation, NCHW, kernel (out, in, kh, kw) plus bias (out,), zero padding
  ``padding`` on each side (``jax.lax.conv_general_dilated`` with dimension numbers
  ("NCHW", "OIHW", "NCHW"); ``torch.nn.functional.conv2d``);
* AvgPool2d / MaxPool2d: windows kh x kw with the given stride, no padding, partial windows
  at the bottom/right edge dropped (``lax.reduce_window`` "VALID"; ``F.avg_pool2d``);
* Flatten: C-order reshape to (B, C H W);
* the mean loss (1/B) sum_b l_b with MSE l_b = 1/2 ||f(x_b) - y_b||^2 or softmax
  cross-entropy with integer labels.

Each ``*_fns`` returns a dict routine -> zero-argument callable returning a tuple of arrays
shaped like the parameters (the explicit GGN returns one (P, P) array), and waiting for
the result (``block_until_ready`` for JAX).
"""

from __future__ import annotations

import math

import numpy as np

ROUTINES = ("gradient", "ggn_vp", "hvp")

#: name -> (kind, architecture, batch size). Products use MSE; the explicit GGN of the
#: 64-64-64-10 MLP uses softmax cross-entropy (issue #14) and the deep linear MSE.
PROBLEMS = {
    "mlp784": ("mlp", (784, 300, 100, 10), 128),
    "mlp64": ("mlp", (64, 64, 64, 10), 256),
    "dl16x20": ("deep_linear", (20,) * 17, 1000),
    "lenet5": ("lenet5", (3, 32, 32), 128),
}
TITLES = {"mlp784": "MLP 784-300-100-10, B = 128", "mlp64": "MLP 64-64-64-10, B = 256",
          "dl16x20": "deep linear 16 x 20, B = 1000", "lenet5": "LeNet-5 32x32x3, B = 128"}


# ------------------------------------------------------------------------ problems
def build_model(ac, name):
    kind, arch, b = PROBLEMS[name]
    if kind == "mlp":
        return ac.mlp(arch, "tanh"), b
    if kind == "deep_linear":
        return ac.DeepLinear(arch), b
    return ac.lenet5(arch), b


def seq_layers(ac, model):
    """The layers of ``model`` as a Sequential (a DeepLinear through ``as_sequential``)."""
    from arraycurv.models.sequential import as_sequential

    seq = as_sequential(model)
    return seq.layers, seq.input_shape


def make_data(ac, model, b, dtype, *, loss="mse", seed=0):
    """NumPy params, input, targets and direction of ``model`` in ``dtype``."""
    xp = ac.backend.namespace_by_name("numpy")
    dt = getattr(np, dtype)
    params = ac.init_params(model, seed, xp, dtype=dt)
    v = ac.init_params(model, seed + 3, xp, dtype=dt)
    in_shape = tuple(ac.models.base.input_shape(model))
    k = ac.models.base.output_shape(model)[0]
    x = ac.backend.normal(seed + 1, (b, *in_shape), xp, dtype=dt)
    if loss == "mse":
        y = ac.backend.normal(seed + 2, (b, k), xp, dtype=dt)
    else:
        y = ac.backend.integers(seed + 2, 0, k, (b,), xp)
    return {"params": tuple(params), "x": x, "y": y, "v": tuple(v), "loss": loss}


def macs_per_sample(ac, model):
    """Multiply-adds of one forward pass per sample, ``(W, W1)``: W the sum of n_in n_out
    over the dense layers and of out_c Ho Wo in_c kh kw over the convolutions, W1 that of
    the first layer (whose input needs no tangent or cotangent); elementwise work ignored."""
    from arraycurv.models import layers as L

    lays, shape = seq_layers(ac, model)
    macs = []
    for layer in lays:
        out = L.layer_output_shape(layer, shape)
        if isinstance(layer, L.Dense):
            macs.append(layer.n_in * layer.n_out)
        elif isinstance(layer, L.Conv2d):
            macs.append(math.prod(out) * layer.in_channels * math.prod(layer.kernel_size))
        shape = out
    return sum(macs), macs[0]


def flop_counts(ac, model, b):
    """Analytic flops per routine: 2 per multiply-add of the layer products, with
    ``(W, W1) = macs_per_sample`` and the first layer's input-side products left out.

    forward F = 2BW; backward (weight and input cotangents) 4BW - 2BW1; tangent pass
    (dW a + W da) 4BW - 2BW1; R-backward of Pearlmutter's HVP (rdy^T a + dy^T da and
    rdy W + dy dW) 8BW - 6BW1. So gradient = F + backward = 6BW - 2BW1, GGN product =
    F + tangent + backward = 10BW - 4BW1, HVP = F + tangent + backward + R-backward =
    18BW - 10BW1 (about 3, 5 and 9 forward passes). The cached forms (forward done once in
    ``linearize``) are credited F less. The explicit GGN is credited the structured
    assembly, B P^2 (issue #14: the 2 B P^2 of all blocks, half of them by symmetry). The
    same count serves every implementation, so a fraction above 1 means a cheaper
    algorithm than the per-sample one (the deep linear routines work on batch moments).
    """
    w, w1 = macs_per_sample(ac, model)
    w, w1 = b * w, b * w1
    p = ac.params.num_params(ac.param_shapes(model))
    c = {"gradient": 6 * w - 2 * w1, "ggn_vp": 10 * w - 4 * w1, "hvp": 18 * w - 10 * w1}
    c.update({k + " (cached)": v - 2 * w for k, v in list(c.items())})
    c["ggn_matrix"] = b * p * p
    return c


# ----------------------------------------------------------------------- arraycurv
def arraycurv_fns(ac, model, data, cached: bool):
    """The public verbs (``cached=False``) or the cached forms: ``linearize`` once and the
    linearization's ``value_and_grad``, ``ggn_vp`` and ``hvp`` (Sequential), the batch
    moments (DeepLinear, MSE)."""
    params, x, y, v = data["params"], data["x"], data["y"], data["v"]
    loss = ac.MSE()
    if not cached:
        batch = (x, y)
        return {"gradient": lambda: ac.value_and_grad(model, params, batch, loss)[1],
                "ggn_vp": lambda: ac.ggn_vp(model, params, batch, v, loss),
                "hvp": lambda: ac.hvp(model, params, batch, v, loss)}
    if isinstance(model, ac.DeepLinear):
        from arraycurv.models.deep_linear import moments

        mom = moments(x, y)
        return {"gradient": lambda: ac.value_and_grad(model, params, mom, loss)[1],
                "ggn_vp": lambda: ac.ggn_vp(model, params, mom, v, loss),
                "hvp": lambda: ac.hvp(model, params, mom, v, loss)}
    lin = ac.linearize(model, params, x)
    return {"gradient": lambda: lin.value_and_grad(y, loss)[1],
            "ggn_vp": lambda: lin.ggn_vp(v, loss),
            "hvp": lambda: lin.hvp(y, v, loss)}


def arraycurv_operator_fns(ac, model, data):
    """The SciPy operators ``ggn_operator`` / ``hessian_operator`` built once on the batch
    (as curvlinops' are), applied to the flattened direction: the operator-to-operator
    comparison with curvlinops (whose products rerun the forward pass by design)."""
    from arraycurv.params import flatten

    batch, loss = (data["x"], data["y"]), ac.MSE()
    ggn = ac.curvature.ggn_operator(model, data["params"], batch, loss)
    hess = ac.curvature.hessian_operator(model, data["params"], batch, loss)
    v = flatten(data["v"])
    return {"ggn_vp": lambda: (ggn @ v,), "hvp": lambda: (hess @ v,)}


def arraycurv_ggn_matrix(ac, model, data):
    loss = ac.MSE() if data["loss"] == "mse" else ac.SoftmaxCrossEntropy()
    batch = (data["x"], data["y"])
    return lambda: ac.ggn_matrix(model, data["params"], batch, loss)


# ----------------------------------------------------------------------------- JAX
def _jax_layer(layer, q, a):
    import jax
    import jax.numpy as jnp

    name = type(layer).__name__
    if name == "Dense":
        a = a @ q[0].T
        return a + q[1] if layer.bias else a
    if name == "Activation":
        fns = {"tanh": jnp.tanh, "identity": lambda t: t, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}
        return fns[layer.name](a)
    if name == "Conv2d":
        (ph, pw) = layer.padding
        y = jax.lax.conv_general_dilated(a, q[0], window_strides=layer.stride, padding=[(ph, ph), (pw, pw)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + q[1][:, None, None] if layer.bias else y
    if name in ("AvgPool2d", "MaxPool2d"):
        win, st = (1, 1, *layer.kernel_size), (1, 1, *layer.stride)
        if name == "MaxPool2d":
            return jax.lax.reduce_window(a, -jnp.inf, jax.lax.max, win, st, "VALID")
        return jax.lax.reduce_window(a, 0.0, jax.lax.add, win, st, "VALID") / math.prod(layer.kernel_size)
    if name == "Flatten":
        return a.reshape(a.shape[0], -1)
    raise NotImplementedError(f"JAX peer: layer {layer!r}")


def _split_counts(ac, layers):
    from arraycurv.models.layers import layer_param_shapes

    return [len(layer_param_shapes(layer)) for layer in layers]


def jax_model(ac, model):
    """``f(params, x)`` of ``model`` in JAX and the mean-loss function ``loss(out, y)``."""
    layers, _ = seq_layers(ac, model)
    counts = _split_counts(ac, layers)

    def f(p, x):
        a, i = x, 0
        for layer, n in zip(layers, counts):
            a = _jax_layer(layer, p[i:i + n], a)
            i += n
        return a

    return f


def _jax_loss(kind):
    import jax
    import jax.numpy as jnp

    def mse(out, y):
        r = out - y
        return 0.5 * jnp.sum(r * r) / out.shape[0]

    def ce(out, y):
        logp = jax.nn.log_softmax(out, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    return mse if kind == "mse" else ce


def _jax_ggn(f, lossf):
    import jax

    def ggn(p, x, y, v):
        out, jv = jax.jvp(lambda q: f(q, x), (p,), (v,))
        hjv = jax.jvp(jax.grad(lambda o: lossf(o, y)), (out,), (jv,))[1]
        _, pull = jax.vjp(lambda q: f(q, x), p)
        return pull(hjv)[0]

    return ggn


def _jax_args(data):
    import jax.numpy as jnp

    p = tuple(jnp.asarray(t) for t in data["params"])
    v = tuple(jnp.asarray(t) for t in data["v"])
    return p, jnp.asarray(data["x"]), jnp.asarray(data["y"]), v


def jax_fns(ac, model, data):
    """``jax.jit`` of ``grad``, of the GGN product jvp -> loss Hessian -> vjp and of the
    forward-over-reverse HVP ``jvp(grad)``; parameters and data are jit arguments."""
    import jax

    f, lossf = jax_model(ac, model), _jax_loss(data["loss"])

    def total(p, x, y):
        return lossf(f(p, x), y)

    grad = jax.jit(jax.grad(total))
    ggn = jax.jit(_jax_ggn(f, lossf))
    hvp = jax.jit(lambda p, x, y, v: jax.jvp(lambda q: jax.grad(total)(q, x, y), (p,), (v,))[1])
    p, x, y, v = _jax_args(data)
    ready = jax.block_until_ready
    return {"gradient": lambda: ready(grad(p, x, y)),
            "ggn_vp": lambda: ready(ggn(p, x, y, v)),
            "hvp": lambda: ready(hvp(p, x, y, v))}


def jax_ggn_matrix(ac, model, data, chunk=512):
    """The explicit GGN from ``vmap`` of the jitted GGN product over ``chunk`` identity
    columns at a time (the generic JAX route; P = 8970 needs 18 chunks)."""
    import jax
    import jax.numpy as jnp

    f, lossf = jax_model(ac, model), _jax_loss(data["loss"])
    ggn = _jax_ggn(f, lossf)
    p, x, y, _ = _jax_args(data)
    shapes = [t.shape for t in p]
    sizes = [math.prod(s) for s in shapes]
    n = sum(sizes)
    offsets = np.cumsum([0] + sizes)

    @jax.jit
    def block(p, x, y, start):
        rows = (start + jnp.arange(chunk))[:, None] == jnp.arange(n)[None, :]
        e = rows.astype(p[0].dtype)  # (chunk, P) identity rows
        vs = tuple(e[:, offsets[i]:offsets[i + 1]].reshape(chunk, *s) for i, s in enumerate(shapes))
        out = jax.vmap(lambda v: ggn(p, x, y, v))(vs)
        return jnp.concatenate([t.reshape(chunk, -1) for t in out], axis=1)

    def full():
        cols = [block(p, x, y, s) for s in range(0, n, chunk)]
        return jax.block_until_ready(jnp.concatenate(cols, axis=0)[:n])

    return full


# ------------------------------------------------------------------------- PyTorch
def _torch_layer(layer, q, a):
    import torch
    import torch.nn.functional as F

    name = type(layer).__name__
    if name == "Dense":
        return F.linear(a, q[0], q[1] if layer.bias else None)
    if name == "Activation":
        fns = {"tanh": torch.tanh, "identity": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid}
        return fns[layer.name](a)
    if name == "Conv2d":
        return F.conv2d(a, q[0], q[1] if layer.bias else None, stride=layer.stride, padding=layer.padding)
    if name == "AvgPool2d":
        return F.avg_pool2d(a, layer.kernel_size, layer.stride)
    if name == "MaxPool2d":
        return F.max_pool2d(a, layer.kernel_size, layer.stride)
    if name == "Flatten":
        return a.reshape(a.shape[0], -1)
    raise NotImplementedError(f"torch peer: layer {layer!r}")


def _torch_args(data):
    import torch

    p = tuple(torch.from_numpy(np.array(t)) for t in data["params"])
    v = tuple(torch.from_numpy(np.array(t)) for t in data["v"])
    return p, torch.from_numpy(np.array(data["x"])), torch.from_numpy(np.array(data["y"])), v


def torch_fns(ac, model, data):
    """Eager PyTorch: ``torch.autograd.grad`` for the gradient, ``torch.func`` jvp/vjp for
    the GGN product and forward-over-reverse ``jvp(grad)`` for the HVP (MSE)."""
    import torch
    from torch.func import grad, jvp, vjp

    layers, _ = seq_layers(ac, model)
    counts = _split_counts(ac, layers)
    params, x, y, v = _torch_args(data)
    b = x.shape[0]

    def f(p):
        a, i = x, 0
        for layer, n in zip(layers, counts):
            a = _torch_layer(layer, p[i:i + n], a)
            i += n
        return a

    def loss(p):
        r = f(p) - y
        return 0.5 * torch.sum(r * r) / b

    def gradient():
        ps = tuple(t.detach().requires_grad_() for t in params)
        return torch.autograd.grad(loss(ps), ps)

    def ggn():
        _, jv = jvp(f, (params,), (v,))
        _, pull = vjp(f, params)
        return pull(jv / b)[0]

    return {"gradient": gradient, "ggn_vp": ggn, "hvp": lambda: jvp(grad(loss), (params,), (v,))[1]}


def torch_module(ac, model, data):
    """``torch.nn.Sequential`` of ``model`` holding ``data['params']`` (for curvlinops)."""
    import torch
    from torch import nn

    layers, _ = seq_layers(ac, model)
    mods = []
    for layer in layers:
        name = type(layer).__name__
        if name == "Dense":
            mods.append(nn.Linear(layer.n_in, layer.n_out, bias=layer.bias))
        elif name == "Activation":
            mods.append({"tanh": nn.Tanh, "identity": nn.Identity, "relu": nn.ReLU}[layer.name]())
        elif name == "Conv2d":
            mods.append(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                  layer.padding, bias=layer.bias))
        elif name == "AvgPool2d":
            mods.append(nn.AvgPool2d(layer.kernel_size, layer.stride))
        elif name == "Flatten":
            mods.append(nn.Flatten())
        else:
            raise NotImplementedError(f"curvlinops peer: layer {layer!r}")
    net = nn.Sequential(*mods).to(torch.float64 if data["x"].dtype == np.float64 else torch.float32)
    with torch.no_grad():
        for t, a in zip(net.parameters(), data["params"]):
            t.copy_(torch.from_numpy(np.array(a)))
    return net


def curvlinops_fns(ac, model, data):
    """curvlinops 3 ``GGNLinearOperator`` / ``HessianLinearOperator`` products (list
    format), with ``MSELoss(reduction='sum')``: its curvature is 2B times the mean loss's
    of 1/2 ||r||^2, so the results are scaled by 1/(2B) (outside the timed product)."""
    import curvlinops
    import torch

    net = torch_module(ac, model, data)
    params = [t for t in net.parameters() if t.requires_grad]
    x, y = torch.from_numpy(np.array(data["x"])), torch.from_numpy(np.array(data["y"]))
    lossf = torch.nn.MSELoss(reduction="sum")
    kw = {"check_deterministic": False}
    ggn = curvlinops.GGNLinearOperator(net, lossf, params, [(x, y)], **kw)
    hess = curvlinops.HessianLinearOperator(net, lossf, params, [(x, y)], **kw)
    v = [torch.from_numpy(np.array(t)) for t in data["v"]]
    scale = 1.0 / (2 * x.shape[0])
    return {"ggn_vp": lambda: ggn @ v, "hvp": lambda: hess @ v}, scale
