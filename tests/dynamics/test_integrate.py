"""Adaptive Dormand-Prince integration (spec 4.3) against SciPy's RK45 and exact solutions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import arraycurv as ac
from arraycurv import backend
from arraycurv.dynamics import IntegrationError, rk4_fixed, solve_ode
from tests.helpers import assert_close, assert_like, dtypes, seeds

#: Global-error constant asserted for the non-stiff test problems below:
#: max_t |y(t) - y_exact(t)| <= C_GLOBAL * rtol * max_t |y_exact(t)|
#: (measured worst case over 30 random linear systems on [0, 3]: 2.3; logistic: 1.9).
C_GLOBAL = 10.0


def _stable_system(seed, n):
    """A random linear system matrix with a rotation part and mild decay, and y0."""
    g = np.random.default_rng(seed)
    m = g.standard_normal((n, n))
    a = (m - m.T) - g.uniform(0.1, 1.0) * np.eye(n) + 0.3 * g.standard_normal((n, n))
    return a, g.standard_normal(n)


def _linear_fun(xp, a_np, dtype=None, device=None):
    a = backend.from_numpy(a_np, xp, dtype=dtype, device=device)
    return lambda t, y: xp.matmul(a, y)


# ----------------------------------------------------------------- against SciPy / exact
@given(seed=seeds, n=st.integers(1, 5), rtol=st.sampled_from([1e-4, 1e-7, 1e-10]))
def test_same_steps_and_values_as_scipy_rk45(seed, n, rtol):
    a, y0 = _stable_system(seed, n)
    te = np.linspace(0.0, 3.0, 7)
    ours = solve_ode(lambda t, y: a @ y, (0.0, 3.0), y0, rtol=rtol, atol=1e-3 * rtol, t_eval=te)
    ref = solve_ivp(lambda t, y: a @ y, (0.0, 3.0), y0, method="RK45", rtol=rtol, atol=1e-3 * rtol, t_eval=te)
    # Same tableau, initial step, controller and interpolant: same steps, values equal up to rounding.
    assert ours.nfev == ref.nfev
    np.testing.assert_allclose(np.array(ours.y), ref.y.T, rtol=0, atol=1e-11 * np.max(np.abs(ref.y)))
    assert ours.t == list(te)


@given(seed=seeds, n=st.integers(1, 5))
def test_linear_system_error_below_c_rtol_and_shrinking(seed, n):
    a, y0 = _stable_system(seed, n)
    te = np.linspace(0.0, 3.0, 7)
    exact = np.array([expm(a * t) @ y0 for t in te])
    scale = np.max(np.abs(exact))
    errors = []
    for rtol in (1e-4, 1e-7, 1e-10):
        sol = solve_ode(lambda t, y: a @ y, (0.0, 3.0), y0, rtol=rtol, atol=1e-3 * rtol, t_eval=te)
        err = np.max(np.abs(np.array(sol.y) - exact))
        assert err <= C_GLOBAL * rtol * scale, (rtol, err / scale)
        errors.append(err)
    # The bound shrinks with rtol; an easy problem may already be far below it at rtol = 1e-4,
    # so only the six-decade comparison is asserted strictly, and only where the loose
    # error is not already within the tight run's bound (a scalar decay can be exact to
    # 1e-13 at rtol = 1e-4, leaving only rounding, which grows with the number of steps).
    assert errors[2] < errors[0] or errors[0] <= C_GLOBAL * 1e-10 * scale


def test_logistic_against_closed_form():
    r, k, y0 = 2.0, 3.0, 0.01
    te = np.linspace(0.0, 8.0, 17)
    exact = k / (1.0 + (k / y0 - 1.0) * np.exp(-r * te))
    for rtol in (1e-5, 1e-8, 1e-11):
        sol = solve_ode(lambda t, y: r * y * (1 - y / k), (0.0, 8.0), np.array([y0]), rtol=rtol, atol=1e-14, t_eval=te)
        assert np.max(np.abs(np.array(sol.y)[:, 0] - exact)) <= C_GLOBAL * rtol * k


def test_time_dependent_rhs_and_backward_integration():
    # y' = cos(t) y  ->  y(t) = y(t0) exp(sin t - sin t0); integrate from 2 back to -1.
    fun = lambda t, y: math.cos(t) * y  # noqa: E731
    te = [2.0, 1.0, 0.0, -1.0]
    sol = solve_ode(fun, (2.0, -1.0), np.array([1.5]), rtol=1e-10, atol=1e-13, t_eval=te)
    exact = 1.5 * np.exp(np.sin(te) - np.sin(2.0))
    assert sol.t == te
    assert np.max(np.abs(np.array(sol.y)[:, 0] - exact)) <= C_GLOBAL * 1e-10 * np.max(exact)
    ref = solve_ivp(fun, (2.0, -1.0), [1.5], method="RK45", rtol=1e-10, atol=1e-13, t_eval=te)
    np.testing.assert_allclose(np.array(sol.y)[:, 0], ref.y[0], rtol=1e-12)


def test_default_output_is_every_accepted_step_like_scipy():
    a, y0 = _stable_system(3, 3)
    sol = solve_ode(lambda t, y: a @ y, (0.0, 2.0), y0, rtol=1e-6)
    ref = solve_ivp(lambda t, y: a @ y, (0.0, 2.0), y0, method="RK45", rtol=1e-6, atol=1e-9)
    # Step sizes agree up to the rounding of the error estimate (a difference of nearly equal terms).
    np.testing.assert_allclose(sol.t, ref.t, rtol=1e-7)
    np.testing.assert_allclose(np.array(sol.y), ref.y.T, atol=1e-7 * np.max(np.abs(ref.y)))
    assert sol.nsteps == len(ref.t) - 1 and sol.t[0] == 0.0 and sol.t[-1] == 2.0
    assert sol.y[0] is y0
    assert sol.nfev == ref.nfev


# ------------------------------------------------------------------ namespaces, tuples
@settings(max_examples=10)
@given(seed=seeds, n=st.integers(1, 4))
def test_same_results_on_every_namespace(xp, seed, n):
    a, y0 = _stable_system(seed, n)
    te = [0.0, 0.7, 1.5]
    ref = solve_ode(lambda t, y: a @ y, (0.0, 1.5), y0, rtol=1e-8, t_eval=te)
    y0_x = backend.from_numpy(y0, xp)
    sol = solve_ode(_linear_fun(xp, a), (0.0, 1.5), y0_x, rtol=1e-8, t_eval=te)
    assert (sol.nsteps, sol.nrejected, sol.nfev) == (ref.nsteps, ref.nrejected, ref.nfev)
    for y, y_ref in zip(sol.y, ref.y):
        assert_close(y, y_ref, like=y0_x, rtol=1e-12)


@settings(max_examples=10)
@given(seed=seeds, dtype=dtypes)
def test_tuple_state_against_exact(xp, seed, dtype):
    # (M' = A M, v' = -2 v, s' = 0.5 s) with M a matrix, v a vector: exact expm solutions.
    g = np.random.default_rng(seed)
    a = g.standard_normal((2, 2)) - np.eye(2)
    m0, v0, s0 = g.standard_normal((2, 3)), g.standard_normal(4), g.standard_normal(())
    a_x = backend.from_numpy(a, xp, dtype=dtype)
    y0 = tuple(backend.from_numpy(z, xp, dtype=dtype) for z in (m0, v0, s0))

    def fun(t, y):
        m, v, s = y
        return (xp.matmul(a_x, m), -2.0 * v, 0.5 * s)

    rtol = 1e-8 if dtype == "float64" else 1e-4
    sol = solve_ode(fun, (0.0, 1.0), y0, rtol=rtol, atol=rtol * 1e-3, t_eval=[0.0, 0.25, 1.0])
    assert isinstance(sol.y[-1], tuple) and len(sol.y[-1]) == 3
    for t, y in zip(sol.t, sol.y):
        exact = (expm(a * t) @ m0, np.exp(-2 * t) * v0, np.exp(0.5 * t) * s0)
        tol = C_GLOBAL * rtol
        for leaf, ex in zip(y, exact):
            assert_close(leaf, ex, like=y0[0], rtol=tol, atol=tol)


def test_float32_state_stays_float32_and_is_accurate(xp):
    a, y0 = _stable_system(7, 3)
    y0_x = backend.from_numpy(y0, xp, dtype="float32")
    sol = solve_ode(_linear_fun(xp, a, dtype="float32"), (0.0, 2.0), y0_x, rtol=1e-4, atol=1e-7, t_eval=[2.0])
    assert_close(sol.y[0], expm(2.0 * a) @ y0, like=y0_x, rtol=C_GLOBAL * 1e-4)


def test_rtol_below_dtype_precision_is_raised_with_warning(xp):
    y0 = backend.from_numpy(np.ones(2), xp, dtype="float32")
    with pytest.warns(RuntimeWarning, match="rtol"):
        sol = solve_ode(lambda t, y: -y, (0.0, 1.0), y0, rtol=1e-9, t_eval=[1.0])
    assert_close(sol.y[0], np.exp(-1.0) * np.ones(2), like=y0, rtol=1e-4)


# ---------------------------------------------------------------- dense output, extras
def test_t_eval_points_are_exact_times_and_dense_output_matches_scipy():
    a, y0 = _stable_system(11, 3)
    te = np.sort(np.random.default_rng(0).uniform(0.0, 4.0, 25))
    te[0], te[-1] = 0.0, 4.0
    sol = solve_ode(lambda t, y: a @ y, (0.0, 4.0), y0, rtol=1e-6, atol=1e-9, t_eval=te)
    ref = solve_ivp(lambda t, y: a @ y, (0.0, 4.0), y0, method="RK45", rtol=1e-6, atol=1e-9, t_eval=te)
    assert sol.t == [float(v) for v in te]
    np.testing.assert_allclose(np.array(sol.y), ref.y.T, atol=1e-12)
    assert sol.y[0] is y0
    exact = np.array([expm(a * t) @ y0 for t in te])
    assert np.max(np.abs(np.array(sol.y) - exact)) <= C_GLOBAL * 1e-6 * np.max(np.abs(exact))


def test_progress_callback_sees_every_accepted_step():
    seen = []
    sol = solve_ode(lambda t, y: -y, (0.0, 3.0), np.ones(2), progress=lambda t, t_end: seen.append((t, t_end)))
    assert len(seen) == sol.nsteps
    assert [t for t, _ in seen] == sol.t[1:]
    assert all(t_end == 3.0 for _, t_end in seen) and seen[-1][0] == 3.0


def test_zero_length_interval_returns_initial_state():
    y0 = np.ones(3)
    sol = solve_ode(lambda t, y: -y, (1.0, 1.0), y0, t_eval=[1.0])
    assert sol.t == [1.0] and sol.y[0] is y0 and sol.nfev == 0


def test_atol_zero_uses_pure_relative_control():
    sol = solve_ode(lambda t, y: -y, (0.0, 2.0), np.array([1.0, -2.0]), rtol=1e-9, atol=0.0, t_eval=[2.0])
    np.testing.assert_allclose(sol.y[0], np.exp(-2.0) * np.array([1.0, -2.0]), rtol=C_GLOBAL * 1e-9)


def test_rk4_fixed_is_fourth_order(xp):
    a, y0 = _stable_system(5, 3)
    y0_x = backend.from_numpy(y0, xp)
    exact = expm(2.0 * a) @ y0
    errs = []
    for n in (20, 40, 80):
        sol = rk4_fixed(_linear_fun(xp, a), (0.0, 2.0), y0_x, n)
        assert len(sol.t) == n + 1 and sol.t[-1] == 2.0 and sol.nfev == 4 * n
        assert_like(sol.y[-1], y0_x)
        errs.append(np.max(np.abs(backend.to_numpy(sol.y[-1]) - exact)))
    # Halving h divides the error by 2^4 = 16 asymptotically.
    assert 12.0 < errs[0] / errs[1] < 20.0 and 12.0 < errs[1] / errs[2] < 20.0


def test_rk4_fixed_tuple_state_matches_hand_written_step():
    y0 = (np.array([1.0, 2.0]), np.array([[0.5]]))
    fun = lambda t, y: (-y[0] * t, 2.0 * y[1])  # noqa: E731
    sol = rk4_fixed(fun, (0.0, 0.3), y0, 1)
    h = 0.3

    def f(t, y):
        return -y * t

    k1 = f(0, y0[0])
    k2 = f(h / 2, y0[0] + h / 2 * k1)
    k3 = f(h / 2, y0[0] + h / 2 * k2)
    k4 = f(h, y0[0] + h * k3)
    np.testing.assert_allclose(sol.y[1][0], y0[0] + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), rtol=1e-15)
    np.testing.assert_allclose(sol.y[1][1], 0.5 * (1 + 0.6 + 0.6**2 / 2 + 0.6**3 / 6 + 0.6**4 / 24), rtol=1e-15)


# -------------------------------------------------------------------------- errors
def test_integration_error_is_exported_runtime_error():
    assert issubclass(IntegrationError, RuntimeError)
    assert ac.dynamics.IntegrationError is IntegrationError and ac.dynamics.solve_ode is solve_ode


def test_stiff_problem_exceeds_max_steps():
    fun = lambda t, y: -1e4 * (y - np.cos(t))  # noqa: E731
    with pytest.raises(IntegrationError, match=r"max_steps=50 .*reached t="):
        solve_ode(fun, (0.0, 10.0), np.array([0.0]), max_steps=50)


def test_nan_producing_rhs_raises_with_time(xp):
    y0 = backend.from_numpy(np.ones(2), xp)

    def fun(t, y):
        return y * math.nan if t > 0.5 else -y

    with pytest.raises(IntegrationError, match=r"NaN/Inf at t=0\.49999"):
        solve_ode(fun, (0.0, 1.0), y0)
    with pytest.raises(IntegrationError, match=r"fun\(t, y0\) is NaN/Inf at t=0"):
        solve_ode(lambda t, y: y * math.inf, (0.0, 1.0), y0)


def test_blow_up_makes_step_size_too_small():
    # y' = y^2, y(0) = 1 blows up at t = 1.
    with pytest.raises(IntegrationError, match=r"step size .* fell below 10\*eps\*\|t\| .* at t=1\.0000"):
        solve_ode(lambda t, y: y * y, (0.0, 2.0), np.array([1.0]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rtol": 0.0}, "rtol: expected a number > 0"),
        ({"rtol": -1e-3}, "rtol: expected a number > 0"),
        ({"rtol": math.nan}, "rtol: expected a finite real number"),
        ({"atol": -1.0}, "atol: expected a number >= 0"),
        ({"t_span": (0.0, 1.0, 2.0)}, "t_span: expected a pair"),
        ({"t_span": (0.0, math.inf)}, "t_span: expected a finite real number"),
        ({"t_span": "ab"}, "t_span: expected a pair"),
        ({"t_eval": [0.5, 2.0]}, r"t_eval: expected times within t_span"),
        ({"t_eval": [0.5, 0.2]}, r"t_eval: expected increasing times"),
        ({"first_step": 0.0}, "first_step: expected a number > 0"),
        ({"first_step": 5.0}, r"first_step: expected at most \|t1 - t0\|"),
        ({"max_step": -1.0}, "max_step: expected a number > 0"),
        ({"max_steps": 0}, "max_steps: expected an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    args = {"t_span": (0.0, 1.0)}
    args.update(kwargs)
    t_span = args.pop("t_span")
    with pytest.raises(ValueError, match=match):
        solve_ode(lambda t, y: -y, t_span, np.ones(2), **args)


def test_bad_state_and_rhs_name_the_argument(xp):
    y = backend.from_numpy(np.ones(3), xp)
    with pytest.raises(ValueError, match=r"fun\(t, y\): expected shape \(3,\) like y0, got \(2,\)"):
        solve_ode(lambda t, s: s[:2], (0.0, 1.0), y)
    with pytest.raises(ValueError, match=r"fun: expected a tuple of 2 arrays like y0, got 1"):
        solve_ode(lambda t, s: (s[0],), (0.0, 1.0), (y, y))
    with pytest.raises(TypeError, match=r"fun\(t, y\): expected dtype"):
        solve_ode(lambda t, s: xp.astype(s, xp.float32), (0.0, 1.0), y)
    with pytest.raises(ValueError, match=r"y0\[1\]: expected finite values"):
        solve_ode(lambda t, s: s, (0.0, 1.0), (y, y * math.nan))
    with pytest.raises(TypeError, match=r"y0: expected dtype float32 or float64"):
        solve_ode(lambda t, s: s, (0.0, 1.0), xp.asarray([1, 2]))
    with pytest.raises(TypeError, match=r"y0\[1\]: expected dtype"):
        solve_ode(lambda t, s: s, (0.0, 1.0), (y, xp.astype(y, xp.float32)))
    with pytest.raises(ValueError, match="num_steps: expected an integer >= 1"):
        rk4_fixed(lambda t, s: s, (0.0, 1.0), y, 0)
