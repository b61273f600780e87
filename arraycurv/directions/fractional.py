"""Fractional curvature correction: q-NGD directions d = -(G^+)^{1/q} g (spec 3.5).

Huh (2020) Sec. 3 ("Fractional Natural Gradient Descent") defines the q-th root NGD as the
minimum-norm solution of ``(H_+)^{1/q} w_dot + eta g = 0``, i.e.

    w_dot = -eta (G^+)^{1/q} g,       q >= 1,

with G the GGN (Huh's Hessian_+). q = 1 is natural gradient descent (NGD, eq 9), q = 2
is sqrt-NGD, q -> inf is gradient descent (SGD, eq 4). The functions here return the
*direction* ``d = -(G^+)^{1/q} g`` (no learning rate), shaped like ``params``.

Four exact forms, which agree to rounding (tested):

``full``
    materialize the P x P GGN and apply ``psd_power(G, -1/q)`` to the flat gradient.
``dual``
    the kernel form. With A the (B k, P) matrix of stacked rows ``S_b J_b / sqrt(B)``
    (S_b the symmetric factor of the loss Hessian, H_b = S_b^T S_b), G = A^T A. The
    gradient is g = (1/B) sum_b J_b^T grad_b = A^T s with ``s_b = (S_b^T)^+ grad_b /
    sqrt(B)`` (for MSE S_b = I and s_b = r_b / sqrt(B); for softmax cross-entropy
    grad_b = p_b - e_y lies in range(H_b) = range(S_b^T), so the pseudo-inverse is exact).
    For any function f, f(A^T A) A^T = A^T f(A A^T) (use the SVD of A), hence

        (A^T A + damping I)^{-1/q} g = A^T (A A^T + damping I)^{-1/q} s,

    exactly, also with Levenberg-Marquardt damping and with the pseudo-inverse power
    (components of s in null(A A^T) = null(A^T) are annihilated by A^T). Only the
    (B k) x (B k) Gram matrix is decomposed.
``svd``
    the same A, decomposed itself: with the thin SVD A = U diag(sigma) V^T,

        (A^T A + damping I)^{+1/q} A^T s = V diag( sigma (sigma^2 + damping)^{-1/q} ) U^T s,

    the factor set to 0 where sigma^2 + damping is below the cut-off. The full and dual
    forms decompose G = A^T A or A A^T, whose condition number is cond(A)^2: in floating
    point they lose about log10(cond(A)) digits more than the backward-stable SVD (4-6
    digits on ill-conditioned MLPs). The cost is of the same order as the dual form's
    (O(B k P min(B k, P))) but 2-5x its wall time on CPU, so ``form="auto"`` never picks
    it: ask for it on ill-conditioned problems.
``map``
    deep linear networks only, Huh S.I.1: d_i = -W_{>i}^T U W_{<i}^T with a map-space
    multiplier U. Write the GGN as G = J^T M J, J: dw -> dW = sum_i W_{>i} dW_i W_{<i}
    the map Jacobian and M(dW) = dW Sxx the map-space metric of the input second moment
    Sxx (loss L = 1/2 tr(W Sxx W^T) - tr(W Syx^T) + c). The gradient is g = J^T R with
    R = W Sxx - Syx = <(f(x) - y) x^T>. Factor Sxx = C^T C (C of shape (r, n0)) and
    write R = S C (possible because the rows of R lie in the span of the inputs). Then
    A(dw) = J(dw) C^T satisfies G = A^T A and g = A^T S with A^T(Lambda) = J^T(Lambda C),
    and the dual identity gives

        d = -J^T [ Lambda_q C ],   Lambda_q = (K + damping)^{+1/q} S,
        K(Lambda) = A A^T (Lambda) = sum_i W_{>i} W_{>i}^T Lambda (C W_{<i}^T W_{<i} C^T),

    the generalized Sylvester operator of Huh S.I.9-10 (for whitened inputs C = I, S = R
    and U = Lambda_q exactly as in the paper). From a raw batch, C and S come from a thin
    QR of X / sqrt(B) = Q C (S = E^T Q / sqrt(B), E the residuals; for B < n0 simply
    C = X / sqrt(B), S = E^T / sqrt(B)), so no inverse is formed; from LinearMoments,
    C = Sxx^{1/2} and S = R Sxx^{+1/2}. K acts on (nL, r) matrices (r = n0, or B < n0);
    it is materialized as the Kronecker sum ``sum_i kron(P_i, Q_i)`` of size (nL r)^2 and
    raised to the power -1/q; for NGD (q = 1) of a depth-2 network with whitened inputs
    it is the plain Sylvester equation W2 W2^T Lambda + Lambda W1^T W1 = R, solved with
    two eigendecompositions (:func:`arraycurv.linalg.solve_sylvester`).

All four decompose matrices with the same non-zero spectrum (that of G; the svd form its
square roots), so the cut-off ``rcond`` (relative to the largest eigenvalue of
G + damping I) means the same thing in every form; its default is ``P * eps`` of the
dtype, P the number of parameters, in every form. ``return_info=True`` returns the
kept rank with the direction (:class:`arraycurv.linalg.powers.PowerInfo`).

Also here: the block-diagonal rules NGD-d / sqrt-NGD-d / q-NGD-d (Huh eqs 19-21,
footnote 4), the regularized NGD of Huh S.I.15, and update-speed clipping (Huh Sec. 6).
See ``docs/rules.md``.
"""

from __future__ import annotations

import functools
import math

from .. import backend
from ..curvature.deep_linear import _ggn_factors
from ..curvature.generic import ggn_block_diag, ggn_matrix, jacobian, value_and_grad
from ..linalg._common import _keep_above, _power_of_kept
from ..linalg.kronecker import kron, kron_psd_power_apply
from ..linalg.powers import PowerInfo, _power_info, _psd_power_kept, psd_power
from ..linalg.sylvester import solve_sylvester
from ..losses import MSE, loss_grad, loss_hessian_factor
from ..models.base import forward, input_shape, output_shape, param_shapes
from ..models.deep_linear import DeepLinear, LinearMoments, _prefixes, _suffixes
from ..params import flatten, num_params, unflatten
from ..validation import (
    ArgumentTypeError,
    check_bool,
    check_call,
    check_nonneg,
    check_q,
    check_rcond,
    check_real,
)

__all__ = [
    "FORMS",
    "blockdiag_power_apply",
    "clip_direction",
    "qngd_blockdiag_direction",
    "qngd_direction",
    "qngd_direction_dual",
    "qngd_direction_full",
    "qngd_direction_map",
    "qngd_direction_svd",
    "qngd_forms",
    "regularized_ngd_direction",
]


#: Names accepted by ``qngd_direction(..., form=...)``.
FORMS = ("auto", "full", "dual", "svd", "map")


# ----------------------------------------------------------------------------- checks
def _default_rcond(n: int, dtype, xp) -> float:
    """Cut-off relative to the largest eigenvalue: ``n * eps`` of ``dtype``."""
    return max(n, 1) * float(xp.finfo(dtype).eps)


def _resolve(model, params, batch, loss, q, damping, rcond, return_info=False):
    """The boundary of every direction: scalars, then the call (check_call); returns
    ``(xp, q, damping, rcond)`` with the default cut-off ``P * eps`` filled in."""
    q = check_q(q)
    damping = check_nonneg(damping, "damping")
    rcond = check_rcond(rcond)
    check_bool(return_info, "return_info")
    xp = check_call(model, params, batch=batch, loss=loss)
    if rcond is None:
        rcond = _default_rcond(num_params(param_shapes(model)), params[0].dtype, xp)
    return xp, q, damping, rcond


def _neg(tree):
    return tuple(-t for t in tree)


def _check_derived(xp, named):
    """Finite inputs whose loss, Jacobian or curvature overflows: raise naming ``params``
    (the caller's argument) and saying which derived quantity (``named``) is not finite."""
    try:
        backend.check_all_finite(xp, named)  # one fused reduction on the fast path
        return
    except ValueError:
        pass
    for what, t in named:
        if not bool(xp.all(xp.isfinite(t))):
            n_bad = int(xp.sum(xp.astype(~xp.isfinite(t), xp.int64)))
            raise ValueError(
                f"params: expected parameters at which the {what} on batch is finite, got {n_bad} NaN/Inf "
                f"entries in it (finite params and batch whose loss overflows)"
            )


def _gradient(xp, model, params, batch, loss):
    """Trusted gradient; NaN/Inf in it (finite inputs whose loss overflows) is an error."""
    _, g = value_and_grad.trusted(model, params, batch, loss, xp=xp)
    _check_derived(xp, [(f"loss gradient for params[{i}]", t) for i, t in enumerate(g)])
    return g


def _all_kept(size):
    """The ``kept`` of a direction that drops nothing (q = inf: no power is taken)."""
    return lambda: (None, size)


def _mask_kept(keep):
    """The ``kept`` of a direction from the mask of kept eigen/singular values."""
    return lambda: (keep, keep.shape[0])


def _finish(xp, out, form, rcond, return_info):
    """``d`` or, with ``return_info``, ``(d, PowerInfo)`` from an implementation's
    ``(d, kept)``; ``kept()`` gives the mask of kept eigen/singular values and the size."""
    d, kept = out
    if not return_info:
        return d
    keep, size = kept()
    if keep is None:
        return d, PowerInfo(rank=size, size=size, rcond=float(rcond), form=form, ranks=(size,))
    return d, _power_info(keep, size, rcond, form, xp)


# ----------------------------------------------------------------------------- full form
def qngd_direction_full(model, params, batch, q, *, damping=0.0, rcond=None, loss=MSE(), return_info=False):
    """q-NGD direction from the materialized P x P GGN (spec 3.5(a)).

    ``d = -(G + damping I)^{+1/q} g`` with G = :func:`arraycurv.ggn_matrix` and g the
    gradient of the mean loss, computed by :func:`arraycurv.linalg.psd_power` on G
    (eigendecomposition; eigenvalues below ``rcond * lambda_max`` are treated as zero,
    which gives the Moore-Penrose pseudo-inverse power of Huh (2020) Sec. 3). Forming G
    squares the condition number: on an ill-conditioned problem prefer ``"svd"``.

    Parameters
    ----------
    model, params, batch
        A model of arraycurv, its parameters (tuple of arrays) and a batch ``(x, y)``
        (for deep linear networks also :class:`arraycurv.LinearMoments`).
    q : float
        Fractional order, q >= 1; ``math.inf`` gives the gradient direction -g.
    damping : float
        Levenberg-Marquardt damping eps >= 0: (G + eps I) replaces G (Huh Sec. 6).
    rcond : float, optional
        Cut-off relative to the largest eigenvalue of G; default ``P * eps``.
    loss
        :class:`arraycurv.MSE` (default) or :class:`arraycurv.SoftmaxCrossEntropy`.
    return_info : bool
        If True, return ``(direction, info)`` with ``info`` a
        :class:`arraycurv.linalg.powers.PowerInfo`: ``info.rank`` eigen/singular values
        of the decomposed matrix kept by the cut-off out of ``info.size``, the cut-off
        ``info.rcond`` used and ``info.form``. One host synchronization. In float32 the
        default cut-off ``P * eps`` can drop most of an ill-conditioned spectrum (the
        dropped directions get no step); ``info.rank`` makes that visible. For
        ``q = inf`` nothing is dropped (``info.rank == info.size``).

    Returns
    -------
    tuple of arrays shaped like ``params``: the direction (no learning rate); with
    ``return_info=True`` the pair ``(direction, info)`` (here ``info.size = P``).
    """
    xp, q, damping, rcond = _resolve(model, params, batch, loss, q, damping, rcond, return_info)
    return _finish(xp, _full(xp, model, params, batch, q, damping, rcond, loss), "full", rcond, return_info)


def _full(xp, model, params, batch, q, damping, rcond, loss):
    g = _gradient(xp, model, params, batch, loss)
    size = num_params(param_shapes(model))
    if math.isinf(q):
        return _neg(g), _all_kept(size)
    gmat = ggn_matrix.trusted(model, params, batch, loss, xp=xp)
    _check_derived(xp, [("GGN", gmat)])
    power, keep = _psd_power_kept(gmat, -1.0 / q, rcond, damping, xp)
    d = xp.matmul(power, flatten(g)[:, None])[:, 0]
    return unflatten(-d, param_shapes(model), "direction"), _mask_kept(keep)


# ----------------------------------------------------------------------------- dual and svd forms
def _check_dual_batch(batch, form="dual"):
    if isinstance(batch, LinearMoments):
        raise ArgumentTypeError(
            f"batch: expected a tuple (x, y) for form='{form}' (per-sample Jacobians), got LinearMoments"
        )


def _dual_factors(xp, model, params, batch, loss):
    """A (B k, P) and s (B k,) with G = A^T A and g = A^T s (see module docstring)."""
    x, y = batch
    nb = x.shape[0]
    out = forward.trusted(model, params, x, xp=xp)
    grad_out = loss_grad(loss, out, y)  # (B, k), per sample
    _check_derived(xp, [("loss gradient of the outputs", grad_out)])
    jac = jacobian.trusted(model, params, x, xp=xp)  # (B, k, P)
    scale = 1.0 / math.sqrt(nb)
    if isinstance(loss, MSE):
        a = jac
        s = grad_out
    else:
        sfac = loss_hessian_factor(loss, out)  # (B, k, k), H_b = S_b^T S_b
        a = xp.matmul(sfac, jac)
        s = xp.matmul(xp.linalg.pinv(xp.matrix_transpose(sfac)), grad_out[..., None])[..., 0]
    k, p = jac.shape[1], jac.shape[2]
    a = xp.reshape(a, (nb * k, p)) * scale
    s = xp.reshape(s, (nb * k,)) * scale
    _check_derived(xp, [("Jacobian", a), ("loss gradient", s)])
    return a, s


def qngd_direction_dual(model, params, batch, q, *, damping=0.0, rcond=None, loss=MSE(), return_info=False):
    """q-NGD direction in the dual (kernel) form (spec 3.5(b)).

    With A the stacked rows ``S_b J_b / sqrt(B)`` (shape (B k, P)) and
    ``s_b = (S_b^T)^+ grad_b / sqrt(B)``, G = A^T A and g = A^T s, and

        d = -(A^T A + damping I)^{+1/q} g = -A^T (A A^T + damping I)^{+1/q} s,

    so only the (B k) x (B k) Gram matrix is decomposed (cheaper than ``full`` when
    B k < P). The identity f(A^T A) A^T = A^T f(A A^T) holds for every function f (SVD
    of A), which makes the damped form exact as well. Needs a batch ``(x, y)``. Forming
    A A^T squares the condition number; :func:`qngd_direction_svd` decomposes A itself
    (same order of cost, slower in wall time).

    Parameters and return value as :func:`qngd_direction_full`; the cut-off ``rcond`` is
    relative to the largest eigenvalue of A A^T, which equals that of G (default
    ``P * eps``, as in the other forms); ``info.size = B k``.
    """
    return _kernel_form("dual", _dual, model, params, batch, q, damping, rcond, loss, return_info)


def _kernel_form(form, impl, model, params, batch, q, damping, rcond, loss, return_info):
    """The public dual and svd forms: a batch (x, y), the checks, ``impl``, the info."""
    _check_dual_batch(batch, form)
    xp, q, damping, rcond = _resolve(model, params, batch, loss, q, damping, rcond, return_info)
    return _finish(xp, impl(xp, model, params, batch, q, damping, rcond, loss), form, rcond, return_info)


def _dual(xp, model, params, batch, q, damping, rcond, loss):
    a, s = _dual_factors(xp, model, params, batch, loss)
    shapes = param_shapes(model)
    if math.isinf(q):
        return _svd_gradient(xp, a, s, shapes)
    gram = xp.matmul(a, xp.matrix_transpose(a))
    _check_derived(xp, [("Gram matrix A A^T", gram)])
    power, keep = _psd_power_kept(gram, -1.0 / q, rcond, damping, xp)
    coef = xp.matmul(power, s[:, None])
    d = xp.matmul(xp.matrix_transpose(a), coef)[:, 0]
    return unflatten(-d, shapes, "direction"), _mask_kept(keep)


def _svd_gradient(xp, a, s, shapes):
    """q = inf in the dual and svd forms: ``-g = -A^T s``, nothing dropped."""
    g = xp.matmul(xp.matrix_transpose(a), s[:, None])[:, 0]
    _check_derived(xp, [("loss gradient", g)])
    return unflatten(-g, shapes, "direction"), _all_kept(a.shape[1])


def qngd_direction_svd(model, params, batch, q, *, damping=0.0, rcond=None, loss=MSE(), return_info=False):
    """q-NGD direction from the thin SVD of the stacked Jacobian (backward stable).

    With A (B k, P) and s as in :func:`qngd_direction_dual` (G = A^T A, g = A^T s) and
    the thin SVD ``A = U diag(sigma) V^T`` (``xp.linalg.svd(full_matrices=False)``),

        d = -(G + damping I)^{+1/q} g = -V diag( sigma_i (sigma_i^2 + damping)^{-1/q} ) U^T s,

    with the factor set to 0 where ``sigma_i^2 + damping <= rcond * max_j (sigma_j^2 +
    damping)``: the same cut-off, relative to the largest eigenvalue of G + damping I,
    as the other forms (default ``P * eps``). Neither A^T A nor A A^T is formed, so the
    condition number is not squared: the error is that of a backward-stable SVD of A,
    where the full and dual forms lose up to ``log10(cond(A))`` more digits (see
    ``benchmarks/bench_qngd_accuracy.py``). The SVD of a (B k, P) matrix costs
    O(B k P min(B k, P)), the order of the dual form's Gram matrix and eigendecomposition,
    but in wall time it is slower, so ``form="auto"`` does not pick it
    (Householder bidiagonalization against a matrix product: 2-5x the dual form per call
    in that benchmark, MLPs with B k = 160-320, P = 1300-2800, one CPU thread). Needs a
    batch ``(x, y)``.
    Huh (2020) eq 12 (q-NGD), Sec. 6 (pseudo-inverses by SVD, damping); spec 3.5(b).

    Parameters and return value as :func:`qngd_direction_full`; ``info.size =
    min(B k, P)`` (the singular values computed).
    """
    return _kernel_form("svd", _svd, model, params, batch, q, damping, rcond, loss, return_info)


def _svd(xp, model, params, batch, q, damping, rcond, loss):
    a, s = _dual_factors(xp, model, params, batch, loss)
    shapes = param_shapes(model)
    if math.isinf(q):
        return _svd_gradient(xp, a, s, shapes)
    d, keep = _svd_power_apply(xp, a, s, -1.0 / q, damping, rcond)
    return unflatten(-d, shapes, "direction"), _mask_kept(keep)


def _svd_power_apply(xp, a, s, p, damping, rcond):
    """``(A^T A + damping I)^{+p} A^T s = V diag(sigma (sigma^2 + damping)^p) U^T s`` and the
    mask of kept singular values (cut-off on sigma^2 + damping, relative to its maximum)."""
    u, sig, vh = xp.linalg.svd(a, full_matrices=False)
    w = sig * sig + damping  # the eigenvalues of G + damping I on range(A^T)
    keep = _keep_above(w, rcond, xp)
    coef = sig * _power_of_kept(w, keep, p, xp)
    c = xp.matmul(xp.matrix_transpose(u), s[:, None])
    return xp.matmul(xp.matrix_transpose(vh), coef[:, None] * c)[:, 0], keep


# ----------------------------------------------------------------------------- map form
def _is_identity(a, xp) -> bool:
    n = a.shape[0]
    eye = xp.eye(n, dtype=a.dtype, device=backend.device_of(a))
    tol = 10.0 * n * float(xp.finfo(a.dtype).eps)
    return bool(xp.max(xp.abs(a - eye)) <= tol)


def _sqrt_and_inverse_sqrt(sxx, xp):
    """Sxx^{1/2} and Sxx^{+1/2} from one eigendecomposition (cut-off n0 * eps, as psd_power)."""
    n = sxx.shape[0]
    w, u = xp.linalg.eigh(0.5 * (sxx + xp.matrix_transpose(sxx)))
    keep = w > _default_rcond(n, sxx.dtype, xp) * xp.max(w)
    root = xp.sqrt(xp.where(keep, w, xp.ones_like(w)))
    zero = xp.zeros_like(w)
    half = xp.matmul(u * xp.where(keep, root, zero), xp.matrix_transpose(u))
    inv_half = xp.matmul(u * xp.where(keep, 1.0 / root, zero), xp.matrix_transpose(u))
    return half, inv_half


def _map_factor(xp, params, wbar, batch):
    """A factor C (r, n0) of the input moment, Sxx = C^T C, and S (nL, r) with R = S C.

    R = <(f(x) - y) x^T> is the map-space gradient. ``C = None`` stands for the identity
    (whitened inputs, Sxx = I: S = R). From a raw batch no inverse is needed: with
    X / sqrt(B) = Q C (thin QR, B >= n0) S = E^T Q / sqrt(B), and for B < n0
    C = X / sqrt(B), S = E^T / sqrt(B) (E the residuals f(x) - y). From LinearMoments
    with Sxx != I: C = Sxx^{1/2}, S = R Sxx^{+1/2}; this one inverse makes the result
    sensitive to rounding in Sxx by about eps * sqrt(cond(Sxx)).
    """
    if isinstance(batch, LinearMoments):
        sxx, syx = batch.sxx, batch.syx
        resid = xp.matmul(wbar, sxx) - syx
        _check_derived(xp, [("map-space gradient W Sxx - Syx", resid)])
        if _is_identity(sxx, xp):
            return None, resid
        half, inv_half = _sqrt_and_inverse_sqrt(sxx, xp)
        return half, xp.matmul(resid, inv_half)
    x, y = batch
    nb, n0 = x.shape
    err = xp.matmul(x, xp.matrix_transpose(wbar)) - y  # residuals E, (B, nL)
    _check_derived(xp, [("residual f(x) - y", err)])
    err_t = xp.matrix_transpose(err)
    if _is_identity(xp.matmul(xp.matrix_transpose(x), x) / nb, xp):
        return None, xp.matmul(err_t, x) / nb
    root = math.sqrt(nb)
    if nb >= n0:
        qmat, rmat = xp.linalg.qr(x / root)
        return rmat, xp.matmul(err_t, qmat) / root
    return x / root, err_t / root


def qngd_direction_map(model, params, batch, q, *, damping=0.0, rcond=None, loss=MSE(), return_info=False):
    """q-NGD direction of a deep linear network in map space (Huh 2020 S.I.1, spec 3.5(c)).

    ``d_i = -W_{>i}^T U W_{<i}^T`` (Huh eq 9 with Lambda_q in place of Lambda), where,
    with a factor ``Sxx = C^T C`` of the input moment and ``R = S C`` the map-space
    gradient R = <(f(x) - y) x^T> = W Sxx - Syx,

        U = Lambda_q C,   Lambda_q = (K + damping)^{+1/q} S,
        K(Lambda) = sum_i W_{>i} W_{>i}^T Lambda (C W_{<i}^T W_{<i} C^T),

    the map-space kernel (the generalized Sylvester operator of S.I.9-10; derivation in
    the module docstring). For whitened inputs C = I and this is Huh's form exactly.
    From a raw batch C comes from a thin QR of the inputs (C = upper-triangular factor,
    r = n0, or C = X / sqrt(B), r = B < n0), so no inverse of Sxx is formed; from
    :class:`arraycurv.LinearMoments` with Sxx != I, C = Sxx^{1/2} and S = R Sxx^{+1/2}
    (accurate to about eps * sqrt(cond(Sxx))). K acts on (nL, r) matrices and is
    materialized as the Kronecker sum ``sum_i kron(P_i, Q_i)`` of size (nL r)^2; for
    q = 1, depth 2 and whitened inputs it is the Sylvester equation
    ``W2 W2^T Lambda + Lambda W1^T W1 = R``, solved by
    :func:`arraycurv.linalg.solve_sylvester` (damping added to W2 W2^T).

    Parameters
    ----------
    model : DeepLinear
    params : tuple of arrays
    batch : (x, y) or LinearMoments
    q, damping, rcond, loss, return_info
        As :func:`qngd_direction_full`; ``loss`` must be MSE. ``info.size = nL r``, the
        size of K.

    Returns
    -------
    tuple of arrays shaped like ``params``; ``(direction, info)`` with ``return_info``.
    """
    if "map" not in qngd_forms(model, loss):
        if not isinstance(model, DeepLinear):
            raise ArgumentTypeError(
                f"model: expected a DeepLinear network for form='map', got {type(model).__name__}")
        raise ArgumentTypeError(f"loss: expected MSE() for form='map' (Huh eq 1), got {loss!r}")
    xp, q, damping, rcond = _resolve(model, params, batch, loss, q, damping, rcond, return_info)
    return _finish(xp, _map(xp, model, params, batch, q, damping, rcond, loss), "map", rcond, return_info)


def _map(xp, model, params, batch, q, damping, rcond, loss):
    pre_all = _prefixes(xp, params)
    prefix, suffix = pre_all[:-1], _suffixes(xp, params)
    c, s = _map_factor(xp, params, pre_all[-1], batch)
    n_out, r = s.shape
    kept = _all_kept(n_out * r)
    if math.isinf(q):
        lam = s
    else:
        ps, qs = [], []
        for pre, suf in zip(prefix, suffix):
            ps.append(xp.matmul(suf, xp.matrix_transpose(suf)))
            pc = pre if c is None else xp.matmul(pre, xp.matrix_transpose(c))
            qs.append(xp.matmul(xp.matrix_transpose(pc), pc))
        if q == 1.0 and len(params) == 2 and (c is None or _is_identity(qs[0], xp)):
            eye = xp.eye(n_out, dtype=s.dtype, device=backend.device_of(s))
            # K = P_1 (x) I + I (x) Q_2: W2 W2^T Lam + Lam W1^T W1 = R  (Huh S.I.9-10)
            lam = solve_sylvester(ps[0] + damping * eye, qs[1], s, rcond=rcond)
            kept = functools.partial(_sylvester_kept, xp, ps[0] + damping * eye, qs[1], rcond)
        else:
            kern = kron(ps[0], qs[0])
            for pi, qi in zip(ps[1:], qs[1:]):
                kern = kern + kron(pi, qi)
            _check_derived(xp, [("map-space kernel K", kern)])
            power, keep = _psd_power_kept(kern, -1.0 / q, rcond, damping, xp)
            kept = _mask_kept(keep)
            lam = xp.reshape(xp.matmul(power, xp.reshape(s, (n_out * r, 1))), (n_out, r))
    u = lam if c is None else xp.matmul(lam, c)
    d = tuple(
        -xp.matmul(xp.matrix_transpose(suf), xp.matmul(u, xp.matrix_transpose(pre))) for pre, suf in zip(prefix, suffix)
    )
    return d, kept


def _sylvester_kept(xp, a, b, rcond):
    """Kept eigenvalues a_i + b_j of K = A (+) B under the rule of :func:`solve_sylvester`."""
    den = xp.abs(xp.linalg.eigvalsh(a)[:, None] + xp.linalg.eigvalsh(b)[None, :])
    keep = xp.reshape(den > rcond * xp.max(den), (-1,))
    return keep, keep.shape[0]


# ----------------------------------------------------------------------------- dispatcher
@functools.singledispatch
def qngd_forms(model, loss) -> tuple[str, ...]:
    """The exact forms of :func:`qngd_direction` that a model family supports for ``loss``.

    The default is ``("full", "dual", "svd")`` (any model with the generic passes); deep
    linear networks with the squared error add the map-space form ``"map"`` (Huh 2020
    S.I.1). A family registers its own list; ``form="auto"`` chooses among these.
    """
    return ("full", "dual", "svd")


@qngd_forms.register(DeepLinear)
def _(model, loss):
    return ("full", "dual", "svd", "map") if isinstance(loss, MSE) else qngd_forms.dispatch(object)(model, loss)


#: Preference on ties of the decomposed size: the SVD of A before the Gram matrix A A^T
#: (same matrix, same order of cost, no squared condition number).
_FORM_ORDER = {"map": 0, "dual": 1, "full": 2, "svd": 3}  # ties: the faster form (svd only on request)


def _form_size(form, model, batch):
    """Size of the matrix each form decomposes: P (full), B k (dual), min(B k, P) (svd: the
    SVD of the (B k, P) matrix A; it ties with dual or full and loses the tie, being 2-5x
    slower in wall time), nL min(n0, B) (map)."""
    raw = not isinstance(batch, LinearMoments)
    if form == "full":
        return num_params(param_shapes(model))
    if form in ("dual", "svd"):
        return batch[0].shape[0] * math.prod(output_shape(model)) if raw else None
    r = math.prod(input_shape(model))
    return math.prod(output_shape(model)) * (min(r, batch[0].shape[0]) if raw else r)


def _choose_form(model, batch, loss):
    sizes = {f: _form_size(f, model, batch) for f in qngd_forms(model, loss)}
    sizes = {f: n for f, n in sizes.items() if n is not None}
    return min(sizes, key=lambda f: (sizes[f], _FORM_ORDER[f]))


_IMPLS = {"full": _full, "dual": _dual, "svd": _svd, "map": _map}


def qngd_direction(model, params, batch, q, *, form="auto", damping=0.0, rcond=None, loss=MSE(),
                   return_info=False):
    """q-NGD direction ``d = -(G + damping I)^{+1/q} g`` (Huh 2020 eq 12; spec 3.5).

    q = 1 is NGD (Huh eq 9), q = 2 sqrt-NGD, q = ``math.inf`` gives -g (SGD, eq 4).

    Parameters
    ----------
    model, params, batch
        Model, parameters and a batch ``(x, y)`` (deep linear: or LinearMoments).
    q : float
        Fractional order >= 1.
    form : {"auto", "full", "dual", "svd", "map"}
        Which exact form to use (see :mod:`arraycurv.directions.fractional`). ``"auto"``
        picks the one that decomposes the smallest matrix: map space (nL min(n0, B),
        deep linear + MSE), the (B k) x (B k) kernel (``"dual"``) or the P x P GGN
        (``"full"``), preferring map, then dual, then full on ties. It never picks
        ``"svd"``, which decomposes the same (B k, P) matrix as the dual form without
        squaring its condition number, at 2-5x the wall time: pass ``form="svd"`` on
        ill-conditioned problems.
    damping : float
        Levenberg-Marquardt damping >= 0.
    rcond : float, optional
        Eigenvalue cut-off relative to the largest eigenvalue of G; default ``P * eps``.
    loss
        The loss (MSE by default).
    return_info : bool
        If True, return ``(direction, info)``, ``info`` a
        :class:`arraycurv.linalg.powers.PowerInfo` (kept rank, size, cut-off, and the
        form used, also the one ``"auto"`` chose); see :func:`qngd_direction_full`.

    Returns
    -------
    tuple of arrays shaped like ``params`` (no learning rate, sign included); with
    ``return_info=True`` the pair ``(direction, info)``.

    Raises
    ------
    ValueError
        ``q`` < 1, negative ``damping``, NaN/Inf in ``params`` or the gradient, unknown
        ``form``.
    TypeError
        ``form="dual"`` or ``"svd"`` with a :class:`arraycurv.LinearMoments` batch,
        ``form="map"`` for a model or loss without a map-space form.
    """
    if form not in FORMS:
        raise ValueError(f"form: expected one of {FORMS}, got {form!r}")
    if form != "auto":
        fn = {"full": qngd_direction_full, "dual": qngd_direction_dual, "svd": qngd_direction_svd,
              "map": qngd_direction_map}[form]
        return fn(model, params, batch, q, damping=damping, rcond=rcond, loss=loss, return_info=return_info)
    xp, q, damping, rcond = _resolve(model, params, batch, loss, q, damping, rcond, return_info)
    form = _choose_form(model, batch, loss)
    return _finish(xp, _IMPLS[form](xp, model, params, batch, q, damping, rcond, loss), form, rcond, return_info)


# ----------------------------------------------------------------------------- block-diagonal
def qngd_blockdiag_direction(model, params, batch, q, *, damping=0.0, rcond=None, loss=MSE()):
    """Block-diagonal q-NGD (NGD-d, sqrt-NGD-d, q-NGD-d; Huh 2020 eqs 19-21, footnote 4).

    Per parameter tensor (layer) i,

        d_i = -(G_ii + damping I)^{+1/q} g_i / n^{1/q},

    with G_ii the diagonal GGN block of tensor i and n Huh's d, the number of layers with
    parameters (a layer's weight and bias count once: the depth for a deep linear network,
    the same count as :func:`arraycurv.directions.kfac_qngd_direction`). The normalization
    n^{1/q} makes the singular-mode dynamics exactly eq 20 for q = 1 (the 1/d of eq 19), eq 21 for q = 2 (1/sqrt d) and
    ``sigma_i' = -eta sigma_Delta j_i^{1-2/q} / d^{1/q}`` in general (footnote 4). For a
    deep linear network the blocks are Kronecker products G_ii = E_i (x) A_i
    (Bernacchia eq 22, :func:`arraycurv.fisher_kron_factors`) and the power is applied
    with :func:`arraycurv.linalg.kron_psd_power_apply`; other models use the
    materialized :func:`arraycurv.ggn_block_diag`. The cut-off ``rcond`` is relative to
    the largest eigenvalue of each block, default ``P_i * eps``.

    Unlike the full-curvature rules these directions are not orthogonal to the
    null space of the GGN, so they break the conservation law of Huh Theorem 1.
    """
    q = check_q(q)
    damping = check_nonneg(damping, "damping")
    rcond = check_rcond(rcond)
    xp = check_call(model, params, batch=batch, loss=loss)
    g = _gradient(xp, model, params, batch, loss)
    if math.isinf(q):
        return _neg(g)
    norm = float(_num_layers(model, params)) ** (1.0 / q)
    d = blockdiag_power_apply(model, params, batch, loss, g, -1.0 / q, rcond, damping, xp=xp)
    return tuple(-di / norm for di in d)


def _num_layers(model, params) -> int:
    """Huh's d: the number of layers with parameters (a layer's weight and bias count
    once), the same count as K-FAC's (one Kronecker pair per layer); for a model with no
    layer-wise form, the number of parameter tensors."""
    from ..models.sequential import as_sequential, layer_param_indices

    try:
        seq = as_sequential(model)
    except TypeError:
        return len(params)
    return sum(1 for start, stop in layer_param_indices(seq) if stop > start)


@functools.singledispatch
def blockdiag_power_apply(model, params, batch, loss, g, p, rcond, damping, *, xp):
    """Trusted per-tensor ``(G_ii + damping I)^p g_i`` for the block-diagonal rules.

    The default materializes the diagonal GGN blocks (:func:`arraycurv.ggn_block_diag`)
    and applies :func:`arraycurv.linalg.psd_power` to each; deep linear networks with the
    squared error register the Kronecker form G_ii = E_i (x) A_i (Bernacchia eq 22) with
    :func:`arraycurv.linalg.kron_psd_power_apply`. ``rcond=None`` means ``P_i * eps``.
    """
    out = []
    for gi, blk in zip(g, ggn_block_diag.trusted(model, params, batch, loss, xp=xp)):
        n = blk.shape[0]
        rc = rcond if rcond is not None else _default_rcond(n, gi.dtype, xp)
        power = psd_power(blk, p, rcond=rc, damping=damping)
        out.append(xp.reshape(xp.matmul(power, xp.reshape(gi, (n, 1))), gi.shape))
    return tuple(out)


@blockdiag_power_apply.register(DeepLinear)
def _(model, params, batch, loss, g, p, rcond, damping, *, xp):
    if not isinstance(loss, MSE):
        return blockdiag_power_apply.dispatch(object)(model, params, batch, loss, g, p, rcond, damping, xp=xp)
    out = []
    for gi, (e_i, a_i) in zip(g, _kron_factors(xp, model, params, batch)):
        rc = rcond if rcond is not None else _default_rcond(gi.shape[0] * gi.shape[1], gi.dtype, xp)
        out.append(kron_psd_power_apply(e_i, a_i, gi, p, rcond=rc, damping=damping))
    return tuple(out)


# ----------------------------------------------------------------------------- regularized, clipping
def regularized_ngd_direction(model, params, batch, eps, *, form="auto", rcond=None, loss=MSE()):
    """Regularized NGD of Huh (2020) S.I.15: ``d = -(eps + 1) (eps I + G)^{-1} g``.

    It solves (G d + g) + eps (d + g) = 0. eps -> inf gives SGD (-g), eps -> 0 NGD
    (-G^+ g: for eps = 0 the pseudo-inverse is used); singular modes follow S.I.16,
    ``sigma_i' = -eta sigma_Delta j_i (eps + 1) / (eps + ||j||^2)``. Computed as
    ``(eps + 1)`` times the damped NGD direction (q = 1, damping = eps) in the given
    ``form``; ``eps = math.inf`` returns -g.
    """
    eps = check_nonneg(eps, "eps", allow_inf=True)
    if math.isinf(eps):
        return qngd_direction(model, params, batch, math.inf, form=form, rcond=rcond, loss=loss)
    d = qngd_direction(model, params, batch, 1.0, form=form, damping=eps, rcond=rcond, loss=loss)
    return tuple((eps + 1.0) * di for di in d)


def clip_direction(direction, max_norm):
    """Update-speed clipping (Huh 2020 Sec. 6): rescale ``direction`` to norm ``max_norm``
    when its Euclidean norm (over all tensors) exceeds it; otherwise return it unchanged.

    The factor ``max_norm / norm`` (exactly 1 when the norm does not exceed ``max_norm``)
    is computed on the arrays' device; the norm is formed from the entries scaled by the
    largest magnitude, so steps of 1e200 are clipped correctly (no overflow to inf), and
    a direction with NaN/Inf is an error naming ``direction[i]``. The clipped norm equals
    ``max_norm`` up to rounding.
    """
    max_norm = check_real(max_norm, "max_norm", lo=0, lo_open=True, want="a finite real number > 0")
    pairs = [(f"direction[{i}]", d) for i, d in enumerate(direction)]
    xp = backend.namespace_of_pairs(pairs)
    backend.check_all_finite(xp, pairs)
    norm = _scaled_norm(xp, direction)
    limit = xp.asarray(max_norm, dtype=norm.dtype, device=backend.device_of(norm))
    factor = xp.where(norm > limit, limit / xp.maximum(norm, limit), xp.ones_like(norm))
    return tuple(d * factor for d in direction)


def _scaled_norm(xp, tree):
    """Euclidean norm of a tuple of arrays without overflow or underflow: the entries are
    divided by the largest magnitude before squaring (a norm of 2e200 is 2e200, not inf)."""
    amax = xp.max(xp.stack([xp.max(xp.abs(d)) if math.prod(d.shape) else xp.zeros_like(xp.sum(d))
                            for d in tree]))
    scale = xp.where(amax > 0, amax, xp.ones_like(amax))
    sq = sum(xp.sum((d / scale) * (d / scale)) for d in tree)
    return scale * xp.sqrt(sq)


def _kron_factors(xp, model, params, batch):
    """Trusted (E_i, A_i) of :func:`arraycurv.curvature.fisher_kron_factors`."""
    pre, suf, sxx = _ggn_factors(xp, model, params, batch)
    return tuple((st.T @ st, (pr @ sxx) @ pr.T) for pr, st in zip(pre, suf))
