"""Training loops and continuous-time dynamics of update rules (spec 4.2, 4.3, 6).

Continuous-time trajectories of the full-matrix rules (integrate_rule) are checked
against Huh (2020): Theorem 1 (c_i conserved, drift shrinking with the tolerance; not
by NGD-d), the singular-mode ODEs of eqs 5, 10, 12, 20, 21 and footnote 4 (integrated
separately with scipy.integrate.solve_ivp), their invariants, the exponential map
dynamics of NGD (S.I.1) and the balanced map dynamics of eq 17. The discrete loop is
checked against NumPy loops.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import arraycurv as ac
from arraycurv import backend
from arraycurv.dynamics import IntegrationError, theory
from tests.helpers import assert_close, assert_like, seeds
from tests.references.deep_linear import make_case, np_grad_tree, np_loss, np_of

FULL_RULES = {
    "sgd": lambda lr: ac.sgd(lr),
    "ngd": lambda lr: ac.ngd(lr),
    "sqrt_ngd": lambda lr: ac.sqrt_ngd(lr),
    "qngd3": lambda lr: ac.qngd(lr, 3.0),
}


def c_drift(p0, p1):
    """max_i ||c_i(t) - c_i(0)||_max relative to max_i ||W_i(0)||_max^2 (Huh eq 15)."""
    c0 = [backend.to_numpy(c) for c in theory.conserved_quantities(p0)]
    c1 = [backend.to_numpy(c) for c in theory.conserved_quantities(p1)]
    scale = max(float(np.max(np.abs(backend.to_numpy(w)))) ** 2 for w in p0)
    return max(float(np.max(np.abs(a - b))) for a, b in zip(c0, c1)) / scale


# --------------------------------------------------------------------------- Theorem 1
@pytest.mark.parametrize("name", list(FULL_RULES))
def test_theorem1_conservation_drift_shrinks_with_tolerance(numpy_xp, name):
    model, params, batch = make_case(numpy_xp, (3, 4, 3, 2), 6, 10)
    rule = FULL_RULES[name](1.0)
    drifts = {}
    for rtol in (1e-5, 1e-9):
        sol = ac.integrate_rule(model, params, batch, rule, (0.0, 0.6), rtol=rtol, atol=rtol * 1e-2)
        drifts[rtol] = c_drift(params, sol.y[-1])
        # the loss decreased: the dynamics actually moved
        assert np_loss(np_of(sol.y[-1]), *np_of(batch)) < np_loss(np_of(params), *np_of(batch))
    # the conserved quantities drift only by the integration error: 4 orders of
    # magnitude of tolerance give at least one order of magnitude less drift, and the
    # tight integration keeps c_i to 1e-7 of the weight scale
    assert drifts[1e-9] <= drifts[1e-5] / 10 or drifts[1e-5] <= 1e-10
    assert drifts[1e-9] <= 1e-7


@pytest.mark.slow
@settings(max_examples=10)
@given(
    depth=st.integers(2, 4),
    data=st.data(),
    seed=seeds,
    name=st.sampled_from(list(FULL_RULES)),
)
def test_theorem1_conservation_random_networks(numpy_xp, depth, data, seed, name):
    widths = tuple(data.draw(st.integers(2, 5)) for _ in range(depth + 1))
    model, params, batch = make_case(numpy_xp, widths, data.draw(st.integers(2, 8)), seed)
    rule = FULL_RULES[name](1.0)
    sol = ac.integrate_rule(model, params, batch, rule, (0.0, 0.5), rtol=1e-10, atol=1e-12)
    assert c_drift(params, sol.y[-1]) <= 1e-7


def test_theorem1_conservation_on_every_backend(xp):
    # short, tight integration of NGD (map form) in the namespace under test
    model, params, batch = make_case(xp, (2, 3, 2), 5, 4)
    sol = ac.integrate_rule(model, params, batch, ac.ngd(1.0), (0.0, 0.2), rtol=1e-8, atol=1e-10)
    assert_like(sol.y[-1][0], params[0])
    assert c_drift(params, sol.y[-1]) <= 1e-7


def test_ngd_d_breaks_conservation(numpy_xp):
    # Huh Sec. 5: block-diagonal NGD is not orthogonal to the null space; c_i moves by
    # O(1) whatever the tolerance (here > 1e-2 of the weight scale at both tolerances)
    model, params, batch = make_case(numpy_xp, (3, 4, 3, 2), 6, 10)
    for rtol in (1e-5, 1e-8):
        sol = ac.integrate_rule(model, params, batch, ac.ngd_d(1.0), (0.0, 0.6), rtol=rtol, atol=rtol * 1e-2)
        assert c_drift(params, sol.y[-1]) > 1e-2


# --------------------------------------------------------------------------- singular modes
MODE_RULES = [
    ("sgd", None, lambda: ac.sgd(0.8)),
    ("ngd", None, lambda: ac.ngd(0.8)),
    ("sqrt_ngd", None, lambda: ac.sqrt_ngd(0.8)),
    ("qngd", 3.0, lambda: ac.qngd(0.8, 3.0)),
    ("ngd_d", None, lambda: ac.ngd_d(0.8)),
    ("sqrt_ngd_d", None, lambda: ac.sqrt_ngd_d(0.8)),
    ("qngd_d", 3.0, lambda: ac.qngd_blockdiag(0.8, 3.0)),
]
#: the q of the invariant each rule keeps: hyperbolas (q = inf, eq 6) for full rules,
#: sigma_i/sigma_{i+1} (NGD-d), |sigma_i| - |sigma_{i+1}| (sqrt-NGD-d), footnote 4.
INVARIANT_Q = {"sgd": math.inf, "ngd": math.inf, "sqrt_ngd": math.inf, "qngd": math.inf,
               "ngd_d": 1.0, "sqrt_ngd_d": 2.0, "qngd_d": 3.0}


def _mode_case(xp, widths, sigmas, stars, seed):
    n_out, n_in, r = widths[-1], widths[0], len(stars)
    u = backend.orthogonal(seed, (n_out, r), xp)
    v = backend.orthogonal(seed + 1, (n_in, r), xp)
    params = ac.data.aligned_params(backend.from_numpy(sigmas, xp), u, v, widths, seed=seed + 2)
    target = xp.matmul(u * backend.from_numpy(stars, xp), xp.matrix_transpose(v))
    return ac.DeepLinear(widths), params, ac.models.whitened_moments(target), u, v


def _scipy_modes(sigmas, stars, rule, q, t_eval):
    """Huh's singular-mode ODE for every mode, integrated with scipy (float64)."""
    s0 = np.asarray(sigmas, dtype=np.float64).T  # (r, d)
    r, d = s0.shape

    def fun(t, y):
        return backend.to_numpy(theory.singular_mode_velocity(y.reshape(r, d), np.asarray(stars), 0.8, rule, q)).ravel()

    sol = solve_ivp(fun, (0.0, t_eval[-1]), s0.ravel(), t_eval=t_eval, rtol=1e-11, atol=1e-13, method="DOP853")
    return sol.y.T.reshape(len(t_eval), r, d)


@pytest.mark.parametrize("rule_name, q, make", MODE_RULES, ids=[m[0] for m in MODE_RULES])
def test_full_matrix_dynamics_follow_singular_mode_odes(numpy_xp, rule_name, q, make):
    widths = (3, 3, 3)
    sigmas = np.array([[0.6, 1.3, 0.9], [1.1, 0.7, 0.5]])  # (d, r): unbalanced layers
    stars = np.array([1.5, 0.4, 2.0])
    model, params, mom, u, v = _mode_case(numpy_xp, widths, sigmas, stars, 3)
    t_eval = [0.0, 0.5, 1.0, 2.0]
    sol = ac.integrate_rule(model, params, mom, make(), (0.0, 2.0), rtol=1e-10, atol=1e-12, t_eval=t_eval)
    expected = _scipy_modes(sigmas, stars, rule_name, q, np.array(t_eval))
    inv0 = backend.to_numpy(theory.blockdiag_invariants(numpy_xp.asarray(sigmas.T), INVARIANT_Q[rule_name]))
    for k, p_t in enumerate(sol.y):
        got = backend.to_numpy(theory.layer_mode_strengths(p_t, u, v)).T  # (r, d)
        np.testing.assert_allclose(got, expected[k], rtol=1e-7, atol=1e-8)
        # the constants of motion of the rule (Theorem 1 / Sec. 5 / footnote 4)
        inv = backend.to_numpy(theory.blockdiag_invariants(numpy_xp.asarray(got), INVARIANT_Q[rule_name]))
        np.testing.assert_allclose(inv, inv0, rtol=1e-7, atol=1e-8)
    if rule_name == "ngd_d":
        # and NGD-d really leaves the hyperbolas of eq 6 (parameter paths diverge)
        hyp = backend.to_numpy(theory.blockdiag_invariants(numpy_xp.asarray(got), math.inf))
        hyp0 = backend.to_numpy(theory.blockdiag_invariants(numpy_xp.asarray(sigmas.T), math.inf))
        assert np.max(np.abs(hyp - hyp0)) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("rule_name, q, make", MODE_RULES, ids=[m[0] for m in MODE_RULES])
def test_singular_modes_deeper_with_inactive_modes(numpy_xp, rule_name, q, make):
    # depth 3, two active modes in width-4 layers (the other modes inactive, footnote 2)
    widths = (4, 4, 4, 4)
    sigmas = np.array([[0.6, 1.2], [1.1, 0.8], [0.9, 0.7]])
    stars = np.array([1.4, 0.3])
    model, params, mom, u, v = _mode_case(numpy_xp, widths, sigmas, stars, 8)
    t_eval = [0.0, 0.7, 1.5]
    sol = ac.integrate_rule(model, params, mom, make(), (0.0, 1.5), rtol=1e-10, atol=1e-12, t_eval=t_eval)
    expected = _scipy_modes(sigmas, stars, rule_name, q, np.array(t_eval))
    for k, p_t in enumerate(sol.y):
        got = backend.to_numpy(theory.layer_mode_strengths(p_t, u, v)).T
        np.testing.assert_allclose(got, expected[k], rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- map dynamics
def test_ngd_map_dynamics_are_exponential(xp):
    # Huh S.I.1 / eq 17 with p = 0: square invertible layers, whitened inputs:
    # w(t) - w* = exp(-eta t) (w(0) - w*)
    eta = 0.7
    model, params, _ = make_case(xp, (3, 3, 3), 1, 21)
    target = backend.normal(30, (3, 3), xp)
    mom = ac.models.whitened_moments(target)
    t_eval = [0.0, 0.3, 0.6]
    sol = ac.integrate_rule(model, params, mom, ac.ngd(eta), (0.0, 0.6), rtol=1e-8, atol=1e-10, t_eval=t_eval)
    w0 = backend.to_numpy(ac.models.total_map(params))
    tg = backend.to_numpy(target)
    for t, p_t in zip(t_eval, sol.y):
        expected = tg + math.exp(-eta * t) * (w0 - tg)
        assert_close(ac.models.total_map(p_t), expected, like=params[0], rtol=1e-6)


@pytest.mark.parametrize("depth, q", [(2, 1.0), (2, 2.0), (3, 2.0), (3, 3.0), (2, math.inf), (3, math.inf)])
def test_balanced_map_dynamics_follow_eq_17(numpy_xp, depth, q):
    # one active mode, balanced aligned initialization (c_i = 0): the map strength obeys
    # sigma' = -eta_bar (sigma - sigma*) sigma^p with p, eta_bar of Table 1 / eq 17
    eta, s0, s_star = 0.9, 0.05, 1.6
    widths = (3,) * (depth + 1)
    sig = np.full((depth, 1), s0 ** (1.0 / depth))
    model, params, mom, u, v = _mode_case(numpy_xp, widths, sig, np.array([s_star]), 5)
    rule = ac.qngd(eta, q) if math.isfinite(q) else ac.sgd(eta)
    p = theory.p_exponent(depth, q)
    eta_bar = theory.depth_calibrated_rate(eta, depth, q)
    t_end = 4.0 / (eta_bar * s_star**p)
    t_eval = [0.0, t_end / 4, t_end / 2, t_end]
    sol = ac.integrate_rule(model, params, mom, rule, (0.0, t_end), rtol=1e-10, atol=1e-12, t_eval=t_eval)
    for t, p_t in zip(t_eval, sol.y):
        got = float(backend.to_numpy(theory.mode_strengths(p_t, u, v))[0])
        expected = theory.map_strength(t, p, s_star, eta_bar, s0)
        assert abs(got - expected) <= 1e-6 * s_star


# --------------------------------------------------------------------------- integrate errors
def test_integrate_rule_errors(numpy_xp):
    model, params, batch = make_case(numpy_xp, (2, 3, 2), 4, 0)
    with pytest.raises(ValueError, match=r"rule: expected a stateless rule"):
        ac.integrate_rule(model, params, batch, ac.adam(0.1), (0.0, 1.0))
    with pytest.raises(ValueError, match=r"rule: expected a stateless rule"):
        ac.dynamics.rule_velocity(model, ac.adam(0.1), batch)
    with pytest.raises(TypeError, match=r"rule: expected an UpdateRule"):
        ac.integrate_rule(model, params, batch, "sgd", (0.0, 1.0))
    with pytest.raises(IntegrationError, match=r"max_steps"):
        ac.integrate_rule(model, params, batch, ac.ngd(1.0), (0.0, 10.0), rtol=1e-10, max_steps=3)
    nan_params = (params[0], params[1] * np.nan)
    with pytest.raises(ValueError, match=r"y0\[1\]: expected finite values"):
        ac.integrate_rule(model, nan_params, batch, ac.sgd(1.0), (0.0, 1.0))


def test_rule_velocity_is_the_direction(xp):
    model, params, batch = make_case(xp, (2, 3, 2), 4, 1)
    rule = ac.sqrt_ngd(0.3)
    fun = ac.dynamics.rule_velocity(model, rule, batch)
    value, g = ac.value_and_grad(model, params, batch)
    expected, _ = rule.update(g, rule.init(params), params, model=model, batch=batch, loss=ac.MSE(), value=value)
    assert_close(fun(0.0, params), expected, like=params[0], rtol=0.0)


# --------------------------------------------------------------------------- discrete training
def test_train_records_what_it_says(xp):
    model, params, batch = make_case(xp, (3, 4, 2), 6, 2)
    _, _, test_batch = make_case(xp, (3, 4, 2), 5, 50)
    lr = 0.1
    res = ac.train(
        model, params, batch, ac.sgd(lr), 10, record_every=3, eval_batches={"test": test_batch},
        record_params=True, record_conserved=True, record={"map": ac.models.total_map},
    )
    np.testing.assert_array_equal(res.steps, [0, 3, 6, 9, 10])
    # independent NumPy loop
    ws, bt, tb = np_of(params), np_of(batch), np_of(test_batch)
    traj = [ws]
    for _ in range(10):
        ws = [w - lr * g for w, g in zip(ws, np_grad_tree(ws, *bt))]
        traj.append(ws)
    for k, step in enumerate(res.steps):
        w_k = traj[step]
        assert res.losses[k] == pytest.approx(np_loss(w_k, *bt), rel=1e-10)
        assert res.eval_losses["test"][k] == pytest.approx(np_loss(w_k, *tb), rel=1e-10)
        for i, w in enumerate(w_k):
            np.testing.assert_allclose(res.records[f"params[{i}]"][k], w, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(res.records["c[0]"][k], w_k[0] @ w_k[0].T - w_k[1].T @ w_k[1], atol=1e-12)
        np.testing.assert_allclose(res.records["map"][k], w_k[1] @ w_k[0], rtol=1e-10, atol=1e-14)
    assert isinstance(res.losses, np.ndarray) and res.records["params[0]"].shape == (5, 4, 3)
    assert_close(res.params, traj[-1], like=params[0], rtol=1e-10)
    assert ac.rules.is_empty_state(res.state) and res.time_per_step > 0


def test_train_is_reproducible_and_leaves_inputs(numpy_xp):
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 7)
    before = np_of(params)
    runs = [ac.train(model, params, batch, ac.adam(0.05), 12, record_every=4, record_params=True) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)
    for a, b in zip(runs[0].params, runs[1].params):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert runs[0].state[1].count == 12  # chain(check, scale_by_adam, scale_by_lr)
    assert_close(params, before, rtol=0.0)


def test_train_callback_progress_and_minibatches(numpy_xp):
    model, params, batch = make_case(numpy_xp, (3, 4, 2), 8, 3)
    x, y = batch
    calls = []
    res = ac.train(model, params, batch, ac.sgd(0.1), 20, record_every=5,
                   progress=lambda s, n, loss: calls.append((s, n, loss)),
                   callback=lambda step, p, state: step == 7)
    np.testing.assert_array_equal(res.steps, [0, 5, 7])  # stopped (and recorded) at step 7
    assert [c[0] for c in calls] == list(range(8)) and all(c[1] == 20 for c in calls)
    assert calls[-1][2] == res.losses[-1]
    # minibatches: batch(step) gives the step's batch; equals a NumPy loop over them
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    res = ac.train(model, params, lambda step: halves[step % 2], ac.sgd(0.1), 4)
    ws = np_of(params)
    for step in range(4):
        ws = [w - 0.1 * g for w, g in zip(ws, np_grad_tree(ws, *np_of(halves[step % 2])))]
    assert_close(res.params, ws, like=params[0], rtol=1e-10)


def test_print_progress_prints_every_five_percent():
    out = io.StringIO()
    for step in range(41):
        ac.dynamics.print_progress(step, 40, 1.0 / (step + 1), stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 21  # step 0 and every 2 steps (5% of 40)
    assert lines[0].startswith("step  0/40") and "100.0%" in lines[-1]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_train_errors(numpy_xp):
    model, params, batch = make_case(numpy_xp, (2, 3, 2), 4, 0)
    with pytest.raises(ValueError, match=r"^params: expected a training loss below 1e\+06 x its initial value"):
        ac.train(model, params, batch, ac.sgd(1e4), 50)
    with pytest.raises(ValueError, match=r"^params: expected finite parameters"):
        ac.train(model, params, batch, ac.sgd(1e4), 50, divergence=None)
    for bad in (1.0, 0.5, float("nan"), "big"):
        with pytest.raises(ValueError, match=r"^divergence: expected"):
            ac.train(model, params, batch, ac.sgd(0.1), 5, divergence=bad)
    with pytest.raises(ValueError, match=r"num_steps: expected an integer >= 0"):
        ac.train(model, params, batch, ac.sgd(0.1), -1)
    with pytest.raises(ValueError, match=r"record_every: expected an integer >= 1"):
        ac.train(model, params, batch, ac.sgd(0.1), 5, record_every=0)
    with pytest.raises(TypeError, match=r"rule: expected an UpdateRule"):
        ac.train(model, params, batch, lambda *a: None, 5)
    with pytest.raises(TypeError, match=r"record\['bad'\]: expected a callable"):
        ac.train(model, params, batch, ac.sgd(0.1), 5, record={"bad": 3})


# --------------------------------------------------------------------------- one gradient per step
@pytest.mark.parametrize("rule", [ac.sgd(0.05), ac.adam(0.01), ac.ngd(0.1)], ids=["sgd", "adam", "ngd"])
@pytest.mark.parametrize("record_every", [1, 3])
def test_train_runs_one_forward_pass_per_step(numpy_xp, monkeypatch, rule, record_every):
    """Each step computes one value_and_grad, whose value is the recorded loss; only the
    last step needs one more forward pass (there is no next gradient). A rule that never
    reads the gradient (NGD computes its own direction) gets it only on recorded steps."""
    from arraycurv.dynamics import training

    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 2)
    calls = {"value_and_grad": 0, "forward": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(training, "value_and_grad", counting("value_and_grad", training.value_and_grad))
    monkeypatch.setattr(training, "forward", counting("forward", training.forward))
    n = 10
    res = ac.train(model, params, batch, rule, n, record_every=record_every)
    recorded_before_last = len(range(0, n, record_every))  # steps 0, r, 2r, ... < n
    expected = recorded_before_last if rule.name == "ngd" else n
    assert calls == {"value_and_grad": expected, "forward": 1}
    monkeypatch.undo()
    # the recorded losses are those of the parameters of their step (independent loop)
    ref = ac.train(model, params, batch, rule, n, record_every=1, record_params=True)
    ws, bt = np_of(params), np_of(batch)
    for k, step in enumerate(res.steps):
        p_k = [ref.records[f"params[{i}]"][step] for i in range(len(ws))]
        assert res.losses[k] == pytest.approx(np_loss(p_k, *bt), rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(0.05, 3.0), factor=st.sampled_from([2.0, 10.0, 1e3, 1e6]), seed=st.integers(0, 50),
       record_every=st.integers(1, 7))
def test_divergence_policy_stops_at_the_first_step_above_the_factor(lr, factor, seed, record_every):
    """train raises DivergenceError iff the loss trajectory of plain gradient descent
    (an independent loop) exceeds ``factor`` x its initial value within the steps, and
    names that first step, whatever the recording interval (checked every step)."""
    model, params, batch = make_case(backend.namespace_by_name("numpy"), (2, 3, 2), 4, seed)
    n = 12
    losses, p = [], tuple(params)
    with np.errstate(all="ignore"):
        for _ in range(n + 1):
            value, g = ac.value_and_grad(model, p, batch) if all(np.all(np.isfinite(t)) for t in p) else (np.inf, p)
            losses.append(float(value))
            if not np.isfinite(value):
                break
            p = tuple(w - lr * gi for w, gi in zip(p, g))
        bad = [k for k, v in enumerate(losses) if not np.isfinite(v) or v > factor * (losses[0] or 1.0)]
        if not bad:
            res = ac.train(model, params, batch, ac.sgd(lr), n, record_every=record_every, divergence=factor)
            assert res.losses[-1] == pytest.approx(losses[n], rel=1e-9)
            return
        with pytest.raises(ac.dynamics.DivergenceError) as info:
            ac.train(model, params, batch, ac.sgd(lr), n, record_every=record_every, divergence=factor)
    msg = str(info.value)
    if np.isfinite(losses[bad[0]]):
        assert f"at step {bad[0]} (rule 'sgd'" in msg and "expected a training loss below" in msg
    else:  # NaN/Inf: the loss of that step, or the parameters of the step before it
        assert re.search(rf"(at|after) step ({bad[0]}|{bad[0] - 1})\b", msg), msg


def test_train_raises_divergence_error(numpy_xp):
    model, params, batch = make_case(numpy_xp, (2, 3, 2), 4, 0)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(ac.dynamics.DivergenceError,
                                                                       match=r"at step \d+ \(rule 'sgd'"):
        ac.train(model, params, batch, ac.sgd(1e4), 50)
    assert issubclass(ac.dynamics.DivergenceError, ValueError)


def test_integrate_composed_rule_with_empty_state(numpy_xp):
    """A chain whose transforms keep no state has a continuous-time flow."""
    from arraycurv.rules import chain, clip_by_norm, scale_by_lr

    model, params, batch = make_case(numpy_xp, (3, 4, 2), 6, 3)
    rule = chain(scale_by_lr(0.2), clip_by_norm(10.0))
    assert rule.stateless
    sol = ac.integrate_rule(model, params, batch, rule, (0.0, 1.0), rtol=1e-9, atol=1e-11, t_eval=[1.0])
    ref = ac.integrate_rule(model, params, batch, ac.sgd(0.2), (0.0, 1.0), rtol=1e-9, atol=1e-11, t_eval=[1.0])
    assert_close(sol.y[-1], ref.y[-1], like=params[0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"rule: expected a stateless rule"):
        ac.integrate_rule(model, params, batch, chain(ac.rules.momentum(0.5), scale_by_lr(0.1)), (0.0, 1.0))
    # per-layer rates (partition) of stateless transforms: the flow of SGD with those rates
    rule = ac.rules.partition({"a": scale_by_lr(0.2), "b": scale_by_lr(0.4)}, ("a", "b"))
    assert ac.rules.is_stateless(rule, params)
    sol = ac.integrate_rule(model, params, batch, rule, (0.0, 0.5), rtol=1e-9, atol=1e-11, t_eval=[0.5])
    fun = ac.dynamics.rule_velocity(model, ac.sgd(1.0), batch)

    def scaled(t, p):
        g = fun(t, p)
        return (0.2 * g[0], 0.4 * g[1])

    ref = ac.dynamics.solve_ode(scaled, (0.0, 0.5), tuple(params), rtol=1e-9, atol=1e-11, t_eval=[0.5])
    assert_close(sol.y[-1], ref.y[-1], like=params[0], rtol=1e-12)
