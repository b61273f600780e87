"""Fuzz harness over the public API (issue 9): malformed calls get clear errors.

A table of a few hundred malformed calls, generated per family of signatures (model
verbs, curvature, Fisher, Kronecker factors, operators, directions, linear algebra,
rules, dynamics, params, losses, backend, data) and per category of bad input: NaN/Inf in
any array argument, Python lists for arrays, empty batches, wrong widths, mixed
namespaces, wrong dtypes, indefinite or non-symmetric input to PSD routines, bad
scalars (NaN rates, gains and scales, negative seeds, ``xp`` given as a string) and
impossible shapes. Each call must raise ``TypeError``/``ValueError`` whose message
starts with the caller's argument name: ``"<argument>: expected <what>, got <what>"``.

A second table holds valid but extreme calls (overflow-prone norms, rounding-level
negative eigenvalues, a zero gradient for Adam) that must return finite values.

``python tests/test_bad_input.py`` prints the share of clear errors and the failures.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv import curvature as cv
from arraycurv import data as dt
from arraycurv import directions as dr
from arraycurv import dynamics as dyn
from arraycurv import linalg as la
from arraycurv import losses as ls
from arraycurv import params as pr
from arraycurv import rules as ru
from arraycurv.models.layers import Activation, Conv2d, Dense, Flatten

MSE, CE = ac.MSE(), ac.SoftmaxCrossEntropy()
NAN, INF = math.nan, math.inf
STRICT = backend.namespace_by_name("array_api_strict")

CASES: list = []  # (id, argument regex, thunk)


def bad(cid: str, arg: str, fn) -> None:
    """Register a malformed call: ``fn()`` must raise naming the argument ``arg`` (a regex)."""
    CASES.append((cid, arg, fn))


def _randn(seed, *shape, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _with(a, value, index=0):
    """A copy of ``a`` with one entry set to ``value``."""
    b = np.array(a, copy=True, order="C")  # C order: the reshape below is a view
    b.reshape(-1)[index] = value
    return b


def _setp(params, i, new):
    return tuple(new if j == i else p for j, p in enumerate(params))


# ----------------------------------------------------------------------------- model verbs
def _cnn():
    return ac.Sequential((Conv2d(1, 2, 3), Activation("tanh"), Flatten(), Dense(8, 2)), (1, 4, 4))


def _problems():
    """(label, model, loss, x, y) on NumPy, B = 5, two outputs."""
    out = []
    for label, model, loss in (("deep_linear", ac.DeepLinear((3, 4, 2)), MSE), ("mlp", ac.mlp((3, 4, 2)), MSE),
                               ("mlp_ce", ac.mlp((3, 4, 2)), CE), ("cnn", _cnn(), MSE)):
        x = _randn(1, 5, *model.input_shape) if hasattr(model, "input_shape") else _randn(1, 5, 3)
        y = _randn(2, 5, 2) if loss is MSE else np.asarray([0, 1, 1, 0, 1])
        out.append((label, model, loss, x, y))
    return out


# verb name -> (kind, call(model, params, a, v, c, loss), rename); ``a`` is x or the batch (x, y)
#   kinds: "x" (model, params, x), "xv" (+ tangent), "xc" (+ cotangent), "b" (batch), "bv" (batch + v)
def _verbs():
    def q2(fn):
        return lambda m, p, a, v, c, loss: fn(m, p, a, 2.0, loss=loss)

    return {
        "forward": ("x", lambda m, p, a, v, c, loss: ac.forward(m, p, a), {}),
        "jacobian": ("x", lambda m, p, a, v, c, loss: ac.jacobian(m, p, a), {}),
        "linearize": ("x", lambda m, p, a, v, c, loss: ac.linearize(m, p, a), {}),
        "fisher_exact_matrix": ("x", lambda m, p, a, v, c, loss: cv.fisher_exact_matrix(m, p, a, loss), {}),
        "fisher_mc_matrix": ("x", lambda m, p, a, v, c, loss: cv.fisher_mc_matrix(m, p, a, loss), {}),
        "kron_factors": ("x", lambda m, p, a, v, c, loss: cv.kron_factors(m, p, a, loss), {}),
        "jvp": ("xv", lambda m, p, a, v, c, loss: ac.jvp(m, p, a, v), {"v": "tangent"}),
        "fisher_exact_vp": ("xv", lambda m, p, a, v, c, loss: cv.fisher_exact_vp(m, p, a, v, loss), {}),
        "fisher_mc_vp": ("xv", lambda m, p, a, v, c, loss: cv.fisher_mc_vp(m, p, a, v, loss), {}),
        "vjp": ("xc", lambda m, p, a, v, c, loss: ac.vjp(m, p, a, c), {}),
        "value_and_grad": ("b", lambda m, p, a, v, c, loss: ac.value_and_grad(m, p, a, loss), {}),
        "ggn_matrix": ("b", lambda m, p, a, v, c, loss: ac.ggn_matrix(m, p, a, loss), {}),
        "ggn_blocks": ("b", lambda m, p, a, v, c, loss: ac.ggn_blocks(m, p, a, loss), {}),
        "ggn_block_diag": ("b", lambda m, p, a, v, c, loss: ac.ggn_block_diag(m, p, a, loss), {}),
        "hessian_matrix": ("b", lambda m, p, a, v, c, loss: ac.hessian_matrix(m, p, a, loss), {}),
        "fisher_empirical_matrix": ("b", lambda m, p, a, v, c, loss: cv.fisher_empirical_matrix(m, p, a, loss), {}),
        "fisher_kron_factors": ("b", lambda m, p, a, v, c, loss: cv.fisher_kron_factors(m, p, a, loss), {}),
        "per_sample_grads": ("b", lambda m, p, a, v, c, loss: cv.per_sample_grads(m, p, a, loss), {}),
        "ggn_operator": ("b", lambda m, p, a, v, c, loss: cv.ggn_operator(m, p, a, loss), {}),
        "hessian_operator": ("b", lambda m, p, a, v, c, loss: cv.hessian_operator(m, p, a, loss), {}),
        "fisher_operator": ("b", lambda m, p, a, v, c, loss: cv.fisher_operator(m, p, a, loss), {}),
        "qngd_direction": ("b", q2(dr.qngd_direction), {}),
        "qngd_direction_full": ("b", q2(dr.qngd_direction_full), {}),
        "qngd_direction_dual": ("b", q2(dr.qngd_direction_dual), {}),
        "qngd_blockdiag_direction": ("b", q2(dr.qngd_blockdiag_direction), {}),
        "kfac_qngd_direction": ("b", q2(dr.kfac_qngd_direction), {}),
        "regularized_ngd_direction": ("b", lambda m, p, a, v, c, loss: dr.regularized_ngd_direction(
            m, p, a, 0.1, loss=loss), {}),
        "ggn_vp": ("bv", lambda m, p, a, v, c, loss: ac.ggn_vp(m, p, a, v, loss), {}),
        "hvp": ("bv", lambda m, p, a, v, c, loss: ac.hvp(m, p, a, v, loss), {}),
        "fisher_empirical_vp": ("bv", lambda m, p, a, v, c, loss: cv.fisher_empirical_vp(m, p, a, v, loss), {}),
    }


def _model_cases():
    for label, model, loss, x, y in _problems():
        params = ac.init_params(model, 0)
        v = ac.init_params(model, 1)
        c = _randn(3, 5, 2)
        for verb, (kind, call, rename) in _verbs().items():
            if verb == "fisher_kron_factors" and label != "deep_linear":
                continue  # the closed form of deep linear networks only (Sequential: kron_factors)
            xn = "x" if kind.startswith("x") else "batch x"
            yn = "batch y"
            vn = rename.get("v", "v")
            base = dict(p=params, x=x, y=y, v=v, c=c)

            def add(cat, arg, model=model, loss=loss, call=call, base=base, kind=kind, verb=verb, label=label, **over):
                kw = {**base, **over}
                a = kw["x"] if kind.startswith("x") else (kw["x"], kw["y"])
                if "batch" in over:
                    a = over["batch"]
                bad(f"{verb}-{label}-{cat}", arg, lambda: call(model, kw["p"], a, kw["v"], kw["c"], loss))

            add("params-list", r"params(\[0\])?", p=[p.tolist() for p in params])
            add("params-nan", r"params\[0\]", p=_setp(params, 0, _with(params[0], NAN)))
            add("params-inf", r"params\[\d\]", p=_setp(params, len(params) - 1, _with(params[-1], INF)))
            add("params-shape", r"params\[0\]", p=_setp(params, 0, params[0][..., :1]))
            add("params-short", r"params", p=params[:-1])
            add("params-int", r"params(\[\d\])?", p=tuple(np.zeros(q.shape, dtype=np.int64) for q in params))
            add("params-f16", r"params(\[\d\])?", p=tuple(q.astype(np.float16) for q in params))
            add("params-mixed-f32", r"params\[\d\]", p=_setp(params, 0, params[0].astype(np.float32)))
            add("x-list", xn, x=x.tolist())
            add("x-nan", xn, x=_with(x, NAN, 3))
            add("x-inf", xn, x=_with(x, -INF))
            add("x-empty", xn, x=x[:0], y=y[:0], c=c[:0])
            add("x-width", xn, x=np.concatenate([x, x], axis=-1))
            add("x-ndim", xn, x=x[0])
            add("x-int", xn, x=np.zeros(x.shape, dtype=np.int64))
            add("x-f32", xn, x=x.astype(np.float32))
            add("x-complex", xn, x=x.astype(np.complex128))
            add("x-strict", xn, x=STRICT.asarray(x))
            if kind.startswith("b"):
                add("batch-bare-x", "batch", batch=x)
                add("batch-triple", "batch", batch=(x, y, y))
                add("y-list", yn, y=y.tolist())
                add("y-batch", r"batch( y)?", y=y[:4])
                add("y-strict", yn, y=STRICT.asarray(y))
                if loss is MSE:
                    add("y-nan", yn, y=_with(y, NAN))
                    add("y-width", yn, y=np.concatenate([y, y], axis=-1))
                    add("y-f32", yn, y=y.astype(np.float32))
                    add("y-int", yn, y=np.zeros(y.shape, dtype=np.int64))
                else:
                    add("y-range", yn, y=y + 5)
                    add("y-negative", yn, y=y - 3)
                    add("y-float", yn, y=y.astype(np.float64))
                    add("y-2d", yn, y=np.stack([y, y], axis=1))
            if kind.endswith("v"):
                add("v-list", rf"{vn}(\[0\])?", v=[q.tolist() for q in v])
                add("v-nan", rf"{vn}\[\d\]", v=_setp(v, 0, _with(v[0], NAN)))
                add("v-shape", rf"{vn}\[0\]", v=_setp(v, 0, v[0][..., :1]))
                add("v-short", vn, v=v[:-1])
                add("v-f32", rf"{vn}\[\d\]", v=tuple(q.astype(np.float32) for q in v))
                add("v-strict", rf"{vn}\[\d\]", v=tuple(STRICT.asarray(q) for q in v))
            if kind == "xc":
                add("c-list", "cotangent", c=c.tolist())
                add("c-nan", "cotangent", c=_with(c, NAN))
                add("c-width", "cotangent", c=np.concatenate([c, c], axis=-1))
                add("c-batch", "cotangent", c=c[:3])
        bad(f"forward-{label}-model-string", "model", lambda params=params, x=x: ac.forward("mlp", params, x))


_model_cases()


# ----------------------------------------------------------------------------- deep linear extras
def _deep_linear_cases():
    model = ac.DeepLinear((3, 4, 2))
    params = ac.init_params(model, 0)
    x, y = _randn(1, 5, 3), _randn(2, 5, 2)
    mom = ac.models.moments(x, y)
    bad("moments-x-list", "x", lambda: ac.models.moments(x.tolist(), y))
    bad("moments-y-list", "y", lambda: ac.models.moments(x, y.tolist()))
    bad("moments-x-nan", "x", lambda: ac.models.moments(_with(x, NAN), y))
    bad("moments-empty", "x", lambda: ac.models.moments(x[:0], y[:0]))
    bad("moments-batch", r"(x|y)", lambda: ac.models.moments(x, y[:4]))
    bad("moments-strict", "y", lambda: ac.models.moments(x, STRICT.asarray(y)))
    bad("whitened-moments-nan", "target_map", lambda: ac.models.whitened_moments(_with(_randn(4, 2, 3), NAN)))
    bad("whitened-moments-list", "target_map", lambda: ac.models.whitened_moments(_randn(4, 2, 3).tolist()))
    bad("whitened-moments-syy", "syy", lambda: ac.models.whitened_moments(_randn(4, 2, 3), _randn(5, 3, 3)))
    bad("total-map-list", r"params(\[0\])?", lambda: ac.models.total_map([p.tolist() for p in params]))
    bad("total-map-nan", r"params\[0\]", lambda: ac.models.total_map(_setp(params, 0, _with(params[0], NAN))))
    bad("total-map-chain", r"params\[1\]", lambda: ac.models.total_map((params[0], params[0])))
    bad("partial-products-list", r"params(\[0\])?", lambda: ac.models.partial_products([p.tolist() for p in params]))
    for verb in ("ggn_matrix", "value_and_grad", "hessian_matrix"):
        fn = getattr(ac, verb)
        bad(f"{verb}-moments-nan", r"batch\.sxx", lambda fn=fn: fn(model, params, ac.models.LinearMoments(
            _with(mom.sxx, NAN), mom.syx, mom.syy, mom.count)))
        bad(f"{verb}-moments-shape", r"batch\.syx", lambda fn=fn: fn(model, params, ac.models.LinearMoments(
            mom.sxx, mom.syx[:1], mom.syy, mom.count)))
        bad(f"{verb}-moments-ce", "(batch|loss)", lambda fn=fn: fn(model, params, mom, CE))
    bad("map-jacobian-list", r"params(\[0\])?", lambda: cv.map_jacobian(model, [p.tolist() for p in params]))
    bad("null-space-basis-nan", r"params\[0\]", lambda: cv.null_space_basis(
        model, _setp(params, 0, _with(params[0], NAN))))
    bad("null-space-direction-i", "i", lambda: cv.null_space_direction(params, 7, 0))
    bad("null-space-direction-m", "m", lambda: cv.null_space_direction(params, 1, -1))
    bad("qngd-map-x-width", "batch x", lambda: dr.qngd_direction_map(model, params, (_randn(1, 5, 4), y), 2.0))
    bad("qngd-map-y-width", "batch y", lambda: dr.qngd_direction_map(model, params, (x, _randn(1, 5, 3)), 2.0))
    bad("qngd-map-empty", "batch x", lambda: dr.qngd_direction_map(model, params, (x[:0], y[:0]), 2.0))
    bad("qngd-map-nan", "batch x", lambda: dr.qngd_direction_map(model, params, (_with(x, NAN), y), 2.0))
    bad("init-params-seed", "seed", lambda: ac.init_params(model, -1))
    bad("init-params-xp", "xp", lambda: ac.init_params(model, 0, "numpy"))
    bad("init-params-dtype", "dtype", lambda: ac.init_params(model, 0, dtype="int32"))
    bad("init-params-scale", "scale", lambda: ac.init_params(model, 0, scale=NAN))
    bad("init-params-method", "method", lambda: ac.init_params(model, 0, method="bogus"))


# ----------------------------------------------------------------------------- directions, q and friends
def _direction_cases():
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    batch = (_randn(1, 5, 3), _randn(2, 5, 2))
    for name in ("qngd_direction", "qngd_direction_full", "qngd_direction_dual", "qngd_blockdiag_direction",
                 "kfac_qngd_direction"):
        fn = getattr(dr, name)
        bad(f"{name}-q-half", "q", lambda fn=fn: fn(model, params, batch, 0.5))
        bad(f"{name}-q-nan", "q", lambda fn=fn: fn(model, params, batch, NAN))
        bad(f"{name}-q-str", "q", lambda fn=fn: fn(model, params, batch, "2"))
        bad(f"{name}-damping-neg", "damping", lambda fn=fn: fn(model, params, batch, 2.0, damping=-1.0))
        bad(f"{name}-damping-nan", "damping", lambda fn=fn: fn(model, params, batch, 2.0, damping=NAN))
        bad(f"{name}-rcond-neg", "rcond", lambda fn=fn: fn(model, params, batch, 2.0, rcond=-1.0))
        bad(f"{name}-loss-str", "loss", lambda fn=fn: fn(model, params, batch, 2.0, loss="mse"))
    bad("qngd-form", "form", lambda: dr.qngd_direction(model, params, batch, 2.0, form="bogus"))
    bad("regularized-eps-neg", "eps", lambda: dr.regularized_ngd_direction(model, params, batch, -1.0))
    bad("regularized-eps-nan", "eps", lambda: dr.regularized_ngd_direction(model, params, batch, NAN))
    bad("regularized-form", "form", lambda: dr.regularized_ngd_direction(model, params, batch, 0.1, form="x"))
    bad("kfac-fisher", "fisher", lambda: dr.kfac_qngd_direction(model, params, batch, 2.0, fisher="bogus"))
    bad("kfac-num-samples", "num_samples", lambda: dr.kfac_qngd_direction(model, params, batch, 2.0, fisher="mc",
                                                                           num_samples=0))
    bad("kfac-seed", "seed", lambda: dr.kfac_qngd_direction(model, params, batch, 2.0, fisher="mc", seed=-1))
    bad("kfac-normalize", "normalize", lambda: dr.kfac_qngd_direction(model, params, batch, 2.0, normalize="yes"))
    bad("fisher-mc-num-samples", "num_samples", lambda: cv.fisher_mc_vp(model, params, batch[0], params,
                                                                         num_samples=0))
    bad("fisher-mc-seed", "seed", lambda: cv.fisher_mc_matrix(model, params, batch[0], seed=-1))
    bad("fisher-operator-variant", "variant", lambda: cv.fisher_operator(model, params, batch, variant="bogus"))
    bad("kron-factors-fisher", "fisher", lambda: cv.kron_factors(model, params, batch[0], fisher="bogus"))
    d = tuple(np.ones_like(p) for p in params)
    bad("clip-direction-nan", "max_norm", lambda: dr.clip_direction(d, NAN))
    bad("clip-direction-neg", "max_norm", lambda: dr.clip_direction(d, -1.0))
    bad("clip-direction-str", "max_norm", lambda: dr.clip_direction(d, "1"))
    bad("clip-direction-list", r"direction(\[0\])?", lambda: dr.clip_direction([p.tolist() for p in d], 1.0))
    bad("clip-direction-nan-entry", r"direction\[0\]", lambda: dr.clip_direction(_setp(d, 0, _with(d[0], NAN)), 1.0))
    bad("kfac-block-type", "factors", lambda: cv.kfac_block("not factors"))


# ----------------------------------------------------------------------------- linear algebra
def _linalg_cases():
    a = _randn(0, 4, 4)
    spd = a @ a.T + np.eye(4)
    b = np.eye(3) * 2.0
    x = _randn(1, 4, 3)
    for name in ("psd_power", "pinv_power"):
        fn = getattr(la, name)
        if name == "psd_power":
            bad(f"{name}-nonsquare", "a", lambda fn=fn: fn(spd[:, :3], 0.5))
            bad(f"{name}-nonsym", "a", lambda fn=fn: fn(spd + np.triu(np.ones((4, 4)), 1), 0.5))
        bad(f"{name}-list", "a", lambda fn=fn: fn(spd.tolist(), 0.5))
        bad(f"{name}-nan", "a", lambda fn=fn: fn(_with(spd, NAN), 0.5))
        bad(f"{name}-inf", "a", lambda fn=fn: fn(_with(spd, INF), 0.5))
        bad(f"{name}-vector", "a", lambda fn=fn: fn(spd[0], 0.5))
        bad(f"{name}-int", "a", lambda fn=fn: fn(np.eye(4, dtype=np.int64), 0.5))
        bad(f"{name}-complex", "a", lambda fn=fn: fn(spd.astype(np.complex128), 0.5))
        bad(f"{name}-p-nan", "p", lambda fn=fn: fn(spd, NAN))
        bad(f"{name}-p-str", "p", lambda fn=fn: fn(spd, "0.5"))
        bad(f"{name}-rcond", "rcond", lambda fn=fn: fn(spd, 0.5, rcond=-1.0))
        bad(f"{name}-damping-neg", "damping", lambda fn=fn: fn(spd, 0.5, damping=-1.0))
        bad(f"{name}-damping-nan", "damping", lambda fn=fn: fn(spd, 0.5, damping=NAN))
    bad("psd-power-indefinite", "a", lambda: la.psd_power(-np.eye(3), 0.5))
    bad("psd-power-indefinite-mixed", "a", lambda: la.psd_power(np.diag([1.0, -0.5, 2.0]), -1.0))
    bad("kron-list", "a", lambda: la.kron(spd.tolist(), b))
    bad("kron-b-vector", "b", lambda: la.kron(spd, b[0]))
    bad("kron-b-strict", "b", lambda: la.kron(spd, STRICT.asarray(b)))
    bad("kron-b-f32", "b", lambda: la.kron(spd, b.astype(np.float32)))
    bad("kron-nan", "a", lambda: la.kron(_with(spd, NAN), b))
    bad("kron-matvec-x-shape", "x", lambda: la.kron_matvec(spd, b, x.T))
    bad("kron-matvec-x-nan", "x", lambda: la.kron_matvec(spd, b, _with(x, NAN)))
    bad("kron-matvec-x-list", "x", lambda: la.kron_matvec(spd, b, x.tolist()))
    bad("kron-matvec-b-list", "b", lambda: la.kron_matvec(spd, b.tolist(), x))
    bad("kron-matvec-x-strict", "x", lambda: la.kron_matvec(spd, b, STRICT.asarray(x)))
    bad("kron-matvec-x-int", "x", lambda: la.kron_matvec(spd, b, np.ones((4, 3), dtype=np.int64)))
    for name in ("kron_psd_power_apply",):
        fn = getattr(la, name)
        bad(f"{name}-a-nonsym", "a", lambda fn=fn: fn(spd + np.triu(np.ones((4, 4)), 1), b, x, 0.5))
        bad(f"{name}-b-indef", "b", lambda fn=fn: fn(spd, -b, x, 0.5))
        bad(f"{name}-x-shape", "x", lambda fn=fn: fn(spd, b, x.T, 0.5))
        bad(f"{name}-x-nan", "x", lambda fn=fn: fn(spd, b, _with(x, NAN), 0.5))
        bad(f"{name}-p-nan", "p", lambda fn=fn: fn(spd, b, x, NAN))
        bad(f"{name}-damping", "damping", lambda fn=fn: fn(spd, b, x, 0.5, damping=-1.0))
        bad(f"{name}-rcond", "rcond", lambda fn=fn: fn(spd, b, x, 0.5, rcond=NAN))
        bad(f"{name}-a-list", "a", lambda fn=fn: fn(spd.tolist(), b, x, 0.5))
    bad("kron-solve-c-shape", "c", lambda: la.kron_solve(spd, b, x.T))
    bad("kron-solve-c-nan", "c", lambda: la.kron_solve(spd, b, _with(x, NAN)))
    bad("kron-solve-a-nonsquare", "a", lambda: la.kron_solve(spd[:, :3], b, x))
    bad("sylvester-c-shape", "c", lambda: la.solve_sylvester(spd, b, x.T))
    bad("sylvester-c-nan", "c", lambda: la.solve_sylvester(spd, b, _with(x, NAN)))
    bad("sylvester-a-list", "a", lambda: la.solve_sylvester(spd.tolist(), b, x))
    bad("sylvester-b-nonsym", "b", lambda: la.solve_sylvester(spd, b + np.triu(np.ones((3, 3)), 1), x))
    bad("sylvester-rcond", "rcond", lambda: la.solve_sylvester(spd, b, x, rcond=-1.0))
    bad("gen-sylvester-terms", "terms", lambda: la.solve_generalized_sylvester("ab", x))
    bad("gen-sylvester-terms-empty", "terms", lambda: la.solve_generalized_sylvester([], x))
    bad("gen-sylvester-term-shape", r"(terms\[0\]|c)", lambda: la.solve_generalized_sylvester([(spd, b[:2, :2])], x))
    bad("gen-sylvester-c-nan", "c", lambda: la.solve_generalized_sylvester([(spd, b)], _with(x, NAN)))
    bad("gen-sylvester-method", "method", lambda: la.solve_generalized_sylvester([(spd, b)], x, method="bogus"))


# ----------------------------------------------------------------------------- params
def _params_cases():
    t = (np.ones((2, 3)), np.ones(2))
    bad("flatten-list", r"params(\[0\])?", lambda: pr.flatten([q.tolist() for q in t]))
    bad("flatten-array", "params", lambda: pr.flatten(np.ones(3)))
    bad("flatten-strict", r"params\[1\]", lambda: pr.flatten((t[0], STRICT.asarray(t[1]))))
    bad("flatten-f32", r"params\[1\]", lambda: pr.flatten((t[0], t[1].astype(np.float32))))
    bad("unflatten-length", "vector", lambda: pr.unflatten(np.ones(7), [(2, 3), (2,)]))
    bad("unflatten-list", "vector", lambda: pr.unflatten([1.0] * 8, [(2, 3), (2,)]))
    bad("unflatten-2d", "vector", lambda: pr.unflatten(np.ones((8, 1)), [(2, 3), (2,)]))
    bad("unflatten-shapes", "shapes", lambda: pr.unflatten(np.ones(8), [(2, -3), (2,)]))
    bad("num-params-negative", "shapes", lambda: pr.num_params([(2, -3)]))
    bad("num-params-str", "shapes", lambda: pr.num_params("ab"))
    bad("shapes-of-list", r"params(\[0\])?", lambda: pr.shapes_of([[1.0, 2.0]]))
    for name in ("tree_add", "tree_sub", "tree_vdot"):
        fn = getattr(pr, name)
        bad(f"{name}-length", "b", lambda fn=fn: fn(t, t[:1]))
        bad(f"{name}-shape", r"b\[0\]", lambda fn=fn: fn(t, (t[0].T, t[1])))
        bad(f"{name}-list", r"a(\[0\])?", lambda fn=fn: fn([q.tolist() for q in t], t))
        bad(f"{name}-strict", r"b\[0\]", lambda fn=fn: fn(t, (STRICT.asarray(t[0]), STRICT.asarray(t[1]))))
    bad("tree-scale-nan", "s", lambda: pr.tree_scale(t, NAN))
    bad("tree-scale-str", "s", lambda: pr.tree_scale(t, "2"))
    bad("tree-scale-list", r"a(\[0\])?", lambda: pr.tree_scale([q.tolist() for q in t], 2.0))
    bad("tree-axpy-nan", "alpha", lambda: pr.tree_axpy(NAN, t, t))
    bad("tree-axpy-length", "y", lambda: pr.tree_axpy(1.0, t, t[:1]))
    bad("tree-norm-list", r"a(\[0\])?", lambda: pr.tree_norm([q.tolist() for q in t]))
    bad("tree-norm-array", "a", lambda: pr.tree_norm(np.ones(3)))
    bad("tree-zeros-list", r"a(\[0\])?", lambda: pr.tree_zeros_like([q.tolist() for q in t]))
    bad("tree-map-fn", "fn", lambda: pr.tree_map("f", t))
    bad("tree-map-length", r"trees(\[1\])?", lambda: pr.tree_map(lambda u, w: u + w, t, t[:1]))


# ----------------------------------------------------------------------------- rules
def _rule_cases():
    for name in ("sgd", "ngd", "ngd_d", "sqrt_ngd", "sqrt_ngd_d"):
        fn = getattr(ru, name)
        bad(f"{name}-lr-nan", "lr", lambda fn=fn: fn(NAN))
        bad(f"{name}-lr-neg", "lr", lambda fn=fn: fn(-0.1))
        bad(f"{name}-lr-str", "lr", lambda fn=fn: fn("0.1"))
        bad(f"{name}-lr-inf", "lr", lambda fn=fn: fn(INF))
    bad("adam-lr-nan", "lr", lambda: ru.adam(NAN))
    bad("adam-b1", "b1", lambda: ru.adam(0.1, b1=1.5))
    bad("adam-b2-nan", "b2", lambda: ru.adam(0.1, b2=NAN))
    bad("adam-eps-neg", "eps", lambda: ru.adam(0.1, eps=-1e-8))
    bad("adam-eps-nan", "eps", lambda: ru.adam(0.1, eps=NAN))
    bad("scale-by-adam-eps", "eps", lambda: ru.scale_by_adam(eps=-1.0))
    bad("scale-by-adam-b1", "b1", lambda: ru.scale_by_adam(b1=NAN))
    bad("momentum-nan", "beta", lambda: ru.momentum(NAN))
    bad("momentum-one", "beta", lambda: ru.momentum(1.5))
    bad("momentum-nesterov", "nesterov", lambda: ru.momentum(0.9, nesterov="yes"))
    bad("ema-nan", "decay", lambda: ru.ema(NAN))
    bad("ema-range", "decay", lambda: ru.ema(2.0))
    bad("clip-by-norm-nan", "max_norm", lambda: ru.clip_by_norm(NAN))
    bad("clip-by-norm-zero", "max_norm", lambda: ru.clip_by_norm(0.0))
    bad("scale-by-lr-nan", "lr", lambda: ru.scale_by_lr(NAN))
    bad("scale-by-lr-str", "lr", lambda: ru.scale_by_lr("0.1"))
    bad("qngd-q", "q", lambda: ru.qngd(0.1, 0.5))
    bad("qngd-lr", "lr", lambda: ru.qngd(NAN, 2.0))
    bad("qngd-damping", "damping", lambda: ru.qngd(0.1, 2.0, damping=-1.0))
    bad("qngd-clip", "clip", lambda: ru.qngd(0.1, 2.0, clip=0.0))
    bad("qngd-rcond", "rcond", lambda: ru.qngd(0.1, 2.0, rcond=NAN))
    bad("rule-qngd-form", "form", lambda: ru.qngd(0.1, 2.0, form="bogus"))
    bad("qngd-blockdiag-q", "q", lambda: ru.qngd_blockdiag(0.1, NAN))
    bad("regularized-ngd-eps", "eps", lambda: ru.regularized_ngd(0.1, -1.0))
    bad("regularized-ngd-lr", "lr", lambda: ru.regularized_ngd(NAN, 0.1))
    bad("make-rule-name", "name", lambda: ru.make_rule("bogus", 0.1))
    bad("rule-by-name", "name", lambda: ru.rule_by_name("bogus", 0.1))
    bad("rule-spec", "name", lambda: ru.rule_spec("bogus"))
    bad("rule-label", "name", lambda: ru.rule_label("bogus"))
    bad("rule-q", "name", lambda: ru.rule_q(3))
    bad("chain-not-rule", r"rules(\[0\])?", lambda: ru.chain("sgd"))
    bad("precondition-fn", "direction_fn", lambda: ru.precondition("qngd"))
    bad("partition-transforms", "transforms", lambda: ru.partition("x", ("a",)))
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    bad("apply-direction-length", "direction", lambda: ru.apply_direction(params, params[:1]))
    bad("apply-direction-shape", r"direction\[0\]", lambda: ru.apply_direction(params, _setp(params, 0, params[0].T)))
    bad("apply-direction-list", r"direction(\[0\])?", lambda: ru.apply_direction(params, [p.tolist() for p in params]))
    bad("apply-direction-nan", r"direction\[0\]", lambda: ru.apply_direction(
        params, _setp(params, 0, _with(params[0], NAN))))
    grads = tuple(np.ones_like(p) for p in params)
    rule = ru.sgd(0.1)
    bad("sgd-update-grads-nan", r"grads\[0\]", lambda: rule.update(_setp(grads, 0, _with(grads[0], NAN)),
                                                                   rule.init(params), params))
    bad("sgd-update-grads-shape", r"grads(\[0\])?", lambda: rule.update(grads[:1], rule.init(params), params))


# ----------------------------------------------------------------------------- dynamics
def _dynamics_cases():
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    batch = (_randn(1, 5, 3), _randn(2, 5, 2))
    rule = ru.sgd(0.1)
    bad("train-num-steps", "num_steps", lambda: dyn.train(model, params, batch, rule, -1))
    bad("train-num-steps-float", "num_steps", lambda: dyn.train(model, params, batch, rule, 2.5))
    bad("train-record-every", "record_every", lambda: dyn.train(model, params, batch, rule, 2, record_every=0))
    bad("train-rule", "rule", lambda: dyn.train(model, params, batch, "sgd", 2))
    bad("train-x-width", "batch x", lambda: dyn.train(model, params, (_randn(1, 5, 4), batch[1]), rule, 2))
    bad("train-x-nan", "batch x", lambda: dyn.train(model, params, (_with(batch[0], NAN), batch[1]), rule, 2))
    bad("train-empty", "batch x", lambda: dyn.train(model, params, (batch[0][:0], batch[1][:0]), rule, 2))
    bad("train-params-list", r"params(\[0\])?", lambda: dyn.train(model, [p.tolist() for p in params], batch, rule, 2))
    bad("train-eval-batches", r"eval_batches\['test'\] x", lambda: dyn.train(model, params, batch, rule, 2,
                                                                 eval_batches={"test": (_randn(1, 5, 4), batch[1])}))
    bad("integrate-t-span-nan", "t_span", lambda: dyn.integrate_rule(model, params, batch, rule, (0.0, NAN)))
    bad("integrate-t-span-len", "t_span", lambda: dyn.integrate_rule(model, params, batch, rule, (0.0,)))
    bad("integrate-rtol", "rtol", lambda: dyn.integrate_rule(model, params, batch, rule, (0.0, 1.0), rtol=-1.0))
    bad("integrate-atol", "atol", lambda: dyn.integrate_rule(model, params, batch, rule, (0.0, 1.0), atol=NAN))
    bad("integrate-x-nan", "batch x", lambda: dyn.integrate_rule(model, params, (_with(batch[0], NAN), batch[1]),
                                                                  rule, (0.0, 1.0)))
    y0 = np.ones(3)

    def f(t, y):
        return -y

    bad("solve-ode-t-span", "t_span", lambda: dyn.solve_ode(f, (0.0, NAN), y0))
    bad("solve-ode-rtol", "rtol", lambda: dyn.solve_ode(f, (0.0, 1.0), y0, rtol=NAN))
    bad("solve-ode-atol", "atol", lambda: dyn.solve_ode(f, (0.0, 1.0), y0, atol=-1.0))
    bad("solve-ode-y0-nan", "y0", lambda: dyn.solve_ode(f, (0.0, 1.0), _with(y0, NAN)))
    bad("solve-ode-y0-list", r"y0(\[0\])?", lambda: dyn.solve_ode(f, (0.0, 1.0), [1.0, 2.0]))
    bad("solve-ode-fun", "fun", lambda: dyn.solve_ode("f", (0.0, 1.0), y0))
    bad("solve-ode-t-eval", "t_eval", lambda: dyn.solve_ode(f, (0.0, 1.0), y0, t_eval=[0.5, 2.0]))
    bad("solve-ode-first-step", "first_step", lambda: dyn.solve_ode(f, (0.0, 1.0), y0, first_step=-1.0))
    bad("rk4-num-steps", "num_steps", lambda: dyn.rk4_fixed(f, (0.0, 1.0), y0, 0))
    bad("rk4-t-span", "t_span", lambda: dyn.rk4_fixed(f, (0.0, INF), y0, 4))
    bad("rule-velocity-rule", "rule", lambda: dyn.rule_velocity(model, "sgd", batch))


# ----------------------------------------------------------------------------- losses
def _loss_cases():
    out, y = _randn(0, 5, 3), _randn(1, 5, 3)
    lab = np.asarray([0, 1, 2, 1, 0])
    for loss, tgt in ((MSE, y), (CE, lab)):
        k = type(loss).__name__
        bad(f"loss-value-{k}-nan", "outputs", lambda loss=loss, tgt=tgt: ls.loss_value(loss, _with(out, NAN), tgt))
        bad(f"loss-value-{k}-list", "outputs", lambda loss=loss, tgt=tgt: ls.loss_value(loss, out.tolist(), tgt))
        bad(f"loss-value-{k}-empty", "outputs", lambda loss=loss, tgt=tgt: ls.loss_value(loss, out[:0], tgt[:0]))
        bad(f"loss-value-{k}-tgt-batch", "targets", lambda loss=loss, tgt=tgt: ls.loss_value(loss, out, tgt[:4]))
        bad(f"loss-grad-{k}-list", "targets", lambda loss=loss, tgt=tgt: ls.loss_grad(loss, out, tgt.tolist()))
        bad(f"loss-grad-{k}-strict", "targets", lambda loss=loss, tgt=tgt: ls.loss_grad(loss, out,
                                                                                       STRICT.asarray(tgt)))
        bad(f"loss-hessian-{k}-nan", "outputs", lambda loss=loss: ls.loss_hessian(loss, _with(out, INF)))
        bad(f"loss-hessian-{k}-1d", "outputs", lambda loss=loss: ls.loss_hessian(loss, out[0]))
        bad(f"loss-hessian-factor-{k}-list", "outputs", lambda loss=loss: ls.loss_hessian_factor(loss, out.tolist()))
        bad(f"loss-hvp-{k}-v", "v", lambda loss=loss: ls.loss_hessian_vp(loss, out, out[:, :2]))
        bad(f"loss-hvp-{k}-v-nan", "v", lambda loss=loss: ls.loss_hessian_vp(loss, out, _with(out, NAN)))
        bad(f"sample-targets-{k}-seed", "seed", lambda loss=loss: ls.sample_targets(loss, out, -1))
        bad(f"sample-targets-{k}-n", "num_samples", lambda loss=loss: ls.sample_targets(loss, out, 0, 0))
        bad(f"loss-value-{k}-int-outputs", "outputs", lambda loss=loss, tgt=tgt: ls.loss_value(
            loss, np.ones((5, 3), dtype=np.int64), tgt))
    bad("loss-value-mse-width", "targets", lambda: ls.loss_value(MSE, out, y[:, :2]))
    bad("loss-value-mse-f32", "targets", lambda: ls.loss_value(MSE, out, y.astype(np.float32)))
    bad("loss-value-ce-range", "targets", lambda: ls.loss_value(CE, out, lab + 3))
    bad("loss-value-ce-neg", "targets", lambda: ls.loss_value(CE, out, lab - 1))
    bad("loss-value-ce-float", "targets", lambda: ls.loss_value(CE, out, lab.astype(np.float64)))
    bad("loss-value-str-loss", "loss", lambda: ls.loss_value("mse", out, y))
    bad("check-target-shape-loss", "loss", lambda: ls.check_target_shape("mse", y, (5, 3)))


# ----------------------------------------------------------------------------- backend and data
def _backend_cases():
    bad("rng-negative", "seed", lambda: backend.rng(-1))
    bad("rng-str", "seed", lambda: backend.rng("a"))
    bad("rng-float", "seed", lambda: backend.rng(1.5))
    bad("normal-seed", "seed", lambda: backend.normal(-1, (2,)))
    bad("normal-xp-str", "xp", lambda: backend.normal(0, (2,), "numpy"))
    bad("normal-shape", "shape", lambda: backend.normal(0, (-1,)))
    bad("normal-scale", "scale", lambda: backend.normal(0, (2,), scale=NAN))
    bad("normal-dtype", "dtype", lambda: backend.normal(0, (2,), dtype="int32"))
    bad("uniform-low-high", r"(low|high)", lambda: backend.uniform(0, (2,), low=1.0, high=0.0))
    bad("uniform-nan", "low", lambda: backend.uniform(0, (2,), low=NAN))
    bad("uniform-xp", "xp", lambda: backend.uniform(0, (2,), "torch"))
    bad("integers-range", r"(low|high)", lambda: backend.integers(0, 5, 2, (3,)))
    bad("integers-seed", "seed", lambda: backend.integers(-3, 0, 2, (3,)))
    bad("integers-xp", "xp", lambda: backend.integers(0, 0, 2, (3,), "numpy"))
    bad("orthogonal-gain", "gain", lambda: backend.orthogonal(0, (3, 3), gain=NAN))
    bad("orthogonal-shape", "shape", lambda: backend.orthogonal(0, (3,)))
    bad("orthogonal-seed", "seed", lambda: backend.orthogonal(-2, (3, 3)))
    bad("orthogonal-xp", "xp", lambda: backend.orthogonal(0, (3, 3), "numpy"))
    bad("from-numpy-xp", "xp", lambda: backend.from_numpy(np.ones(2), "numpy"))
    bad("from-numpy-dtype", "dtype", lambda: backend.from_numpy(np.ones(2), np, dtype="float16"))
    bad("float-dtype-xp", "xp", lambda: backend.float_dtype("numpy"))
    bad("float-dtype", "dtype", lambda: backend.float_dtype(np, "int32"))
    bad("namespace-by-name", "backend", lambda: backend.namespace_by_name("nope"))
    bad("namespace-by-name-int", "backend", lambda: backend.namespace_by_name(3))
    bad("namespace-of-none", "arrays", lambda: backend.namespace_of())
    bad("namespace-of-mixed", "b", lambda: backend.namespace_of(a=np.ones(2), b=STRICT.ones(2)))
    bad("check-float-list", "x", lambda: backend.check_float([1.0], "x"))
    bad("check-float-int", "x", lambda: backend.check_float(np.ones(2, dtype=np.int64), "x"))
    bad("to-device-list", "x", lambda: backend.to_device([1.0], "cpu"))


def _data_cases():
    bad("huh-n", "n", lambda: dt.huh_teacher_student(n=0))
    bad("huh-rank", "rank", lambda: dt.huh_teacher_student(n=4, rank=5))
    bad("huh-seed", "seed", lambda: dt.huh_teacher_student(n=4, rank=2, seed=-1))
    bad("huh-xp", "xp", lambda: dt.huh_teacher_student(n=4, rank=2, xp="numpy"))
    bad("huh-noise", "noise_std", lambda: dt.huh_teacher_student(n=4, rank=2, noise_std=NAN))
    bad("huh-noise-neg", "noise_std", lambda: dt.huh_teacher_student(n=4, rank=2, noise_std=-1.0))
    bad("huh-num-test", "num_test", lambda: dt.huh_teacher_student(n=4, rank=2, num_test=-1))
    bad("huh-num-train", "num_train", lambda: dt.huh_teacher_student(n=4, rank=2, num_train=0))
    bad("huh-dtype", "dtype", lambda: dt.huh_teacher_student(n=4, rank=2, dtype="int32"))
    bad("huh-singular-values", "teacher_singular_values", lambda: dt.huh_teacher_student(
        n=4, rank=2, teacher_singular_values=[1.0, NAN]))
    bad("digits-fraction", "test_fraction", lambda: dt.load_digits(test_fraction=1.5))
    bad("digits-fraction-nan", "test_fraction", lambda: dt.load_digits(test_fraction=NAN))
    bad("digits-seed", "seed", lambda: dt.load_digits(seed=-1))
    bad("digits-xp", "xp", lambda: dt.load_digits(xp="numpy"))
    bad("bernacchia-widths", "widths", lambda: dt.bernacchia_teacher_student((3,)))
    bad("bernacchia-widths-zero", "widths", lambda: dt.bernacchia_teacher_student((3, 0, 3)))
    bad("bernacchia-noise", "noise_var", lambda: dt.bernacchia_teacher_student((3, 3), noise_var=-1.0))
    bad("bernacchia-num-train", "num_train", lambda: dt.bernacchia_teacher_student((3, 3), num_train=0))
    bad("bernacchia-seed", "seed", lambda: dt.bernacchia_teacher_student((3, 3), seed=-1))
    bad("bernacchia-xp", "xp", lambda: dt.bernacchia_teacher_student((3, 3), xp="numpy"))
    bad("input-spectrum-n0", "n0", lambda: dt.input_covariance_spectrum(0))
    bad("input-spectrum-xp", "xp", lambda: dt.input_covariance_spectrum(3, xp="numpy"))


def _constructor_cases():
    bad("deep-linear-short", "widths", lambda: ac.DeepLinear((3,)))
    bad("deep-linear-zero", "widths", lambda: ac.DeepLinear((3, 0, 2)))
    bad("deep-linear-str", "widths", lambda: ac.DeepLinear("abc"))
    bad("deep-linear-float", "widths", lambda: ac.DeepLinear((3.0, 2)))
    bad("mlp-short", "sizes", lambda: ac.mlp((3,)))
    bad("mlp-zero", "sizes", lambda: ac.mlp((3, 0, 2)))
    bad("mlp-activation", "activation", lambda: ac.mlp((3, 4, 2), activation="bogus"))
    bad("mlp-bias", "bias", lambda: ac.mlp((3, 4, 2), bias="no"))
    bad("lenet-classes", "num_classes", lambda: ac.lenet5(num_classes=0))
    bad("lenet-pool", "pool", lambda: ac.lenet5(pool="bogus"))
    bad("lenet-input", "input_shape", lambda: ac.lenet5(input_shape=(1, 2, 2)))
    bad("sequential-empty", "layers", lambda: ac.Sequential((), (3,)))
    bad("sequential-input", "input_shape", lambda: ac.Sequential((Dense(3, 2),), (0,)))
    bad("sequential-chain", r"layers(\[\d\])?", lambda: ac.Sequential((Dense(3, 2), Dense(3, 2)), (3,)))
    bad("dense-n-in", "n_in", lambda: Dense(0, 2))
    bad("conv-kernel", "kernel_size", lambda: Conv2d(1, 2, 0))
    model = ac.mlp((3, 4, 2))
    bad("init-mlp-seed", "seed", lambda: ac.init_params(model, -1))
    bad("init-mlp-xp", "xp", lambda: ac.init_params(model, 0, "numpy"))
    bad("init-mlp-gain", "gain", lambda: ac.init_params(model, 0, gain=NAN))
    bad("init-mlp-gain-neg", "gain", lambda: ac.init_params(model, 0, gain=-1.0))
    bad("init-mlp-method", "method", lambda: ac.init_params(model, 0, method="bogus"))
    bad("init-mlp-dtype", "dtype", lambda: ac.init_params(model, 0, dtype="float16"))
    bad("param-shapes-model", "model", lambda: ac.param_shapes("mlp"))
    bad("as-sequential-model", "model", lambda: ac.models.as_sequential("mlp"))


for _gen in (_deep_linear_cases, _direction_cases, _linalg_cases, _params_cases, _rule_cases, _dynamics_cases,
             _loss_cases, _backend_cases, _data_cases, _constructor_cases):
    _gen()


# ----------------------------------------------------------------------------- known gaps
#: Malformed calls that still get no clear error, with the reason; each is a strict xfail,
#: so closing a gap shows up as an unexpected pass to remove here.
KNOWN_GAPS: dict = {}


# ----------------------------------------------------------------------------- valid, extreme
def _eye(n, scale=1.0):
    return scale * np.eye(n)


def _rank_deficient_gram():
    j = _randn(0, 3, 6)
    return j.T @ j  # rank 3: rounding-level negative eigenvalues


def _adam_zero_gradient():
    params = (np.zeros(3),)
    rule = ru.adam(0.1, eps=0.0)
    state = rule.init(params)
    out, state = rule.update((np.zeros(3),), state, params)
    out, _ = rule.update((np.asarray([1.0, 0.0, 0.0]),), state, params)
    return out


FINITE = {  # id -> (thunk, check of the result)
    "clip-direction-1e200": (lambda: dr.clip_direction((np.full(3, 1e200),), 1.0),
                             lambda r: abs(float(pr.tree_norm(r)) - 1.0) < 1e-12),
    "tree-norm-2e200": (lambda: pr.tree_norm((np.asarray([2e200]),)), lambda r: float(r) == 2e200),
    "kron-psd-power-1e200": (lambda: la.kron_psd_power_apply(_eye(2, 1e200), _eye(3, 1e200), np.ones((2, 3)), 0.5),
                             lambda r: np.allclose(r, 1e200)),
    "kron-psd-power-1e-200": (lambda: la.kron_psd_power_apply(_eye(2, 1e-200), _eye(3, 1e-200), np.ones((2, 3)),
                                                              -0.5), lambda r: np.allclose(r, 1e200)),
    "psd-power-rounding-negatives": (lambda: la.psd_power(_rank_deficient_gram(), -0.5), lambda r: True),
    "psd-power-clip-negative": (lambda: la.psd_power(-_eye(3), 0.5, clip_negative=True), lambda r: not r.any()),
    "adam-eps-zero-zero-gradient": (_adam_zero_gradient, lambda r: float(r[0][1]) == 0.0),
    "ce-confident-logits": (lambda: ls.loss_value(CE, np.asarray([[1e3, 0.0]]), np.asarray([0])),
                            lambda r: float(r) == 0.0),
}


# ----------------------------------------------------------------------------- the checks
def classify(arg: str, fn) -> tuple[str, str]:
    """("clear" | "unclear" | "no error", detail) for one malformed call."""
    try:
        out = fn()
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        if re.match(rf"^(?:{arg}): expected ", msg):
            return "clear", msg
        return "unclear", f"{type(exc).__name__}: {msg}"
    except Exception as exc:  # noqa: BLE001 - what the harness measures
        return "unclear", f"{type(exc).__name__}: {exc}"
    return "no error", f"returned {type(out).__name__}"


def _param(cid, arg, fn):
    if cid in KNOWN_GAPS:
        return pytest.param(arg, fn, id=cid, marks=pytest.mark.xfail(reason=KNOWN_GAPS[cid], strict=True))
    return pytest.param(arg, fn, id=cid)


@pytest.mark.parametrize("arg, fn", [_param(*c) for c in CASES])
def test_malformed_call_gets_a_clear_error(arg, fn):
    kind, detail = classify(arg, fn)
    assert kind == "clear", f"expected an error starting with {arg!r}: expected ...; {kind}: {detail}"


@pytest.mark.parametrize("cid", sorted(FINITE))
def test_extreme_but_valid_calls_return_finite_values(cid):
    fn, check = FINITE[cid]
    out = fn()
    leaves = out if isinstance(out, tuple) else (out,)
    assert all(np.all(np.isfinite(backend.to_numpy(leaf))) for leaf in leaves), out
    assert check(out), out


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 6), rank=st.integers(1, 6), seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_psd_tolerance_accepts_rounding_and_rejects_indefinite(n, rank, seed, scale):
    """Gram matrices J^T J (rank <= n, negative eigenvalues from rounding only) pass
    psd_power; shifting one eigenvalue well beyond the tolerance raises, naming ``a``."""
    j = scale * _randn(seed, min(rank, n), n)
    g = j.T @ j
    assert np.all(np.isfinite(la.psd_power(g, -0.5)))
    w, u = np.linalg.eigh(g)
    w[0] = -1e-6 * max(abs(w).max(), 1e-300) - 1e-12 * scale**2
    bad_g = (u * w) @ u.T
    bad_g = 0.5 * (bad_g + bad_g.T)
    with pytest.raises(ValueError, match=r"^a: expected a positive semi-definite matrix"):
        la.psd_power(bad_g, -0.5)
    assert np.all(np.isfinite(la.psd_power(bad_g, -0.5, clip_negative=True)))


def test_the_harness_is_large_and_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]
    assert len(ids) >= 300 and set(KNOWN_GAPS) <= set(ids)


if __name__ == "__main__":  # the share of clear errors, and what is left
    import collections
    import sys
    import warnings

    warnings.simplefilter("ignore")
    counts = collections.Counter()
    fails = []
    for cid, arg, fn in CASES:
        kind, detail = classify(arg, fn)
        counts[kind] += 1
        if kind != "clear":
            fails.append(f"{cid} [{arg}] {kind}: {detail[:200]}")
    print("\n".join(fails))
    n = len(CASES)
    print(f"{n} malformed calls: {counts['clear']} clear ({100 * counts['clear'] / n:.1f}%), "
          f"{counts['unclear']} unclear, {counts['no error']} without error", file=sys.stderr)
