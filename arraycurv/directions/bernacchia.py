"""Exact natural gradient of deep linear networks, Bernacchia, Lengyel & Hennequin (2018).

For a network x_i = phi_i(W_i x_{i-1} + b_i) with a Gaussian predictive distribution
q(y|x) = N(x_L, Sigma~) the loss is the negative log-likelihood (eq 6)
L = <1/2 (y - x_L)^T Sigma~^{-1} (y - x_L)>, its gradient is dL/dW_i = -<e_i x_{i-1}^T>
(eq 7) with the back-propagated errors e_L = phi'_L o Sigma~^{-1}(y - x_L),
e_i = phi'_i o W_{i+1}^T e_{i+1} (eq 8), and eq (10) gives, per layer,

    dW_i/dt = (alpha / L) <e_i e_i^T>_{p_theta}^+ <e_i x_{i-1}^T>_{p*} <x_{i-1} x_{i-1}^T>^+,

damped as in eq (20) by adding sqrt(lambda) I to both covariances before inversion.
The two covariances are averages over the *model*: <x_{i-1} x_{i-1}^T> over the batch
inputs (eq 15), <e_i e_i^T> over targets drawn from q_theta(y|x), in closed form
(W_{>i}^T Sigma~^{-1} W_{>i} for a deep linear network, eq 14; the k columns of a factor
of Sigma~^{-1} back-propagated for an MLP) or from K Monte-Carlo draws y ~ q_theta(y|x)
back-propagated like the training errors (Sec. 5; the training targets never enter).
A bias is an extra column of W_i with a constant 1 appended to x_{i-1} (Sec. 2).

For a deep linear network whose every hidden width is at least max(n_0, n_L), eq (10)
is a generalized inverse of the Fisher (Supplementary eq 36): with alpha = 1 the
direction d solves F d = -g exactly while differing from the Moore-Penrose solution
-F^+ g by a null-space component, and the total map W = W_L ... W_1 obeys

    dW/dt = sum_i W_{>i} (dW_i/dt) W_{<i} = -alpha (W - <y x^T> Sigma^{-1})     (eqs 17-18),

so the loss decays as e^{-2 alpha t} to its minimum. With a narrower hidden layer (a
bottleneck, or a contracting/expanding chain) the map follows eq (19) with projections
P_i^a, P_i^b that differ between layers, eq (10) no longer solves F d = -g, and its loss
trajectory departs from the Moore-Penrose NGD: :func:`has_bottleneck` tells, the
direction warns (:class:`BottleneckWarning`), and ``form="moore_penrose"`` gives the
exact Moore-Penrose NGD through :func:`arraycurv.directions.qngd_direction` (q = 1).
For square layers the exact map path W* + e^{-alpha t}(W_0 - W*) crosses a singular
matrix when det W_0 det W* < 0, where the parameter ODE blows up:
:func:`map_path_singularity` and :func:`check_map_path` detect it.

Sec. 5 uses eq (10) as a drop-in direction for tanh MLPs (Fig. 1D); here any
:func:`arraycurv.mlp` (Dense layers and activations) works, the activation Jacobians
entering the errors through the model's own backward pass
(:func:`arraycurv.models.sequential.backprop_to_layer_outputs`).

See ``docs/bernacchia.md``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

from .. import backend
from ..curvature.generic import value_and_grad
from ..linalg.lowrank import randomized_psd_inverse
from ..losses import MSE
from ..models import sequential as _seq
from ..models.base import linearize
from ..models.deep_linear import DeepLinear, LinearMoments, _prefixes, _suffixes, partial_products
from ..models.layers import Dense
from ..params import tree_vdot
from ..validation import (
    ArgumentTypeError,
    check_arrays,
    check_bool,
    check_call,
    check_int,
    check_nonneg,
    check_params,
    check_rcond,
    check_real,
    check_symmetric,
)

__all__ = [
    "INVERSES",
    "BernacchiaFactors",
    "BottleneckWarning",
    "LayerFactors",
    "PathSingularity",
    "SingularPathWarning",
    "apply_factor_inverses",
    "bernacchia_factors",
    "bernacchia_ngd_direction",
    "check_map_path",
    "factor_inverses",
    "has_bottleneck",
    "map_path_singularity",
    "map_velocity",
    "predicted_change",
]

#: Values of ``inverse=``: exact (pseudo-)inverses, or the randomized SVD route of Sec. 7.
INVERSES = ("direct", "randomized")
_FORMS = ("kronecker", "moore_penrose")


class BottleneckWarning(UserWarning):
    """Eq (10) on a network with a hidden layer narrower than max(n_0, n_L): not a
    generalized inverse of the Fisher (Bernacchia et al. (2018) eq 19)."""


class SingularPathWarning(UserWarning):
    """The exact NGD map path must cross a singular matrix (det W_0 det W* < 0)."""


class LayerFactors(NamedTuple):
    """What eq (10) needs for one layer (bias as the last column when ``bias``).

    Attributes
    ----------
    error_cov : array (n_i, n_i)
        <e_i e_i^T> under the model's predictive distribution (eq 14).
    input_cov : array (n_{i-1} [+1], n_{i-1} [+1])
        <x_{i-1} x_{i-1}^T> over the batch (eq 15), homogeneous coordinate last.
    grad : array (n_i, n_{i-1} [+1])
        Gradient of the loss, dL/d[W_i, b_i] = -<e_i x_{i-1}^T> (eq 7, 13).
    error_rank, input_rank : int
        Structural upper bounds on the ranks of the two covariances (widths, batch
        size, samples): eigenvalues beyond them are rounding and are cut.
    bias : bool
    """

    error_cov: Any
    input_cov: Any
    grad: Any
    error_rank: int
    input_rank: int
    bias: bool


class BernacchiaFactors(NamedTuple):
    """The loss on the batch (0-d array) and one :class:`LayerFactors` per layer."""

    loss: Any
    layers: tuple


class PathSingularity(NamedTuple):
    """Result of :func:`map_path_singularity`.

    Attributes
    ----------
    crosses : bool
        det W_0 det W* < 0: the path W(t) = W* + e^{-alpha t}(W_0 - W*) must pass a
        singular matrix (an odd number of times).
    det_start, det_target : float
        det W_0 and det W*.
    times : tuple of float
        Every t > 0 at which W(t) is singular (real negative eigenvalues nu of
        W*^{-1} W_0: t = log(1 - nu) / alpha), ascending; may be non-empty also when
        ``crosses`` is False (an even number of crossings).
    """

    crosses: bool
    det_start: float
    det_target: float
    times: tuple


# ----------------------------------------------------------------------------- architecture
def _dense_widths(model):
    if isinstance(model, DeepLinear):
        return model.widths
    if isinstance(model, _seq.Sequential):
        dense = [layer for layer in model.layers if isinstance(layer, Dense)]
        if dense:
            return (dense[0].n_in,) + tuple(layer.n_out for layer in dense)
    raise TypeError(f"model: expected a DeepLinear or an MLP (arraycurv.mlp), got {type(model).__name__}")


def has_bottleneck(model) -> bool:
    """True when a hidden width is below max(n_0, n_L) (Bernacchia et al. (2018) Sec. 4).

    Then some W_{>i} = W_L ... W_{i+1} cannot have full row rank or some
    W_{<i} = W_{i-1} ... W_1 full column rank, the projections P_i^a, P_i^b of eq (19)
    are not all the identity, and eq (10) is not a generalized inverse of the Fisher.
    Otherwise (and for generic weights) it is, and the map obeys eq (18).
    """
    w = _dense_widths(model)
    return len(w) > 2 and min(w[1:-1]) < max(w[0], w[-1])


# ----------------------------------------------------------------------------- checks
def _check_model(model):
    if isinstance(model, DeepLinear):
        return
    if not isinstance(model, _seq.Sequential):
        raise TypeError(f"model: expected a DeepLinear or an MLP (arraycurv.mlp), got {type(model).__name__}")
    for i, (layer, (a, b)) in enumerate(zip(model.layers, _seq.layer_param_indices(model))):
        if b > a and not isinstance(layer, Dense):
            raise TypeError(
                f"model: expected Dense layers and parameter-free activations (eq 10), got {layer!r} at "
                f"layers[{i}]"
            )


def _noise_factor(xp, noise_cov, k, like):
    """(Cholesky factor C of Sigma~, C^{-1}) or (None, None) for Sigma~ = I."""
    if noise_cov is None:
        return None, None
    sym = 0.5 * (noise_cov + xp.matrix_transpose(noise_cov))
    try:
        c = xp.linalg.cholesky(sym)
    except Exception:  # the backend's LinAlgError
        c = xp.full_like(sym, math.nan)
    if not bool(xp.all(xp.isfinite(c))):
        raise ValueError("noise_cov: expected a symmetric positive definite matrix, got one without a Cholesky factor")
    eye = xp.eye(k, dtype=like.dtype, device=backend.device_of(like))
    return c, xp.linalg.solve(c, eye)


def _prepare(model, params, batch, noise_cov, num_samples):
    _check_model(model)
    k = _dense_widths(model)[-1]
    arrays = () if noise_cov is None else (("noise_cov", noise_cov, (k, k)),)
    xp = check_call(model, params, batch=batch, loss=MSE(), arrays=arrays)
    if noise_cov is not None:
        check_symmetric(noise_cov, "noise_cov", xp)
    if num_samples is not None:
        num_samples = check_int(num_samples, "num_samples", lo=1, want="None (closed form) or a positive integer")
    if isinstance(batch, LinearMoments) and noise_cov is not None:
        raise TypeError("batch: expected a tuple (x, y) when noise_cov is given (the loss needs <y y^T>), "
                        "got LinearMoments")
    return xp, num_samples


# ----------------------------------------------------------------------------- factors
def _mc_errors(xp, out, chol, inv_chol, seed, num_samples):
    """K draws y ~ N(f, Sigma~) per input and their output errors Sigma~^{-1} (y - f): (K, B, k)."""
    nb, k = out.shape
    z = backend.normal(seed, (num_samples, nb, k), xp, dtype=out.dtype, device=backend.device_of(out))
    ys = out[None, ...] + (z if chol is None else xp.matmul(z, xp.matrix_transpose(chol)))
    r = ys - out[None, ...]
    return r if chol is None else xp.matmul(xp.matmul(r, xp.matrix_transpose(inv_chol)), inv_chol)


def _sym(xp, a):
    return 0.5 * (a + xp.matrix_transpose(a))


def _deep_linear_factors(xp, model, params, batch, chol, inv_chol, num_samples, seed, stacked=False):
    """Closed forms of eqs (13)-(15) through the partial products (and MC errors);
    ``stacked``: for equal widths return ``(loss, _Stacked)`` (no per-layer split)."""
    pre = _prefixes(xp, params)
    wbar = pre.pop()
    suf = _suffixes(xp, params)
    if isinstance(batch, LinearMoments):
        sxx = batch.sxx
        resid = xp.matmul(wbar, sxx) - batch.syx  # <(f - y) x^T>
        ws = xp.matmul(wbar, sxx)
        loss = 0.5 * xp.sum(ws * wbar) - xp.sum(wbar * batch.syx) + 0.5 * xp.asarray(batch.syy, dtype=wbar.dtype)
        nb = batch.count or 1
        out = None
    else:
        x, y = batch
        nb = x.shape[0]
        sxx = xp.matmul(xp.matrix_transpose(x), x) / nb
        out = xp.matmul(x, xp.matrix_transpose(wbar))
        r = out - y
        rw = r if chol is None else xp.matmul(xp.matmul(r, xp.matrix_transpose(inv_chol)), inv_chol)
        resid = xp.matmul(xp.matrix_transpose(r), x) / nb
        loss = 0.5 * xp.sum(r * rw) / nb
    if chol is not None:  # Sigma~^{-1} R
        resid = xp.matmul(xp.matmul(xp.matrix_transpose(inv_chol), inv_chol), resid)
    if num_samples is not None:
        if out is None:
            out = xp.zeros((nb, model.widths[-1]), dtype=wbar.dtype, device=backend.device_of(wbar))
        e_out = xp.reshape(_mc_errors(xp, out, chol, inv_chol, seed, num_samples), (num_samples * nb, -1))
    w = model.widths
    in_ranks = [int(min(min(w[: i + 1]), nb if not isinstance(batch, LinearMoments) or batch.count else w[0]))
                for i in range(len(pre))]
    if len(set(w)) == 1 and len(pre) > 1:  # equal widths: every product batched over the layers
        st = _stacked_layers(xp, pre, suf, resid, sxx, inv_chol, None if num_samples is None else e_out, in_ranks)
        if stacked:
            return loss, st
        layers = tuple(LayerFactors(st.errs[i, ...], st.inps[i, ...], st.grads[i, ...], st.err_rank, r, False)
                       for i, r in enumerate(in_ranks))
        return BernacchiaFactors(loss, layers)
    layers = []
    for i, (p, s) in enumerate(zip(pre, suf)):
        grad = xp.matmul(xp.matrix_transpose(s), xp.matmul(resid, xp.matrix_transpose(p)))
        inp = _sym(xp, xp.matmul(xp.matmul(p, sxx), xp.matrix_transpose(p)))
        if num_samples is None:
            sw = s if chol is None else xp.matmul(inv_chol, s)
            err = _sym(xp, xp.matmul(xp.matrix_transpose(sw), sw))
            m = math.inf
        else:
            e_i = xp.matmul(e_out, s)
            err = _sym(xp, xp.matmul(xp.matrix_transpose(e_i), e_i)) / e_i.shape[0]
            m = e_i.shape[0]
        layers.append(LayerFactors(err, inp, grad, int(min(min(w[i + 1:]), m)), in_ranks[i], False))
    return BernacchiaFactors(loss, tuple(layers))


def _stacked_layers(xp, pre, suf, resid, sxx, inv_chol, e_out, in_ranks):
    """Eqs (13)-(15) for equal widths as a few products batched over the L layers."""
    ps, ss = xp.stack(pre), xp.stack(suf)  # (L, n, n)
    pst, sst = xp.matrix_transpose(ps), xp.matrix_transpose(ss)
    grads = xp.matmul(xp.matmul(sst, resid), pst)
    inps = _sym(xp, xp.matmul(xp.matmul(ps, sxx), pst))
    if e_out is None:
        sw = ss if inv_chol is None else xp.matmul(inv_chol, ss)
        errs = _sym(xp, xp.matmul(xp.matrix_transpose(sw), sw))
        m = math.inf
    else:
        e_i = xp.matmul(e_out, ss)  # (L, K B, n)
        errs = _sym(xp, xp.matmul(xp.matrix_transpose(e_i), e_i)) / e_out.shape[0]
        m = e_out.shape[0]
    return _Stacked(errs, inps, grads, int(min(ps.shape[-1], m)), tuple(in_ranks))


class _Stacked(NamedTuple):
    """Factors of equal-width layers stacked on a leading axis (L, n, n)."""

    errs: Any
    inps: Any
    grads: Any
    err_rank: int
    in_ranks: tuple


def _stacked_direction(xp, st, delta, rcond, c):
    """-c E^+ g A^+ for all layers at once: two batched solves (delta > 0) or pseudo-inverses."""
    if delta > 0:
        n = st.errs.shape[-1]
        eye = xp.eye(n, dtype=st.errs.dtype, device=backend.device_of(st.errs))
        left = xp.linalg.solve(st.errs + delta * eye, st.grads)
        return -c * xp.matrix_transpose(xp.linalg.solve(st.inps + delta * eye, xp.matrix_transpose(left)))
    rc = st.errs.shape[-1] * float(xp.finfo(st.errs.dtype).eps) if rcond is None else rcond
    out = []
    for r in sorted(set(st.in_ranks)):  # group the layers by the rank of their input factor
        idx = [i for i, ri in enumerate(st.in_ranks) if ri == r]
        sel = st.inps if len(idx) == len(st.in_ranks) else xp.stack([st.inps[i, ...] for i in idx])
        out.append((idx, _pinv_rank(xp, sel, r, rc)))
    ainv = [None] * len(st.in_ranks)
    for idx, inv in out:
        for j, i in enumerate(idx):
            ainv[i] = inv[j, ...]
    einv = _pinv_rank(xp, st.errs, st.err_rank, rc)
    return -c * xp.matmul(xp.matmul(einv, st.grads), xp.stack(ainv))


def _sequential_factors(xp, model, params, batch, chol, inv_chol, num_samples, seed):
    """Eq (10) factors of an MLP: one linearization, the model's backward pass for the
    gradient and for the errors (activation Jacobians included, eq 8)."""
    x, y = batch
    nb = x.shape[0]
    lin = linearize(model, params, x)
    out = lin.outputs
    r = out - y
    rw = r if chol is None else xp.matmul(xp.matmul(r, xp.matrix_transpose(inv_chol)), inv_chol)
    loss = 0.5 * xp.sum(r * rw) / nb
    if chol is None:
        _, grads = value_and_grad(model, params, batch, MSE())
    else:
        grads = _seq.vjp_linearized(lin, rw / nb)
    k = out.shape[1]
    if num_samples is None:  # rows of C^{-1}: sum_s c_s c_s^T = Sigma~^{-1}
        rows = xp.eye(k, dtype=out.dtype, device=backend.device_of(out)) if chol is None else inv_chol
        cot = xp.broadcast_to(rows[:, None, :], (k, nb, k))
        m, denom = k * nb, nb
    else:
        cot = _mc_errors(xp, out, chol, inv_chol, seed, num_samples)
        m, denom = num_samples * nb, num_samples * nb
    deltas = _seq.backprop_to_layer_outputs(lin, cot)
    inputs = _seq.layer_inputs(lin)
    widths = _dense_widths(model)
    layers, li = [], 0
    for i, (layer, (p0, p1)) in enumerate(zip(model.layers, _seq.layer_param_indices(model))):
        if p1 == p0:
            continue
        a = inputs[i]
        g = grads[p0]
        if layer.bias:
            a = xp.concat([a, xp.ones((nb, 1), dtype=a.dtype, device=backend.device_of(a))], axis=1)
            g = xp.concat([g, grads[p0 + 1][:, None]], axis=1)
        dl = xp.reshape(deltas[i], (-1, layer.n_out))
        err = _sym(xp, xp.matmul(xp.matrix_transpose(dl), dl)) / denom
        inp = _sym(xp, xp.matmul(xp.matrix_transpose(a), a)) / nb
        linear_after = all(getattr(lay, "name", "identity") == "identity" for lay in model.layers[i + 1:])
        r_err = int(min(min(widths[li + 1:]) if linear_after else layer.n_out, m))
        r_in = int(min(a.shape[1], nb))
        layers.append(LayerFactors(err, inp, g, r_err, r_in, bool(layer.bias)))
        li += 1
    return BernacchiaFactors(loss, tuple(layers))


def bernacchia_factors(model, params, batch, *, num_samples=None, seed=0, noise_cov=None):
    """Loss, gradients and the two covariances of eq (10) for every layer
    (Bernacchia et al. (2018) eqs 7-8, 13-15, Sec. 5).

    Parameters
    ----------
    model : DeepLinear or Sequential
        A deep linear network or an MLP (:func:`arraycurv.mlp`: Dense layers with
        parameter-free activations between them).
    params : tuple of arrays
    batch : tuple (x, y), or LinearMoments for a DeepLinear
        The targets enter only the loss and the gradient.
    num_samples : int, optional
        ``None``: the error covariance in closed form (exact expectation over
        q(y|x) = N(f(x), Sigma~)); an integer K: K draws y ~ q(y|x) per input, their
        errors Sigma~^{-1}(y - f) back-propagated (Sec. 5, "K = 1 suffices").
    seed : int or numpy Generator
        Seed of the Monte-Carlo draws.
    noise_cov : array (n_L, n_L), optional
        The predictive covariance Sigma~ (symmetric positive definite); ``None`` is the
        identity (the library's MSE). The loss is then the NLL of eq (6),
        1/2 <(y - f)^T Sigma~^{-1} (y - f)> without its constant.

    Returns
    -------
    BernacchiaFactors
        ``loss`` and one :class:`LayerFactors` per weight matrix, in the namespace,
        dtype and device of ``params``.
    """
    xp, num_samples = _prepare(model, params, batch, noise_cov, num_samples)
    chol, inv_chol = _noise_factor(xp, noise_cov, _dense_widths(model)[-1], params[0])
    return _factors(xp, model, params, batch, chol, inv_chol, num_samples, seed)


def _factors(xp, model, params, batch, chol, inv_chol, num_samples, seed):
    if isinstance(model, DeepLinear):
        return _deep_linear_factors(xp, model, tuple(params), batch, chol, inv_chol, num_samples, seed)
    if not isinstance(batch, (tuple, list)):
        raise TypeError(f"batch: expected a tuple (x, y) for an MLP, got {type(batch).__name__}")
    return _sequential_factors(xp, model, tuple(params), batch, chol, inv_chol, num_samples, seed)


# ----------------------------------------------------------------------------- inverses
def _pinv_rank(xp, a, rank, rcond):
    """Pseudo-inverse of symmetric PSD ``a`` (..., n, n) keeping at most the ``rank``
    largest eigenvalues, and only those above ``rcond`` times the largest."""
    n = a.shape[-1]
    lam, u = xp.linalg.eigh(a)
    srt = xp.sort(lam, axis=-1)
    floor = srt[..., n - min(rank, n):n - min(rank, n) + 1]  # the rank-th largest
    top = srt[..., n - 1:]
    keep = (lam >= floor) & (lam > rcond * top) & (lam > 0)
    inv = xp.where(keep, 1.0 / xp.where(keep, lam, xp.ones_like(lam)), xp.zeros_like(lam))
    return xp.matmul(u * inv[..., None, :], xp.matrix_transpose(u))


def _inverse(xp, a, rank, delta, inverse, rcond, seed):
    """(a + delta I)^{-1} (delta > 0) or the rank-capped pseudo-inverse (delta = 0)."""
    n = a.shape[-1]
    if inverse == "randomized":
        return randomized_psd_inverse(a, min(rank, n), damping=delta, rcond=rcond, seed=seed)
    if delta > 0:
        eye = xp.eye(n, dtype=a.dtype, device=backend.device_of(a))
        return _sym(xp, xp.linalg.solve(a + delta * eye, xp.broadcast_to(eye, a.shape)))
    rc = n * float(xp.finfo(a.dtype).eps) if rcond is None else rcond
    return _pinv_rank(xp, a, rank, rc)


def _groups(layers):
    """Indices of layers grouped by (factor shapes, ranks), for batched inversion."""
    out = {}
    for i, f in enumerate(layers):
        key = (tuple(f.error_cov.shape), tuple(f.input_cov.shape), f.error_rank, f.input_rank)
        out.setdefault(key, []).append(i)
    return list(out.values())


def factor_inverses(factors, *, damping=0.0, inverse="direct", rcond=None, seed=0):
    """Per layer ``((Lambda~_i + sqrt(damping) I)^{-1}, (Lambda_i + sqrt(damping) I)^{-1})``
    (Bernacchia et al. (2018) eq (20); pseudo-inverses for ``damping = 0``, eq 10).

    Layers with equal factor shapes are inverted in one batched call. ``inverse`` is
    ``"direct"`` (solve / eigendecomposition) or ``"randomized"``
    (:func:`arraycurv.linalg.lowrank.randomized_psd_inverse` at the structural rank).
    """
    if not isinstance(inverse, str) or inverse not in INVERSES:
        raise ValueError(f"inverse: expected one of {INVERSES}, got {inverse!r}")
    delta = math.sqrt(check_nonneg(damping, "damping"))
    rcond = check_rcond(rcond)
    layers, xp = _check_factors(factors)
    return _factor_inverses(xp, layers, delta, inverse, rcond, seed)


def _check_factors(factors):
    """The layers of a :class:`BernacchiaFactors` (or a tuple of :class:`LayerFactors`),
    their covariances checked (square, one namespace and dtype, finite)."""
    name = "factors.layers" if isinstance(factors, BernacchiaFactors) else "factors"
    layers = factors.layers if isinstance(factors, BernacchiaFactors) else factors
    if not isinstance(layers, (tuple, list)) or not layers or not all(isinstance(f, LayerFactors) for f in layers):
        raise ArgumentTypeError(f"factors: expected a BernacchiaFactors from bernacchia_factors (or a tuple of "
                                f"LayerFactors), got {type(factors).__name__}")
    pairs = []
    for i, f in enumerate(layers):
        for attr in ("error_cov", "input_cov"):
            a, nm = getattr(f, attr), f"{name}[{i}].{attr}"
            if not backend.is_array(a) or a.ndim != 2 or a.shape[0] != a.shape[1]:
                got = tuple(a.shape) if backend.is_array(a) else type(a).__name__
                raise ValueError(f"{nm}: expected a square matrix, got {got}")
            pairs.append((nm, a))
    return tuple(layers), check_arrays(pairs)


def _factor_inverses(xp, layers, delta, inverse, rcond, seed):
    out = [None] * len(layers)
    for idx in _groups(layers):
        f0 = layers[idx[0]]
        err = xp.stack([layers[i].error_cov for i in idx]) if len(idx) > 1 else f0.error_cov
        inp = xp.stack([layers[i].input_cov for i in idx]) if len(idx) > 1 else f0.input_cov
        ei = _inverse(xp, err, f0.error_rank, delta, inverse, rcond, seed)
        ai = _inverse(xp, inp, f0.input_rank, delta, inverse, rcond, seed)
        for j, i in enumerate(idx):
            out[i] = (ei[j, ...], ai[j, ...]) if len(idx) > 1 else (ei, ai)
    return tuple(out)


def _layer_directions(xp, layers, delta, inverse, rcond, seed, c):
    """``-c (E + delta)^+ g (A + delta)^+`` per layer: with damping and direct inversion
    two solves per group of equally shaped layers (no explicit inverse), else through
    :func:`_factor_inverses`."""
    if inverse != "direct" or delta <= 0:
        inv = _factor_inverses(xp, layers, delta, inverse, rcond, seed)
        return tuple(-c * xp.matmul(xp.matmul(e, f.grad), a) for (e, a), f in zip(inv, layers))
    out = [None] * len(layers)
    for idx in _groups(layers):
        def stack(name, idx=idx):
            arrs = [getattr(layers[i], name) for i in idx]
            return xp.stack(arrs) if len(arrs) > 1 else arrs[0]

        err, inp, g = stack("error_cov"), stack("input_cov"), stack("grad")
        e_eye = xp.eye(err.shape[-1], dtype=err.dtype, device=backend.device_of(err))
        a_eye = xp.eye(inp.shape[-1], dtype=inp.dtype, device=backend.device_of(inp))
        left = xp.linalg.solve(err + delta * e_eye, g)
        d = -c * xp.matrix_transpose(xp.linalg.solve(inp + delta * a_eye, xp.matrix_transpose(left)))
        for j, i in enumerate(idx):
            out[i] = d[j, ...] if len(idx) > 1 else d
    return tuple(out)


def apply_factor_inverses(inverses, grads, *, alpha=1.0):
    """Eq (10)/(20) from inverted factors: ``d_i = -(alpha / L) E_i^{-1} g_i A_i^{-1}``.

    ``inverses`` is a sequence of ``(E_i^{-1}, A_i^{-1})`` pairs (:func:`factor_inverses`,
    or running inverses kept by a rule) and ``grads`` the matching layer gradients
    dL/d[W_i, b_i] (:attr:`LayerFactors.grad`). Returns one (n_i, n_{i-1} [+1]) array per
    layer.
    """
    alpha = check_real(alpha, "alpha")
    if not isinstance(inverses, (tuple, list)) or not inverses or not all(
            isinstance(p, (tuple, list)) and len(p) == 2 for p in inverses):
        raise ArgumentTypeError(f"inverses: expected a tuple of (E_inv, A_inv) pairs per layer, got "
                                f"{type(inverses).__name__}")
    pairs = []
    for i, (e, a) in enumerate(inverses):
        for nm, m in ((f"inverses[{i}][0]", e), (f"inverses[{i}][1]", a)):
            if not backend.is_array(m) or m.ndim != 2 or m.shape[0] != m.shape[1]:
                got = tuple(m.shape) if backend.is_array(m) else type(m).__name__
                raise ValueError(f"{nm}: expected a square matrix, got {got}")
            pairs.append((nm, m))
    check_params(grads, [(e.shape[0], a.shape[0]) for e, a in inverses], "grads")
    xp = check_arrays(pairs + [(f"grads[{i}]", g) for i, g in enumerate(grads)])
    c = alpha / len(grads)
    return tuple(-c * xp.matmul(xp.matmul(e, g), a) for (e, a), g in zip(inverses, grads))


def _to_params(model, layer_dirs):
    """Layer directions on [W, b] back to the parameter tuple (W and b split)."""
    if isinstance(model, DeepLinear):
        return tuple(layer_dirs)
    out, li = [], 0
    for layer, (p0, p1) in zip(model.layers, _seq.layer_param_indices(model)):
        if p1 == p0:
            continue
        d = layer_dirs[li]
        li += 1
        if layer.bias:
            out += [d[:, :-1], d[:, -1]]
        else:
            out.append(d)
    return tuple(out)


# ----------------------------------------------------------------------------- the direction
def bernacchia_ngd_direction(model, params, batch, *, alpha=1.0, damping=0.0, num_samples=None, seed=0,
                             noise_cov=None, form="kronecker", inverse="direct", rcond=None, warn=True):
    """Exact natural gradient of Bernacchia, Lengyel & Hennequin (2018), eq (10) / (20).

    Per layer ``d_i = -(alpha / L) (Lambda~_i + sqrt(damping) I)^+ g_i (Lambda_i + sqrt(damping) I)^+``
    with g_i = dL/d[W_i, b_i] = -<e_i x_{i-1}^T>, Lambda~_i = <e_i e_i^T> under the
    model's predictive distribution and Lambda_i = <x_{i-1} x_{i-1}^T> over the batch
    (:func:`bernacchia_factors`). With ``damping = 0`` pseudo-inverses are used, cut at
    the structural rank of each factor and at ``rcond`` times its largest eigenvalue.

    Parameters
    ----------
    model : DeepLinear or Sequential (an MLP of Dense layers, Sec. 5)
    params : tuple of arrays
    batch : tuple (x, y), or LinearMoments for a DeepLinear
    alpha : float
        The rate alpha of eq (10) (1 in Fig. 1); the continuous-time velocity is the
        direction itself, a discrete step is ``params + direction``.
    damping : float
        lambda >= 0 of eq (20): sqrt(lambda) I is added to both covariances. Large
        lambda gives ``-(alpha / (L lambda)) g``, a small SGD step.
    num_samples : int, optional
        Monte-Carlo draws K per input for the error covariance (None: closed form).
    seed : int or numpy Generator
        Seed of the draws (and of the randomized inverse).
    noise_cov : array (n_L, n_L), optional
        Predictive covariance Sigma~ (identity by default).
    form : {"kronecker", "moore_penrose"}
        ``"kronecker"``: eq (10). ``"moore_penrose"``: the exact Moore-Penrose NGD
        ``-alpha (F + damping I)^+ g`` through :func:`arraycurv.directions.qngd_direction`
        with q = 1 (Levenberg-Marquardt damping on F; no ``noise_cov`` or samples), the
        route for bottleneck networks.
    inverse : {"direct", "randomized"}
        How the factors are inverted (:func:`factor_inverses`).
    rcond : float, optional
        Eigenvalue cut-off of the pseudo-inverses relative to the largest eigenvalue;
        default ``n eps`` of the factor (n its size); eigenvalues beyond the structural rank
        of each factor (widths, batch size, samples) are cut first.
    warn : bool
        Warn (:class:`BottleneckWarning`) when eq (10) is applied to a bottleneck network.

    Returns
    -------
    tuple of arrays shaped like ``params`` (sign included).
    """
    if form not in _FORMS:
        raise ValueError(f"form: expected one of {_FORMS}, got {form!r}")
    if inverse not in INVERSES:
        raise ValueError(f"inverse: expected one of {INVERSES}, got {inverse!r}")
    alpha = check_real(alpha, "alpha")
    damping = check_nonneg(damping, "damping")
    rcond = check_rcond(rcond)
    check_bool(warn, "warn")
    if form == "moore_penrose":
        return _moore_penrose(model, params, batch, alpha, damping, rcond, num_samples, noise_cov)
    if warn and has_bottleneck(model):
        warnings.warn(
            f"model: eq (10) on widths {_dense_widths(model)} with a hidden layer narrower than max(n_0, n_L) is "
            "not a generalized inverse of the Fisher (Bernacchia et al. 2018 eq 19); its loss trajectory differs "
            "from natural gradient descent. Use form='moore_penrose' for the exact NGD.",
            BottleneckWarning, stacklevel=2,
        )
    xp, num_samples = _prepare(model, params, batch, noise_cov, num_samples)
    chol, inv_chol = _noise_factor(xp, noise_cov, _dense_widths(model)[-1], params[0])
    delta = math.sqrt(damping)
    if inverse == "direct" and isinstance(model, DeepLinear) and len(set(model.widths)) == 1 and model.depth > 1:
        _, st = _deep_linear_factors(xp, model, tuple(params), batch, chol, inv_chol, num_samples, seed, stacked=True)
        d = _stacked_direction(xp, st, delta, rcond, alpha / model.depth)
        return tuple(d[i, ...] for i in range(model.depth))
    factors = _factors(xp, model, params, batch, chol, inv_chol, num_samples, seed)
    dirs = _layer_directions(xp, factors.layers, delta, inverse, rcond, seed, alpha / len(factors.layers))
    return _to_params(model, dirs)


def _moore_penrose(model, params, batch, alpha, damping, rcond, num_samples, noise_cov):
    from .fractional import qngd_direction

    if noise_cov is not None or num_samples is not None:
        raise ValueError("form: expected 'kronecker' with noise_cov or num_samples (the Moore-Penrose route uses "
                         "the exact Fisher of the unit-covariance loss), got 'moore_penrose'")
    d = qngd_direction(model, params, batch, 1.0, damping=damping, rcond=rcond, loss=MSE())
    return tuple(alpha * di for di in d)


# ----------------------------------------------------------------------------- properties
def predicted_change(grads, direction, alpha=1.0):
    """Loss change predicted by the quadratic model of footnote 1 for the step
    ``alpha * direction`` (Bernacchia et al. (2018) footnote 1, used by eq (21)).

    The quadratic whose Newton step is ``direction`` (F d = -g) predicts
    ``(alpha - alpha^2 / 2) <g, d>``, i.e. the paper's
    ``(-alpha + alpha^2 / 2) sum_i tr(dW_i^T <e_i x_{i-1}^T>)`` (negative: a decrease).
    ``grads`` and ``direction`` are tuples shaped like the parameters; ``direction`` is
    the unit-rate direction (``alpha = 1`` in :func:`bernacchia_ngd_direction`).
    Returns a 0-d array.
    """
    a = check_real(alpha, "alpha")
    if not isinstance(grads, (tuple, list)) or not grads:
        raise ArgumentTypeError(f"grads: expected a non-empty tuple of arrays, got {type(grads).__name__}")
    for i, g in enumerate(grads):
        if not backend.is_array(g) or not hasattr(g, "shape"):
            raise ArgumentTypeError(f"grads[{i}]: expected an array, got {type(g).__name__}")
    check_params(direction, [tuple(g.shape) for g in grads], "direction")
    check_arrays([(f"grads[{i}]", g) for i, g in enumerate(grads)]
                       + [(f"direction[{i}]", d) for i, d in enumerate(direction)])
    return (a - 0.5 * a * a) * tree_vdot(tuple(grads), tuple(direction))


def map_velocity(model, params, batch, *, alpha=1.0, noise_cov=None, rcond=None):
    """Velocity of the total map under eq (10), eq (19) of Bernacchia et al. (2018):

        dW/dt = -alpha W + (alpha / L) sum_i P_i^a T P_i^b,   T = <y x^T> Sigma^+,

    with P_i^a = W_{>i} (W_{>i}^T Sigma~^{-1} W_{>i})^+ W_{>i}^T Sigma~^{-1} and
    P_i^b = Sigma W_{<i}^T (W_{<i} Sigma W_{<i}^T)^+ W_{<i}. For networks without a
    bottleneck (:func:`has_bottleneck`) every projection is the identity and this is
    eq (18), ``-alpha (W - <y x^T> Sigma^{-1})``: the map relaxes exponentially to the
    least-squares solution and the loss decays as e^{-2 alpha t}.

    Parameters
    ----------
    model : DeepLinear
    params, batch, alpha, noise_cov
        As :func:`bernacchia_ngd_direction` (batch moments give Sigma and <y x^T>).
    rcond : float, optional
        Cut-off of the pseudo-inverses (default as :func:`bernacchia_ngd_direction`).

    Returns
    -------
    array (n_L, n_0)
    """
    if not isinstance(model, DeepLinear):
        raise TypeError(f"model: expected a DeepLinear (the map W = W_L ... W_1), got {type(model).__name__}")
    alpha = check_real(alpha, "alpha")
    rcond = check_rcond(rcond)
    xp, _ = _prepare(model, params, batch, noise_cov, None)
    chol, inv_chol = _noise_factor(xp, noise_cov, model.widths[-1], params[0])
    if isinstance(batch, LinearMoments):
        sxx, syx, nb = batch.sxx, batch.syx, batch.count or model.widths[0]
    else:
        x, y = batch
        nb = x.shape[0]
        sxx = xp.matmul(xp.matrix_transpose(x), x) / nb
        syx = xp.matmul(xp.matrix_transpose(y), x) / nb
    n0 = model.widths[0]
    target = xp.matmul(syx, _pinv_rank(xp, _sym(xp, sxx), min(n0, nb), _rc(xp, rcond, n0, sxx)))
    pre, suf = partial_products(params)
    wbar = xp.matmul(suf[0], params[0])
    w = model.widths
    acc = xp.zeros_like(wbar)
    for i, (p, s) in enumerate(zip(pre, suf)):
        sw = s if chol is None else xp.matmul(inv_chol, s)
        m_a = _sym(xp, xp.matmul(xp.matrix_transpose(sw), sw))
        pa = xp.matmul(xp.matmul(s, _pinv_rank(xp, m_a, min(w[i + 1:]), _rc(xp, rcond, w[i + 1], m_a))),
                       xp.matrix_transpose(sw))
        if chol is not None:
            pa = xp.matmul(pa, inv_chol)
        m_b = _sym(xp, xp.matmul(xp.matmul(p, sxx), xp.matrix_transpose(p)))
        rb = min(min(w[: i + 1]), nb)
        pb = xp.matmul(xp.matmul(xp.matmul(sxx, xp.matrix_transpose(p)), _pinv_rank(xp, m_b, rb, _rc(xp, rcond, w[i],
                                                                                                      m_b))), p)
        acc = acc + xp.matmul(xp.matmul(pa, target), pb)
    return -alpha * wbar + (alpha / model.depth) * acc


def _rc(xp, rcond, n, like):
    return n * float(xp.finfo(like.dtype).eps) if rcond is None else rcond


def map_path_singularity(w0, w_star, *, alpha=1.0):
    """Does the exact NGD map path W(t) = W* + e^{-alpha t} (W_0 - W*) (eq 18) cross a
    singular matrix? (Bernacchia et al. (2018) Sec. 4: the path must avoid singular
    matrices for the parameter dynamics of eq (16) to exist.)

    For square maps, det W(t) changes sign between t = 0 and t = inf when
    det W_0 det W* < 0; the singular times are t = log(1 - nu) / alpha for the real
    negative eigenvalues nu of W*^{-1} W_0 (1 + s (nu - 1) = 0 with s = e^{-alpha t}).
    The determinants use the array API; the eigenvalues (a diagnostic) are computed on
    the host.

    Parameters
    ----------
    w0, w_star : arrays (n, n)
        The initial and the target map.
    alpha : float > 0

    Returns
    -------
    PathSingularity
    """
    alpha = check_real(alpha, "alpha", lo=0, lo_open=True)
    for name, a in (("w0", w0), ("w_star", w_star)):
        if not backend.is_array(a) or a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"{name}: expected a square matrix (n, n), got {getattr(a, 'shape', type(a).__name__)}")
    if tuple(w0.shape) != tuple(w_star.shape):
        raise ValueError(f"w_star: expected shape {tuple(w0.shape)} like w0, got {tuple(w_star.shape)}")
    xp = check_arrays([("w0", w0), ("w_star", w_star)])
    d0, d1 = float(xp.linalg.det(w0)), float(xp.linalg.det(w_star))
    h = backend.host_namespace()
    a0, a1 = backend.to_numpy(w0).astype(h.float64), backend.to_numpy(w_star).astype(h.float64)
    times = ()
    if d1 != 0.0:
        nu = h.linalg.eigvals(h.linalg.solve(a1, a0))
        tol = 1e-9 * max(1.0, float(h.max(h.abs(nu))))
        neg = sorted(float(v.real) for v in nu if abs(v.imag) <= tol and v.real < 0)
        times = tuple(sorted(math.log(1.0 - v) / alpha for v in neg))
    return PathSingularity(bool(d0 * d1 < 0), d0, d1, times)


def check_map_path(model, params, batch, *, alpha=1.0, warn=True):
    """For a square DeepLinear, :func:`map_path_singularity` of the current map and the
    least-squares target <y x^T> Sigma^{-1} of ``batch``; warns
    (:class:`SingularPathWarning`) when the path must cross a singular matrix, where the
    continuous-time parameter flow of eq (10) blows up. Returns the
    :class:`PathSingularity`, or None for non-square networks.
    """
    if not isinstance(model, DeepLinear):
        raise TypeError(f"model: expected a DeepLinear, got {type(model).__name__}")
    check_bool(warn, "warn")
    check_call(model, params, batch=batch, loss=MSE())
    if len(set(model.widths)) != 1:
        return None
    zero = map_velocity(model, params, batch, alpha=1.0)  # -(W - T) for square nets
    pre, suf = partial_products(params)
    xp = backend.namespace_of(params=tuple(params))
    wbar = xp.matmul(suf[0], params[0])
    res = map_path_singularity(wbar, wbar + zero, alpha=alpha)
    if warn and res.crosses:
        warnings.warn(
            f"params: the exact NGD map path from det W0 = {res.det_start:.3g} to the target with det "
            f"{res.det_target:.3g} crosses a singular matrix (first at t = {res.times[0] if res.times else 'nan'}); "
            "the parameter flow of eq (10) blows up there (Bernacchia et al. 2018 Sec. 4)",
            SingularPathWarning, stacklevel=2,
        )
    return res
