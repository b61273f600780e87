"""Kronecker-factored fractional natural gradient (Huh (2020) eqs 19-21, footnote 4, with K-FAC blocks).

:func:`kfac_qngd_direction` applies ``-(G (x) A + damping I)^{-1/q} g / d^{1/q}`` per layer
through two small eigendecompositions (:func:`arraycurv.linalg.kron_psd_power_apply`),
with the factors of :mod:`arraycurv.curvature.kron`: the practical route to sqrt-NGD-d
at scale.
"""

from __future__ import annotations

import math

from .. import backend
from ..curvature.generic import value_and_grad
from ..curvature.kron import _check_fisher, kron_factors
from ..linalg.kronecker import kron_psd_power_apply
from ..losses import MSE
from ..models.sequential import as_sequential
from ..validation import check_bool, check_call, check_nonneg, check_q, check_rcond

__all__ = ['kfac_qngd_direction']


# ---------------------------------------------------------------------------- q-NGD
def kfac_qngd_direction(model, params, batch, q, *, loss=MSE(), damping=0.0, rcond=None, fisher: str = "exact",
                        normalize: bool = True, num_samples: int = 1, seed=0):
    """Kronecker-factored q-NGD direction (spec 3.7; Huh (2020) eqs 19-21, footnote 4).

    Per parameterized layer i (weights and bias together as W~_i = [W_i, b_i]),

        d_i = -(G_i (x) A_i + damping I)^{+1/q} vec_r(grad W~_i) / d^{1/q},

    with (G_i, A_i) from :func:`~arraycurv.curvature.kron.kron_factors` and d the number of parameterized layers
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
        Factor estimate, see :func:`~arraycurv.curvature.kron.kron_factors`.
    normalize : bool
        Divide by d^{1/q} (block-diagonal rules of Huh (2020) Sec. 5).
    num_samples, seed
        Monte-Carlo draws for ``fisher='mc'``.

    Returns
    -------
    tuple of arrays
        The direction, shaped like ``params`` (no learning rate), in their namespace.
    """
    q = check_q(q)
    damping = check_nonneg(damping, "damping")
    rcond = check_rcond(rcond)
    _check_fisher(fisher)
    check_bool(normalize, "normalize")
    as_sequential(model)  # K-FAC needs the layer-wise form: name an unsupported model first
    xp = check_call(model, params, batch=batch, loss=loss)
    _, grad = value_and_grad.trusted(model, params, tuple(batch), loss, xp=xp)
    _check_derived(xp, [(f"the loss gradient of params[{i}]", g) for i, g in enumerate(grad)])
    if math.isinf(q):
        return tuple(-g for g in grad)
    factors = kron_factors(model, params, batch, loss, fisher=fisher, num_samples=num_samples, seed=seed)
    _check_derived(xp, [(f"the Kronecker factor {n} of layer {k}", getattr(f, n))
                        for k, f in enumerate(factors) for n in ("A", "G")])
    norm = float(len(factors)) ** (1.0 / q) if normalize else 1.0
    out = [None] * len(params)
    for f in factors:
        p0 = f.param_index
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


def _check_derived(xp, pairs):
    """Finite inputs can still overflow: name the caller's arguments, then the quantity
    (one fused finiteness check, as for the inputs)."""
    try:
        backend.check_all_finite(xp, pairs)
    except ValueError as exc:
        raise ValueError(f"params: expected params and batch whose K-FAC quantities are finite, got {exc} "
                         f"(overflow; rescale the inputs or the parameters)") from None
