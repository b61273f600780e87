"""Fisher information variants, side by side (spec 3.2; Bernacchia (2018) eq (5) and Sec. 5).

Three matrices are called "Fisher" in the literature. For a loss that is the negative
log-likelihood of a predictive distribution q(y | f(x)) over the network output f (MSE:
Gaussian N(f, I); softmax cross-entropy: categorical softmax(f)), with per-sample
gradients g_b(y) = J_b^T d l(f_b, y) / d f_b:

* **exact (true) Fisher** (:func:`fisher_exact_matrix`, :func:`fisher_exact_vp`):
  (1/B) sum_b E_{y ~ q(.|f_b)}[g_b(y) g_b(y)^T] = (1/B) sum_b J_b^T H_b J_b. Cost: for
  MLPs one backward pass of the k rows of S_b (H_b = S_b^T S_b) and about B P^2 flops of
  Kronecker-structured products; for other models the Jacobian (B, k, P) and one
  (P x Bk)(Bk x P) product; a product F v costs one jvp and one vjp. Equals the GGN for
  MSE and softmax CE (for an exponential family in its natural parameter the
  output-space Fisher is the loss Hessian H_b).
* **Monte-Carlo Fisher** (:func:`fisher_mc_matrix`, :func:`fisher_mc_vp`):
  (1/(N B)) sum_{n,b} g_b(y_nb) g_b(y_nb)^T with y_nb ~ q(.|f_b) drawn from the model
  (Bernacchia Sec. 5, K = N samples). Cost: as exact, with N sampled rows instead of the
  k rows of S_b. Equals the GGN in
  expectation over the draws (unbiased, Frobenius error O(1/sqrt(N)), rank <= N B).
* **empirical Fisher** (:func:`fisher_empirical_matrix`, :func:`fisher_empirical_vp`,
  :func:`per_sample_grads`): (1/B) sum_b g_b(y_b) g_b(y_b)^T at the TRAINING targets.
  Cost: per-sample gradients (B, P); a product costs one jvp and one vjp. NOT the GGN in
  general: it weighs directions by squared residuals (it is zero at a perfect fit, where
  the GGN is not).

The side-by-side table is in ``docs/curvature.md``.

All routines are generic: they use only the interface functions (:func:`arraycurv.forward`,
:func:`~arraycurv.jvp`, :func:`~arraycurv.vjp`, :func:`~arraycurv.jacobian`) and the loss
functions of :mod:`arraycurv.losses`, so they work for every model family (deep linear
networks, ``Sequential`` MLPs and CNNs). Matrices use the flat parameter ordering of
:mod:`arraycurv.params`. Per-sample quantities carry no 1/B; matrices are means over the
batch (spec, Conventions).
"""

from __future__ import annotations

import functools
from typing import Any

from .. import backend
from ..losses import MSE, loss_grad, loss_hessian_factor, loss_hessian_vp, sample_targets
from ..models.base import jvp, linearize, vjp
from ..validation import check_call, check_positive_int
from .generic import jacobian

__all__ = [
    "fisher_empirical_matrix",
    "fisher_empirical_vp",
    "fisher_exact_matrix",
    "fisher_exact_vp",
    "fisher_mc_matrix",
    "fisher_mc_vp",
    "gradient_gram",
    "per_sample_grads",
    "per_sample_rows",
]


# ----------------------------------------------------------------------------- helpers
def _inputs(x: Any):
    """The input array from ``x`` or from a batch ``(x, y)`` (whose ``y`` is not used)."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise TypeError(f"x: expected an input array or a batch (x, y), got a sequence of length {len(x)}")
        return x[0]
    return x


_V = {"tangent": "v"}


def _check_x(model, params, x, v=None):
    """Validate ``params``, the inputs ``x`` (or the ``x`` of a batch) and a tangent ``v``
    once (:func:`arraycurv.validation.check_call`); return ``(xp, x)``."""
    x = _inputs(x)
    return check_call(model, params, x=x, tangent=v, names=_V), x


def _sym(xp, f):
    return 0.5 * (f + xp.matrix_transpose(f))


@functools.singledispatch
def gradient_gram(lin, cotangent, scale=1.0):
    """scale * sum_{r,b} g_rb g_rb^T (P x P) for the gradients g_rb = J_b^T u_rb of output cotangents.

    The one assembly behind every explicit Fisher (Bernacchia (2018) eq (5) and Sec. 5):
    the rows u_rb of the loss-Hessian factor S_b (exact Fisher, scale 1/B), N residuals at
    targets drawn from the model (Monte-Carlo, scale 1/(N B)) or the residual at the
    training target (empirical, scale 1/B). A generic function of the linearization
    (:func:`arraycurv.linearize`): the default builds it from :func:`arraycurv.jacobian`
    (the m B rows u_rb^T J_b when m <= k, else sum_b J_b^T M_b J_b with the output metric
    M_b = sum_r u_rb u_rb^T); Sequential networks register a per-sample reverse pass and,
    for MLPs (every parameterized layer with one Kronecker row per sample,
    :func:`arraycurv.models.layers.layer_kron_rows`), the Kronecker-structured blocks
    (sum_r delta_rbl delta_rbm^T) (x) (a~_bl a~_bm^T) of about B P^2 flops.

    Parameters
    ----------
    lin : Linearization
        The model linearized at ``(params, x)`` (trusted: validated by the caller).
    cotangent : array, shape (m, B, k)
        Output cotangents u_rb.
    scale : float
        Factor applied to the sum.

    Returns
    -------
    array, shape (P, P)
        Symmetric PSD matrix in the flat parameter ordering.
    """
    xp = backend.namespace_of(outputs=lin.outputs)
    jac = jacobian.trusted(lin.model, lin.params, lin.x, xp=xp)
    m, b, k = cotangent.shape
    p = jac.shape[-1]
    if m <= k:
        rows = xp.reshape(xp.matmul(cotangent[:, :, None, :], jac), (m * b, p))
        return _sym(xp, xp.matmul(xp.matrix_transpose(rows), rows) * scale)
    ub = xp.permute_dims(cotangent, (1, 0, 2))  # (B, m, k)
    hj = xp.matmul(xp.matmul(xp.matrix_transpose(ub), ub), jac)  # M_b J_b
    f = xp.matmul(xp.matrix_transpose(xp.reshape(jac, (b * k, p))), xp.reshape(hj, (b * k, p))) * scale
    return _sym(xp, f)


def _sampled_residuals(xp, loss, out, seed, num_samples):
    """Output gradients d l(f_b, y_nb) / d f_b for y_nb ~ q(.|f_b): shape (N, B, k)."""
    ys = sample_targets(loss, out, seed, num_samples)
    b, k = out.shape
    rep = xp.reshape(xp.broadcast_to(out[None, ...], (num_samples, b, k)), (num_samples * b, k))
    flat = xp.reshape(ys, (num_samples * b, *ys.shape[2:]))
    return xp.reshape(loss_grad(loss, rep, flat), (num_samples, b, k))


def _mc_output_metric(xp, loss, out, seed, num_samples):
    """Per-sample Monte-Carlo output metrics (1/N) sum_n r_nb r_nb^T, shape (B, k, k)."""
    r = _sampled_residuals(xp, loss, out, seed, num_samples)  # (N, B, k)
    rb = xp.permute_dims(r, (1, 0, 2))  # (B, N, k)
    return xp.matmul(xp.matrix_transpose(rb), rb) / num_samples


# ------------------------------------------------------------------------------- exact
def fisher_exact_matrix(model, params, x, loss=MSE()):
    """Exact (true) Fisher F = (1/B) sum_b E_{y ~ q(.|f_b)}[g_b g_b^T] = (1/B) sum_b J_b^T H_b J_b.

    Bernacchia (2018) eq (5) with the expectation over the model's predictive
    distribution, evaluated in closed form: for MSE (Gaussian N(f, I)) and softmax
    cross-entropy (categorical) the output-space Fisher is the loss Hessian H_b, so the
    exact Fisher equals the GGN (spec, Conventions; Huh (2020) "Hessian_+").

    Parameters
    ----------
    model
        Any model registering the interface functions (``DeepLinear``, ``Sequential``...).
    params : tuple of arrays
        Parameters shaped like ``param_shapes(model)``.
    x : array or tuple
        Inputs with the batch on the leading axis, or a batch ``(x, y)`` whose targets
        are ignored (the exact Fisher does not depend on them).
    loss : MSE or SoftmaxCrossEntropy
        The loss, i.e. the predictive distribution.

    Returns
    -------
    array, shape (P, P)
        Symmetric PSD matrix in the flat parameter ordering, in the namespace, dtype and
        device of ``params``.

    Notes
    -----
    Cost. For a ``Sequential`` whose parameterized layers are all Dense (an MLP) the
    per-sample gradient of layer l is delta_bsl (x) a~_bl (output cotangent of row s of
    S_b times the input with a homogeneous 1 for the bias), so block (l, m) is
    (1/B) sum_b (sum_s delta_bsl delta_bsm^T) (x) (a~_bl a~_bm^T): one matmul per pair of
    layers, about B P^2 flops in all, k times fewer than J^T H J. Other models: the
    Jacobian (B, k, P) (:func:`arraycurv.jacobian`) and a (P x Bk)(Bk x P) product.
    """
    xp, x = _check_x(model, params, x)
    lin = linearize.trusted(model, params, x, xp=xp)
    cot = xp.permute_dims(loss_hessian_factor(loss, lin.outputs), (1, 0, 2))  # the k rows of S_b
    return gradient_gram(lin, cot, 1.0 / x.shape[0])


def fisher_exact_vp(model, params, x, v, loss=MSE()):
    """Matrix-free exact Fisher product F v = (1/B) sum_b J_b^T H_b J_b v.

    Same matrix as :func:`fisher_exact_matrix` (Bernacchia (2018) eq (5); equal to the
    GGN product :func:`arraycurv.ggn_vp` for MSE and softmax CE) but needs no targets.
    Cost: one forward-mode pass (jvp) and one reverse pass (vjp).

    Parameters
    ----------
    model, params, x, loss
        As in :func:`fisher_exact_matrix`.
    v : tuple of arrays
        Tangent shaped like ``params``.

    Returns
    -------
    tuple of arrays
        F v shaped like ``params``.
    """
    xp, x = _check_x(model, params, x, v)
    out, jv = jvp.trusted(model, params, x, v, xp=xp)
    return vjp.trusted(model, params, x, loss_hessian_vp.trusted(loss, out, jv) / x.shape[0], xp=xp)


# -------------------------------------------------------------------------- Monte Carlo
def fisher_mc_matrix(model, params, x, loss=MSE(), num_samples: int = 1, seed=0):
    """Monte-Carlo Fisher (1/(N B)) sum_{n,b} g_b(y_nb) g_b(y_nb)^T with y_nb ~ q(.|f_b).

    The targets are drawn from the model's own predictive distribution
    (:func:`arraycurv.sample_targets`; Bernacchia (2018) Sec. 5, "K samples", never the
    training targets), so the estimator is unbiased for the exact Fisher
    (:func:`fisher_exact_matrix`) with a Frobenius error of order 1/sqrt(N). Since
    g_b(y) = J_b^T r_b(y) with r_b = d l / d f_b, the average of the outer products is
    computed as (1/B) sum_b J_b^T Hhat_b J_b with the sampled output metric
    Hhat_b = (1/N) sum_n r_nb r_nb^T (same value, k x k instead of P x P per draw).

    Parameters
    ----------
    model, params, x, loss
        As in :func:`fisher_exact_matrix`.
    num_samples : int
        Number N of targets drawn per input (>= 1).
    seed : int or numpy Generator
        Seed of the draws (:func:`arraycurv.backend.rng`); the same int seed gives the
        same matrix on every namespace and the same draws as :func:`fisher_mc_vp` (a
        Generator advances, so repeated calls with it draw afresh).

    Returns
    -------
    array, shape (P, P)
        Symmetric PSD matrix of rank at most N B, in the namespace of ``params``.
    """
    xp, x = _check_x(model, params, x)
    n = check_positive_int(num_samples, "num_samples")
    lin = linearize.trusted(model, params, x, xp=xp)
    cot = _sampled_residuals(xp, loss, lin.outputs, seed, n)
    return gradient_gram(lin, cot, 1.0 / (n * x.shape[0]))


def fisher_mc_vp(model, params, x, v, loss=MSE(), num_samples: int = 1, seed=0):
    """Matrix-free Monte-Carlo Fisher product, the same matrix as :func:`fisher_mc_matrix`.

    F_MC v = (1/B) sum_b J_b^T Hhat_b (J_b v) with Hhat_b = (1/N) sum_n r_nb r_nb^T built
    from N targets drawn from the model (Bernacchia (2018) Sec. 5). Cost: one jvp, one
    vjp and N draws of the output gradients.

    Parameters
    ----------
    model, params, x, loss, num_samples, seed
        As in :func:`fisher_mc_matrix`.
    v : tuple of arrays
        Tangent shaped like ``params``.

    Returns
    -------
    tuple of arrays
        F_MC v shaped like ``params``.
    """
    xp, x = _check_x(model, params, x, v)
    n = check_positive_int(num_samples, "num_samples")
    out, jv = jvp.trusted(model, params, x, v, xp=xp)
    hhat = _mc_output_metric(xp, loss, out, seed, n)
    cot = xp.matmul(hhat, jv[..., None])[..., 0]
    return vjp.trusted(model, params, x, cot / x.shape[0], xp=xp)


# ---------------------------------------------------------------------------- empirical
@functools.singledispatch
def per_sample_rows(lin, cotangent):
    """Stacked per-sample gradients g_rb = J_b^T u_rb of output cotangents: (m, B, P).

    A generic function of the linearization (:func:`arraycurv.linearize`); the default
    contracts the Jacobian (:func:`arraycurv.jacobian`), Sequential networks register one
    reverse pass that keeps the batch axis. No 1/B factor.

    Parameters
    ----------
    lin : Linearization
        The model linearized at ``(params, x)`` (trusted).
    cotangent : array, shape (m, B, k)

    Returns
    -------
    array, shape (m, B, P)
        In the flat parameter ordering.
    """
    xp = backend.namespace_of(outputs=lin.outputs)
    jac = jacobian.trusted(lin.model, lin.params, lin.x, xp=xp)  # (B, k, P)
    return xp.matmul(cotangent[:, :, None, :], jac)[:, :, 0, :]


def per_sample_grads(model, params, batch, loss=MSE()):
    """Gradients of the per-sample losses l_b at the training targets, stacked: (B, P).

    Row b is g_b = J_b^T d l(f_b, y_b) / d f_b in the flat parameter ordering (no 1/B:
    the gradient of the mean loss is the mean of the rows; Bernacchia (2018) eq (7) per
    sample).

    Parameters
    ----------
    model, params
        As in :func:`fisher_exact_matrix`.
    batch : tuple (x, y)
        Inputs and training targets.
    loss : MSE or SoftmaxCrossEntropy

    Returns
    -------
    array, shape (B, P)
    """
    xp = check_call(model, params, batch=batch, loss=loss)
    x, y = batch
    lin = linearize.trusted(model, params, x, xp=xp)
    return per_sample_rows(lin, loss_grad(loss, lin.outputs, y)[None, ...])[0, ...]


def fisher_empirical_matrix(model, params, batch, loss=MSE()):
    """Empirical Fisher (1/B) sum_b g_b g_b^T from per-sample gradients at the TRAINING targets.

    Unlike the exact Fisher (Bernacchia (2018) eq (5), an expectation over the model's
    predictive distribution) this uses the observed targets y_b. It is NOT the GGN in
    general: for MSE it equals (1/B) sum_b J_b^T r_b r_b^T J_b with residuals
    r_b = f_b - y_b, which vanishes at a perfect fit while the GGN does not; it agrees
    with the exact Fisher only in expectation over targets drawn from the model itself.

    Parameters
    ----------
    model, params, batch, loss
        As in :func:`per_sample_grads`.

    Returns
    -------
    array, shape (P, P)
        Symmetric PSD matrix of rank at most B.
    """
    xp = check_call(model, params, batch=batch, loss=loss)
    x, y = batch
    lin = linearize.trusted(model, params, x, xp=xp)
    return gradient_gram(lin, loss_grad(loss, lin.outputs, y)[None, ...], 1.0 / x.shape[0])


def fisher_empirical_vp(model, params, batch, v, loss=MSE()):
    """Matrix-free empirical Fisher product (1/B) sum_b g_b (g_b . v).

    Same matrix as :func:`fisher_empirical_matrix`. Since g_b . v = r_b . (J_b v), it
    costs one jvp and one vjp with cotangents r_b (r_b . J_b v) / B.

    Parameters
    ----------
    model, params, batch, loss
        As in :func:`per_sample_grads`.
    v : tuple of arrays
        Tangent shaped like ``params``.

    Returns
    -------
    tuple of arrays
        F_emp v shaped like ``params``.
    """
    xp = check_call(model, params, batch=batch, tangent=v, loss=loss, names=_V)
    x, y = batch
    out, jv = jvp.trusted(model, params, x, v, xp=xp)
    r = loss_grad(loss, out, y)
    coef = xp.sum(r * jv, axis=-1)
    return vjp.trusted(model, params, x, r * coef[:, None] / x.shape[0], xp=xp)
