"""An exactly representable ill-conditioned stacked Jacobian with a known SVD (for the
accuracy of the q-NGD forms, ``tests/directions/test_fractional_svd.py`` and
``benchmarks/bench_qngd_accuracy.py``).

A one-layer deep linear network f(x) = W x with a single output, W = 0, MSE, and a batch
of B = n = 4^j samples has the stacked Jacobian A = X / sqrt(B) (rows x_b^T / sqrt(B)) and
s = (W x - y) / sqrt(B) = -y / sqrt(B), so G = A^T A, g = A^T s. We choose

    A = U diag(sigma) V^T,   U = H P_1 D_1 / sqrt(n),   V = H P_2 D_2 / sqrt(n),

with H the Sylvester-Hadamard matrix, P_i permutations, D_i sign matrices (so U and V are
exactly orthogonal with entries +-2^-j), sigma_i = 2^-e_i with integer e_i spanning
[0, log2(cond)] (at most 52 bits), and s = U c with c integer. Every entry of X, y and the
closed-form answer's ingredients is then exactly representable in float64: the data carry
no rounding, and

    d = -(G + damping I)^{+1/q} g = -V [ sigma (sigma^2 + damping)^{-1/q} * c ]

is evaluated in float64 to a few ulps of ||d|| (an orthogonal matrix times a vector).

``stable_limit`` is the error a backward-stable algorithm makes: the first-order change of
the exact d when A and s get relative perturbations of size eps (random directions, the
largest of ``samples``), from the perturbation of the SVD (Ẽ = U^T E V):

    d sigma_i = Ẽ_ii,  dU = U Om_U,  dV = V Om_V,
    (Om_U)_ij = (sigma_j Ẽ_ij + sigma_i Ẽ_ji) / (sigma_j^2 - sigma_i^2),
    (Om_V)_ij = (sigma_i Ẽ_ij + sigma_j Ẽ_ji) / (sigma_j^2 - sigma_i^2),
    dd = -V [ Om_V (h c) + h'(sigma) d sigma c - h Om_U c + h U^T ds ].

It grows with cond(A) (an inherent sensitivity of pseudo-inverse powers, also for q = 2,
where d = -V U^T s is the polar factor), but only as cond, not cond^2.
"""

from __future__ import annotations

import math

import numpy as np

import arraycurv as ac
from arraycurv import backend


def hadamard(n: int) -> np.ndarray:
    """Sylvester-Hadamard matrix of order n (a power of 2), entries +-1."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def exact_svd_case(n: int, cond: float, seed: int):
    """``(u, sig, v, c)`` in float64: exactly orthogonal u, v, sig = 2^-e (e integers from
    0 to round(log2 cond), distinct when possible), integer c (nonzero)."""
    assert n in (4, 16, 64), "n = 4^j makes sqrt(n) and sqrt(B) powers of 2"
    rng = np.random.default_rng(seed)
    h = hadamard(n) / math.sqrt(n)
    u = h[:, rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
    v = h[:, rng.permutation(n)] * rng.choice([-1.0, 1.0], n)
    top = int(round(math.log2(cond)))
    assert top <= 48, "exponents must fit the float64 mantissa with room for the sums"
    e = np.round(np.linspace(0, top, n)).astype(int)
    sig = np.ldexp(1.0, -e)
    c = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], n)
    return u, sig, v, c


def model_case(xp, u, sig, v, c, dtype="float64"):
    """DeepLinear((n, 1)) with W = 0 and a batch of B = n samples whose stacked Jacobian is
    exactly ``A = u diag(sig) v^T`` and ``s = u c`` (so y = -sqrt(B) u c)."""
    n = u.shape[0]
    root = math.sqrt(n)
    a = (u * sig) @ v.T
    x = root * a
    y = -root * (u @ c)[:, None]
    model = ac.DeepLinear((n, 1))
    params = (backend.from_numpy(np.zeros((1, n)), xp, dtype=dtype),)
    return model, params, (backend.from_numpy(x, xp, dtype=dtype), backend.from_numpy(y, xp, dtype=dtype))


def _h(sig, q, damping):
    return sig * (sig * sig + damping) ** (-1.0 / q)


def exact_direction(u, sig, v, c, q, damping=0.0):
    """Closed form -V [h(sigma) c], flat (P,) float64."""
    return -(v @ (_h(sig, q, damping) * c))


def _divided_difference(f, df, w):
    """``(f(w_j) - f(w_i)) / (w_j - w_i)``, ``df(w_i)`` where the two (nearly) coincide."""
    wi, wj = w[:, None], w[None, :]
    tie = np.abs(wj - wi) <= 1e-8 * np.maximum(np.abs(wi), np.abs(wj))
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = (f(wj) - f(wi)) / (wj - wi)
    return np.where(tie, df(np.maximum(wi, wj)), dd)


def stable_limit(u, sig, v, c, q, damping=0.0, eps=float(np.finfo(np.float64).eps), samples=20, seed=0):
    """First-order relative error of d under relative eps perturbations of A and s (the
    largest over ``samples`` random directions); see the module docstring.

    With phi(w) = (w + damping)^{-1/q}, psi(w) = w phi(w) (so h(sigma) = sigma
    phi(sigma^2)) the SVD perturbation formulas combine, in the bases U and V, to

        V^T dd = -[ (Ẽ o K1 + Ẽ^T o K2) c + h o U^T ds ],
        K1_ij = sigma_i sigma_j phi[w_i, w_j],   K2_ij = psi[w_i, w_j],

    with w = sigma^2 and [., .] divided differences (derivatives on ties, where the SVD is
    not unique but d is)."""
    rng = np.random.default_rng(seed)
    h = _h(sig, q, damping)
    w = sig * sig

    def phi(x):
        return (x + damping) ** (-1.0 / q)

    def dphi(x):
        return (-1.0 / q) * (x + damping) ** (-1.0 / q - 1.0)

    k1 = sig[:, None] * sig[None, :] * _divided_difference(phi, dphi, w)
    k2 = _divided_difference(lambda x: x * phi(x), lambda x: phi(x) + x * dphi(x), w)
    d_norm = np.linalg.norm(h * c)
    n = sig.shape[0]
    worst = 0.0
    for _ in range(samples):
        et = rng.standard_normal((n, n))
        et *= eps * sig.max() / np.linalg.norm(et, 2)
        ds = rng.standard_normal(n)
        ds *= eps * np.linalg.norm(c) / np.linalg.norm(ds)  # U^T ds, ||s|| = ||c||
        dd = (et * k1 + et.T * k2) @ c + h * ds
        worst = max(worst, float(np.linalg.norm(dd)) / d_norm)
    return worst
