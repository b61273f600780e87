"""Matrix-free spectral tools for symmetric operators: Lanczos eigenpairs, trace
estimators and stochastic Lanczos quadrature, written against the array API.

The operator is a callable ``matvec(v) -> A v`` for a symmetric ``A``. The space it acts
on is given by ``like``:

* a 1-D array of length n: vectors are flat arrays (n,);
* a tuple of arrays shaped like the parameters (e.g. ``params``): vectors are parameter
  tuples, flattened internally in the library's order (:func:`arraycurv.params.flatten`),
  so ``matvec`` may be ``lambda v: ac.ggn_vp(model, params, batch, v, loss)``.

With ``batched=True`` the callable receives several vectors at once, with a leading
axis: an (m, n) array, or a tuple of (m, *shape) arrays (the models' tangents with
leading axes), and must return the same layout. Only ``like``'s namespace, dtype and
device are used; its values are not read. Random probes come from
:mod:`arraycurv.backend` (seeded: the same seed gives the same probes on every
namespace).

Contents (see ``docs/class_subspace.md``):

* :func:`lanczos` -- extreme eigenpairs by the Lanczos process with full
  reorthogonalization (Lanczos 1950; Golub & Van Loan, Matrix Computations, Alg. 10.1.1
  with complete reorthogonalization), the way PyHessian and curvlinops get the top
  Hessian eigenvalues;
* :func:`block_lanczos` -- the block variant (Golub & Underwood 1977), b vectors per
  step, for clustered outliers and for operators that are cheaper on a block;
* :func:`hutchinson_trace` -- Hutchinson's (1989) estimator tr A = E[v^T A v];
* :func:`hutchpp_trace` -- Hutch++ (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1);
* :func:`slq` / :func:`spectral_density` / :func:`slq_trace` -- stochastic Lanczos
  quadrature (Golub & Meurant 1994; Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao
  2019; Papyan 2020 Alg. 2 and Sec. D.2 for the Gaussian smoothing width).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_extra as xpx

from .. import backend
from ..params import num_params, shapes_of, unflatten
from ..validation import check_bool, check_finite, check_ndim, check_real, check_shape

__all__ = [
    "Eigenpairs",
    "SpectralQuadrature",
    "TraceEstimate",
    "block_lanczos",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos",
    "slq",
    "slq_trace",
    "spectral_density",
]

#: Accepted values of ``which``.
WHICH = ("largest", "smallest", "magnitude")
#: Accepted probe distributions.
DISTRIBUTIONS = ("rademacher", "normal")


class Eigenpairs(NamedTuple):
    """Ritz pairs of a symmetric operator.

    Attributes
    ----------
    eigenvalues : array (k,)
        Ordered as asked by ``which`` (largest first for ``"largest"``).
    eigenvectors : array (n, k) or tuple of (k, *shape) arrays
        Orthonormal; columns for a flat space (as ``eigh``), a leading axis for a
        parameter-tuple space (the library's convention for several directions).
    residuals : array (k,)
        ``||A y_i - theta_i y_i||`` from the Lanczos relation (exact up to rounding
        with full reorthogonalization).
    num_matvecs : int
        Number of operator applications (one per vector, also inside a block).
    """

    eigenvalues: Any
    eigenvectors: Any
    residuals: Any
    num_matvecs: int


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate: ``trace`` and its standard error (0-d arrays), and
    the number of operator applications spent."""

    trace: Any
    stderr: Any
    num_matvecs: int


class SpectralQuadrature(NamedTuple):
    """Gauss quadrature rules from stochastic Lanczos quadrature.

    Attributes
    ----------
    nodes, weights : arrays (num_probes, m)
        Ritz values and squared first components of the Ritz vectors of each probe's
        Lanczos tridiagonal matrix; each row of ``weights`` sums to one. Rows of a probe
        whose Krylov space became invariant early are padded with weight 0.
    dim : int
        The dimension n of the operator (so that ``dim * sum_i w_i f(theta_i)``
        estimates tr f(A)).
    """

    nodes: Any
    weights: Any
    dim: int


# --------------------------------------------------------------------------- checks
def _check_int(value, name: str, *, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def _check_choice(value, choices, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
    return value


def _check_tol(tol, name: str = "tol"):
    return check_real(tol, name, lo=0, allow_none=True, want="None or a finite real number >= 0")


class _Space(NamedTuple):
    """The vector space of ``like``: namespace, dtype, device, size and tree shapes."""

    xp: Any
    n: int
    dtype: Any
    device: Any
    shapes: Any  # None for flat vectors


def _space(like, name: str = "like") -> _Space:
    if isinstance(like, (tuple, list)):
        if len(like) == 0 or not all(backend.is_array(t) for t in like):
            raise TypeError(f"{name}: expected a 1-D array or a non-empty tuple of arrays, got {like!r}")
        xp = backend.namespace_of(**{name: tuple(like)})
        for i, t in enumerate(like):
            backend.check_float(t, f"{name}[{i}]", xp)
            if t.dtype != like[0].dtype:
                raise TypeError(f"{name}[{i}]: expected dtype {like[0].dtype} like {name}[0], got {t.dtype}")
        shapes = shapes_of(like)
        return _Space(xp, num_params(shapes), like[0].dtype, backend.device_of(like[0]), shapes)
    if not backend.is_array(like):
        raise TypeError(f"{name}: expected a 1-D array or a tuple of arrays, got {type(like).__name__}")
    xp = backend.namespace_of(**{name: like})
    check_ndim(like, 1, name)
    backend.check_float(like, name, xp)
    return _Space(xp, int(like.shape[0]), like.dtype, backend.device_of(like), None)


def _to_user(space: _Space, rows):
    """(m, n) rows -> the user's layout with a leading axis m."""
    return rows if space.shapes is None else unflatten(rows, space.shapes, "vectors")


def _from_user(space: _Space, out, m, name: str = "matvec"):
    """The user's layout with leading axis m (None: no leading axis) -> (m, n) rows or
    an (n,) vector, with shape checks."""
    xp = space.xp
    lead = () if m is None else (m,)
    if space.shapes is None:
        if not backend.is_array(out) or tuple(out.shape) != (*lead, space.n):
            got = tuple(out.shape) if backend.is_array(out) else type(out).__name__
            raise ValueError(f"{name}: expected a result of shape {(*lead, space.n)}, got {got}")
        return out
    if not isinstance(out, (tuple, list)) or len(out) != len(space.shapes):
        got = f"{len(out)} arrays" if isinstance(out, (tuple, list)) else type(out).__name__
        raise ValueError(f"{name}: expected a tuple of {len(space.shapes)} arrays shaped like `like`, got {got}")
    for i, (t, s) in enumerate(zip(out, space.shapes)):
        if not backend.is_array(t) or tuple(t.shape) != (*lead, *s):
            got = tuple(t.shape) if backend.is_array(t) else type(t).__name__
            raise ValueError(f"{name}: expected result[{i}] of shape {(*lead, *s)}, got {got}")
    return xp.concat([xp.reshape(t, (*lead, -1)) for t in out], axis=-1)


def _operator(space: _Space, matvec, batched: bool):
    """A function (m, n) rows -> (m, n) rows of A applied to each row."""
    if not callable(matvec):
        raise TypeError(f"matvec: expected a callable v -> A v, got {type(matvec).__name__}")
    check_bool(batched, "batched")
    xp = space.xp

    def one(row):
        if space.shapes is None:
            return _from_user(space, matvec(row), None)
        return _from_user(space, matvec(unflatten(row, space.shapes, "vector")), None)

    def apply(rows):
        m = rows.shape[0]
        if batched:
            out = _from_user(space, matvec(_to_user(space, rows)), m)
        else:
            out = xp.stack([one(rows[i, :]) for i in range(m)])
        if out.dtype != space.dtype:
            raise TypeError(f"matvec: expected results of dtype {space.dtype}, got {out.dtype}")
        if not bool(xp.all(xp.isfinite(out))):
            raise ValueError("matvec: expected finite results A v for finite unit vectors v, got NaN/Inf")
        return out

    return apply


def _probes(space: _Space, g, m: int, distribution: str):
    """(m, n) random probes: Rademacher signs or standard normal (backend RNG)."""
    xp = space.xp
    if distribution == "normal":
        return backend.normal(g, (m, space.n), xp, dtype=space.dtype, device=space.device)
    r = backend.integers(g, 0, 2, (m, space.n), xp, device=space.device)
    return xp.astype(2 * r - 1, space.dtype)


def _output_vectors(space: _Space, rows):
    """(k, n) orthonormal rows -> (n, k) columns, or a tuple of (k, *shape) arrays."""
    return space.xp.matrix_transpose(rows) if space.shapes is None else _to_user(space, rows)


# --------------------------------------------------------------------- the Lanczos core
def _orthogonalize(xp, w, basis):
    """w minus its projection on the rows of ``basis`` (classical Gram-Schmidt, twice)."""
    if basis is None:
        return w
    for _ in range(2):  # "twice is enough" (Giraud, Langou & Rozloznik 2005)
        w = w - (w @ xp.matrix_transpose(basis)) @ basis
    return w


def _reorthogonalize(xp, w, basis):
    """Full reorthogonalization of the rows of w against ``basis``: one classical
    Gram-Schmidt pass, and a second one when a row lost more than 1 - 1/sqrt(2) of its
    norm in the first (the Daniel-Gragg-Kaufman-Stewart criterion)."""
    before = xp.linalg.vector_norm(w, axis=1)
    w = w - (w @ xp.matrix_transpose(basis)) @ basis
    after = xp.linalg.vector_norm(w, axis=1)
    if bool(xp.any(after < 0.7071 * before)):
        w = w - (w @ xp.matrix_transpose(basis)) @ basis
    return w


def _new_block(space: _Space, w, basis, g, restart: bool, scale: float, max_rows: int):
    """Orthonormal rows spanning w (b, n), already orthogonal to ``basis``; rows that are
    dependent (norm <= 10 sqrt(n) eps scale) are replaced by random unit vectors
    orthogonal to everything (``restart``) or dropped. At most ``max_rows`` rows.

    Returns ``(q, coeffs)`` with ``q`` (r, n) orthonormal and ``coeffs = q w^T`` (r, b),
    or ``(None, None)`` when no row is left.
    """
    xp = space.xp
    cut = 10 * math.sqrt(space.n) * float(xp.finfo(space.dtype).eps) * scale
    rows = []
    for i in range(w.shape[0]):
        if len(rows) >= max_rows:
            break
        new = xp.stack(rows) if rows else None
        u = _orthogonalize(xp, w[i, :], new)
        nrm = float(xp.linalg.vector_norm(u))
        if not nrm > cut:
            if not restart:
                continue
            acc = new if basis is None else (basis if new is None else xp.concat([basis, new]))
            if acc is not None and acc.shape[0] >= space.n:
                break
            u = _orthogonalize(xp, _probes(space, g, 1, "normal")[0, :], acc)
            nrm = float(xp.linalg.vector_norm(u))
        rows.append(u / nrm)
    if not rows:
        return None, None
    q = xp.stack(rows)
    return q, q @ xp.matrix_transpose(w)


def _tridiagonal(xp, diag_blocks, off_blocks):
    """Assemble the symmetric block tridiagonal T from its (b, b) blocks.

    ``diag_blocks[j] = Q_j A Q_j^T``; ``off_blocks[j] = Q_{j+1} A Q_j^T``, the
    sub-diagonal block (j+1, j), of shape (b_{j+1}, b_j). Ragged blocks (after a
    deflation) are padded to b with zero rows/columns removed afterwards.
    """
    sizes = [d.shape[0] for d in diag_blocks]
    m, b = len(sizes), max(sizes)
    dev = backend.device_of(diag_blocks[0])
    dt = diag_blocks[0].dtype

    def pad(a):
        return xp.concat([xp.concat([a, xp.zeros((a.shape[0], b - a.shape[1]), dtype=dt, device=dev)], axis=1),
                          xp.zeros((b - a.shape[0], b), dtype=dt, device=dev)], axis=0)

    zero = xp.zeros((b, b), dtype=dt, device=dev)
    dm = xp.stack([pad(d) for d in diag_blocks])
    low = xp.stack([zero] + [pad(c) for c in off_blocks])  # low[i] = block (i, i-1)
    ar = xp.arange(m, device=dev)
    eye = xp.astype(ar[:, None] == ar[None, :], dt)
    sub = xp.astype(ar[:, None] == ar[None, :] + 1, dt)  # sub[i, j] = 1 iff i = j + 1
    t4 = eye[:, None, :, None] * dm[:, :, None, :] + sub[:, None, :, None] * low[:, :, None, :]
    t = xp.reshape(t4, (m * b, m * b))
    t = t + xp.matrix_transpose(xp.reshape(sub[:, None, :, None] * low[:, :, None, :], (m * b, m * b)))
    keep = [j * b + i for j, s in enumerate(sizes) for i in range(s)]
    if len(keep) < m * b:
        idx = xp.asarray(keep, device=dev)
        t = xp.take(xp.take(t, idx, axis=0), idx, axis=1)
    return 0.5 * (t + xp.matrix_transpose(t))


def _select(xp, theta, k, which):
    """Indices of the k wanted Ritz values, in the output order."""
    if which == "largest":
        order = xp.argsort(-theta)
    elif which == "smallest":
        order = xp.argsort(theta)
    else:
        order = xp.argsort(-xp.abs(theta))
    return order[:k]


def _lanczos_run(space, apply, q0, max_dim, *, g, restart, stop=None):
    """Block Lanczos with full reorthogonalization from the orthonormal rows ``q0``.

    Runs until the basis has ``max_dim`` vectors, the space is exhausted, or
    ``stop(t, last)`` returns True. Returns ``(t, basis, last, num)``: the projected
    matrix T = Q A Q^T, the basis Q (rows), the coupling ``last`` of the last block to
    the rest (``||last s|| = ||(A - theta) Q^T s||`` for a Ritz vector; see
    :func:`_ritz`) and the number of operator applications. The basis lives in one
    preallocated (max_dim, n) array filled block by block (``array_api_extra.at``).
    """
    xp = space.xp
    cap = max(min(max_dim, space.n), q0.shape[0])
    store = xp.zeros((cap, space.n), dtype=space.dtype, device=space.device)
    dim, block = 0, q0
    diag, off, num = [], [], 0
    while True:
        w = apply(block)
        num += block.shape[0]
        scale = float(xp.max(xp.linalg.vector_norm(w, axis=1)))
        a = block @ xp.matrix_transpose(w)
        diag.append(0.5 * (a + xp.matrix_transpose(a)))
        w = w - xp.matrix_transpose(a) @ block  # three-term recurrence first: the large components
        if off:
            w = w - off[-1] @ store[dim - off[-1].shape[1] : dim, :]
        store = xpx.at(store)[dim : dim + block.shape[0], :].set(block)
        dim += block.shape[0]
        basis = store[:dim, :]
        w = _reorthogonalize(xp, w, basis)
        room = min(max_dim, space.n) - dim
        nxt, coeffs = (None, None) if room <= 0 else _new_block(space, w, basis, g, restart, scale, room)
        last = coeffs if coeffs is not None else _residual_coeffs(xp, w)
        t = _tridiagonal(xp, diag, off)
        if nxt is None or (stop is not None and stop(t, last)):
            return t, basis, last, num
        off.append(coeffs)
        block = nxt


def _residual_coeffs(xp, w):
    """(b, b) matrix R with ||R s|| = ||W^T s||, W the unnormalized remainder (b, n)."""
    gram = w @ xp.matrix_transpose(w)
    vals, vecs = xp.linalg.eigh(0.5 * (gram + xp.matrix_transpose(gram)))
    root = xp.sqrt(xp.clip(vals, 0.0, None))
    return xp.matrix_transpose(vecs * root[None, :])


def _ritz(xp, t, last, k, which):
    """Wanted Ritz values, their coefficient vectors in the basis, and residual norms."""
    theta, s = xp.linalg.eigh(t)
    idx = _select(xp, theta, k, which)
    s_sel = xp.take(s, idx, axis=1)
    b = last.shape[1]
    res = xp.linalg.vector_norm(last @ s_sel[s.shape[0] - b :, :], axis=0)
    return xp.take(theta, idx), s_sel, res


def _eig_driver(space, apply, q0, k, which, max_dim, tol, g):
    xp = space.xp
    scale_tol = tol

    def stop(t, last):
        if scale_tol is None or t.shape[0] < k:
            return False
        theta, _, res = _ritz(xp, t, last, k, which)
        top = float(xp.max(xp.abs(theta)))
        return float(xp.max(res)) <= scale_tol * max(top, float(xp.finfo(space.dtype).smallest_normal))

    t, basis, last, num = _lanczos_run(space, apply, q0, max_dim, g=g, restart=True, stop=stop)
    kk = min(k, t.shape[0])
    theta, s_sel, res = _ritz(xp, t, last, kk, which)
    rows = xp.matrix_transpose(s_sel) @ basis
    return Eigenpairs(theta, _output_vectors(space, rows), res, num)


def _eig_args(space, k, num_iters, tol, which, default_iters):
    k = _check_int(k, "k")
    if k > space.n:
        raise ValueError(f"k: expected at most the dimension n = {space.n}, got {k}")
    _check_choice(which, WHICH, "which")
    num_iters = default_iters if num_iters is None else _check_int(num_iters, "num_iters")
    tol = _check_tol(tol)
    if tol is None:
        tol = math.sqrt(float(space.xp.finfo(space.dtype).eps))
    return k, num_iters, tol


def lanczos(matvec, like, k: int = 1, *, num_iters: int | None = None, tol: float | None = None,
            which: str = "largest", seed: int = 0, batched: bool = False) -> Eigenpairs:
    """Extreme eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Builds the Krylov basis q_1, A q_1, ... one vector per step, orthogonalizing every
    new vector against all previous ones (a second pass when the first removed more than
    1 - 1/sqrt(2) of its norm), so the projected tridiagonal matrix
    T = Q A Q^T is exact to rounding and its Ritz pairs are the Rayleigh-Ritz
    approximations from the Krylov space (Golub & Van Loan, Alg. 10.1.1; the top-k
    Hessian eigenpairs of PyHessian, Yao et al. 2020, and of curvlinops). If the Krylov
    space becomes invariant, the process continues from a fresh random vector orthogonal
    to the basis, so ``num_iters = n`` gives the complete, exact spectrum.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` for symmetric A (see the module docstring for the layouts).
    like : array (n,) or tuple of arrays
        Defines the space, namespace, dtype and device.
    k : int
        Number of eigenpairs.
    num_iters : int, optional
        Largest Krylov dimension; default ``min(n, max(10 k, 100))``.
    tol : float, optional
        Stop when every wanted Ritz pair has residual ``||A y - theta y|| <= tol *
        max |theta|``; default ``sqrt(eps)`` of the dtype (eigenvalues then accurate to
        about ``tol**2`` relative for separated eigenvalues). ``0`` runs all iterations.
    which : {"largest", "smallest", "magnitude"}
        Algebraically largest (default), smallest, or largest in absolute value.
    seed : int
        Seed of the starting vector (:func:`arraycurv.backend.normal`).
    batched : bool
        ``matvec`` takes a leading axis of several vectors (unused here, one at a time).

    Returns
    -------
    Eigenpairs
        eigenvalues (k,), eigenvectors ((n, k) columns, or a tuple of (k, *shape)),
        residuals (k,), num_matvecs.
    """
    space = _space(like)
    k, num_iters, tol = _eig_args(space, k, num_iters, tol, which, min(space.n, max(10 * k, 100)))
    apply = _operator(space, matvec, batched)
    g = backend.rng(seed)
    q0 = _probes(space, g, 1, "normal")
    q0 = q0 / space.xp.linalg.vector_norm(q0)
    return _eig_driver(space, apply, q0, k, which, max(num_iters, k), tol, g)


def block_lanczos(matvec, like, k: int = 1, *, block_size: int | None = None, num_iters: int | None = None,
                  tol: float | None = None, which: str = "largest", seed: int = 0,
                  batched: bool = False) -> Eigenpairs:
    """Extreme eigenpairs by block Lanczos with full reorthogonalization.

    Each step applies the operator to a block of ``block_size`` orthonormal vectors
    (Golub & Underwood 1977; Golub & Van Loan Sec. 10.3.6): T is block tridiagonal with
    blocks ``Q_j A Q_j^T`` and ``Q_{j+1} A Q_j^T``. A block finds a cluster of up to b
    nearly equal eigenvalues (such as the C outliers of a classifier's Hessian, Papyan
    2020) as fast as a single one, and with ``batched=True`` the b products of a step go
    through the operator together (the models' tangents with a leading axis).

    Parameters
    ----------
    block_size : int, optional
        Vectors per step, at most the dimension n; default ``k`` (capped at n).
    num_iters : int, optional
        Largest Krylov dimension (vectors, not blocks); default
        ``min(n, max(10 k, 100))`` rounded up to whole blocks.

    Other parameters and the result are as in :func:`lanczos`.
    """
    space = _space(like)
    b = k if block_size is None else _check_int(block_size, "block_size")
    if block_size is not None and b > space.n:
        raise ValueError(f"block_size: expected at most the dimension n = {space.n} of the operator, got {b}")
    b = min(b, space.n)
    k, num_iters, tol = _eig_args(space, k, num_iters, tol, which, min(space.n, max(10 * k, 100)))
    apply = _operator(space, matvec, batched)
    g = backend.rng(seed)
    q0, _ = _new_block(space, _probes(space, g, b, "normal"), None, g, True, 1.0, b)
    max_dim = b * math.ceil(max(num_iters, k) / b)
    return _eig_driver(space, apply, q0, k, which, max_dim, tol, g)


# --------------------------------------------------------------------- trace estimation
def _quad_forms(space, apply, v):
    """v_i^T A v_i for the rows of v (m, n), shape (m,)."""
    return space.xp.sum(v * apply(v), axis=1)


def _mean_stderr(xp, samples):
    m = samples.shape[0]
    mean = xp.mean(samples)
    if m < 2:
        return mean, xp.asarray(float("inf"), dtype=samples.dtype, device=backend.device_of(samples))
    return mean, xp.std(samples, correction=1) / math.sqrt(m)


def hutchinson_trace(matvec, like, num_samples: int, *, seed: int = 0, distribution: str = "rademacher",
                     batched: bool = False) -> TraceEstimate:
    """Hutchinson's (1989) estimate of tr A: the mean of v^T A v over random probes.

    With E[v v^T] = I the estimator is unbiased; for Rademacher probes its variance per
    sample is ``2 (||A||_F^2 - sum_i A_ii^2)`` (Gaussian: ``2 ||A||_F^2``), so the error
    shrinks as ``1 / sqrt(num_samples)``. ``stderr`` is the sample standard deviation over
    ``sqrt(num_samples)`` (infinite for one sample).

    Parameters
    ----------
    matvec, like, batched
        The operator and its space (module docstring).
    num_samples : int
        Number of probes (= operator applications).
    seed : int
        Seed of the probes.
    distribution : {"rademacher", "normal"}
        Probe distribution.
    """
    space = _space(like)
    num_samples = _check_int(num_samples, "num_samples")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    apply = _operator(space, matvec, batched)
    v = _probes(space, backend.rng(seed), num_samples, distribution)
    tr, se = _mean_stderr(space.xp, _quad_forms(space, apply, v))
    return TraceEstimate(tr, se, num_samples)


def hutchpp_trace(matvec, like, num_matvecs: int, *, seed: int = 0, distribution: str = "rademacher",
                  batched: bool = False) -> TraceEstimate:
    """Hutch++ estimate of tr A (Meyer, Musco, Musco & Woodruff 2021, Algorithm 1).

    With s = ``num_matvecs // 3`` sketch vectors S and g = ``num_matvecs - 2 s`` probes G:
    Q = orth(A S), then ``tr A ~ tr(Q^T A Q) + (1/g) sum_i h_i^T A h_i`` with
    h_i = (I - Q Q^T) g_i. The first term is exact on the top of the spectrum that A S
    captures, the second is Hutchinson on the rest, so the variance falls like 1/m^2
    instead of 1/m for matrices with decaying spectra, and the estimate is exact when
    rank A <= s. ``stderr`` covers the Hutchinson part.

    Parameters
    ----------
    num_matvecs : int
        Total operator applications, at least 3.

    Other parameters as in :func:`hutchinson_trace`.
    """
    space = _space(like)
    num_matvecs = _check_int(num_matvecs, "num_matvecs", low=3)
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    apply = _operator(space, matvec, batched)
    xp = space.xp
    g = backend.rng(seed)
    s = min(num_matvecs // 3, space.n)
    m = num_matvecs - 2 * s
    y = apply(_probes(space, g, s, distribution))
    q, _ = xp.linalg.qr(xp.matrix_transpose(y))  # (n, s)
    q = xp.matrix_transpose(q)
    top = xp.sum(_quad_forms(space, apply, q))
    h = _orthogonalize(xp, _probes(space, g, m, distribution), q)
    rest, se = _mean_stderr(xp, _quad_forms(space, apply, h))
    return TraceEstimate(top + rest, se, 2 * s + m)


# ------------------------------------------------------- stochastic Lanczos quadrature
def slq(matvec, like, num_iters: int = 30, num_probes: int = 10, *, seed: int = 0,
        distribution: str = "rademacher", probes=None, batched: bool = False) -> SpectralQuadrature:
    """Stochastic Lanczos quadrature: Gauss rules for the spectral measure of A.

    For a unit probe q, ``m = num_iters`` Lanczos steps give T_m = S diag(theta) S^T and
    the m-point Gauss rule ``q^T f(A) q ~ sum_i w_i f(theta_i)``, w_i = S_{0i}^2, exact
    for polynomials f of degree <= 2 m - 1 (Golub & Meurant 1994). Averaging over random
    probes estimates the spectral density ``(1/n) sum_j delta(t - lambda_j)`` (Ubaru, Chen
    & Saad 2017; Ghorbani et al. 2019; Papyan 2020 Alg. 2). Full reorthogonalization
    keeps the rule exact in floating point; a probe whose Krylov space becomes invariant
    stops early (its rule is then exact for every f).

    Parameters
    ----------
    matvec, like, batched
        The operator and its space.
    num_iters : int
        Lanczos steps per probe (nodes per rule).
    num_probes : int
        Number of random probes (ignored if ``probes`` is given).
    seed, distribution
        Probe generation (:mod:`arraycurv.backend`); probes are normalized to unit norm.
    probes : array (num_probes, n), optional
        Explicit probes (rows; a flat layout also for parameter spaces).

    Returns
    -------
    SpectralQuadrature
        ``nodes``, ``weights`` of shape (num_probes, num_iters) and ``dim = n``.
    """
    space = _space(like)
    num_iters = _check_int(num_iters, "num_iters")
    _check_choice(distribution, DISTRIBUTIONS, "distribution")
    xp = space.xp
    if probes is None:
        probes = _probes(space, backend.rng(seed), _check_int(num_probes, "num_probes"), distribution)
    else:
        backend.namespace_of(like=like, probes=probes)
        check_shape(probes, (None, space.n), "probes")
        check_finite(probes, "probes", xp)
        if probes.dtype != space.dtype:
            raise TypeError(f"probes: expected dtype {space.dtype}, got {probes.dtype}")
    apply = _operator(space, matvec, batched)
    m = min(num_iters, space.n)
    nodes, weights = [], []
    for i in range(probes.shape[0]):
        nrm = float(xp.linalg.vector_norm(probes[i, :]))
        if nrm == 0.0:
            raise ValueError(f"probes: expected non-zero rows, got a zero row {i}")
        t, _, _, _ = _lanczos_run(space, apply, probes[i : i + 1, :] / nrm, m, g=None, restart=False)
        theta, s = xp.linalg.eigh(t)
        w = s[0, :] ** 2
        pad = m - theta.shape[0]
        if pad:
            zeros = xp.zeros((pad,), dtype=space.dtype, device=space.device)
            theta, w = xp.concat([theta, zeros + theta[-1]]), xp.concat([w, zeros])
        nodes.append(theta)
        weights.append(w / xp.sum(w))
    return SpectralQuadrature(xp.stack(nodes), xp.stack(weights), space.n)


def _check_quad(quad):
    if not isinstance(quad, SpectralQuadrature):
        raise TypeError(f"quad: expected a SpectralQuadrature from slq, got {type(quad).__name__}")
    pairs = [("quad.nodes", quad.nodes), ("quad.weights", quad.weights)]
    for name, a in pairs:
        if not backend.is_array(a) or a.ndim != 2:
            got = tuple(a.shape) if backend.is_array(a) else type(a).__name__
            raise ValueError(f"{name}: expected an array (num_probes, num_iters), got {got}")
    if tuple(quad.weights.shape) != tuple(quad.nodes.shape):
        raise ValueError(f"quad.weights: expected shape {tuple(quad.nodes.shape)} like quad.nodes, "
                         f"got {tuple(quad.weights.shape)}")
    xp = backend.namespace_of_pairs(pairs)
    for name, a in pairs:
        backend.check_float(a, name, xp)
    backend.check_all_finite(xp, pairs)
    return xp


def slq_trace(quad: SpectralQuadrature, fn):
    """Estimate tr f(A) = n E_q[q^T f(A) q] from an SLQ rule: ``n mean_l sum_i w_li f(theta_li)``.

    ``fn`` maps an array of nodes to an array of the same shape (e.g. ``lambda t: t**2``
    for ``||A||_F^2``, ``xp.log`` for log det of a positive definite A). Moments of the
    spectral density are ``slq_trace(quad, lambda t: t**k) / quad.dim``.
    """
    xp = _check_quad(quad)
    if not callable(fn):
        raise TypeError(f"fn: expected a callable applied to the nodes, got {type(fn).__name__}")
    vals = fn(quad.nodes)
    if not backend.is_array(vals) or tuple(vals.shape) != tuple(quad.nodes.shape):
        got = tuple(vals.shape) if backend.is_array(vals) else type(vals).__name__
        raise ValueError(f"fn: expected an array of the nodes' shape {tuple(quad.nodes.shape)}, got {got}")
    if not bool(xp.all(xp.isfinite(vals))):
        raise ValueError("fn: expected finite values at the nodes, got NaN/Inf (is f defined on the spectrum?)")
    return quad.dim * xp.mean(xp.sum(quad.weights * vals, axis=1))


def spectral_density(quad: SpectralQuadrature, grid=None, *, num_points: int = 512, sigma: float | None = None,
                     kappa: float = 3.0, margin: float = 0.05):
    """Smoothed spectral density from an SLQ rule (Ghorbani et al. 2019 eq 3; Papyan 2020 D.2).

    ``phi(t) = mean_l sum_i w_li N(t; theta_li, sigma^2)``, which integrates to one. The
    default grid spans the nodes with a relative ``margin`` on each side; the default
    width follows Papyan: with the grid mapped to [-1, 1] by its half-width d,
    ``sigma = d * 2 / ((m - 1) sqrt(8 log kappa))`` for m nodes per rule.

    Returns
    -------
    grid, density : arrays (num_points,)
    """
    xp = _check_quad(quad)
    margin = check_real(margin, "margin", lo=0)
    dt, dev = quad.nodes.dtype, backend.device_of(quad.nodes)
    lo, hi = float(xp.min(quad.nodes)), float(xp.max(quad.nodes))
    width = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    if grid is None:
        _check_int(num_points, "num_points", low=2)
        lo, hi = lo - margin * width, hi + margin * width
        grid = lo + (hi - lo) * xp.astype(xp.arange(num_points, device=dev), dt) / (num_points - 1)
    else:
        backend.namespace_of_pairs([("quad.nodes", quad.nodes), ("grid", grid)])
        check_ndim(grid, 1, "grid")
        if grid.dtype != dt:
            raise TypeError(f"grid: expected dtype {dt} like quad.nodes, got {grid.dtype}")
        check_finite(grid, "grid", xp)
    if sigma is None:
        kappa = check_real(kappa, "kappa", lo=1, lo_open=True, want="a finite real number > 1")
        m = max(quad.nodes.shape[1], 2)
        sigma = 0.5 * width * (1 + 2 * margin) * 2 / ((m - 1) * math.sqrt(8 * math.log(kappa)))
    else:
        sigma = check_real(sigma, "sigma", lo=0, lo_open=True, want="None or a finite real number > 0")
    z = (grid[None, None, :] - quad.nodes[:, :, None]) / sigma
    bumps = xp.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
    return grid, xp.mean(xp.sum(quad.weights[:, :, None] * bumps, axis=1), axis=0)
