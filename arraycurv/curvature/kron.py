"""Kronecker-factored curvature (K-FAC / KFC) for Dense and Conv2d layers (spec 3.7).

For a layer with weight matrix W (n_out, n_in) (a Conv2d kernel reshaped to
(out_channels, in_channels * kh * kw)), per-sample input a_b (the im2col patches a_bt
of the T output locations for a convolution) and output cotangents delta_bst of the k
rows s of the loss-Hessian factor S_b (H_b = S_b^T S_b, :func:`arraycurv.loss_hessian_factor`),
the exact GGN (= Fisher) block of vec_r(W) is

    G_WW = (1/B) sum_b sum_s (sum_t delta_bst (x) a_bt) (sum_t delta_bst (x) a_bt)^T.

K-FAC (Martens & Grosse 2015) and KFC (Grosse & Martens 2016) replace it by one
Kronecker product ``kron(G, A)`` (row-major vec, :func:`arraycurv.linalg.kron`) with

    A = (1/B) sum_b sum_t a_bt a_bt^T                (input second moment, summed over locations)
    G = (1/(B T)) sum_b sum_s sum_t delta_bst delta_bst^T   (output-gradient second moment)

(T = 1 for Dense). With a bias the input gets a homogeneous coordinate 1 appended, so the
factor covers ``[W, b]`` together (Bernacchia (2018) Sec. 2: the bias as an extra column
of W). This is Bernacchia (2018) eq (22) for i = j, F_ii = <x x^T> (x) <e e^T>, with the
expectation over the model's predictive distribution taken exactly through S_b
(``fisher="exact"``) or by sampling targets from the model (``fisher="mc"``,
Bernacchia Sec. 5, K samples). For a deep linear network (Dense layers without bias,
identity activations) under MSE, sum_s delta_bs delta_bs^T = W_{>i}^T W_{>i} does not
depend on b, so ``kron(G, A)`` IS the exact diagonal GGN block; in general it is an
approximation (exact also for batch size 1 with Dense layers).

:func:`kfac_qngd_direction` applies any fractional power per layer,
``-(G (x) A + damping I)^{-1/q} g / d^{1/q}`` (Huh (2020) eqs 19-21 and footnote 4 with
K-FAC blocks: the practical route to sqrt-NGD-d at scale), through two small
eigendecompositions per layer (:func:`arraycurv.linalg.kron_psd_power_apply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import backend
from ..linalg.kronecker import kron
from ..losses import MSE, loss_hessian_factor
from ..models.deep_linear import DeepLinear
from ..models.layers import Conv2d, Dense
from ..models.sequential import Sequential, backprop_to_layer_outputs, layer_inputs, layer_param_indices, linearize, mlp
from ..validation import check_finite
from .fisher import _check, _check_num_samples, _inputs, _sampled_residuals

__all__ = ['FISHER_KINDS', 'KFactors', 'kfac_block', 'kfac_factors']


#: Values of the ``fisher`` argument: exact expectation over the predictive distribution
#: (through the loss-Hessian factor) or Monte-Carlo targets drawn from the model.
FISHER_KINDS = ("exact", "mc")


@dataclass(frozen=True, eq=False)
class KFactors:
    """Kronecker factors of one layer: the block is ``kron(G, A)`` (row-major vec).

    Attributes
    ----------
    A : array (n_in [+1], n_in [+1])
        Input second moment (1/B) sum_{b,t} a_bt a_bt^T, with the homogeneous
        coordinate last when the layer has a bias (n_in = in_channels * kh * kw for a
        convolution).
    G : array (n_out, n_out)
        Output-gradient second moment (1/(B T)) sum_{b,s,t} delta delta^T.
    layer : int
        Index of the layer in ``model.layers`` (of the equivalent Sequential for a
        DeepLinear model).
    bias : bool
        Whether the block covers ``[W, b]`` (homogeneous coordinate in A).
    """

    A: Any
    G: Any
    layer: int = -1
    bias: bool = False


# ----------------------------------------------------------------------------- helpers
def _as_sequential(model):
    """The Sequential model of ``model`` (a DeepLinear is Dense(bias=False) + identity)."""
    if isinstance(model, Sequential):
        return model
    if isinstance(model, DeepLinear):
        return mlp(model.widths, activation="identity", bias=False)
    raise TypeError(
        f"model: expected a Sequential network (mlp, lenet5, ...) or a DeepLinear, got {type(model).__name__}"
    )


def _check_fisher(fisher):
    if fisher not in FISHER_KINDS:
        raise ValueError(f"fisher: expected one of {FISHER_KINDS}, got {fisher!r}")


def _patches(xp, layer: Conv2d, x):
    """im2col of ``x`` (B, C, H, W) for ``layer``: (B, C*kh*kw, Ho*Wo), in the order of
    the kernel reshape K (out, C, kh, kw) -> (out, C*kh*kw)."""
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    b, c, h, w = x.shape
    dev = backend.device_of(x)
    if ph:
        z = xp.zeros((b, c, ph, w), dtype=x.dtype, device=dev)
        x = xp.concat([z, x, z], axis=2)
    if pw:
        z = xp.zeros((b, c, x.shape[2], pw), dtype=x.dtype, device=dev)
        x = xp.concat([z, x, z], axis=3)
    ho = (h + 2 * ph - kh) // sh + 1
    wo = (w + 2 * pw - kw) // sw + 1
    span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    cols = xp.stack([x[:, :, i : i + span_h : sh, j : j + span_w : sw] for i in range(kh) for j in range(kw)], axis=2)
    return xp.reshape(cols, (b, c * kh * kw, ho * wo))


def _with_ones(xp, rows):
    one = xp.ones((rows.shape[0], 1), dtype=rows.dtype, device=backend.device_of(rows))
    return xp.concat([rows, one], axis=1)


def _gram(xp, rows, scale):
    """rows^T rows * scale, symmetrized."""
    g = xp.matmul(xp.matrix_transpose(rows), rows) * scale
    return 0.5 * (g + xp.matrix_transpose(g))


# ------------------------------------------------------------------------------ factors
def kfac_factors(model, params, x, loss=MSE(), *, fisher: str = "exact", num_samples: int = 1, seed=0):
    """K-FAC / KFC Kronecker factors of every parameterized layer (spec 3.7).

    Parameters
    ----------
    model : Sequential or DeepLinear
        A network of Dense and Conv2d layers (with any parameter-free layers between
        them); a DeepLinear is treated as Dense(bias=False) layers with identity
        activations.
    params : tuple of arrays
        Parameters shaped like ``param_shapes(model)``.
    x : array or tuple
        Inputs (batch on the leading axis), or a batch ``(x, y)`` whose targets are
        ignored (the Fisher never uses the training targets, Bernacchia (2018) Sec. 5).
    loss : MSE or SoftmaxCrossEntropy
    fisher : {'exact', 'mc'}
        ``'exact'``: the output cotangents are the k rows of the loss-Hessian factor S_b
        (exact expectation over the predictive distribution, equal to the GGN's output
        metric); ``'mc'``: the output gradients at ``num_samples`` targets per input
        drawn from the model (:func:`arraycurv.sample_targets`), G averaged over them.
    num_samples : int
        Draws per input for ``'mc'``.
    seed : int or numpy Generator
        Seed of the draws for ``'mc'``.

    Returns
    -------
    tuple of KFactors
        One per parameterized layer in order; ``kron(G, A)`` approximates (for deep
        linear networks under MSE: equals) the diagonal GGN block of ``[W, b]``
        (Bernacchia (2018) eq (22), i = j; Grosse & Martens (2016) for convolutions).
        Arrays in the namespace, dtype and device of ``params``.

    Notes
    -----
    Cost: one forward pass, one backward pass of k (or N) cotangents to the layer
    outputs, and two Gram matrices per layer. The block order for a layer with bias is
    that of ``[W, b]`` (row i: W[i, :] then b[i]), not the flat order (W then b).
    """
    _check_fisher(fisher)
    x = _inputs(x)
    seq = _as_sequential(model)
    xp = _check(seq, params, x)
    for i, p in enumerate(params):
        check_finite(p, f"params[{i}]", xp)
    check_finite(x, "x", xp)
    for i, (layer, (p0, p1)) in enumerate(zip(seq.layers, layer_param_indices(seq))):
        if p1 > p0 and not isinstance(layer, (Dense, Conv2d)):
            raise TypeError(
                f"model: K-FAC supports Dense and Conv2d layers, got the parameterized layer {layer!r} "
                f"at layers[{i}]"
            )
    lin = linearize(seq, params, x)
    out = lin.outputs
    b = x.shape[0]
    if fisher == "exact":
        cot = xp.permute_dims(loss_hessian_factor(loss, out), (1, 0, 2))  # (k, B, k): rows of S_b
        n_draws = 1
    else:
        n_draws = _check_num_samples(num_samples)
        cot = _sampled_residuals(xp, loss, out, seed, n_draws)  # (N, B, k)
    m = cot.shape[0]
    deltas = backprop_to_layer_outputs(lin, cot)
    inputs = layer_inputs(lin)
    factors = []
    for i, (layer, (p0, p1)) in enumerate(zip(seq.layers, layer_param_indices(seq))):
        if p1 == p0:
            continue
        if isinstance(layer, Dense):
            rows = inputs[i]  # (B, n_in)
            dl = xp.reshape(deltas[i], (m * b, layer.n_out))
            t = 1
        else:  # Conv2d (checked above)
            pt = _patches(xp, layer, inputs[i])  # (B, D, T)
            t = pt.shape[-1]
            rows = xp.reshape(xp.permute_dims(pt, (0, 2, 1)), (b * t, pt.shape[1]))
            o = layer.out_channels
            dl = xp.reshape(deltas[i], (m, b, o, t))
            dl = xp.reshape(xp.permute_dims(dl, (0, 1, 3, 2)), (m * b * t, o))
        if layer.bias:
            rows = _with_ones(xp, rows)
        a = _gram(xp, rows, 1.0 / b)
        g = _gram(xp, dl, 1.0 / (b * t * n_draws))
        factors.append(KFactors(a, g, layer=i, bias=bool(layer.bias)))
    return tuple(factors)


def kfac_block(factors: KFactors):
    """The explicit Kronecker block ``kron(G, A)`` of one layer (row-major vec of [W, b]).

    Bernacchia (2018) eq (22) for i = j in the library's row-major convention (the paper
    writes <x x^T> (x) <e e^T> for the column-major vec).

    Parameters
    ----------
    factors : KFactors
        One entry of :func:`kfac_factors`.

    Returns
    -------
    array, shape (n_out * n_in', n_out * n_in')
        With n_in' = n_in + 1 when the layer has a bias.
    """
    if not isinstance(factors, KFactors):
        raise TypeError(f"factors: expected a KFactors (one entry of kfac_factors), got {type(factors).__name__}")
    return kron(factors.G, factors.A)
