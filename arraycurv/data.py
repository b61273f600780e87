"""Teacher-student data sets (spec 4.4).

* :func:`huh_teacher_student`: Huh (2020) Sec. 6 (after Lampinen & Ganguli 2018): a
  random low-rank teacher map, inputs whitened exactly on the training set, P = N
  training samples by default, Gaussian output noise.
* :func:`bernacchia_teacher_student`: Bernacchia et al. (2018) Sec. 5, Fig. 1A-C: a random
  deep linear teacher network, correlated Gaussian inputs with covariance eigenvalues
  exp(-5 i / n0), Gaussian output noise of covariance ``noise_var * I``.

Every random number comes from one seeded generator (:func:`arraycurv.backend.rng`),
drawn in a fixed order; the data are computed on the host in float64 and then converted
to the requested namespace, dtype and device, so the same seed gives the same data on
every namespace (bit for bit at the same dtype). Samples are rows: ``x`` has shape
(num_samples, n_in), ``y`` has shape (num_samples, n_out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import backend
from .dynamics.theory import _check_widths
from .validation import check_int, check_ndim, check_real, check_shape

__all__ = [
    "BERNACCHIA_FIG1_WIDTHS",
    "ClassificationData",
    "TeacherStudentData",
    "aligned_params",
    "bernacchia_teacher_student",
    "huh_teacher_student",
    "input_covariance_spectrum",
    "load_digits",
]


#: Layer widths of the three deep linear networks of Bernacchia et al. (2018) Fig. 1A-C:
#: A: 16 layers of width 20; B: 16 layers 20, 30, ..., 100, ..., 30, 20; C: 12-layer
#: bottleneck 200, 80, 34, 20, 10, 5, 2, 5, 10, 20, 34, 80, 200.
BERNACCHIA_FIG1_WIDTHS = {
    "A": (20,) * 17,
    "B": tuple(range(20, 101, 10)) + tuple(range(90, 19, -10)),
    "C": (200, 80, 34, 20, 10, 5, 2, 5, 10, 20, 34, 80, 200),
}


#: Default teacher singular values of :func:`huh_teacher_student`: s_k = 4 * 2^-k.
_HUH_TOP = 4.0


@dataclass(frozen=True)
class TeacherStudentData:
    """A teacher-student regression data set (samples are rows).

    Attributes
    ----------
    x_train, y_train : arrays (P, n_in), (P, n_out)
    x_test, y_test : arrays (P_test, n_in), (P_test, n_out)
    teacher_map : array (n_out, n_in)
        The noiseless map: y = x teacher_map^T + noise.
    info : dict
        Generator details (see the constructors).
    """

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    teacher_map: Any
    info: dict


def _target(xp, dtype, device):
    xp = xp if xp is not None else backend.namespace_by_name("numpy")
    return xp, backend.float_dtype(xp, dtype), device


def _convert(a, xp, dt, device):
    """Host float64 array -> namespace xp, dtype dt, device."""
    return backend.from_numpy(backend.to_numpy(a), xp, dtype=dt, device=device)


def input_covariance_spectrum(n0: int, xp=None, dtype=None, device=None):
    """Eigenvalues exp(-5 i / n0), i = 0, ..., n0 - 1, of Bernacchia et al. (2018) Sec. 5 (Fig. 1A-C).

    The largest is 1 (i = 0), the smallest exp(-5 (n0 - 1) / n0) > e^-5.

    Returns
    -------
    array (n0,)
        In namespace ``xp`` (NumPy by default), ``dtype`` (float64 by default) and ``device``.
    """
    n0 = check_int(n0, "n0", lo=1)
    xp, dt, device = _target(xp, dtype, device)
    return backend.from_numpy([math.exp(-5.0 * i / n0) for i in range(n0)], xp, dtype=dt, device=device)


def huh_teacher_student(
    n: int = 16,
    rank: int = 3,
    num_train: int | None = None,
    num_test: int = 1000,
    noise_std: float = 0.1,
    teacher_singular_values: Sequence[float] | None = None,
    seed=0,
    xp=None,
    dtype=None,
    device=None,
) -> TeacherStudentData:
    """Teacher-student data of Huh (2020) Sec. 6 (Lampinen & Ganguli 2018).

    The teacher map is w_teacher = U diag(s) V^T (n x n, rank ``rank``) with U, V random
    orthonormal columns. Training inputs are whitened exactly: X = sqrt(P) Q with Q a
    random (P, n) matrix with orthonormal columns, so X^T X / P = I (for P = N, Q is a
    random orthogonal matrix). Test inputs are standard Gaussian (whitened in
    expectation). Targets are y = w_teacher x + z with z ~ N(0, noise_std^2 I), for both
    sets.

    Parameters
    ----------
    n : int
        Input and output dimension N (default 16, as in the paper).
    rank : int
        Teacher rank, 1 <= rank <= n (default 3).
    num_train : int, optional
        P >= n (exact whitening needs P >= N); default P = N, the paper's setting, the most
        susceptible to overfitting.
    num_test : int
        Number of test samples.
    noise_std : float
        Standard deviation of the output noise (>= 0; default 0.1).
    teacher_singular_values : sequence of float, optional
        s, length ``rank``, >= 0. Default s_k = 4 * 2^-k (4, 2, 1 for rank 3): well-separated
        signal modes, so that SGD learns them at visibly different times (time scale
        proportional to s^-p), above the noise modes of the training-set map whose singular
        values spread between 0 and about 2 noise_std sqrt(N / P).
    seed : int or numpy Generator
        Draw order: U, V, Q, train noise, test inputs, test noise.
    xp, dtype, device
        Target namespace (NumPy by default), dtype (float64 by default) and device.

    Returns
    -------
    TeacherStudentData
        ``info`` holds ``u`` (n, rank), ``v`` (n, rank), ``singular_values`` (rank,),
        ``train_target_map`` = Y^T X / P, the desired map w_bar_* = E[y x^T] Sigma_x^-1 of
        the training set (Huh eq 1; its singular values are Fig. 4A), and the scalars
        ``noise_std``, ``rank``, ``seed``.
    """
    n = check_int(n, "n", lo=1)
    rank = check_int(rank, "rank", lo=1)
    if rank > n:
        raise ValueError(f"rank: expected an integer <= n = {n}, got {rank}")
    num_train = n if num_train is None else num_train
    num_train = check_int(num_train, "num_train", lo=1)
    if num_train < n:
        raise ValueError(
            f"num_train: expected P >= n = {n} (exact whitening X^T X / P = I needs P >= n), got {num_train}"
        )
    num_test = check_int(num_test, "num_test", lo=0)
    noise_std = check_real(noise_std, "noise_std", lo=0, want="a finite number >= 0")
    if teacher_singular_values is None:
        s = [_HUH_TOP * 2.0**-k for k in range(rank)]
    else:
        try:
            s = [float(v) for v in teacher_singular_values]
        except (TypeError, ValueError):
            raise ValueError(
                f"teacher_singular_values: expected {rank} numbers >= 0, got {teacher_singular_values!r}"
            ) from None
        if len(s) != rank or not all(math.isfinite(v) and v >= 0 for v in s):
            raise ValueError(
                f"teacher_singular_values: expected {rank} finite numbers >= 0, got {teacher_singular_values!r}"
            )
    xp_out, dt, device = _target(xp, dtype, device)
    g = backend.rng(seed)
    h = backend.namespace_by_name("numpy")  # host computation in float64
    u = backend.orthogonal(g, (n, rank), h)
    v = backend.orthogonal(g, (n, rank), h)
    q = backend.orthogonal(g, (num_train, n), h)
    noise_train = backend.normal(g, (num_train, n), h, scale=noise_std)
    x_test = backend.normal(g, (num_test, n), h)
    noise_test = backend.normal(g, (num_test, n), h, scale=noise_std)
    s_arr = h.asarray(s, dtype=h.float64)
    teacher = h.matmul(u * s_arr, h.matrix_transpose(v))
    x_train = math.sqrt(num_train) * q
    y_train = h.matmul(x_train, h.matrix_transpose(teacher)) + noise_train
    y_test = h.matmul(x_test, h.matrix_transpose(teacher)) + noise_test
    train_target = h.matmul(h.matrix_transpose(y_train), x_train) / num_train

    def c(a):
        return _convert(a, xp_out, dt, device)

    info = {
        "u": c(u),
        "v": c(v),
        "singular_values": c(s_arr),
        "train_target_map": c(train_target),
        "noise_std": noise_std,
        "rank": rank,
        "seed": seed,
    }
    return TeacherStudentData(c(x_train), c(y_train), c(x_test), c(y_test), c(teacher), info)


def bernacchia_teacher_student(
    widths: Sequence[int],
    num_train: int = 10_000,
    num_test: int = 1_000,
    noise_var: float = 1e-6,
    seed=0,
    xp=None,
    dtype=None,
    device=None,
) -> TeacherStudentData:
    """Teacher-student data of Bernacchia et al. (2018) Sec. 5, Fig. 1A-C.

    A random teacher deep linear network with layer widths ``widths`` = (n_0, ..., n_L)
    and weights W_l ~ N(0, 1 / n_{l-1}) entrywise (Gaussian with 1/sqrt(fan_in) scale)
    gives the map w_bar = W_L ... W_1. Inputs x ~ N(0, Sigma) with
    Sigma = Q diag(lambda) Q^T, Q a random orthogonal matrix and
    lambda_i = exp(-5 i / n0), i = 0, ..., n0 - 1 (:func:`input_covariance_spectrum`).
    Outputs y = w_bar x + z with z ~ N(0, noise_var I) (the paper's Sigma_tilde = 1e-6 I).
    See :data:`BERNACCHIA_FIG1_WIDTHS` for the paper's three architectures.

    Parameters
    ----------
    widths : sequence of int
        (n_0, ..., n_L), at least two positive ints.
    num_train, num_test : int
        Sample counts (paper: 10^4 and 10^3).
    noise_var : float
        Output noise variance (>= 0).
    seed : int or numpy Generator
        Draw order: W_1..W_L, Q, train inputs, train noise, test inputs, test noise.
    xp, dtype, device
        Target namespace (NumPy by default), dtype (float64 by default) and device.

    Returns
    -------
    TeacherStudentData
        ``info`` holds ``teacher_params`` (W_1, ..., W_L), ``input_covariance`` Sigma,
        ``input_eigenvalues`` lambda, ``input_eigenvectors`` Q, and the scalars
        ``noise_var``, ``widths``, ``seed``.
    """
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 2:
        raise ValueError(f"widths: expected a sequence (n_0, ..., n_L) of at least 2 positive ints, got {widths!r}")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"widths: expected positive ints, got {widths!r}")
    widths = tuple(widths)
    num_train = check_int(num_train, "num_train", lo=1)
    num_test = check_int(num_test, "num_test", lo=0)
    noise_var = check_real(noise_var, "noise_var", lo=0, want="a finite number >= 0")
    xp_out, dt, device = _target(xp, dtype, device)
    g = backend.rng(seed)
    h = backend.namespace_by_name("numpy")
    n0, n_out = widths[0], widths[-1]
    weights = tuple(
        backend.normal(g, (n_out_l, n_in_l), h, scale=1.0 / math.sqrt(n_in_l))
        for n_in_l, n_out_l in zip(widths[:-1], widths[1:])
    )
    q = backend.orthogonal(g, (n0, n0), h)
    lam = input_covariance_spectrum(n0, h)
    sigma = h.matmul(q * lam, h.matrix_transpose(q))
    mix = h.matrix_transpose(q * h.sqrt(lam))  # x = z diag(sqrt(lam)) Q^T has covariance Sigma
    teacher = weights[0]
    for w in weights[1:]:
        teacher = h.matmul(w, teacher)
    noise_std = math.sqrt(noise_var)

    def draw(num):
        x = h.matmul(backend.normal(g, (num, n0), h), mix)
        z = backend.normal(g, (num, n_out), h, scale=noise_std)
        return x, h.matmul(x, h.matrix_transpose(teacher)) + z

    x_train, y_train = draw(num_train)
    x_test, y_test = draw(num_test)

    def c(a):
        return _convert(a, xp_out, dt, device)

    info = {
        "teacher_params": tuple(c(w) for w in weights),
        "input_covariance": c(sigma),
        "input_eigenvalues": c(lam),
        "input_eigenvectors": c(q),
        "noise_var": noise_var,
        "widths": widths,
        "seed": seed,
    }
    return TeacherStudentData(c(x_train), c(y_train), c(x_test), c(y_test), c(teacher), info)


# ------------------------------------------------------------ package-shipped data
# (added by the experiments engineer for Huh S.I.3 on digits; see docs/experiments.md)
@dataclass(frozen=True)
class ClassificationData:
    """A classification data set (samples are rows, integer labels).

    Attributes
    ----------
    x_train, x_test : arrays (P, n_in), (P_test, n_in)
    y_train, y_test : int64 arrays (P,), (P_test,) of class labels in [0, num_classes)
    num_classes : int
    info : dict
    """

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    num_classes: int
    info: dict


def load_digits(*, test_fraction: float = 0.25, seed=0, xp=None, dtype=None, device=None) -> ClassificationData:
    """scikit-learn's bundled handwritten digits (1797 images of 8 x 8 pixels, 10 classes),
    split into train and test sets; no download. Used in place of MNIST for Huh (2020) S.I.3.

    Pixels (integers 0..16) are scaled to [0, 1] and flattened to 64 features. The split
    is a seeded random permutation (:func:`arraycurv.backend.rng`): the first
    ``round(test_fraction * 1797)`` permuted samples are the test set.

    Parameters
    ----------
    test_fraction : float
        Fraction of samples held out, in (0, 1).
    seed : int or numpy Generator
        Seed of the split.
    xp, dtype, device
        Target namespace (NumPy by default), float dtype of the inputs (float64 by
        default) and device. Labels are int64.

    Returns
    -------
    ClassificationData
        ``info`` holds ``source``, ``num_samples``, ``image_shape`` and ``test_fraction``.

    Raises
    ------
    ImportError
        If scikit-learn is not installed (``pip install 'arraycurv[data]'``).
    """
    tf = check_real(test_fraction, "test_fraction", lo=0, want="a finite number >= 0")
    if not 0.0 < tf < 1.0:
        raise ValueError(f"test_fraction: expected a number in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as exc:
        raise ImportError(
            "load_digits: expected scikit-learn to be installed (pip install 'arraycurv[data]' or "
            "pip install scikit-learn), got ImportError: " + str(exc)
        ) from exc
    xp_out, dt, device = _target(xp, dtype, device)
    bunch = _sk_load_digits()
    h = backend.namespace_by_name("numpy")
    images = h.asarray(bunch.data, dtype=h.float64) / 16.0
    labels = h.asarray(bunch.target, dtype=h.int64)
    n = images.shape[0]
    perm = backend.rng(seed).permutation(n)
    n_test = int(round(tf * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction: expected a fraction leaving both sets non-empty, got {test_fraction!r}")
    test, train = perm[:n_test], perm[n_test:]

    def fx(a):
        return backend.from_numpy(a, xp_out, dtype=dt, device=device)

    def fy(a):
        return xp_out.asarray(a, device=device) if device is not None else xp_out.asarray(a)

    info = {"source": "sklearn.datasets.load_digits", "num_samples": n, "image_shape": (8, 8),
            "test_fraction": tf, "seed": seed}
    return ClassificationData(fx(images[train]), fy(labels[train]), fx(images[test]), fy(labels[test]), 10, info)


# ------------------------------------------------------------ singular modes of networks
def _check_orthonormal_columns(xp, m, name):
    r = m.shape[1]
    if r == 0:
        return
    gram = xp.matmul(xp.matrix_transpose(m), m)
    eye = xp.eye(r, dtype=m.dtype, device=backend.device_of(m))
    tol = max(1e-6, 1000.0 * float(xp.finfo(m.dtype).eps))
    err = float(xp.max(xp.abs(gram - eye)))
    if not err <= tol:
        raise ValueError(f"{name}: expected orthonormal columns (max |M^T M - I| <= {tol:g}), got {err:.3g}")


def aligned_params(sigmas, u_out, v_in, widths: Sequence[int], seed=None, xp=None, dtype=None):
    """Weights whose singular modes are aligned (Huh 2020 footnote 1; Saxe et al. 2013).

    W_i = U_i diag(sigmas[i-1, :]) V_i^T with V_1 = ``v_in`` (the teacher's right singular
    vectors), U_L = ``u_out`` (its left singular vectors) and V_{i+1} = U_i, so the map is
    W_L ... W_1 = u_out diag(prod_i sigmas[i, :]) v_in^T and mode k is the chain network
    with strengths sigmas[:, k]. The intermediate bases U_1..U_{L-1} (orthonormal columns,
    shape (n_i, r)) are random from ``seed`` (one draw per layer, in order, with
    :func:`arraycurv.backend.orthogonal`), or the first r columns of the identity when
    ``seed`` is None.

    Parameters
    ----------
    sigmas : array or nested list (L, r)
        Per-layer strengths of r modes.
    u_out : array (n_L, r), v_in : array (n_0, r)
        Orthonormal columns.
    widths : sequence of int
        (n_0, ..., n_L); r <= min(widths).
    seed : int, numpy Generator or None
    xp, dtype
        Namespace and dtype when none of sigmas / u_out / v_in is an array (defaults:
        NumPy, float64); otherwise those of the arrays (``dtype`` converts).

    Returns
    -------
    tuple of arrays
        (W_1, ..., W_L), W_i of shape (n_i, n_{i-1}).
    """
    widths = _check_widths(widths)
    arrays = {k: v for k, v in (("sigmas", sigmas), ("u_out", u_out), ("v_in", v_in)) if backend.is_array(v)}
    if arrays:
        xp = backend.namespace_of(**arrays)
        first = next(iter(arrays.values()))
        dev = backend.device_of(first)
        dt = backend.float_dtype(xp, dtype) if dtype is not None else first.dtype
    else:
        xp = xp if xp is not None else backend.namespace_by_name("numpy")
        dev = None
        dt = backend.float_dtype(xp, dtype)

    def as_array(v, name):
        if backend.is_array(v):
            backend.check_float(v, name, xp)
            return v if v.dtype == dt else xp.astype(v, dt)
        return backend.from_numpy(v, xp, dtype=dt, device=dev)

    sigmas = as_array(sigmas, "sigmas")
    u_out = as_array(u_out, "u_out")
    v_in = as_array(v_in, "v_in")
    if dev is None:
        dev = backend.device_of(sigmas)
    L = len(widths) - 1
    check_ndim(sigmas, 2, "sigmas")
    check_shape(sigmas, (L, None), "sigmas")
    r = sigmas.shape[1]
    if r > min(widths):
        raise ValueError(f"sigmas: expected at most min(widths) = {min(widths)} modes (columns), got {r}")
    check_shape(u_out, (widths[-1], r), "u_out")
    check_shape(v_in, (widths[0], r), "v_in")
    _check_orthonormal_columns(xp, u_out, "u_out")
    _check_orthonormal_columns(xp, v_in, "v_in")
    gen = backend.rng(seed) if seed is not None else None
    bases = [v_in]
    for i in range(1, L):
        if gen is None:
            bases.append(xp.eye(widths[i], r, dtype=dt, device=dev))
        else:
            bases.append(backend.orthogonal(gen, (widths[i], r), xp, dtype=dt, device=dev))
    bases.append(u_out)
    return tuple(
        xp.matmul(bases[i + 1] * sigmas[i, :], xp.matrix_transpose(bases[i])) for i in range(L)
    )
