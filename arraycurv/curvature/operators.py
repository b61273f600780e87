"""SciPy ``LinearOperator`` views of the curvature matrices (spec 3.2, 3.3), for NumPy users.

The operators act on flat float vectors (the ordering of :func:`arraycurv.flatten`) and
plug into ``scipy.sparse.linalg`` (``eigsh`` for the top of the spectrum, ``cg`` /
``minres`` for damped Newton systems, ...) without materializing the P x P matrix:

* :func:`ggn_operator` -- G v = (1/B) sum_b J_b^T H_b J_b v (GGN = exact Fisher);
* :func:`hessian_operator` -- H v, the exact Hessian of the mean loss (Pearlmutter's
  R-operator, :func:`arraycurv.hvp`);
* :func:`fisher_operator` -- one of the Fisher variants of :mod:`arraycurv.fisher`
  (``variant='exact' | 'mc' | 'empirical'``).

Namespaces: SciPy hands NumPy vectors to ``matvec``; each product converts the vector
into the namespace, dtype and device of ``params`` (:func:`arraycurv.backend.from_numpy`),
computes there, and converts the result back to NumPy (:func:`arraycurv.backend.to_numpy`).
So the parameters may live in any namespace (PyTorch, CuPy, ...), but the operator
itself always speaks NumPy, as SciPy requires. Its ``dtype`` is that of ``params``.

Caching: every operator is built on :func:`arraycurv.linearize` (a generic function).
For ``Sequential`` networks that is the cached linearization: the forward pass runs once
when the operator is built (the Hessian's gradient backward pass too) and every product
reuses it (GGN: one tangent and one reverse pass per product; the vector, checked once
by the operator, goes through the trusted passes). The default linearization of other
models caches nothing, so the products are the family's own verbs, which it may
specialize: :func:`arraycurv.ggn_vp` and :func:`arraycurv.hvp` (for a ``DeepLinear``
network the moment forms, about 17x faster than a tangent and a reverse pass over a
batch of 1000); the Fisher variants call ``lin.jvp`` / ``lin.vjp``.
Targets of the Monte-Carlo variant are drawn once, at construction. ``op.matmat(X)`` (and
``op @ X``) for X of shape (P, k) pushes the k columns through one stacked product (the
passes with (k, B, n) matrices, like :func:`arraycurv.curvature.ggn_matmat`) when the
model takes stacked tangents (:func:`arraycurv.models.base.stacked_tangents`), and falls
back to SciPy's loop over the columns otherwise.
"""

from __future__ import annotations

from typing import Any

from scipy.sparse.linalg import LinearOperator

from .. import backend
from ..losses import MSE, loss_grad
from ..models.base import Linearization, linearize, stacked_tangents
from ..models.sequential import (
    SequentialLinearization,
    _ggn_vp_linearized,
    _grad_cotangents,
    _hvp_linearized,
    _loss_hvp,
)
from ..params import num_params, unflatten
from ..validation import check_call, check_positive_int
from .fisher import _mc_output_metric
from .generic import ggn_vp

__all__ = ['FISHER_VARIANTS', 'fisher_operator', 'ggn_operator', 'hessian_operator']


FISHER_VARIANTS = ("exact", "mc", "empirical")


class _Operator(LinearOperator):
    """A symmetric LinearOperator around a tuple-valued product ``fn(tangent)``."""

    def __init__(self, fn, params, name: str, batched: bool = False):
        self._fn = fn
        self._batched = batched
        self._params = tuple(params)
        self._shapes = tuple(tuple(p.shape) for p in params)
        self._xp = backend.namespace_of(params=self._params)
        self._dtype = params[0].dtype
        self._device = backend.device_of(params[0])
        self.name = name
        p = num_params(self._shapes)
        dt = "float32" if self._dtype == self._xp.float32 else "float64"
        super().__init__(dtype=dt, shape=(p, p))

    def _matvec(self, v):
        backend.check_all_finite(backend.host_namespace(), [("v", v)])  # the vector of ``op @ v``
        vec = backend.from_numpy(v.reshape(-1), self._xp, dtype=self._dtype, device=self._device, copy=False)
        out = self._fn(unflatten(vec, self._shapes, "v"))  # fn: trusted products (v checked here)
        flat = self._xp.concat([self._xp.reshape(t, (-1,)) for t in out])
        return backend.to_numpy(flat).reshape(v.shape).astype(self.dtype, copy=False)

    def _matmat(self, X):
        """A X for X of shape (P, k): one stacked product (``fn`` of k directions at once,
        :func:`arraycurv.curvature.ggn_matmat` style) when the model takes stacked tangents,
        else SciPy's column loop."""
        if not self._batched or X.ndim != 2:
            return super()._matmat(X)
        backend.check_all_finite(backend.host_namespace(), [("X", X)])
        rows = backend.from_numpy(X.T, self._xp, dtype=self._dtype, device=self._device, copy=False)  # (k, P)
        out = self._fn(unflatten(rows, self._shapes, "X"))
        k = X.shape[1]
        flat = self._xp.concat([self._xp.reshape(t, (k, -1)) for t in out], axis=-1)
        return backend.to_numpy(flat).T.astype(self.dtype, copy=False)

    def _rmatvec(self, v):  # every curvature matrix here is symmetric
        return self._matvec(v)

    def _rmatmat(self, X):
        return self._matmat(X)

    def _adjoint(self):
        return self

    def __repr__(self):
        return f"<{self.shape[0]}x{self.shape[1]} {self.name} operator with dtype={self.dtype}>"


def _check_model(model, params, batch, loss):
    xp = check_call(model, params, batch=batch, loss=loss)
    return xp, batch[0], batch[1]


def ggn_operator(model, params, batch, loss=MSE()) -> LinearOperator:
    """The GGN G = (1/B) sum_b J_b^T H_b J_b as a P x P SciPy ``LinearOperator``.

    Spec, Conventions ("GGN = Hessian+ of Huh (2020) = Fisher for these two losses"); the
    matrix of :func:`arraycurv.ggn_matrix`. With a cached linearization the forward pass
    runs once here and each product is one tangent pass and one reverse pass.

    Parameters
    ----------
    model
        Any model registering the interface functions.
    params : tuple of arrays
        Parameters (any namespace; products are computed there).
    batch : tuple (x, y)
        Inputs and targets (the GGN does not depend on ``y`` for MSE / softmax CE, but
        the batch is validated like everywhere else).
    loss : MSE or SoftmaxCrossEntropy

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric, shape (P, P), dtype of ``params``; ``matvec`` takes and returns NumPy
        vectors in the flat parameter ordering.
    """
    xp, x, y = _check_model(model, params, batch, loss)
    lin = linearize.trusted(model, params, x, xp=xp)
    if isinstance(lin, SequentialLinearization):  # cached; v may carry a leading axis k (``matmat``)
        def fn(v):
            return _ggn_vp_linearized(lin, v, loss)
    elif type(lin) is Linearization:  # the default caches nothing: the family's own verb (DeepLinear: moments)
        def fn(v):
            return ggn_vp.trusted(model, params, (x, y), v, loss, xp=xp)
    else:
        b, out = x.shape[0], lin.outputs

        def fn(v):
            return lin.vjp(_loss_hvp(loss, out, lin.jvp(v), xp) / b)

    return _Operator(fn, params, "GGN", stacked_tangents(model))


def hessian_operator(model, params, batch, loss=MSE()) -> LinearOperator:
    """The exact Hessian of the mean loss as a P x P SciPy ``LinearOperator``.

    Each product is :func:`arraycurv.hvp` (Pearlmutter's R-operator; spec 2.4, 3.3), or,
    for ``Sequential`` networks, the cached :func:`arraycurv.hvp_linearized` after one
    forward pass at construction. The matrix is symmetric
    but indefinite in general (use ``eigsh(..., which='LA' / 'SA')``).

    Parameters
    ----------
    model, params, batch, loss
        As in :func:`ggn_operator`.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric, shape (P, P), dtype of ``params``.
    """
    xp, x, y = _check_model(model, params, batch, loss)
    lin = linearize.trusted(model, params, x, xp=xp)
    if isinstance(lin, SequentialLinearization):  # the gradient's backward pass kept for every product
        cots = _grad_cotangents(lin, y, loss, xp)

        def fn(v):
            return _hvp_linearized(lin, v, loss, cots)
    else:
        def fn(v):
            return lin.hvp(y, v, loss)

    return _Operator(fn, params, "Hessian", stacked_tangents(model))


def fisher_operator(model, params, batch, loss=MSE(), *, variant: str = "exact", num_samples: int = 1,
                    seed: Any = 0) -> LinearOperator:
    """A Fisher variant of :mod:`arraycurv.fisher` as a P x P SciPy ``LinearOperator``.

    ``variant='exact'`` is the true Fisher (Bernacchia (2018) eq (5)) = the GGN for MSE
    and softmax CE (same operator as :func:`ggn_operator`); ``'mc'`` the Monte-Carlo
    Fisher with ``num_samples`` targets per input drawn once (with ``seed``) from the
    model's predictive distribution when the operator is built (Bernacchia Sec. 5), so
    every product uses the same draws (the matrix of :func:`arraycurv.fisher_mc_vp` with that
    seed); ``'empirical'``
    the empirical Fisher at the training targets (:func:`arraycurv.fisher_empirical_vp`;
    not the GGN in general, see docs/curvature.md).

    Parameters
    ----------
    model, params, batch, loss
        As in :func:`ggn_operator`.
    variant : {'exact', 'mc', 'empirical'}
    num_samples, seed : int, and int or numpy Generator
        Draws per input for ``'mc'`` and their seed.

    Returns
    -------
    scipy.sparse.linalg.LinearOperator
        Symmetric PSD, shape (P, P), dtype of ``params``.
    """
    if variant not in FISHER_VARIANTS:
        raise ValueError(f"variant: expected one of {FISHER_VARIANTS}, got {variant!r}")
    if variant == "exact":
        op = ggn_operator(model, params, batch, loss)
        op.name = "exact Fisher"
        return op
    xp, x, y = _check_model(model, params, batch, loss)
    b = x.shape[0]
    if variant == "mc":
        n = check_positive_int(num_samples, "num_samples")
    lin = linearize.trusted(model, params, x, xp=xp)
    if variant == "mc":
        hhat = _mc_output_metric(xp, loss, lin.outputs, seed, n)  # drawn once

        def fn(v):
            return lin.vjp(xp.matmul(hhat, lin.jvp(v)[..., None])[..., 0] / b)

        return _Operator(fn, params, "Monte-Carlo Fisher", stacked_tangents(model))
    # empirical
    r = loss_grad(loss, lin.outputs, y)

    def fn(v):
        return lin.vjp(r * xp.sum(r * lin.jvp(v), axis=-1)[..., None] / b)

    return _Operator(fn, params, "empirical Fisher", stacked_tangents(model))
