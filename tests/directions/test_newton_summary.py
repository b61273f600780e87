"""The NewtonSummary learning rates (Wolinski GN-11 to GN-17): Newton, ridge, and the
anisotropic Nesterov cubic step against a multistart minimizer, on random indefinite problems."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from arraycurv.directions import newton_summary as N
from tests.helpers import assert_close, seeds


def _problem(seed, s, *, indefinite=True, singular_d=False):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((s, s))
    h = (a + a.T) / 2 * rng.uniform(0.2, 3.0)
    if not indefinite:
        h = a @ a.T + 0.1 * np.eye(s)
    g = rng.standard_normal(s)
    d = np.abs(rng.standard_normal(s)) + 0.1
    if singular_d:
        z = rng.integers(0, s)
        d[z] = 0.0
        h[z, z] = abs(h[z, z]) + 2.0 * np.sum(np.abs(h[z])) + 1.0  # Hbar positive on ker D
    return g, h, d, float(rng.uniform(0.2, 3.0))


def _residual(step, g, h, d, lam):
    """GN-14 residual -gbar + (Hbar + lambda/2 ||D eta|| D^2) eta, relative to its terms
    (each of gbar, Hbar eta and the cubic term: near the pole r0 the last two nearly
    cancel, and rounding is relative to them, not to their sum)."""
    e = np.asarray(step.eta)
    r = np.linalg.norm(d * e)
    cubic = 0.5 * lam * r * np.diag(d * d)
    m = h + cubic
    scale = np.max(np.abs(g)) + np.max(np.abs(h @ e)) + np.max(np.abs(cubic @ e)) + 1e-300
    return np.max(np.abs(m @ e - g)) / scale, m


def _multistart(g, h, d, lam, seed, starts=12):
    rng = np.random.default_rng(seed)

    def t(e):
        return float(N.cubic_model(e, g, h, d, lam))

    def grad(e):
        return -g + h @ e + 0.5 * lam * np.linalg.norm(d * e) * d * d * e

    best = min((minimize(t, x0, jac=grad, method="BFGS", options={"gtol": 1e-12})
                for x0 in rng.standard_normal((starts, len(g))) * 3), key=lambda r: r.fun)
    return best.fun


@settings(max_examples=40)
@given(seed=seeds, s=st.integers(1, 5), indefinite=st.booleans(), singular_d=st.booleans())
@example(seed=5457371, s=1, indefinite=True, singular_d=False)  # r* 4e-4 from the pole r0
def test_cubic_step_is_the_global_minimizer(seed, s, indefinite, singular_d):
    """The step solves GN-14 with Hbar + c r D^2 >= 0 and no multistart BFGS run beats it (GN-13)."""
    g, h, d, lam = _problem(seed, s, indefinite=indefinite, singular_d=singular_d)
    step = N.cubic_step(g, h, d, lam)
    assert step.found
    res, m = _residual(step, g, h, d, lam)
    assert res < 1e-10 + 1e-13 * np.linalg.cond(m)  # near the pole r0, M(r*) is ill-conditioned
    assert np.min(np.linalg.eigvalsh(m)) > -1e-8 * np.max(np.abs(m))
    t_ours = float(N.cubic_model(step.eta, g, h, d, lam))
    assert t_ours <= _multistart(g, h, d, lam, seed) + 1e-9 * max(1.0, abs(t_ours))
    assert np.isclose(step.r, np.linalg.norm(d * step.eta), rtol=1e-9, atol=1e-300)


def test_one_dimensional_example_of_the_spec():
    """Hbar = -3, gbar = 0.5, lambda = 1: stationary points {6.162, -0.172, -5.828}, r0 = 6; the
    largest-||D eta|| root 6.162 is returned (spec 4.2)."""
    step = N.cubic_step(np.array([0.5]), np.array([[-3.0]]), np.array([1.0]), 1.0)
    assert step.case == "indefinite" and np.isclose(step.r0, 6.0)
    assert_close(step.eta, np.array([3.0 + np.sqrt(10.0) - 0.0]), rtol=1e-12)


@settings(max_examples=25)
@given(seed=seeds, s=st.integers(1, 5))
def test_bracket_bounds(seed, s):
    """Case 1: r* <= min(phi(0), sqrt(2 ||D^-1 g|| / lambda)); case 2: r0 < r* <=
    (r0 + sqrt(r0^2 + 8 ||D^-1 g|| / lambda)) / 2 with r0 of GN-17."""
    for indefinite in (False, True):
        g, h, d, lam = _problem(seed, s, indefinite=indefinite)
        step = N.cubic_step(g, h, d, lam)
        b = np.linalg.norm(g / d)
        k = np.diag(1 / d) @ h @ np.diag(1 / d)
        kmin = np.linalg.eigvalsh(k)[0]
        if kmin > 0:
            phi0 = np.linalg.norm(d * np.linalg.solve(h, g))
            assert step.case == "pd" and step.r <= min(phi0, np.sqrt(2 * b / lam)) * (1 + 1e-12)
        else:
            r0 = 2 / lam * abs(kmin)
            assert np.isclose(step.r0, r0, rtol=1e-10)
            assert r0 <= step.r <= 0.5 * (r0 + np.sqrt(r0 * r0 + 8 * b / lam)) * (1 + 1e-12)


def test_hard_case_with_a_null_space_component():
    """D^{-1} gbar orthogonal to the lowest eigenvector and phi(r0) <= r0: r* = r0 and eta has a
    component in the null space of Hbar + c r0 D^2 (the reference code returns "not found")."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    d = np.array([0.5, 1.0, 2.0])
    dm = np.diag(d)
    h = dm @ q @ np.diag([-2.0, 1.0, 3.0]) @ q.T @ dm  # K = D^-1 H D^-1 has eigenvectors q
    g = dm @ q @ np.array([0.0, 0.1, 0.2])
    step = N.cubic_step(g, h, d, 1.0)
    assert step.case == "hard" and step.found and np.isclose(step.r, 4.0)
    res, m = _residual(step, g, h, d, 1.0)
    assert res < 1e-12
    null = np.linalg.eigh(m)[1][:, 0]
    assert abs(null @ step.eta) > 0.1 * np.linalg.norm(step.eta)
    t_ours = float(N.cubic_model(step.eta, g, h, d, 1.0))
    assert t_ours <= _multistart(g, h, d, 1.0, 1, starts=30) + 1e-10
    # g = 0 with an indefinite Hbar: the minimizer is a pure null-space vector of norm r0
    step0 = N.cubic_step(np.zeros(3), h, d, 1.0)
    assert step0.case == "hard" and np.isclose(np.linalg.norm(d * step0.eta), 4.0)


def test_singular_d_and_degenerate_cases():
    h = np.array([[2.0, 0.5], [0.5, 1.0]])
    g = np.array([1.0, -1.0])
    # D = 0 (e.g. MSE on a final linear layer): the Newton step, which the reference code rejects
    step = N.cubic_step(g, h, np.zeros(2), 1.0)
    assert step.case == "newton" and step.found
    assert_close(step.eta, np.linalg.solve(h, g))
    # lambda_int = 0 is Newton too; with an indefinite Hbar there is no minimizer
    assert_close(N.cubic_step(g, h, np.ones(2), 0.0).eta, np.linalg.solve(h, g))
    bad = N.cubic_step(g, np.diag([1.0, -1.0]), np.array([1.0, 0.0]), 1.0)
    assert not bad.found and bad.case == "unbounded" and np.all(bad.eta == 0)
    # lambda -> 0 recovers Hbar^-1 gbar (GN-12)
    assert_close(N.cubic_step(g, h, np.ones(2), 1e-12).eta, N.newton_step(g, h), rtol=1e-9)


def test_scale_equivariance_of_the_step():
    """(C Hbar C, C gbar, C d) gives eta' = C^{-1} eta with the same r (spec 6)."""
    for seed in range(5):
        g, h, d, lam = _problem(seed, 4)
        c = np.array([0.3, 2.0, 5.0, 0.7])
        a = N.cubic_step(g, h, d, lam)
        b = N.cubic_step(c * g, np.outer(c, c) * h, c * d, lam)
        assert_close(b.eta, a.eta / c, rtol=1e-8)
        assert np.isclose(a.r, b.r, rtol=1e-9)


def test_newton_and_ridge_steps(xp):
    h = xp.asarray([[2.0, 0.5], [0.5, 1.0]])
    g = xp.asarray([1.0, -1.0])
    want = np.linalg.solve(np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([1.0, -1.0]))
    assert_close(N.newton_step(g, h), want, like=g)
    want_r = np.linalg.solve(np.array([[2.5, 0.5], [0.5, 1.5]]), np.array([1.0, -1.0]))
    assert_close(N.ridge_step(g, h, 0.5), want_r, like=g)
    h32, g32 = xp.astype(h, xp.float32), xp.astype(g, xp.float32)
    step = N.cubic_step(g32, h32, xp.asarray([0.5, 1.0], dtype=xp.float32), 1.0)
    assert_close(step.eta, N.cubic_step(np.array([1.0, -1.0]), np.array([[2.0, 0.5], [0.5, 1.0]]),
                                        np.array([0.5, 1.0]), 1.0).eta, like=g32)


def test_errors():
    h = np.eye(2)
    g = np.ones(2)
    with pytest.raises(ValueError, match="hbar: expected a nonsingular matrix"):
        N.newton_step(g, np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"hbar: expected shape \(2, 2\)"):
        N.newton_step(g, np.eye(3))
    with pytest.raises(ValueError, match="hbar: expected a symmetric matrix"):
        N.newton_step(g, np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="d: expected non-negative"):
        N.cubic_step(g, h, -np.ones(2))
    with pytest.raises(ValueError, match="damping_int"):
        N.cubic_step(g, h, np.ones(2), -1.0)
    with pytest.raises(ValueError, match="gbar: expected finite"):
        N.cubic_step(np.array([np.nan, 1.0]), h, np.ones(2))
    with pytest.raises(ValueError, match="ridge"):
        N.ridge_step(g, h, -1.0)
