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

from . import backend
from .validation import check_ndim, check_shape

__all__ = [
    "MSE",
    "SoftmaxCrossEntropy",
    "check_targets",
    "loss_grad",
    "loss_hessian",
    "loss_hessian_factor",
    "loss_hessian_vp",
    "loss_value",
    "sample_targets",
]


@dataclass(frozen=True)
class MSE:
    """Squared error l_b = 1/2 ||f(x_b) - y_b||^2 (Huh eq 1; Bernacchia eq 6 with unit
    covariance). Output Hessian H_b = I; predictive distribution N(f(x_b), I)."""


@dataclass(frozen=True)
class SoftmaxCrossEntropy:
    """Softmax cross-entropy l_b = -log softmax(f(x_b))[y_b] with integer labels y_b."""


def _unknown(fn_name, loss):
    raise TypeError(f"loss: expected MSE() or SoftmaxCrossEntropy(), got {loss!r} in {fn_name}")


@functools.singledispatch
def check_targets(loss, outputs, targets) -> None:
    """Raise a clear error if ``targets`` do not fit ``outputs`` for this loss."""
    _unknown("check_targets", loss)


@check_targets.register
def _(loss: MSE, outputs, targets) -> None:
    check_ndim(outputs, 2, "outputs")
    check_shape(targets, tuple(outputs.shape), "targets")


@functools.singledispatch
def loss_value(loss, outputs, targets):
    """Mean loss over the batch, a 0-d array."""
    _unknown("loss_value", loss)


@loss_value.register
def _(loss: MSE, outputs, targets):
    xp = backend.namespace_of(outputs=outputs, targets=targets)
    check_targets(loss, outputs, targets)
    r = outputs - targets
    return 0.5 * xp.sum(r * r) / outputs.shape[0]


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
def loss_hessian_vp(loss, outputs, v):
    """Per-sample output-Hessian products H_b v_b, shape (B, k)."""
    _unknown("loss_hessian_vp", loss)


@loss_hessian_vp.register
def _(loss: MSE, outputs, v):
    check_shape(v, tuple(outputs.shape), "v")
    return v


@functools.singledispatch
def loss_hessian(loss, outputs):
    """Per-sample output Hessians H_b, shape (B, k, k)."""
    _unknown("loss_hessian", loss)


@loss_hessian.register
def _(loss: MSE, outputs):
    xp = backend.namespace_of(outputs=outputs)
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
    noise = backend.normal(seed, (num_samples, *outputs.shape), xp, dtype=outputs.dtype,
                           device=backend.device_of(outputs))
    return outputs[None, ...] + noise
