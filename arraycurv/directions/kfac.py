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

import math
from numbers import Real

from .. import backend
from ..curvature.fisher import _check
from ..curvature.generic import value_and_grad
from ..curvature.kron import _as_sequential, _check_fisher, kfac_factors
from ..linalg.kronecker import kron_psd_power_apply
from ..losses import MSE
from ..models.sequential import layer_param_indices
from ..validation import check_finite

__all__ = ['kfac_qngd_direction']


# ---------------------------------------------------------------------------- q-NGD
def _check_q(q) -> float:
    if isinstance(q, bool) or not isinstance(q, Real) or math.isnan(q) or q < 1:
        raise ValueError(f"q: expected a real number >= 1 (math.inf for SGD), got {q!r}")
    return float(q)


def _check_nonneg(value, name):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite real number >= 0, got {value!r}")
    return float(value)


def kfac_qngd_direction(model, params, batch, q, *, loss=MSE(), damping=0.0, rcond=None, fisher: str = "exact",
                        normalize: bool = True, num_samples: int = 1, seed=0):
    """Kronecker-factored q-NGD direction (spec 3.7; Huh (2020) eqs 19-21, footnote 4).

    Per parameterized layer i (weights and bias together as W~_i = [W_i, b_i]),

        d_i = -(G_i (x) A_i + damping I)^{+1/q} vec_r(grad W~_i) / d^{1/q},

    with (G_i, A_i) from :func:`kfac_factors` and d the number of parameterized layers
    (``normalize=True``; the 1/d of NGD-d eq 19, 1/sqrt(d) of sqrt-NGD-d eq 21). The
    power is applied in matrix form ``G^p X A^p`` from the eigendecompositions of the two
    factors (:func:`arraycurv.linalg.kron_psd_power_apply`), never forming the product.
    q = 1 is K-FAC's natural gradient (NGD-d), q = 2 sqrt-NGD-d, ``math.inf`` the
    gradient direction -g (SGD, no normalization).

    Parameters
    ----------
    model : Sequential or DeepLinear
    params : tuple of arrays
    batch : tuple (x, y)
        The gradient uses the training targets y; the factors never do.
    q : float
        Fractional order, q >= 1 (``math.inf`` allowed).
    loss : MSE or SoftmaxCrossEntropy
    damping : float
        Levenberg-Marquardt damping >= 0 added to the eigenvalues of the Kronecker
        product (not to each factor).
    rcond : float, optional
        Cut-off of the pseudo-inverse power relative to the largest eigenvalue of each
        block; default ``n_out * n_in' * eps`` of the dtype.
    fisher : {'exact', 'mc'}
        Factor estimate, see :func:`kfac_factors`.
    normalize : bool
        Divide by d^{1/q} (block-diagonal rules of Huh (2020) Sec. 5).
    num_samples, seed
        Monte-Carlo draws for ``fisher='mc'``.

    Returns
    -------
    tuple of arrays
        The direction, shaped like ``params`` (no learning rate), in their namespace.
    """
    q = _check_q(q)
    damping = _check_nonneg(damping, "damping")
    if rcond is not None:
        rcond = _check_nonneg(rcond, "rcond")
    _check_fisher(fisher)
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch: expected a tuple (x, y), got {type(batch).__name__}")
    seq = _as_sequential(model)
    _check(seq, params, batch[0])
    _, grad = value_and_grad(model, params, tuple(batch), loss)
    xp = backend.namespace_of(params=tuple(params))
    for i, g in enumerate(grad):
        check_finite(g, f"gradient[{i}]", xp)
    if math.isinf(q):
        return tuple(-g for g in grad)
    factors = kfac_factors(seq, params, batch[0], loss, fisher=fisher, num_samples=num_samples, seed=seed)
    norm = float(len(factors)) ** (1.0 / q) if normalize else 1.0
    out = [None] * len(params)
    indices = layer_param_indices(seq)
    for f in factors:
        p0, _ = indices[f.layer]
        w = params[p0]
        gw = xp.reshape(grad[p0], (w.shape[0], -1))
        if f.bias:
            gw = xp.concat([gw, grad[p0 + 1][:, None]], axis=1)
        dmat = kron_psd_power_apply(f.G, f.A, gw, -1.0 / q, rcond=rcond, damping=damping) / (-norm)
        if f.bias:
            out[p0] = xp.reshape(dmat[:, :-1], tuple(w.shape))
            out[p0 + 1] = dmat[:, -1]
        else:
            out[p0] = xp.reshape(dmat, tuple(w.shape))
    return tuple(out)
