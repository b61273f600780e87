"""Losses on network outputs (spec 2.5): value, output gradient, output Hessian, a
symmetric factor of it, and sampling of targets from the model's predictive distribution.

Conventions (spec, Conventions): the loss is the *mean* over the batch of per-sample
losses l_b; :func:`loss_grad`, :func:`loss_hessian_vp`, :func:`loss_hessian` and
:func:`loss_hessian_factor` return *per-sample* quantities (no 1/B), one row per sample;
curvature routines apply the 1/B. The GGN is G = (1/B) sum_b J_b^T H_b J_b with
H_b = S_b^T S_b, S_b = :func:`loss_hessian_factor`.

Losses are small frozen dataclasses; the functions dispatch on their type.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import array_api_compat

from . import backend
from .validation import ArgumentTypeError, check_finite, check_ndim, check_shape

__all__ = [
    "MSE",
    "SoftmaxCrossEntropy",
    "check_target_shape",
    "check_targets",
    "loss_grad",
    "loss_hessian",
    "loss_hessian_factor",
    "loss_hessian_vp",
    "loss_value",
    "loss_value_and_grad",
    "sample_targets",
]


@dataclass(frozen=True)
class MSE:
    """Squared error l_b = 1/2 ||f(x_b) - y_b||^2 (Huh eq 1; Bernacchia eq 6 with unit
    covariance). Output Hessian H_b = I; predictive distribution N(f(x_b), I)."""


@dataclass(frozen=True)
class SoftmaxCrossEntropy:
    """Softmax cross-entropy l_b = -log softmax(f(x_b))[y_b] with integer labels y_b."""


def _check_outputs(outputs, xp, *, finite: bool = False) -> None:
    """``outputs`` a float32/float64 array (B, k) with B >= 1 (and finite if asked: the
    checks that need the data on the host run only where the result is not a fast path)."""
    check_ndim(outputs, 2, "outputs")
    if outputs.shape[0] < 1:
        raise ValueError(f"outputs: expected a batch of at least one sample, got shape {tuple(outputs.shape)}")
    backend.check_float(outputs, "outputs", xp)
    if finite:
        check_finite(outputs, "outputs", xp)


def _finite_loss(xp, value, outputs, targets=None):
    """The mean loss, after naming a NaN/Inf input if the value is not finite."""
    if not bool(xp.isfinite(value)):
        check_finite(outputs, "outputs", xp)
        if targets is not None:
            check_finite(targets, "targets", xp)
    return value


def _unknown(fn_name, loss):
    raise TypeError(f"loss: expected MSE() or SoftmaxCrossEntropy(), got {loss!r} in {fn_name}")


@functools.singledispatch
def check_target_shape(loss, targets, out_shape, name: str = "targets") -> bool:
    """Raise a clear error naming ``name`` unless ``targets`` fit outputs of shape
    ``out_shape`` = (B, k) for this loss, before any output is computed.

    Returns True when the targets are real floating values (to be checked for dtype and
    finiteness like the inputs, e.g. MSE targets) and False for integer class labels
    (checked here: dtype and range). Used by :func:`arraycurv.validation.check_call`.
    """
    _unknown("check_target_shape", loss)


@check_target_shape.register
def _(loss: MSE, targets, out_shape, name: str = "targets") -> bool:
    check_shape(targets, tuple(out_shape), name)
    return True


@functools.singledispatch
def check_targets(loss, outputs, targets) -> None:
    """Raise a clear error if ``targets`` do not fit ``outputs`` for this loss."""
    _unknown("check_targets", loss)


@check_targets.register
def _(loss: MSE, outputs, targets) -> None:
    _check_outputs(outputs, None)
    check_target_shape(loss, targets, tuple(outputs.shape), "targets")
    backend.namespace_of(outputs=outputs, targets=targets)  # before comparing dtypes across namespaces
    if targets.dtype != outputs.dtype:
        raise TypeError(f"targets: expected dtype {outputs.dtype} like outputs, got {targets.dtype}")


@functools.singledispatch
def loss_value(loss, outputs, targets):
    """Mean loss over the batch, a 0-d array."""
    _unknown("loss_value", loss)


@loss_value.register
def _(loss: MSE, outputs, targets):
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    check_targets(loss, outputs, targets)
    return _mse_mean(xp, outputs - targets, outputs, targets)


def _mse_mean(xp, r, outputs, targets):
    """(1/B) sum_b 1/2 ||r_b||^2 of the residual r = outputs - targets (finite, or the
    culprit named)."""
    return _finite_loss(xp, 0.5 * xp.sum(r * r) / outputs.shape[0], outputs, targets)


@functools.singledispatch
def loss_grad(loss, outputs, targets):
    """Per-sample gradient d l_b / d f_b, shape (B, k)."""
    _unknown("loss_grad", loss)


@loss_grad.register
def _(loss: MSE, outputs, targets):
    backend.namespace_of(outputs=outputs, targets=targets)
    check_targets(loss, outputs, targets)
    return outputs - targets


@functools.singledispatch
def _loss_value_and_grad(loss, outputs, targets, xp, *, value: bool = True):
    """Trusted ``(mean loss or None, per-sample gradient)``; this default calls the
    (checked) :func:`loss_value` and :func:`loss_grad` of a loss that registers only those."""
    return (loss_value(loss, outputs, targets) if value else None), loss_grad(loss, outputs, targets)


def loss_value_and_grad(loss, outputs, targets):
    """Mean loss and per-sample gradient d l_b / d f_b together, ``(0-d array, (B, k))``:
    the two share their work (the residual for MSE, the softmax for cross-entropy).

    The inputs are checked like :func:`loss_value` (shapes, dtype, finite values, labels
    in range). The curvature verbs, whose inputs were checked once, call
    ``loss_value_and_grad.trusted(loss, outputs, targets, xp, value=True)`` (``value=False``
    skips the loss); a new loss registers its fused form with
    ``loss_value_and_grad.register``, and without one gets its ``loss_value`` and
    ``loss_grad``.
    """
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    check_targets(loss, outputs, targets)
    check_finite(outputs, "outputs", xp)
    if xp.isdtype(targets.dtype, "real floating"):
        check_finite(targets, "targets", xp)
    return _loss_value_and_grad(loss, outputs, targets, xp)


loss_value_and_grad.register = _loss_value_and_grad.register
loss_value_and_grad.dispatch = _loss_value_and_grad.dispatch
loss_value_and_grad.registry = _loss_value_and_grad.registry
loss_value_and_grad.trusted = _loss_value_and_grad


@_loss_value_and_grad.register
def _(loss: MSE, outputs, targets, xp, *, value: bool = True):
    r = outputs - targets
    return (_mse_mean(xp, r, outputs, targets) if value else None), r


@functools.singledispatch
def _loss_hessian_vp(loss, outputs, v):
    """Trusted per-sample output-Hessian products (inputs checked by the caller)."""
    _unknown("loss_hessian_vp", loss)


def loss_hessian_vp(loss, outputs, v):
    """Per-sample output-Hessian products H_b v_b, shape (B, k).

    ``outputs`` and ``v`` are checked (one namespace, shape (B, k) each, one real floating
    dtype, finite values). Internal callers whose ``v`` is built from checked inputs use
    ``loss_hessian_vp.trusted(loss, outputs, v)``, which skips the checks; a new loss
    registers its product with ``loss_hessian_vp.register``.
    """
    check_ndim(outputs, 2, "outputs")
    check_shape(v, tuple(outputs.shape), "v")
    pairs = [("outputs", outputs), ("v", v)]
    xp = backend.namespace_of_pairs(pairs)
    _check_outputs(outputs, xp)
    if v.dtype != outputs.dtype:
        raise TypeError(f"v: expected dtype {outputs.dtype} like outputs, got {v.dtype}")
    backend.check_all_finite(xp, pairs)
    return _loss_hessian_vp(loss, outputs, v)


loss_hessian_vp.register = _loss_hessian_vp.register
loss_hessian_vp.dispatch = _loss_hessian_vp.dispatch
loss_hessian_vp.registry = _loss_hessian_vp.registry
loss_hessian_vp.trusted = _loss_hessian_vp


@_loss_hessian_vp.register
def _(loss: MSE, outputs, v):
    return v


@functools.singledispatch
def loss_hessian(loss, outputs):
    """Per-sample output Hessians H_b, shape (B, k, k)."""
    _unknown("loss_hessian", loss)


@loss_hessian.register
def _(loss: MSE, outputs):
    xp = backend.namespace_of(outputs=outputs)
    _check_outputs(outputs, xp, finite=True)
    b, k = outputs.shape
    eye = xp.eye(k, dtype=outputs.dtype, device=backend.device_of(outputs))
    return xp.broadcast_to(eye, (b, k, k))


@functools.singledispatch
def loss_hessian_factor(loss, outputs):
    """Per-sample symmetric factors S_b with H_b = S_b^T S_b, shape (B, k, k)."""
    _unknown("loss_hessian_factor", loss)


@loss_hessian_factor.register
def _(loss: MSE, outputs):
    return loss_hessian(loss, outputs)


@functools.singledispatch
def sample_targets(loss, outputs, seed, num_samples: int = 1):
    """Targets drawn from the model's predictive distribution (Bernacchia Sec. 5, K samples).

    Returns an array of shape (num_samples, B, k) for MSE (y ~ N(f, I)) and of shape
    (num_samples, B) of integer labels for softmax cross-entropy.
    """
    _unknown("sample_targets", loss)


@sample_targets.register
def _(loss: MSE, outputs, seed, num_samples: int = 1):
    xp = backend.namespace_of(outputs=outputs)
    _check_outputs(outputs, xp, finite=True)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    noise = backend.normal(seed, (num_samples, *outputs.shape), xp, dtype=outputs.dtype,
                           device=backend.device_of(outputs))
    return outputs[None, ...] + noise


# ------------------------------------------------------------ softmax cross-entropy
def _ce_check_targets(outputs, targets, xp):
    _check_outputs(outputs, xp)
    _ce_check_labels(targets, tuple(outputs.shape), "targets", xp)


def _ce_check_labels(targets, out_shape, name, xp=None):
    b, k = out_shape
    if not hasattr(targets, "shape") or not backend.is_array(targets):
        raise ArgumentTypeError(f"{name}: expected integer labels of shape ({b},), got {type(targets).__name__}")
    if tuple(targets.shape) != (b,):
        raise ValueError(f"{name}: expected integer labels of shape ({b},), got shape {tuple(targets.shape)}")
    xp = xp or backend.namespace_of(**{name: targets})
    if not xp.isdtype(targets.dtype, "integral"):
        raise TypeError(f"{name}: expected an integer dtype (class labels), got {targets.dtype}")
    if b and (int(xp.min(targets)) < 0 or int(xp.max(targets)) >= k):
        raise ValueError(
            f"{name}: expected labels in [0, {k}), got values in [{int(xp.min(targets))}, {int(xp.max(targets))}]"
        )


@check_target_shape.register
def _(loss: SoftmaxCrossEntropy, targets, out_shape, name: str = "targets") -> bool:
    _ce_check_labels(targets, tuple(out_shape), name)
    return False


def _onehot(xp, targets, k, like):
    ar = xp.arange(k, device=backend.device_of(like))
    return xp.astype(xp.astype(targets, xp.int64)[:, None] == ar[None, :], like.dtype)


def _softmax(xp, f):
    e = xp.exp(f - xp.max(f, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _softmax_parts(xp, f):
    """Softmax pieces accurate to relative rounding even when it saturates.

    Returns ``(m, p, q, amax, log_s)``: the row max m, p = softmax(f), q = 1 - p computed
    without cancellation (for the argmax as the sum of the other probabilities), the
    one-hot of the (first) argmax, and log_s = log sum_j exp(f_j - m) = log1p(sum of the
    non-argmax terms).
    """
    k = f.shape[-1]
    m = xp.max(f, axis=-1, keepdims=True)
    e = xp.exp(f - m)
    ar = xp.arange(k, device=backend.device_of(f))
    amax = ar[None, :] == xp.argmax(f, axis=-1)[:, None]
    rest = xp.where(amax, xp.zeros_like(e), e)
    s = xp.sum(e, axis=-1, keepdims=True)
    p = e / s
    q = xp.where(amax, xp.sum(xp.where(amax, xp.zeros_like(p), p), axis=-1, keepdims=True), 1.0 - p)
    log_s = xp.log1p(xp.sum(rest, axis=-1, keepdims=True))
    return m, p, q, amax, log_s


def _eye_mask(xp, k, like):
    ar = xp.arange(k, device=backend.device_of(like))
    return ar[:, None] == ar[None, :]


@check_targets.register
def _(loss: SoftmaxCrossEntropy, outputs, targets) -> None:
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    _ce_check_targets(outputs, targets, xp)


@loss_value.register
def _(loss: SoftmaxCrossEntropy, outputs, targets):
    """(1/B) sum_b [logsumexp(f_b) - f_b[y_b]] = (1/B) sum_b [(m_b - f_b[y_b]) + log1p(r_b)]
    with m_b = max f_b and r_b the sum of exp(f_bj - m_b) over the non-argmax j, so a
    confident correct prediction keeps full relative accuracy."""
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    _ce_check_targets(outputs, targets, xp)
    m, _, _, _, log_s = _softmax_parts(xp, outputs)
    return _ce_mean(xp, outputs, _onehot(xp, targets, outputs.shape[1], outputs), m, log_s)


def _ce_mean(xp, outputs, onehot, m, log_s):
    """(1/B) sum_b [(m_b - f_b[y_b]) + log_s_b] from the softmax parts (finite, or the
    outputs named)."""
    picked = xp.sum(onehot * outputs, axis=-1)
    return _finite_loss(xp, xp.sum((m[:, 0] - picked) + log_s[:, 0]) / outputs.shape[0], outputs)


@loss_grad.register
def _(loss: SoftmaxCrossEntropy, outputs, targets):
    """softmax(f_b) - onehot(y_b); the label entry is -(1 - p_y) = -sum_{j != y} p_j."""
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    _ce_check_targets(outputs, targets, xp)
    return _loss_value_and_grad(loss, outputs, targets, xp, value=False)[1]


@_loss_value_and_grad.register
def _(loss: SoftmaxCrossEntropy, outputs, targets, xp, *, value: bool = True):
    m, p, q, _, log_s = _softmax_parts(xp, outputs)
    onehot = _onehot(xp, targets, outputs.shape[1], outputs)
    g = xp.where(onehot > 0, -q, p)  # the label entry -(1 - p_y) = -sum_{j != y} p_j
    return (_ce_mean(xp, outputs, onehot, m, log_s) if value else None), g


@_loss_hessian_vp.register
def _(loss: SoftmaxCrossEntropy, outputs, v):
    """H_b v_b = p_b * v_b - p_b (p_b . v_b), H_b = diag(p_b) - p_b p_b^T, evaluated as
    p * (w - p . w) with w = v - v[argmax] (the same value; no cancellation when the
    softmax saturates)."""
    xp = array_api_compat.array_namespace(outputs, v)
    _, p, _, amax, _ = _softmax_parts(xp, outputs)
    w = v - xp.sum(xp.where(amax, v, xp.zeros_like(v)), axis=-1, keepdims=True)
    return p * (w - xp.sum(p * w, axis=-1, keepdims=True))


@loss_hessian.register
def _(loss: SoftmaxCrossEntropy, outputs):
    """H_b = diag(p_b) - p_b p_b^T with p_b = softmax(f_b), shape (B, k, k); the diagonal
    p_i (1 - p_i) uses the cancellation-free 1 - p_i."""
    xp = backend.namespace_of(outputs=outputs)
    _check_outputs(outputs, xp, finite=True)
    _, p, q, _, _ = _softmax_parts(xp, outputs)
    eye = _eye_mask(xp, outputs.shape[1], outputs)
    return xp.where(eye, (p * q)[:, :, None], -p[:, :, None] * p[:, None, :])


@loss_hessian_factor.register
def _(loss: SoftmaxCrossEntropy, outputs):
    """S_b = diag(sqrt p_b) - sqrt(p_b) p_b^T, i.e. S_ij = sqrt(p_i) (delta_ij - p_j), so
    S_b^T S_b = diag(p_b) - p_b p_b^T (using sum_i p_i = 1). Rows of S_b are the k
    "pseudo-output" directions of the Fisher."""
    xp = backend.namespace_of(outputs=outputs)
    _check_outputs(outputs, xp, finite=True)
    _, p, q, _, _ = _softmax_parts(xp, outputs)
    sq = xp.sqrt(p)
    eye = _eye_mask(xp, outputs.shape[1], outputs)
    return xp.where(eye, (sq * q)[:, :, None], -sq[:, :, None] * p[:, None, :])


@sample_targets.register
def _(loss: SoftmaxCrossEntropy, outputs, seed, num_samples: int = 1):
    """Labels y ~ Categorical(softmax(f_b)) by inverse-CDF sampling of backend.uniform
    draws, shape (num_samples, B), int64 (Bernacchia Sec. 5: the model's own predictive
    distribution)."""
    xp = backend.namespace_of(outputs=outputs)
    _check_outputs(outputs, xp, finite=True)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    b, k = outputs.shape
    dev = backend.device_of(outputs)
    p = _softmax(xp, outputs)
    cdf = xp.matmul(p, xp.triu(xp.ones((k, k), dtype=p.dtype, device=dev)))  # cdf[:, j] = sum_{i<=j} p_i
    u = xp.astype(backend.uniform(seed, (num_samples, b), xp, device=dev), p.dtype)
    # label = #{j < k - 1 : cdf_j <= u}, so P(label = j) = cdf_j - cdf_{j-1} = p_j
    below = u[:, :, None] >= cdf[None, :, : k - 1]
    return xp.sum(xp.astype(below, xp.int64), axis=-1)
