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
    b = np.array(a, copy=True)
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
            xn = "x" if kind.startswith("x") else "batch x"
            yn = "batch y"
            vn = rename.get("v", "v")
            base = dict(p=params, x=x, y=y, v=v, c=c)

            def add(cat, arg, model=model, loss=loss, call=call, base=base, kind=kind, **over):
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
