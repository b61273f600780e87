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

import operator
from typing import Any

from .. import backend
from ..losses import MSE, check_targets, loss_grad, loss_hessian, loss_hessian_factor, loss_hessian_vp, sample_targets
from ..models.base import forward, jvp, param_shapes, vjp
from ..validation import check_params
from .generic import check_batch, jacobian

__all__ = [
    "fisher_empirical_matrix",
    "fisher_empirical_vp",
    "fisher_exact_matrix",
    "fisher_exact_vp",
    "fisher_mc_matrix",
    "fisher_mc_vp",
    "per_sample_grads",
]


# ----------------------------------------------------------------------------- helpers
def _inputs(x: Any):
    """The input array from ``x`` or from a batch ``(x, y)`` (whose ``y`` is not used)."""
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise TypeError(f"x: expected an input array or a batch (x, y), got a sequence of length {len(x)}")
        return x[0]
    return x


def _check(model, params, x, v=None):
    """Validate ``params`` (and a tangent ``v``) against ``model``; return ``xp``."""
    shapes = param_shapes(model)
    check_params(params, shapes, "params")
    if not backend.is_array(x):
        raise TypeError(f"x: expected an array with the batch on the leading axis, got {type(x).__name__}")
    if v is not None:
        check_params(v, shapes, "v")
        xp = backend.namespace_of(params=tuple(params), x=x, v=tuple(v))
    else:
        xp = backend.namespace_of(params=tuple(params), x=x)
    backend.check_float(params[0], "params[0]", xp)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"x: expected a non-empty batch on the leading axis, got shape {tuple(x.shape)}")
    return xp


def _check_num_samples(num_samples) -> int:
    try:
        n = operator.index(num_samples)
    except TypeError:
        n = None
    if n is None or isinstance(num_samples, bool) or n < 1:
        raise ValueError(f"num_samples: expected a positive integer, got {num_samples!r}")
    return n


def _sandwich(xp, jac, h):
    """(1/B) sum_b J_b^T H_b J_b for J (B, k, P) and H (B, k, k), symmetrized."""
    b, k, p = jac.shape
    hj = xp.matmul(h, jac)
    f = xp.matmul(xp.matrix_transpose(xp.reshape(jac, (b * k, p))), xp.reshape(hj, (b * k, p))) / b
    return 0.5 * (f + xp.matrix_transpose(f))


def _sequential(model):
    """The networks module if ``model`` is a Sequential (cached linearization), else None."""
    from ..models import sequential as networks

    return networks if isinstance(model, networks.Sequential) else None


def _dense_network(model):
    """The networks module if ``model`` is a Sequential whose parameterized layers are all
    Dense (an MLP), else None: then the per-sample gradients have Kronecker structure."""
    from ..models import sequential as networks
    from ..models.layers import Dense

    if not isinstance(model, networks.Sequential):
        return None
    for layer, (a, b) in zip(model.layers, networks.layer_param_indices(model)):
        if b > a and not isinstance(layer, Dense):
            return None
    return networks


def _dense_gram(xp, nets, model, lin, cot, scale):
    """scale * sum_{r, b} g_rb g_rb^T (P x P) for g_rb = J_b^T cot[r, b] of an MLP.

    The block of g_rb for layer l's [W_l, b_l] is vec_r(delta_rbl a~_bl^T) =
    delta_rbl (x) a~_bl (a~ with the homogeneous coordinate for a bias), so block (l, m) is

        scale * sum_b (sum_r delta_rbl delta_rbm^T) (x) (a~_bl a~_bm^T),

    one (n_l n_m) x B times B x (n~_l n~_m) matmul per pair of layers l <= m: about
    B P^2 flops in all instead of the 2 B m P^2 of the Gram matrix of the (B m, P) stacked
    gradients (m = k rows of S_b for the exact Fisher). Each block is permuted to the
    row-major order of [W, b] and split into the W and b tensors; blocks below the
    diagonal are transposes; the block rows are concatenated once.
    """
    deltas = nets.backprop_to_layer_outputs(lin, cot)  # (m, B, n_out_l) per layer
    inputs = nets.layer_inputs(lin)
    b = lin.outputs.shape[0]
    dev = backend.device_of(lin.outputs)
    lay = []
    for i, (layer, (p0, p1)) in enumerate(zip(model.layers, nets.layer_param_indices(model))):
        if p1 == p0:
            continue
        a = inputs[i]
        if layer.bias:
            a = xp.concat([a, xp.ones((b, 1), dtype=a.dtype, device=dev)], axis=1)
        lay.append((xp.permute_dims(deltas[i], (1, 0, 2)), a, layer))  # delta as (B, m, n_out)
    # tensors in flat order: (layer position, 0 = W / 1 = b)
    tensors = [(pos, part) for pos, (_, _, layer) in enumerate(lay) for part in ((0, 1) if layer.bias else (0,))]
    blocks = {}
    for lp, (dl, al, ll) in enumerate(lay):
        for mp in range(lp, len(lay)):
            dm, am, lm = lay[mp]
            nl, nm, tl, tm = ll.n_out, lm.n_out, al.shape[1], am.shape[1]
            d = xp.matmul(xp.matrix_transpose(dl), dm) * scale  # (B, n_l, n_m)
            if lp == mp:  # exactly symmetric factors give an exactly symmetric diagonal block
                d = 0.5 * (d + xp.matrix_transpose(d))
            y = al[:, :, None] * am[:, None, :]  # (B, n~_l, n~_m)
            t = xp.matmul(xp.matrix_transpose(xp.reshape(d, (b, nl * nm))), xp.reshape(y, (b, tl * tm)))
            t = xp.permute_dims(xp.reshape(t, (nl, nm, tl, tm)), (0, 2, 1, 3))  # (n_l, n~_l, n_m, n~_m)
            for rp, rows in ((0, t[:, : ll.n_in, ...]), (1, t[:, ll.n_in :, ...])):
                if rp == 1 and not ll.bias:
                    continue
                r = rows.shape[0] * rows.shape[1]
                blocks[((lp, rp), (mp, 0))] = xp.reshape(rows[..., : lm.n_in], (r, nm * lm.n_in))
                if lm.bias:
                    blocks[((lp, rp), (mp, 1))] = xp.reshape(rows[..., lm.n_in :], (r, nm))
    pieces = []
    for ti in tensors:
        row = [blocks[(ti, tj)] if (ti, tj) in blocks else xp.matrix_transpose(blocks[(tj, ti)]) for tj in tensors]
        pieces.append(xp.concat(row, axis=1) if len(row) > 1 else row[0])
    return xp.concat(pieces, axis=0) if len(pieces) > 1 else pieces[0]


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
    x = _inputs(x)
    xp = _check(model, params, x)
    nets = _dense_network(model)
    if nets is not None:
        lin = nets.linearize(model, params, x)
        cot = xp.permute_dims(loss_hessian_factor(loss, lin.outputs), (1, 0, 2))  # rows of S_b
        return _dense_gram(xp, nets, model, lin, cot, 1.0 / x.shape[0])
    jac = jacobian(model, params, x)
    out = forward(model, params, x)
    return _sandwich(xp, jac, loss_hessian(loss, out))


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
    x = _inputs(x)
    _check(model, params, x, v)
    out, jv = jvp(model, params, x, v)
    return vjp(model, params, x, loss_hessian_vp(loss, out, jv) / x.shape[0])


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
    x = _inputs(x)
    xp = _check(model, params, x)
    n = _check_num_samples(num_samples)
    nets = _dense_network(model)
    if nets is not None:
        lin = nets.linearize(model, params, x)
        cot = _sampled_residuals(xp, loss, lin.outputs, seed, n)
        return _dense_gram(xp, nets, model, lin, cot, 1.0 / (n * x.shape[0]))
    out = forward(model, params, x)
    jac = jacobian(model, params, x)
    return _sandwich(xp, jac, _mc_output_metric(xp, loss, out, seed, n))


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
    x = _inputs(x)
    xp = _check(model, params, x, v)
    n = _check_num_samples(num_samples)
    out, jv = jvp(model, params, x, v)
    hhat = _mc_output_metric(xp, loss, out, seed, n)
    cot = xp.matmul(hhat, jv[..., None])[..., 0]
    return vjp(model, params, x, cot / x.shape[0])


# ---------------------------------------------------------------------------- empirical
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
    xp, x, y = check_batch(model, params, batch, loss)
    _check(model, params, x)
    nets = _dense_network(model) or _sequential(model)
    if nets is not None:  # one reverse pass keeping the batch axis
        lin = nets.linearize(model, params, x)
        check_targets(loss, lin.outputs, y)
        per = nets.vjp_linearized(lin, loss_grad(loss, lin.outputs, y), per_sample=True)
        return xp.concat([xp.reshape(t, (x.shape[0], -1)) for t in per], axis=1)
    out = forward(model, params, x)
    check_targets(loss, out, y)
    r = loss_grad(loss, out, y)  # (B, k)
    jac = jacobian(model, params, x)  # (B, k, P)
    return xp.matmul(r[:, None, :], jac)[:, 0, :]


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
    nets = _dense_network(model)
    if nets is not None:
        xp, x, y = check_batch(model, params, batch, loss)
        _check(model, params, x)
        lin = nets.linearize(model, params, x)
        check_targets(loss, lin.outputs, y)
        cot = loss_grad(loss, lin.outputs, y)[None, ...]
        return _dense_gram(xp, nets, model, lin, cot, 1.0 / x.shape[0])
    g = per_sample_grads(model, params, batch, loss)
    xp = backend.namespace_of(g=g)
    f = xp.matmul(xp.matrix_transpose(g), g) / g.shape[0]
    return 0.5 * (f + xp.matrix_transpose(f))


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
    xp, x, y = check_batch(model, params, batch, loss)
    _check(model, params, x, v)
    out, jv = jvp(model, params, x, v)
    check_targets(loss, out, y)
    r = loss_grad(loss, out, y)
    coef = xp.sum(r * jv, axis=-1)
    return vjp(model, params, x, r * coef[:, None] / x.shape[0])
