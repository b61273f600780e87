"""Kronecker factors of the Fisher (= GGN) diagonal blocks: one API, :func:`kron_factors` (spec 3.7).

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

:func:`kron_factors` is a generic function of the model. The default computes the
factors layer by layer on the model's Sequential form
(:func:`arraycurv.models.sequential.as_sequential`) from the rows each layer reports
(:func:`arraycurv.models.layers.layer_kron_rows`: Dense and Conv2d; a new layer type gets
K-FAC by registering its rows); deep linear networks register the closed form
E_i = W_{>i}^T W_{>i}, A_i = W_{<i} Sxx W_{<i}^T (Bernacchia eqs 14, 15) for the exact
Fisher under MSE and defer to the default otherwise (softmax cross-entropy, Monte-Carlo).
:func:`arraycurv.directions.kfac_qngd_direction` applies fractional powers of the blocks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..linalg.kronecker import kron
from ..losses import MSE, loss_hessian_factor
from ..models.base import linearize
from ..models.deep_linear import DeepLinear, LinearMoments
from ..models.layers import layer_kron_rows
from ..models.sequential import as_sequential, backprop_to_layer_outputs, layer_param_indices
from ..validation import check_arrays, check_call, check_ndim, check_positive_int, check_square, validated
from .fisher import _inputs, _sampled_residuals

__all__ = ['FISHER_KINDS', 'KFactors', 'kfac_block', 'kron_factors']


#: Values of the ``fisher`` argument: exact expectation over the predictive distribution
#: (through the loss-Hessian factor) or Monte-Carlo targets drawn from the model.
FISHER_KINDS = ("exact", "mc")


@dataclass(frozen=True, eq=False)
class KFactors:
    """Kronecker factors of one layer: the block is ``kron(G, A)`` (row-major vec of [W, b]).

    Attributes
    ----------
    G : array (n_out, n_out)
        Output-gradient second moment (1/(B T)) sum_{b,s,t} delta delta^T (Bernacchia's
        E_i = <e_i e_i^T>, eq 14).
    A : array (n_in [+1], n_in [+1])
        Input second moment (1/B) sum_{b,t} a_bt a_bt^T (Bernacchia's <x_{i-1} x_{i-1}^T>,
        eq 15), with the homogeneous coordinate last when the layer has a bias
        (n_in = in_channels * kh * kw for a convolution).
    layer : int
        Index of the layer in ``as_sequential(model).layers``.
    bias : bool
        Whether the block covers ``[W, b]`` (homogeneous coordinate in A).
    param_index : int
        Index of the layer's weight tensor in ``params`` (its bias, if any, follows).
    """

    G: Any
    A: Any
    layer: int = -1
    bias: bool = False
    param_index: int = -1


# ----------------------------------------------------------------------------- helpers
def _check_fisher(fisher):
    if fisher not in FISHER_KINDS:
        raise ValueError(f"fisher: expected one of {FISHER_KINDS}, got {fisher!r}")


def _gram(xp, rows, scale):
    """rows^T rows * scale, symmetrized."""
    g = xp.matmul(xp.matrix_transpose(rows), rows) * scale
    return 0.5 * (g + xp.matrix_transpose(g))


def _output_rows(xp, loss, out, fisher, num_samples, seed):
    """Output cotangents (m, B, k) and the number of draws they average over."""
    if fisher == "exact":
        return xp.permute_dims(loss_hessian_factor(loss, out), (1, 0, 2)), 1  # the k rows of S_b
    n = int(num_samples)
    return _sampled_residuals(xp, loss, out, seed, n), n


# ------------------------------------------------------------------------------ factors
@functools.singledispatch
def _kron_factors(model, params, x, loss=MSE(), *, fisher="exact", num_samples=1, seed=0, xp):
    """Default: K-FAC / KFC on the Sequential form of ``model``, layer by layer."""
    seq = as_sequential(model)
    x = _inputs(x)
    if not backend.is_array(x):
        raise TypeError(f"x: expected an input array (or a batch (x, y)) for {fisher!r} factors of "
                        f"{type(model).__name__} with {loss!r}, got {type(x).__name__}")
    kfac_layers = []
    for i, (layer, (p0, p1)) in enumerate(zip(seq.layers, layer_param_indices(seq))):
        if p1 > p0:
            kfac_layers.append((i, layer, p0, p1))
    lin = linearize(seq, params, x)
    for i, layer, p0, p1 in kfac_layers:
        if layer_kron_rows(layer, tuple(params[p0:p1]), lin.caches[i]) is None:
            raise TypeError(
                f"model: K-FAC supports Dense and Conv2d layers (the layers registering layer_kron_rows), got the "
                f"parameterized layer {layer!r} at layers[{i}]"
            )
    cot, n_draws = _output_rows(xp, loss, lin.outputs, fisher, num_samples, seed)
    deltas = backprop_to_layer_outputs(lin, cot)
    b = x.shape[0]
    factors = []
    for i, layer, p0, p1 in kfac_layers:
        a, g = layer_kron_rows(layer, tuple(params[p0:p1]), lin.caches[i], deltas[i])  # (B, T, D), (m, B, T, O)
        t = a.shape[1]
        a_rows = xp.reshape(a, (b * t, a.shape[2]))
        g_rows = xp.reshape(g, (-1, g.shape[-1]))
        factors.append(KFactors(_gram(xp, g_rows, 1.0 / (b * t * n_draws)), _gram(xp, a_rows, 1.0 / b),
                                layer=i, bias=p1 - p0 > 1, param_index=p0))
    return tuple(factors)


@functools.singledispatch
def _second_moment(x, xp):
    """Sxx = <x x^T> from inputs or a batch (x, y); LinearMoments give their ``sxx``."""
    x = _inputs(x)
    return xp.matmul(xp.matrix_transpose(x), x) / x.shape[0]


@_second_moment.register
def _(x: LinearMoments, xp):
    return x.sxx


@_kron_factors.register(DeepLinear)
def _(model, params, x, loss=MSE(), *, fisher="exact", num_samples=1, seed=0, xp):
    """Closed form E_i = W_{>i}^T W_{>i}, A_i = W_{<i} Sxx W_{<i}^T (Bernacchia eqs 14, 15):
    the exact Fisher under MSE (Gaussian N(f, I)), where K-FAC is exact; other cases defer."""
    if fisher != "exact" or loss != MSE():
        return _kron_factors.dispatch(object)(model, params, x, loss, fisher=fisher, num_samples=num_samples,
                                              seed=seed, xp=xp)
    sxx = _second_moment(x, xp)
    dev = backend.device_of(params[0])
    pre = [xp.eye(params[0].shape[1], dtype=params[0].dtype, device=dev)]
    for w in params[:-1]:
        pre.append(xp.matmul(w, pre[-1]))
    suf = [xp.eye(params[-1].shape[0], dtype=params[-1].dtype, device=dev)]
    for w in params[:0:-1]:
        suf.append(xp.matmul(suf[-1], w))
    suf = suf[::-1]
    out = []
    for i, (p, s) in enumerate(zip(pre, suf)):
        g = xp.matmul(xp.matrix_transpose(s), s)
        a = xp.matmul(xp.matmul(p, sxx), xp.matrix_transpose(p))
        out.append(KFactors(0.5 * (g + xp.matrix_transpose(g)), 0.5 * (a + xp.matrix_transpose(a)),
                            layer=2 * i, bias=False, param_index=i))
    return tuple(out)


@validated(_kron_factors)
def kron_factors(model, params, x, loss=MSE(), *, fisher: str = "exact", num_samples: int = 1, seed=0):
    """Kronecker factors ``KFactors(G, A)`` of the diagonal Fisher (= GGN) blocks, one per layer (spec 3.7).

    ``kron(G, A)`` is K-FAC's (Martens & Grosse 2015) and KFC's (Grosse & Martens 2016)
    approximation of the block of ``[W, b]``; Bernacchia (2018) eq (22) for i = j. It is
    exact for deep linear networks under MSE (where the closed form of eqs 14-15 is
    used) and for batch size 1 with Dense layers.

    Parameters
    ----------
    model : Sequential, DeepLinear, or any family registering :func:`as_sequential`
        Its parameterized layers must register :func:`arraycurv.models.layers.layer_kron_rows`
        (Dense, Conv2d), with any parameter-free layers between them.
    params : tuple of arrays
        Parameters shaped like ``param_shapes(model)``.
    x : array, tuple or LinearMoments
        Inputs (batch on the leading axis), or a batch ``(x, y)`` whose targets are
        ignored (the Fisher never uses the training targets, Bernacchia (2018) Sec. 5);
        a DeepLinear also takes :class:`~arraycurv.models.LinearMoments` (exact, MSE).
    loss : MSE or SoftmaxCrossEntropy
    fisher : {'exact', 'mc'}
        ``'exact'``: the output cotangents are the k rows of the loss-Hessian factor S_b
        (exact expectation over the predictive distribution, equal to the GGN's output
        metric); ``'mc'``: the output gradients at ``num_samples`` targets per input
        drawn from the model (:func:`arraycurv.losses.sample_targets`), G averaged over them.
    num_samples : int
        Draws per input for ``'mc'``.
    seed : int or numpy Generator
        Seed of the draws for ``'mc'``.

    Returns
    -------
    tuple of KFactors
        One per parameterized layer in order, in the namespace, dtype and device of
        ``params``.

    Notes
    -----
    Cost: one forward pass, one backward pass of k (or N) cotangents to the layer
    outputs, and two Gram matrices per layer. The block order for a layer with bias is
    that of ``[W, b]`` (row i: W[i, :] then b[i]), not the flat order (W then b).
    """
    _check_fisher(fisher)
    if fisher == "mc":
        check_positive_int(num_samples, "num_samples")
    as_sequential(model)  # names an unsupported model before its parameters are looked at
    if backend.is_array(x) or isinstance(x, (tuple, list)):
        return check_call(model, params, x=_inputs(x))
    return check_call(model, params, batch=x, names={"batch": "x"})


def kfac_block(factors: KFactors):
    """The explicit Kronecker block ``kron(G, A)`` of one layer (row-major vec of [W, b]).

    Bernacchia (2018) eq (22) for i = j in the library's row-major convention (the paper
    writes <x x^T> (x) <e e^T> for the column-major vec).

    Parameters
    ----------
    factors : KFactors
        One entry of :func:`kron_factors`.

    Returns
    -------
    array, shape (n_out * n_in', n_out * n_in')
        With n_in' = n_in + 1 when the layer has a bias.
    """
    if not isinstance(factors, KFactors):
        raise TypeError(f"factors: expected a KFactors (one entry of kron_factors), got {type(factors).__name__}")
    pairs = [("factors.G", factors.G), ("factors.A", factors.A)]
    for name, f in pairs:
        check_ndim(f, 2, name)
        check_square(f, name)
    check_arrays(pairs)
    return kron(factors.G, factors.A)
