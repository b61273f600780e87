"""Fuzz harness, part 2 (issue 9): the modules added after the first table.

Class subspaces (:mod:`arraycurv.curvature.subspace`, :mod:`arraycurv.directions.class_subspace`,
:mod:`arraycurv.rules.class_subspace`), subspaces of R^n (:mod:`arraycurv.linalg.subspaces`),
low-rank and spectral linear algebra (:mod:`arraycurv.linalg.lowrank`,
:mod:`arraycurv.linalg.spectral`), Bernacchia's natural gradient
(:mod:`arraycurv.directions.bernacchia`), summary tensors and their Newton steps
(:mod:`arraycurv.curvature.summary`, :mod:`arraycurv.directions.newton_summary`), chunked
reductions (:mod:`arraycurv.curvature.reduce`), partitions (:mod:`arraycurv.params.partition`),
Sequential internals (:mod:`arraycurv.models.sequential`: linearized products, builders), the
Fisher, Kronecker-factor and operator modules (:mod:`arraycurv.curvature.fisher`,
:mod:`arraycurv.curvature.kron`, :mod:`arraycurv.curvature.operators`), losses
(:mod:`arraycurv.losses`), parameter trees (:mod:`arraycurv.params`), transforms and damping
controllers (:mod:`arraycurv.rules.transforms`, :mod:`arraycurv.rules.damping`). Elementwise tree
arithmetic and ``loss_grad`` propagate NaN by design (no host sync on those hot paths), so
only their structural misuse is fuzzed here. The cases follow the public names of each module's
``__all__`` (:func:`test_every_public_routine_is_fuzzed` checks the coverage), grouped by
signature family, with the same rule as :mod:`tests.test_bad_input`: each malformed call
raises ``TypeError``/``ValueError`` whose message starts with ``"<argument>: expected"``.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import losses as ls
from arraycurv import params as pr
from arraycurv.curvature import fisher as fi
from arraycurv.curvature import kron as kr
from arraycurv.curvature import operators as op
from arraycurv.curvature import reduce as rd
from arraycurv.curvature import subspace as cs
from arraycurv.curvature import summary as sm
from arraycurv.directions import bernacchia as bn
from arraycurv.directions import class_subspace as dcs
from arraycurv.directions import kfac as kf
from arraycurv.directions import newton_summary as ns
from arraycurv.linalg import lowrank as lr
from arraycurv.linalg import spectral as sp
from arraycurv.linalg import subspaces as ss
from arraycurv.models import sequential as sq
from arraycurv.models.layers import Conv2d, Dense
from arraycurv.params import partition as pt
from arraycurv.rules import class_subspace as rcs
from arraycurv.rules import damping as dm
from arraycurv.rules import transforms as tf

from .test_bad_input import CE, INF, MSE, NAN, STRICT, _cnn, _randn, _setp, _with, classify

CASES: list = []  # (id, argument regex, thunk)
COVERED: set = set()  # "module.name" of the public routines the cases call


def bad(cid: str, arg: str, fn, *covers: str) -> None:
    """Register a malformed call (``arg``: a regex of the argument the message must name)."""
    CASES.append((cid, arg, fn))
    COVERED.update(covers)


# ----------------------------------------------------------------------------- model + labelled batch
def _classifier():
    model = ac.mlp((3, 4, 3))
    return model, ac.init_params(model, 0), _randn(1, 5, 3), np.asarray([0, 1, 2, 1, 0])


def _batch_family(prefix, call, model, params, x, y, *, labels=True, covers=()):
    """The common malformed calls of a routine ``call(params, batch)``."""
    def add(cat, arg, p=params, batch=None):
        b = (x, y) if batch is None else batch
        bad(f"{prefix}-{cat}", arg, lambda: call(p, b), *covers)

    add("params-list", r"params(\[0\])?", p=[q.tolist() for q in params])
    add("params-nan", r"params\[0\]", p=_setp(params, 0, _with(params[0], NAN)))
    add("params-inf", r"params\[\d\]", p=_setp(params, len(params) - 1, _with(params[-1], INF)))
    add("params-shape", r"params\[0\]", p=_setp(params, 0, params[0][..., :1]))
    add("params-short", "params", p=params[:-1])
    add("params-int", r"params(\[\d\])?", p=tuple(np.zeros(q.shape, dtype=np.int64) for q in params))
    add("params-mixed-f32", r"params\[\d\]", p=_setp(params, 0, params[0].astype(np.float32)))
    add("x-list", "batch x", batch=(x.tolist(), y))
    add("x-nan", "batch x", batch=(_with(x, NAN, 3), y))
    add("x-inf", "batch x", batch=(_with(x, -INF), y))
    add("x-empty", "batch x", batch=(x[:0], y[:0]))
    add("x-width", "batch x", batch=(np.concatenate([x, x], axis=-1), y))
    add("x-ndim", "batch x", batch=(x[0], y))
    add("x-int", "batch x", batch=(np.zeros(x.shape, dtype=np.int64), y))
    add("x-f32", "batch x", batch=(x.astype(np.float32), y))
    add("x-strict", "batch x", batch=(STRICT.asarray(x), y))
    add("batch-bare-x", "batch", batch=x)
    add("batch-triple", "batch", batch=(x, y, y))
    add("y-list", "batch y", batch=(x, y.tolist()))
    add("y-batch", r"batch( y)?", batch=(x, y[:4]))
    add("y-strict", "batch y", batch=(x, STRICT.asarray(y)))
    if labels:
        add("y-range", "batch y", batch=(x, y + 5))
        add("y-negative", "batch y", batch=(x, y - 3))
        add("y-float", "batch y", batch=(x, y.astype(np.float64)))
        add("y-2d", "batch y", batch=(x, np.stack([y, y], axis=1)))
    else:
        add("y-nan", "batch y", batch=(x, _with(y, NAN)))
        add("y-width", "batch y", batch=(x, np.concatenate([y, y], axis=-1)))
        add("y-f32", "batch y", batch=(x, y.astype(np.float32)))


def _class_subspace_model_cases():
    model, params, x, y = _classifier()
    routines = {
        "class_gradients": lambda p, b: cs.class_gradients(model, p, b),
        "class_gradients_by_class": lambda p, b: cs.class_gradients(model, p, b, method="by_class"),
        "class_gradients_auto": lambda p, b: cs.class_gradients(model, p, b, method="auto"),
        "class_gradients_matrix": lambda p, b: cs.class_gradients_matrix(model, p, b),
        "class_gradient_decomposition": lambda p, b: cs.class_gradient_decomposition(model, p, b),
        "class_subspace": lambda p, b: cs.class_subspace(model, p, b),
        "class_subspace_direction": lambda p, b: dcs.class_subspace_direction(model, p, b, lr=0.1),
        "class_subspace_direction_exact": lambda p, b: dcs.class_subspace_direction(
            model, p, b, lr=0.1, variant="exact", curvature="ggn"),
    }
    for name, call in routines.items():
        mod = "arraycurv.directions.class_subspace" if "direction" in name else "arraycurv.curvature.subspace"
        fn = name.replace("_by_class", "").replace("_auto", "").replace("_exact", "")
        _batch_family(name, call, model, params, x, y, covers=(f"{mod}.{fn}",))
    batch = (x, y)
    bad("class-gradients-method", "method", lambda: cs.class_gradients(model, params, batch, method="bogus"))
    bad("class-subspace-method", "method", lambda: cs.class_subspace(model, params, batch, method=3))
    bad("class-gradients-model", "model", lambda: cs.class_gradients("mlp", params, batch))
    for name, kw in (("lr-nan", dict(lr=NAN)), ("lr-zero", dict(lr=0.0)), ("lr-str", dict(lr="0.1")),
                     ("damping-neg", dict(lr=0.1, damping=-1.0)), ("damping-nan", dict(lr=0.1, damping=NAN)),
                     ("rcond-neg", dict(lr=0.1, rcond=-1.0)), ("rcond-nan", dict(lr=0.1, rcond=NAN)),
                     ("variant", dict(lr=0.1, variant="bogus")), ("curvature", dict(lr=0.1, curvature="bogus")),
                     ("method", dict(lr=0.1, method="bogus")), ("loss", dict(lr=0.1, loss="ce"))):
        arg = name.split("-")[0]
        bad(f"class-subspace-direction-{name}", arg,
            lambda kw=kw: dcs.class_subspace_direction(model, params, batch, **kw))
    g = tuple(np.ones_like(p) for p in params)
    bad("class-subspace-direction-grads-nan", r"grads\[0\]", lambda: dcs.class_subspace_direction(
        model, params, batch, lr=0.1, grads=_setp(g, 0, _with(g[0], NAN))))
    bad("class-subspace-direction-grads-short", "grads", lambda: dcs.class_subspace_direction(
        model, params, batch, lr=0.1, grads=g[:1]))
    bad("class-subspace-direction-grads-list", r"grads(\[0\])?", lambda: dcs.class_subspace_direction(
        model, params, batch, lr=0.1, grads=[q.tolist() for q in g]))


def _subspace_object_cases():
    model, params, x, y = _classifier()
    sub = cs.class_subspace(model, params, (x, y))
    v = ac.init_params(model, 1)
    nan_sub = sub._replace(eigenvalues=_with(sub.eigenvalues, NAN))
    short_sub = sub._replace(eigenvalues=sub.eigenvalues[:2])
    routines = {
        "low_rank_hessian_vp": lambda s, v: cs.low_rank_hessian_vp(s, v),
        "low_rank_hessian_pinv_vp": lambda s, v: cs.low_rank_hessian_pinv_vp(s, v),
        "class_complement_project": lambda s, v: cs.class_complement_project(s, v),
    }
    for name, call in routines.items():
        cov = f"arraycurv.curvature.subspace.{name}"
        bad(f"{name}-subspace-type", "subspace", lambda call=call: call("sub", v), cov)
        bad(f"{name}-subspace-nan", r"subspace\.eigenvalues", lambda call=call: call(nan_sub, v), cov)
        bad(f"{name}-subspace-short", r"subspace\.eigenvalues", lambda call=call: call(short_sub, v), cov)
        bad(f"{name}-v-list", r"v(\[0\])?", lambda call=call: call(sub, [q.tolist() for q in v]), cov)
        bad(f"{name}-v-nan", r"v\[0\]", lambda call=call: call(sub, _setp(v, 0, _with(v[0], NAN))), cov)
        bad(f"{name}-v-shape", r"v\[0\]", lambda call=call: call(sub, _setp(v, 0, v[0][..., :1])), cov)
        bad(f"{name}-v-short", "v", lambda call=call: call(sub, v[:-1]), cov)
        bad(f"{name}-v-f32", r"v\[\d\]", lambda call=call: call(sub, tuple(q.astype(np.float32) for q in v)), cov)
        bad(f"{name}-v-strict", r"v\[\d\]", lambda call=call: call(sub, tuple(STRICT.asarray(q) for q in v)), cov)
    cov = "arraycurv.curvature.subspace.low_rank_hessian_matrix"
    bad("low-rank-hessian-matrix-type", "subspace", lambda: cs.low_rank_hessian_matrix((1, 2)), cov)
    bad("low-rank-hessian-matrix-nan", r"subspace\.eigenvalues", lambda: cs.low_rank_hessian_matrix(nan_sub), cov)
    bad("low-rank-hessian-matrix-vectors-nan", r"subspace\.vectors\[0\]", lambda: cs.low_rank_hessian_matrix(
        sub._replace(vectors=_setp(sub.vectors, 0, _with(sub.vectors[0], NAN)))), cov)
    bad("low-rank-pinv-rcond", "rcond", lambda: cs.low_rank_hessian_pinv_vp(sub, v, rcond=-1.0))
    bad("low-rank-pinv-rcond-nan", "rcond", lambda: cs.low_rank_hessian_pinv_vp(sub, v, rcond=NAN))
    bad("low-rank-pinv-damping", "damping", lambda: cs.low_rank_hessian_pinv_vp(sub, v, damping=-1.0))
    bad("low-rank-pinv-damping-nan", "damping", lambda: cs.low_rank_hessian_pinv_vp(sub, v, damping=NAN))
    bad("low-rank-pinv-damping-str", "damping", lambda: cs.low_rank_hessian_pinv_vp(sub, v, damping="0"))
    # directions: tuples of (S, *shape)
    d = sub.class_grads
    coef = np.ones(3)
    for name, call in (("subspace_coefficients", lambda d, c: cs.subspace_coefficients(d, v)),
                       ("subspace_combine", lambda d, c: cs.subspace_combine(d, c)),
                       ("subspace_basis", lambda d, c: cs.subspace_basis(d))):
        cov = f"arraycurv.curvature.subspace.{name}"
        bad(f"{name}-directions-list", r"directions(\[0\])?", lambda call=call: call(
            [q.tolist() for q in d], coef), cov)
        bad(f"{name}-directions-nan", r"directions\[0\]", lambda call=call: call(
            _setp(d, 0, _with(d[0], NAN)), coef), cov)
        bad(f"{name}-directions-lead", r"directions\[1\]", lambda call=call: call(
            _setp(d, 1, d[1][:2]), coef), cov)
        bad(f"{name}-directions-empty", "directions", lambda call=call: call((), coef), cov)
        bad(f"{name}-directions-strict", r"directions\[\d\]", lambda call=call: call(
            _setp(d, 1, STRICT.asarray(d[1])), coef), cov)
        bad(f"{name}-directions-int", r"directions\[\d\]", lambda call=call: call(
            tuple(np.ones(q.shape, dtype=np.int64) for q in d), coef), cov)
    bad("subspace-coefficients-v-shape", r"v\[0\]", lambda: cs.subspace_coefficients(
        d, _setp(v, 0, v[0][..., :1])))
    bad("subspace-coefficients-v-short", "v", lambda: cs.subspace_coefficients(d, v[:1]))
    bad("subspace-coefficients-v-nan", r"v\[0\]", lambda: cs.subspace_coefficients(d, _setp(v, 0, _with(v[0], NAN))))
    bad("subspace-combine-coeffs-shape", "coeffs", lambda: cs.subspace_combine(d, np.ones(2)))
    bad("subspace-combine-coeffs-nan", "coeffs", lambda: cs.subspace_combine(d, _with(coef, NAN)))
    bad("subspace-combine-coeffs-list", "coeffs", lambda: cs.subspace_combine(d, [1.0, 1.0, 1.0]))
    bad("subspace-combine-coeffs-f32", "coeffs", lambda: cs.subspace_combine(d, coef.astype(np.float32)))
    bad("subspace-basis-rcond", "rcond", lambda: cs.subspace_basis(d, rcond=-1.0))
    # exact curvature in a span
    basis = cs.subspace_basis(d)
    cov = "arraycurv.curvature.subspace.subspace_curvature"
    for curv in ("ggn", "hessian", "low_rank"):
        _batch_family(f"subspace_curvature_{curv}", lambda p, b, curv=curv: cs.subspace_curvature(
            model, p, b, basis, curvature=curv), model, params, x, y, covers=(cov,))
        bad(f"subspace-curvature-{curv}-basis-nan", r"basis\[0\]", lambda curv=curv: cs.subspace_curvature(
            model, params, (x, y), _setp(basis, 0, _with(basis[0], NAN)), curvature=curv))
        bad(f"subspace-curvature-{curv}-basis-shape", r"basis\[0\]", lambda curv=curv: cs.subspace_curvature(
            model, params, (x, y), _setp(basis, 0, basis[0][..., :1]), curvature=curv))
        bad(f"subspace-curvature-{curv}-basis-list", r"basis(\[0\])?", lambda curv=curv: cs.subspace_curvature(
            model, params, (x, y), [q.tolist() for q in basis], curvature=curv))
        bad(f"subspace-curvature-{curv}-basis-strict", r"basis\[\d\]", lambda curv=curv: cs.subspace_curvature(
            model, params, (x, y), tuple(STRICT.asarray(q) for q in basis), curvature=curv))
    bad("subspace-curvature-curvature", "curvature", lambda: cs.subspace_curvature(
        model, params, (x, y), basis, curvature="bogus"))
    bad("subspace-curvature-subspace", "subspace", lambda: cs.subspace_curvature(
        model, params, (x, y), basis, curvature="low_rank", subspace="s"))
    bad("subspace-curvature-loss", "loss", lambda: cs.subspace_curvature(model, params, (x, y), basis, loss="ce"))


def _subspace_newton_cases():
    model, params, x, y = _classifier()
    sub = cs.class_subspace(model, params, (x, y))
    g = tuple(np.ones_like(p) for p in params)
    vec, lam = sub.vectors, sub.eigenvalues
    cov = "arraycurv.directions.class_subspace.class_subspace_newton_direction"
    f = dcs.class_subspace_newton_direction
    bad("cs-newton-grads-nan", r"grads\[0\]", lambda f=f: f(_setp(g, 0, _with(g[0], NAN)), vec, lam, 0.1), cov)
    bad("cs-newton-grads-list", r"grads(\[0\])?", lambda f=f: f([q.tolist() for q in g], vec, lam, 0.1), cov)
    bad("cs-newton-grads-shape", r"(grads|vectors)\[0\]", lambda f=f: f(_setp(g, 0, g[0][..., :1]), vec, lam, 0.1), cov)
    bad("cs-newton-grads-short", "(grads|vectors)", lambda f=f: f(g[:1], vec, lam, 0.1), cov)
    g32 = tuple(q.astype(np.float32) for q in g)
    bad("cs-newton-grads-f32", r"(grads|vectors)\[\d\]", lambda f=f: f(g32, vec, lam, 0.1), cov)
    bad("cs-newton-vectors-nan", r"vectors\[0\]", lambda f=f: f(g, _setp(vec, 0, _with(vec[0], NAN)), lam, 0.1), cov)
    bad("cs-newton-vectors-lead", r"vectors\[1\]", lambda f=f: f(g, _setp(vec, 1, vec[1][:2]), lam, 0.1), cov)
    bad("cs-newton-vectors-shape", r"vectors\[0\]", lambda f=f: f(g, _setp(vec, 0, vec[0][..., :1]), lam, 0.1), cov)
    bad("cs-newton-eigenvalues-nan", "eigenvalues", lambda f=f: f(g, vec, _with(lam, NAN), 0.1), cov)
    bad("cs-newton-eigenvalues-shape", "eigenvalues", lambda f=f: f(g, vec, lam[:2], 0.1), cov)
    bad("cs-newton-eigenvalues-list", "eigenvalues", lambda f=f: f(g, vec, lam.tolist(), 0.1), cov)
    bad("cs-newton-eigenvalues-strict", "eigenvalues", lambda f=f: f(g, vec, STRICT.asarray(lam), 0.1), cov)
    bad("cs-newton-lr-nan", "lr", lambda f=f: f(g, vec, lam, NAN), cov)
    bad("cs-newton-lr-str", "lr", lambda f=f: f(g, vec, lam, "0.1"), cov)
    bad("cs-newton-damping", "damping", lambda f=f: f(g, vec, lam, 0.1, damping=-1.0), cov)
    bad("cs-newton-rcond", "rcond", lambda f=f: f(g, vec, lam, 0.1, rcond=NAN), cov)
    basis = cs.subspace_basis(sub.class_grads)
    k = cs.subspace_curvature(model, params, (x, y), basis)
    cov = "arraycurv.directions.class_subspace.subspace_newton_direction"
    f = dcs.subspace_newton_direction
    bad("s-newton-grads-nan", r"grads\[0\]", lambda f=f: f(_setp(g, 0, _with(g[0], NAN)), basis, k, 0.1), cov)
    bad("s-newton-grads-short", "(grads|basis)", lambda f=f: f(g[:1], basis, k, 0.1), cov)
    bad("s-newton-grads-list", r"grads(\[0\])?", lambda f=f: f([q.tolist() for q in g], basis, k, 0.1), cov)
    bad("s-newton-basis-nan", r"basis\[0\]", lambda f=f: f(g, _setp(basis, 0, _with(basis[0], NAN)), k, 0.1), cov)
    bad("s-newton-basis-shape", r"basis\[0\]", lambda f=f: f(g, _setp(basis, 0, basis[0][..., :1]), k, 0.1), cov)
    bad("s-newton-curvature-nan", "curvature", lambda f=f: f(g, basis, _with(k, NAN), 0.1), cov)
    bad("s-newton-curvature-shape", "curvature", lambda f=f: f(g, basis, k[:1], 0.1), cov)
    bad("s-newton-curvature-list", "curvature", lambda f=f: f(g, basis, k.tolist(), 0.1), cov)
    bad("s-newton-curvature-nonsym", "curvature", lambda f=f: f(g, basis, k + np.triu(np.ones(k.shape), 1), 0.1), cov)
    bad("s-newton-curvature-f32", "curvature", lambda f=f: f(g, basis, k.astype(np.float32), 0.1), cov)
    bad("s-newton-lr", "lr", lambda f=f: f(g, basis, k, -0.1), cov)
    bad("s-newton-damping", "damping", lambda f=f: f(g, basis, k, 0.1, damping=NAN), cov)
    bad("s-newton-rcond", "rcond", lambda f=f: f(g, basis, k, 0.1, rcond=-1.0), cov)


def _class_subspace_rule_cases():
    model, params, x, y = _classifier()
    for name in ("class_subspace_newton", "scale_by_class_subspace"):
        fn = getattr(rcs, name)
        cov = f"arraycurv.rules.class_subspace.{name}"
        for cat, args, kw in (("lr-nan", (NAN,), {}), ("lr-neg", (-1.0,), {}), ("decay", (0.1,), dict(decay=1.0)),
                              ("decay-nan", (0.1,), dict(decay=NAN)), ("damping", (0.1,), dict(damping=-1.0)),
                              ("rcond", (0.1,), dict(rcond=-1.0)), ("rcond-nan", (0.1,), dict(rcond=NAN)),
                              ("variant", (0.1,), dict(variant="bogus")),
                              ("curvature", (0.1,), dict(curvature="bogus")),
                              ("method", (0.1,), dict(method="bogus"))):
            bad(f"{name}-{cat}", cat.split("-")[0], lambda fn=fn, args=args, kw=kw: fn(*args, **kw), cov)
    g = tuple(np.ones_like(p) for p in params)
    for variant in ("orthogonal", "exact"):
        rule = rcs.class_subspace_newton(0.1, variant=variant)
        state = rule.init(params)

        def up(grads=g, batch=(x, y), st=state, p=params, rule=rule):
            return rule.update(grads, st, p, model=model, batch=batch, loss=CE)

        bad(f"cs-rule-{variant}-grads-nan", r"grads\[0\]", lambda up=up: up(grads=_setp(g, 0, _with(g[0], NAN))))
        bad(f"cs-rule-{variant}-grads-short", "grads", lambda up=up: up(grads=g[:1]))
        bad(f"cs-rule-{variant}-x-nan", "batch x", lambda up=up: up(batch=(_with(x, NAN), y)))
        bad(f"cs-rule-{variant}-y-range", "batch y", lambda up=up: up(batch=(x, y + 5)))
        bad(f"cs-rule-{variant}-batch", "batch", lambda up=up: up(batch=x))
        bad(f"cs-rule-{variant}-state", "state", lambda up=up: up(st=(0,)))


# ----------------------------------------------------------------------------- linalg.subspaces
def _subspaces_cases():
    a = _randn(0, 6, 3)
    b = _randn(1, 6, 2)
    q = ss.orthonormal_basis(a)
    v = _randn(2, 6)
    m = "arraycurv.linalg.subspaces"
    for name in ("orthonormal_basis",):
        f = ss.orthonormal_basis
        bad("orthonormal-basis-list", "a", lambda f=f: f(a.tolist()), f"{m}.{name}")
        bad("orthonormal-basis-nan", "a", lambda f=f: f(_with(a, NAN)))
        bad("orthonormal-basis-inf", "a", lambda f=f: f(_with(a, INF)))
        bad("orthonormal-basis-1d", "a", lambda f=f: f(a[:, 0]))
        bad("orthonormal-basis-3d", "a", lambda f=f: f(a[None]))
        bad("orthonormal-basis-int", "a", lambda f=f: f(np.ones((3, 2), dtype=np.int64)))
        bad("orthonormal-basis-complex", "a", lambda f=f: f(a.astype(np.complex128)))
        bad("orthonormal-basis-empty", "a", lambda f=f: f(a[:0]))
        bad("orthonormal-basis-rcond", "rcond", lambda f=f: f(a, rcond=-1.0))
        bad("orthonormal-basis-rcond-nan", "rcond", lambda f=f: f(a, rcond=NAN))
        bad("orthonormal-basis-rcond-str", "rcond", lambda f=f: f(a, rcond="0"))
    for name in ("project", "complement_project"):
        f = getattr(ss, name)
        cov = f"{m}.{name}"
        bad(f"{name}-basis-list", "basis", lambda f=f: f(q.tolist(), v), cov)
        bad(f"{name}-basis-nan", "basis", lambda f=f: f(_with(q, NAN), v), cov)
        bad(f"{name}-basis-1d", "basis", lambda f=f: f(q[:, 0], v), cov)
        bad(f"{name}-basis-int", "basis", lambda f=f: f(np.ones((6, 2), dtype=np.int64), v), cov)
        bad(f"{name}-v-nan", "v", lambda f=f: f(q, _with(v, NAN)), cov)
        bad(f"{name}-v-inf", "v", lambda f=f: f(q, _with(v, -INF)), cov)
        bad(f"{name}-v-list", "v", lambda f=f: f(q, v.tolist()), cov)
        bad(f"{name}-v-rows", "v", lambda f=f: f(q, v[:4]), cov)
        bad(f"{name}-v-3d", "v", lambda f=f: f(q, v[:, None, None]), cov)
        bad(f"{name}-v-strict", "v", lambda f=f: f(q, STRICT.asarray(v)), cov)
        bad(f"{name}-v-f32", "v", lambda f=f: f(q, v.astype(np.float32)), cov)
        bad(f"{name}-v-int", "v", lambda f=f: f(q, np.ones(6, dtype=np.int64)), cov)
        bad(f"{name}-v-complex", "v", lambda f=f: f(q, v.astype(np.complex128)), cov)
    for name in ("principal_angles", "subspace_overlap"):
        f = getattr(ss, name)
        cov = f"{m}.{name}"
        bad(f"{name}-a-nan", "a", lambda f=f: f(_with(a, NAN), b), cov)
        bad(f"{name}-a-list", "a", lambda f=f: f(a.tolist(), b), cov)
        bad(f"{name}-b-nan", "b", lambda f=f: f(a, _with(b, NAN)), cov)
        bad(f"{name}-b-list", "b", lambda f=f: f(a, b.tolist()), cov)
        bad(f"{name}-b-rows", "b", lambda f=f: f(a, b[:4]), cov)
        bad(f"{name}-b-strict", "b", lambda f=f: f(a, STRICT.asarray(b)), cov)
        bad(f"{name}-b-f32", "b", lambda f=f: f(a, b.astype(np.float32)), cov)
        bad(f"{name}-b-1d", "b", lambda f=f: f(a, b[:, 0]), cov)
        bad(f"{name}-rcond", "rcond", lambda f=f: f(a, b, rcond=NAN), cov)
    f = ss.fraction_in_span
    cov = f"{m}.fraction_in_span"
    bad("fraction-in-span-a-nan", "a", lambda f=f: f(_with(a, NAN), v), cov)
    bad("fraction-in-span-v-nan", "v", lambda f=f: f(a, _with(v, NAN)), cov)
    bad("fraction-in-span-v-rows", "v", lambda f=f: f(a, v[:4]), cov)
    bad("fraction-in-span-v-list", "v", lambda f=f: f(a, v.tolist()), cov)
    bad("fraction-in-span-v-strict", "v", lambda f=f: f(a, STRICT.asarray(v)), cov)
    bad("fraction-in-span-v-f32", "v", lambda f=f: f(a, v.astype(np.float32)), cov)
    bad("fraction-in-span-v-int", "v", lambda f=f: f(a, np.ones(6, dtype=np.int64)), cov)
    bad("fraction-in-span-rcond", "rcond", lambda f=f: f(a, v, rcond=-1.0), cov)
    t = (np.ones((2, 3, 2)), np.ones((2, 3)))
    cov = f"{m}.stack_directions"
    bad("stack-directions-list", r"directions(\[0\])?", lambda: ss.stack_directions([q.tolist() for q in t]), cov)
    bad("stack-directions-array", "directions", lambda: ss.stack_directions(np.ones((2, 3))), cov)
    bad("stack-directions-empty", "directions", lambda: ss.stack_directions(()), cov)
    bad("stack-directions-lead", r"directions\[1\]", lambda: ss.stack_directions((t[0], t[1][:1])), cov)
    bad("stack-directions-0d", r"directions\[0\]", lambda: ss.stack_directions((np.float64(1.0), t[1])), cov)
    bad("stack-directions-nan", r"directions\[1\]", lambda: ss.stack_directions((t[0], _with(t[1], NAN))), cov)
    bad("stack-directions-f32", r"directions\[1\]", lambda: ss.stack_directions((t[0], t[1].astype(np.float32))),
        cov)
    bad("stack-directions-int", r"directions\[0\]", lambda: ss.stack_directions(
        tuple(np.ones(q.shape, dtype=np.int64) for q in t)), cov)


# ----------------------------------------------------------------------------- linalg.lowrank
def _lowrank_cases():
    m = "arraycurv.linalg.lowrank"
    a = _randn(0, 5, 5)
    spd = a @ a.T + np.eye(5)
    inv = np.linalg.inv(spd)
    u, w = _randn(1, 5), _randn(2, 5, 2)
    f = lr.sherman_morrison
    cov = f"{m}.sherman_morrison"
    bad("sm-inv-list", "inv", lambda f=f: f(inv.tolist(), u), cov)
    bad("sm-inv-nan", "inv", lambda f=f: f(_with(inv, NAN), u), cov)
    bad("sm-inv-nonsquare", "inv", lambda f=f: f(inv[:, :4], u), cov)
    bad("sm-inv-3d", "inv", lambda f=f: f(inv[None], u), cov)
    bad("sm-inv-int", "inv", lambda f=f: f(np.eye(5, dtype=np.int64), u), cov)
    bad("sm-u-shape", "u", lambda f=f: f(inv, u[:4]), cov)
    bad("sm-u-nan", "u", lambda f=f: f(inv, _with(u, NAN)), cov)
    bad("sm-u-list", "u", lambda f=f: f(inv, u.tolist()), cov)
    bad("sm-u-strict", "u", lambda f=f: f(inv, STRICT.asarray(u)), cov)
    bad("sm-u-f32", "u", lambda f=f: f(inv, u.astype(np.float32)), cov)
    bad("sm-v-shape", "v", lambda f=f: f(inv, u, u[:3]), cov)
    bad("sm-v-inf", "v", lambda f=f: f(inv, u, _with(u, INF)), cov)
    bad("sm-scale-nan", "scale", lambda f=f: f(inv, u, scale=NAN), cov)
    bad("sm-scale-str", "scale", lambda f=f: f(inv, u, scale="1"), cov)
    bad("sm-singular", "u", lambda f=f: f(np.eye(5), np.eye(5)[0], scale=-1.0), cov)
    f = lr.woodbury
    cov = f"{m}.woodbury"
    bad("wb-inv-list", "inv", lambda f=f: f(inv.tolist(), w), cov)
    bad("wb-inv-nan", "inv", lambda f=f: f(_with(inv, NAN), w), cov)
    bad("wb-inv-nonsquare", "inv", lambda f=f: f(inv[:, :4], w), cov)
    bad("wb-u-shape", "u", lambda f=f: f(inv, w[:4]), cov)
    bad("wb-u-1d", "u", lambda f=f: f(inv, u), cov)
    bad("wb-u-nan", "u", lambda f=f: f(inv, _with(w, NAN)), cov)
    bad("wb-u-strict", "u", lambda f=f: f(inv, STRICT.asarray(w)), cov)
    bad("wb-v-shape", "v", lambda f=f: f(inv, w, w[:, :1]), cov)
    bad("wb-c-shape", "c", lambda f=f: f(inv, w, c=np.eye(3)), cov)
    bad("wb-c-nan", "c", lambda f=f: f(inv, w, c=NAN), cov)
    bad("wb-c-array-nan", "c", lambda f=f: f(inv, w, c=_with(np.eye(2), NAN)), cov)
    bad("wb-c-list", "c", lambda f=f: f(inv, w, c=[[1.0, 0.0], [0.0, 1.0]]), cov)
    bad("wb-c-str", "c", lambda f=f: f(inv, w, c="1"), cov)
    bad("wb-singular", "u", lambda f=f: f(np.eye(5), np.eye(5)[:, :2], c=-1.0), cov)
    f = lr.running_inverse
    cov = f"{m}.running_inverse"
    bad("ri-decay-zero", "decay", lambda f=f: f(inv, w.T, decay=0.0), cov)
    bad("ri-decay-big", "decay", lambda f=f: f(inv, w.T, decay=1.5), cov)
    bad("ri-decay-nan", "decay", lambda f=f: f(inv, w.T, decay=NAN), cov)
    bad("ri-rows-shape", "rows", lambda f=f: f(inv, w, decay=0.9), cov)
    bad("ri-rows-empty", "rows", lambda f=f: f(inv, w.T[:0], decay=0.9), cov)
    bad("ri-rows-nan", "rows", lambda f=f: f(inv, _with(np.ascontiguousarray(w.T), NAN), decay=0.9), cov)
    bad("ri-rows-list", "rows", lambda f=f: f(inv, w.T.tolist(), decay=0.9), cov)
    bad("ri-inv-nonsquare", "inv", lambda f=f: f(inv[:, :4], w.T, decay=0.9), cov)
    bad("ri-inv-nan", "inv", lambda f=f: f(_with(inv, NAN), w.T, decay=0.9), cov)
    for name in ("randomized_range", "randomized_svd", "randomized_pinv", "randomized_psd_inverse"):
        f = getattr(lr, name)
        cov = f"{m}.{name}"
        bad(f"{name}-a-list", "a", lambda f=f: f(spd.tolist(), 2), cov)
        bad(f"{name}-a-nan", "a", lambda f=f: f(_with(spd, NAN), 2), cov)
        bad(f"{name}-a-1d", "a", lambda f=f: f(spd[0], 2), cov)
        bad(f"{name}-a-int", "a", lambda f=f: f(np.eye(4, dtype=np.int64), 2), cov)
        bad(f"{name}-a-complex", "a", lambda f=f: f(spd.astype(np.complex128), 2), cov)
        bad(f"{name}-a-empty", "a", lambda f=f: f(spd[:0], 2), cov)
        bad(f"{name}-rank-zero", "rank", lambda f=f: f(spd, 0), cov)
        bad(f"{name}-rank-float", "rank", lambda f=f: f(spd, 2.5), cov)
        bad(f"{name}-rank-str", "rank", lambda f=f: f(spd, "2"), cov)
        bad(f"{name}-oversample", "oversample", lambda f=f: f(spd, 2, oversample=-1), cov)
        bad(f"{name}-power-iters", "power_iters", lambda f=f: f(spd, 2, power_iters=1.5), cov)
        bad(f"{name}-seed", "seed", lambda f=f: f(spd, 2, seed=-1), cov)
    bad("randomized-pinv-rcond", "rcond", lambda: lr.randomized_pinv(spd, 2, rcond=NAN))
    bad("randomized-pinv-rcond-neg", "rcond", lambda: lr.randomized_pinv(spd, 2, rcond=-1.0))
    f = lr.randomized_psd_inverse
    bad("randomized-psd-inverse-rcond", "rcond", lambda f=f: f(spd, 2, rcond=-1.0))
    bad("randomized-psd-inverse-damping", "damping", lambda f=f: f(spd, 2, damping=-1.0))
    bad("randomized-psd-inverse-damping-nan", "damping", lambda f=f: f(spd, 2, damping=NAN))
    bad("randomized-psd-inverse-nonsquare", "a", lambda f=f: f(spd[:, :4], 2))
    bad("randomized-psd-inverse-nonsym", "a", lambda f=f: f(spd + np.triu(np.ones((5, 5)), 1), 2))
    bad("randomized-psd-inverse-indefinite", "a", lambda f=f: f(-spd, 5))


# ----------------------------------------------------------------------------- linalg.spectral
def _spectral_cases():
    m = "arraycurv.linalg.spectral"
    mat = np.diag(np.arange(1.0, 7.0))
    like = np.zeros(6)

    def mv(v):
        return mat @ v

    for name in ("lanczos", "block_lanczos"):
        f = getattr(sp, name)
        cov = f"{m}.{name}"
        bad(f"{name}-matvec", "matvec", lambda f=f: f("A", like), cov)
        bad(f"{name}-matvec-nan", "matvec", lambda f=f: f(lambda v: v * NAN, like), cov)
        bad(f"{name}-matvec-shape", "matvec", lambda f=f: f(lambda v: v[:3], like), cov)
        bad(f"{name}-matvec-f32", "matvec", lambda f=f: f(lambda v: (mat @ v).astype(np.float32), like), cov)
        bad(f"{name}-matvec-list", "matvec", lambda f=f: f(lambda v: list(v), like), cov)
        bad(f"{name}-like-list", "like", lambda f=f: f(mv, [0.0] * 6), cov)
        bad(f"{name}-like-2d", "like", lambda f=f: f(mv, np.zeros((6, 1))), cov)
        bad(f"{name}-like-int", "like", lambda f=f: f(mv, np.zeros(6, dtype=np.int64)), cov)
        bad(f"{name}-like-empty", "like", lambda f=f: f(mv, ()), cov)
        bad(f"{name}-like-mixed", r"like\[1\]", lambda f=f: f(mv, (np.zeros(3), STRICT.zeros(3))), cov)
        bad(f"{name}-k-zero", "k", lambda f=f: f(mv, like, 0), cov)
        bad(f"{name}-k-big", "k", lambda f=f: f(mv, like, 7), cov)
        bad(f"{name}-k-float", "k", lambda f=f: f(mv, like, 1.5), cov)
        bad(f"{name}-num-iters", "num_iters", lambda f=f: f(mv, like, num_iters=0), cov)
        bad(f"{name}-tol-neg", "tol", lambda f=f: f(mv, like, tol=-1.0), cov)
        bad(f"{name}-tol-nan", "tol", lambda f=f: f(mv, like, tol=NAN), cov)
        bad(f"{name}-tol-inf", "tol", lambda f=f: f(mv, like, tol=INF), cov)
        bad(f"{name}-which", "which", lambda f=f: f(mv, like, which="bogus"), cov)
        bad(f"{name}-seed", "seed", lambda f=f: f(mv, like, seed=-1), cov)
        bad(f"{name}-batched", "batched", lambda f=f: f(mv, like, batched="no"), cov)
    bad("block-lanczos-block-size", "block_size", lambda: sp.block_lanczos(mv, like, block_size=0))
    for name, n_arg in (("hutchinson_trace", "num_samples"), ("hutchpp_trace", "num_matvecs")):
        f = getattr(sp, name)
        cov = f"{m}.{name}"
        bad(f"{name}-n-zero", n_arg, lambda f=f: f(mv, like, 0), cov)
        bad(f"{name}-n-float", n_arg, lambda f=f: f(mv, like, 2.5), cov)
        bad(f"{name}-distribution", "distribution", lambda f=f: f(mv, like, 6, distribution="bogus"), cov)
        bad(f"{name}-seed", "seed", lambda f=f: f(mv, like, 6, seed=-1), cov)
        bad(f"{name}-matvec", "matvec", lambda f=f: f(None, like, 6), cov)
        bad(f"{name}-matvec-nan", "matvec", lambda f=f: f(lambda v: v * NAN, like, 6), cov)
        bad(f"{name}-like", "like", lambda f=f: f(mv, like.tolist(), 6), cov)
        bad(f"{name}-batched", "batched", lambda f=f: f(mv, like, 6, batched=1), cov)
    f = sp.slq
    cov = f"{m}.slq"
    bad("slq-num-iters", "num_iters", lambda f=f: f(mv, like, 0), cov)
    bad("slq-num-probes", "num_probes", lambda f=f: f(mv, like, 4, 0), cov)
    bad("slq-distribution", "distribution", lambda f=f: f(mv, like, 4, distribution="x"), cov)
    bad("slq-matvec-nan", "matvec", lambda f=f: f(lambda v: v * NAN, like, 4), cov)
    bad("slq-probes-nan", "probes", lambda f=f: f(mv, like, 4, probes=_with(np.ones((2, 6)), NAN)), cov)
    bad("slq-probes-shape", "probes", lambda f=f: f(mv, like, 4, probes=np.ones((2, 5))), cov)
    bad("slq-probes-zero", "probes", lambda f=f: f(mv, like, 4, probes=np.zeros((2, 6))), cov)
    bad("slq-probes-f32", "probes", lambda f=f: f(mv, like, 4, probes=np.ones((2, 6), dtype=np.float32)), cov)
    bad("slq-probes-list", "probes", lambda f=f: f(mv, like, 4, probes=[[1.0] * 6]), cov)
    bad("slq-probes-strict", "probes", lambda f=f: f(mv, like, 4, probes=STRICT.ones((2, 6),
                                                                                   dtype=STRICT.float64)), cov)
    bad("slq-seed", "seed", lambda f=f: f(mv, like, 4, seed=-1), cov)
    quad = sp.slq(mv, like, 4, 2)
    cov = f"{m}.slq_trace"
    bad("slq-trace-quad", "quad", lambda: sp.slq_trace((1, 2), np.exp), cov)
    bad("slq-trace-fn", "fn", lambda: sp.slq_trace(quad, "exp"), cov)
    bad("slq-trace-fn-nan", "fn", lambda: sp.slq_trace(quad, lambda t: t * NAN), cov)
    bad("slq-trace-fn-shape", "fn", lambda: sp.slq_trace(quad, lambda t: t[:1]), cov)
    bad("slq-trace-quad-nan", r"quad\.nodes", lambda: sp.slq_trace(quad._replace(nodes=_with(quad.nodes, NAN)),
                                                                 np.exp), cov)
    f = sp.spectral_density
    cov = f"{m}.spectral_density"
    bad("density-quad", "quad", lambda f=f: f("q"), cov)
    bad("density-quad-nan", r"quad\.nodes", lambda f=f: f(quad._replace(nodes=_with(quad.nodes, NAN))), cov)
    bad("density-grid-nan", "grid", lambda f=f: f(quad, _with(np.linspace(0.0, 7.0, 9), NAN)), cov)
    bad("density-grid-list", "grid", lambda f=f: f(quad, [0.0, 1.0]), cov)
    bad("density-grid-2d", "grid", lambda f=f: f(quad, np.ones((2, 2))), cov)
    bad("density-grid-int", "grid", lambda f=f: f(quad, np.arange(3)), cov)
    bad("density-grid-strict", "grid", lambda f=f: f(quad, STRICT.asarray(np.linspace(0.0, 1.0, 3))), cov)
    bad("density-num-points", "num_points", lambda f=f: f(quad, num_points=1), cov)
    bad("density-sigma-zero", "sigma", lambda f=f: f(quad, sigma=0.0), cov)
    bad("density-sigma-nan", "sigma", lambda f=f: f(quad, sigma=NAN), cov)
    bad("density-sigma-inf", "sigma", lambda f=f: f(quad, sigma=INF), cov)
    bad("density-kappa", "kappa", lambda f=f: f(quad, kappa=1.0), cov)
    bad("density-kappa-inf", "kappa", lambda f=f: f(quad, kappa=INF), cov)
    bad("density-margin-nan", "margin", lambda f=f: f(quad, margin=NAN), cov)
    bad("density-margin-neg", "margin", lambda f=f: f(quad, margin=-1.0), cov)


# ----------------------------------------------------------------------------- Bernacchia
def _bernacchia_cases():
    m = "arraycurv.directions.bernacchia"
    model = ac.DeepLinear((3, 4, 2))
    params = ac.init_params(model, 0)
    x, y = _randn(1, 6, 3), _randn(2, 6, 2)
    mlp = ac.mlp((3, 4, 2))
    mp = ac.init_params(mlp, 0)
    for label, mdl, p in (("deep_linear", model, params), ("mlp", mlp, mp)):
        _batch_family(f"bernacchia_factors-{label}", lambda q, b, mdl=mdl: bn.bernacchia_factors(mdl, q, b), mdl, p,
                      x, y, labels=False, covers=(f"{m}.bernacchia_factors",))
        _batch_family(f"bernacchia_ngd_direction-{label}", lambda q, b, mdl=mdl: bn.bernacchia_ngd_direction(
            mdl, q, b), mdl, p, x, y, labels=False, covers=(f"{m}.bernacchia_ngd_direction",))
    batch = (x, y)
    f = bn.bernacchia_ngd_direction
    for cat, kw in (("alpha-nan", dict(alpha=NAN)), ("alpha-str", dict(alpha="1")),
                    ("damping-neg", dict(damping=-1.0)), ("damping-nan", dict(damping=NAN)),
                    ("num_samples-zero", dict(num_samples=0)), ("num_samples-float", dict(num_samples=1.5)),
                    ("seed-neg", dict(num_samples=2, seed=-1)), ("form", dict(form="bogus")),
                    ("inverse", dict(inverse="bogus")), ("rcond-neg", dict(rcond=-1.0)),
                    ("rcond-nan", dict(rcond=NAN)), ("warn", dict(warn="yes")),
                    ("noise_cov-nan", dict(noise_cov=_with(np.eye(2), NAN))),
                    ("noise_cov-shape", dict(noise_cov=np.eye(3))),
                    ("noise_cov-nonsym", dict(noise_cov=np.eye(2) + np.triu(np.ones((2, 2)), 1))),
                    ("noise_cov-indefinite", dict(noise_cov=-np.eye(2))),
                    ("noise_cov-list", dict(noise_cov=[[1.0, 0.0], [0.0, 1.0]])),
                    ("noise_cov-f32", dict(noise_cov=np.eye(2, dtype=np.float32))),
                    ("noise_cov-strict", dict(noise_cov=STRICT.eye(2, dtype=STRICT.float64)))):
        bad(f"bernacchia-ngd-{cat}", cat.split("-")[0], lambda kw=kw, f=f: f(model, params, batch, **kw))
    cnn = _cnn()
    bad("bernacchia-ngd-model", "model", lambda f=f: f(cnn, ac.init_params(cnn, 0), batch))
    bad("bernacchia-ngd-model-str", "model", lambda f=f: f("deep_linear", params, batch))
    facs = bn.bernacchia_factors(model, params, batch)
    cov = f"{m}.factor_inverses"
    bad("factor-inverses-type", "factors", lambda: bn.factor_inverses("f"), cov)
    bad("factor-inverses-damping", "damping", lambda: bn.factor_inverses(facs, damping=-1.0), cov)
    bad("factor-inverses-damping-nan", "damping", lambda: bn.factor_inverses(facs, damping=NAN), cov)
    bad("factor-inverses-inverse", "inverse", lambda: bn.factor_inverses(facs, inverse="bogus"), cov)
    bad("factor-inverses-rcond", "rcond", lambda: bn.factor_inverses(facs, rcond=NAN), cov)
    bad("factor-inverses-seed", "seed", lambda: bn.factor_inverses(facs, inverse="randomized", seed=-1), cov)
    bad("factor-inverses-nan", r"factors\.layers\[0\]\.error_cov", lambda: bn.factor_inverses(facs._replace(
        layers=(facs.layers[0]._replace(error_cov=_with(facs.layers[0].error_cov, NAN)),) + facs.layers[1:])), cov)
    inverses = bn.factor_inverses(facs)
    grads = tuple(lay.grad for lay in facs.layers)
    cov = f"{m}.apply_factor_inverses"
    bad("apply-inverses-grads-short", "grads", lambda: bn.apply_factor_inverses(inverses, grads[:1]), cov)
    bad("apply-inverses-grads-nan", r"grads\[0\]", lambda: bn.apply_factor_inverses(
        inverses, _setp(grads, 0, _with(grads[0], NAN))), cov)
    bad("apply-inverses-grads-shape", r"grads\[0\]", lambda: bn.apply_factor_inverses(
        inverses, _setp(grads, 0, grads[0].T)), cov)
    bad("apply-inverses-grads-list", r"grads(\[0\])?", lambda: bn.apply_factor_inverses(
        inverses, [g.tolist() for g in grads]), cov)
    bad("apply-inverses-alpha", "alpha", lambda: bn.apply_factor_inverses(inverses, grads, alpha=NAN), cov)
    bad("apply-inverses-type", "inverses", lambda: bn.apply_factor_inverses("i", grads), cov)
    g = tuple(np.ones_like(p) for p in params)
    cov = f"{m}.predicted_change"
    bad("predicted-change-direction-short", "direction", lambda: bn.predicted_change(g, g[:1]), cov)
    bad("predicted-change-direction-shape", r"direction\[0\]", lambda: bn.predicted_change(
        g, _setp(g, 0, g[0].T)), cov)
    bad("predicted-change-direction-nan", r"direction\[0\]", lambda: bn.predicted_change(
        g, _setp(g, 0, _with(g[0], NAN))), cov)
    bad("predicted-change-grads-nan", r"grads\[0\]", lambda: bn.predicted_change(_setp(g, 0, _with(g[0], NAN)), g),
        cov)
    bad("predicted-change-grads-list", r"grads(\[0\])?", lambda: bn.predicted_change([q.tolist() for q in g], g),
        cov)
    bad("predicted-change-direction-strict", r"direction\[\d\]", lambda: bn.predicted_change(
        g, tuple(STRICT.asarray(q) for q in g)), cov)
    bad("predicted-change-alpha", "alpha", lambda: bn.predicted_change(g, g, alpha=INF), cov)
    cov = f"{m}.map_velocity"
    _batch_family("map_velocity", lambda q, b: bn.map_velocity(model, q, b), model, params, x, y, labels=False,
                  covers=(cov,))
    bad("map-velocity-model", "model", lambda: bn.map_velocity(mlp, mp, batch), cov)
    bad("map-velocity-alpha", "alpha", lambda: bn.map_velocity(model, params, batch, alpha=NAN), cov)
    bad("map-velocity-rcond", "rcond", lambda: bn.map_velocity(model, params, batch, rcond=-1.0), cov)
    bad("map-velocity-noise-cov", "noise_cov", lambda: bn.map_velocity(model, params, batch,
                                                                        noise_cov=_with(np.eye(2), NAN)), cov)
    w0, ws = np.eye(3), 2.0 * np.eye(3)
    f = bn.map_path_singularity
    cov = f"{m}.map_path_singularity"
    bad("map-path-w0-nonsquare", "w0", lambda f=f: f(w0[:2], ws), cov)
    bad("map-path-w0-nan", "w0", lambda f=f: f(_with(w0, NAN), ws), cov)
    bad("map-path-w0-list", "w0", lambda f=f: f(w0.tolist(), ws), cov)
    bad("map-path-w0-int", "w0", lambda f=f: f(np.eye(3, dtype=np.int64), ws), cov)
    bad("map-path-w-star-shape", "w_star", lambda f=f: f(w0, ws[:2, :2]), cov)
    bad("map-path-w-star-inf", "w_star", lambda f=f: f(w0, _with(ws, INF)), cov)
    bad("map-path-w-star-strict", "w_star", lambda f=f: f(w0, STRICT.asarray(ws)), cov)
    bad("map-path-w-star-f32", "w_star", lambda f=f: f(w0, ws.astype(np.float32)), cov)
    bad("map-path-alpha-zero", "alpha", lambda f=f: f(w0, ws, alpha=0.0), cov)
    bad("map-path-alpha-nan", "alpha", lambda f=f: f(w0, ws, alpha=NAN), cov)
    sq = ac.DeepLinear((3, 3, 3))
    sqp = ac.init_params(sq, 0)
    sqb = (_randn(1, 6, 3), _randn(2, 6, 3))
    cov = f"{m}.check_map_path"
    _batch_family("check_map_path", lambda q, b: bn.check_map_path(sq, q, b, warn=False), sq, sqp, *sqb,
                  labels=False, covers=(cov,))
    bad("check-map-path-model", "model", lambda: bn.check_map_path(mlp, mp, batch), cov)
    bad("check-map-path-alpha", "alpha", lambda: bn.check_map_path(sq, sqp, sqb, alpha=NAN), cov)
    bad("check-map-path-warn", "warn", lambda: bn.check_map_path(sq, sqp, sqb, warn="no"), cov)
    bad("has-bottleneck-model", "model", lambda: bn.has_bottleneck("mlp"), f"{m}.has_bottleneck")


# ----------------------------------------------------------------------------- summary tensors
def _summary_cases():
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    x, y = _randn(1, 5, 3), _randn(2, 5, 2)
    u = ac.init_params(model, 1)
    part = pt.by_layer(model)
    eta = np.ones(part.num_groups)
    routines = {
        "summary": (lambda p, b, d=u, pa=part: sm.summary(model, p, b, d, pa), "arraycurv.curvature.summary"),
        "summary_reference": (lambda p, b, d=u, pa=part: sm.summary_reference(model, p, b, d, pa),
                              "arraycurv.curvature.summary"),
        "summary_third": (lambda p, b, d=u, pa=part: sm.summary_third(model, p, b, d, pa),
                          "arraycurv.curvature.summary"),
        "summary_taylor_terms": (lambda p, b, d=u, pa=part: sm.summary_taylor_terms(model, p, b, d, pa, eta),
                                 "arraycurv.curvature.summary"),
        "newton_summary_direction": (lambda p, b, d=u, pa=part: ns.newton_summary_direction(model, p, b, d, pa),
                                     "arraycurv.directions.newton_summary"),
    }
    b = (x, y)
    for name, (call, mod) in routines.items():
        cov = f"{mod}.{name}"
        _batch_family(name, lambda p, bb, call=call: call(p, bb), model, params, x, y, labels=False, covers=(cov,))
        bad(f"{name}-direction-nan", r"direction\[0\]", lambda call=call: call(
            params, b, _setp(u, 0, _with(u[0], NAN))), cov)
        bad(f"{name}-direction-shape", r"direction\[0\]", lambda call=call: call(params, b, _setp(u, 0, u[0].T)), cov)
        bad(f"{name}-direction-short", "direction", lambda call=call: call(params, b, u[:1]), cov)
        bad(f"{name}-direction-list", r"direction(\[0\])?", lambda call=call: call(
            params, b, [q.tolist() for q in u]), cov)
        bad(f"{name}-direction-f32", r"direction\[\d\]", lambda call=call: call(
            params, b, tuple(q.astype(np.float32) for q in u)), cov)
        bad(f"{name}-partition-type", "partition", lambda call=call: call(params, b, u, "layer"), cov)
        bad(f"{name}-partition-other", "partition", lambda call=call: call(
            params, b, u, pt.trivial(ac.mlp((3, 5, 2)))), cov)
    for bad_order in (0, 4, "3", 2.0):
        bad(f"summary-order-{bad_order!r}", "order", lambda o=bad_order: sm.summary(model, params, b, u, part, order=o))
    bad("summary-loss", "loss", lambda: sm.summary(model, params, b, u, part, "mse"))
    f = sm.summary_taylor_terms
    bad("taylor-terms-eta-shape", "eta", lambda f=f: f(model, params, b, u, part, np.ones(5)))
    bad("taylor-terms-eta-nan", "eta", lambda f=f: f(model, params, b, u, part, _with(eta, NAN)))
    bad("taylor-terms-eta-list", "eta", lambda f=f: f(model, params, b, u, part, eta.tolist()))
    bad("taylor-terms-eta-f32", "eta", lambda f=f: f(model, params, b, u, part, eta.astype(np.float32)))
    bad("taylor-terms-eta-strict", "eta", lambda f=f: f(model, params, b, u, part, STRICT.asarray(eta)))
    bad("taylor-terms-eta-int", "eta", lambda f=f: f(model, params, b, u, part, np.ones(2, dtype=np.int64)))
    bad("taylor-terms-order", "order", lambda f=f: f(model, params, b, u, part, eta, order=-1))
    f = ns.newton_summary_direction
    bad("ns-direction-method", "method", lambda f=f: f(model, params, b, u, part, method="bogus"))
    bad("ns-direction-damping-int", "damping_int", lambda f=f: f(model, params, b, u, part, damping_int=NAN))
    bad("ns-direction-damping-int-neg", "damping_int", lambda f=f: f(model, params, b, u, part, damping_int=-1.0))
    bad("ns-direction-ridge", "ridge", lambda f=f: f(model, params, b, u, part, method="ridge", ridge=-1.0))
    bad("ns-direction-ridge-nan", "ridge", lambda f=f: f(model, params, b, u, part, method="ridge", ridge=NAN))
    bad("ns-direction-ridge-unused", "ridge", lambda f=f: f(model, params, b, u, part, ridge=NAN))


def _newton_step_cases():
    m = "arraycurv.directions.newton_summary"
    g = np.asarray([1.0, 2.0])
    h = np.asarray([[2.0, 0.5], [0.5, 1.0]])
    d = np.asarray([0.5, 1.0])
    calls = {
        "newton_step": lambda g, h, d: ns.newton_step(g, h),
        "ridge_step": lambda g, h, d: ns.ridge_step(g, h, 0.1),
        "cubic_step": lambda g, h, d: ns.cubic_step(g, h, d),
        "cubic_model": lambda g, h, d: ns.cubic_model(np.ones(2), g, h, d),
    }
    for name, f in calls.items():
        cov = f"{m}.{name}"
        bad(f"{name}-gbar-2d", "gbar", lambda f=f: f(g[None], h, d), cov)
        bad(f"{name}-gbar-nan", "gbar", lambda f=f: f(_with(g, NAN), h, d), cov)
        bad(f"{name}-gbar-list", "gbar", lambda f=f: f(g.tolist(), h, d), cov)
        bad(f"{name}-gbar-empty", "gbar", lambda f=f: f(g[:0], h[:0, :0], d[:0]), cov)
        bad(f"{name}-gbar-int", "gbar", lambda f=f: f(np.ones(2, dtype=np.int64), h, d), cov)
        bad(f"{name}-hbar-shape", "hbar", lambda f=f: f(g, h[:1], d), cov)
        bad(f"{name}-hbar-nan", "hbar", lambda f=f: f(g, _with(h, NAN), d), cov)
        bad(f"{name}-hbar-nonsym", "hbar", lambda f=f: f(g, h + np.triu(np.ones((2, 2)), 1), d), cov)
        bad(f"{name}-hbar-strict", "hbar", lambda f=f: f(g, STRICT.asarray(h), d), cov)
        bad(f"{name}-hbar-f32", "hbar", lambda f=f: f(g, h.astype(np.float32), d), cov)
        bad(f"{name}-hbar-list", "hbar", lambda f=f: f(g, h.tolist(), d), cov)
    bad("newton-step-singular", "hbar", lambda: ns.newton_step(g, np.zeros((2, 2))))
    bad("ridge-step-ridge", "ridge", lambda: ns.ridge_step(g, h, -1.0))
    bad("ridge-step-ridge-nan", "ridge", lambda: ns.ridge_step(g, h, NAN))
    for name in ("cubic_step", "cubic_model"):
        f = calls[name]
        bad(f"{name}-d-neg", "d", lambda f=f: f(g, h, -d), f"{m}.{name}")
        bad(f"{name}-d-nan", "d", lambda f=f: f(g, h, _with(d, NAN)))
        bad(f"{name}-d-shape", "d", lambda f=f: f(g, h, d[:1]))
        bad(f"{name}-d-list", "d", lambda f=f: f(g, h, d.tolist()))
        bad(f"{name}-d-f32", "d", lambda f=f: f(g, h, d.astype(np.float32)))
    bad("cubic-step-damping-int", "damping_int", lambda: ns.cubic_step(g, h, d, NAN))
    bad("cubic-step-damping-int-neg", "damping_int", lambda: ns.cubic_step(g, h, d, -1.0))
    bad("cubic-model-damping-int", "damping_int", lambda: ns.cubic_model(np.ones(2), g, h, d, "1"))
    bad("cubic-model-eta-shape", "eta", lambda: ns.cubic_model(np.ones(3), g, h, d))
    bad("cubic-model-eta-nan", "eta", lambda: ns.cubic_model(_with(np.ones(2), NAN), g, h, d))
    bad("cubic-model-eta-list", "eta", lambda: ns.cubic_model([1.0, 1.0], g, h, d))
    bad("cubic-model-eta-f32", "eta", lambda: ns.cubic_model(np.ones(2, dtype=np.float32), g, h, d))


# ----------------------------------------------------------------------------- reduce
def _reduce_cases():
    m = "arraycurv.curvature.reduce"
    x, y = _randn(1, 5, 3), _randn(2, 5, 2)
    cov = f"{m}.chunk_batch"
    bad("chunk-batch-size-zero", "chunk_size", lambda: rd.chunk_batch((x, y), 0), cov)
    bad("chunk-batch-size-float", "chunk_size", lambda: rd.chunk_batch((x, y), 2.5), cov)
    bad("chunk-batch-size-str", "chunk_size", lambda: rd.chunk_batch((x, y), "2"), cov)
    bad("chunk-batch-empty", r"batch( x)?", lambda: rd.chunk_batch((x[:0], y[:0]), 2), cov)
    bad("chunk-batch-list", r"batch( x)?", lambda: rd.chunk_batch((x.tolist(), y), 2), cov)
    bad("chunk-batch-y-list", r"batch( y)?", lambda: rd.chunk_batch((x, y.tolist()), 2), cov)
    bad("chunk-batch-sizes", r"batch( y)?", lambda: rd.chunk_batch((x, y[:4]), 2), cov)
    bad("chunk-batch-scalar", "batch", lambda: rd.chunk_batch(3.0, 2), cov)
    bad("chunk-batch-0d", "batch", lambda: rd.chunk_batch(np.float64(3.0), 2), cov)
    bad("chunk-batch-empty-tuple", "batch", lambda: rd.chunk_batch((), 2), cov)
    cov = f"{m}.mean_accumulator"
    bad("mean-accumulator-fn", "fn", lambda: rd.mean_accumulator("f"), cov)
    bad("mean-accumulator-size", "size", lambda: rd.mean_accumulator(len, size=3), cov)
    acc = rd.mean_accumulator(lambda c: (c[0].sum(axis=0),))
    cov = f"{m}.reduce_chunks"
    bad("reduce-chunks-acc", "acc", lambda: rd.reduce_chunks(len, [(x, y)]), cov)
    bad("reduce-chunks-empty", "chunks", lambda: rd.reduce_chunks(acc, []), cov)
    bad("reduce-chunks-str", "chunks", lambda: rd.reduce_chunks(acc, 3), cov)
    bad("reduce-chunks-per-task", "per_task", lambda: rd.reduce_chunks(acc, [(x, y)], client=object(), per_task=0),
        cov)
    bad("reduce-chunks-empty-chunk", "chunks", lambda: rd.reduce_chunks(acc, [(x[:0], y[:0])]), cov)


# ----------------------------------------------------------------------------- partitions
def _partition_cases():
    m = "arraycurv.params.partition"
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    part = pt.by_layer(model)
    for name in ("by_kind", "by_layer", "canonical", "trivial", "discrete"):
        f = getattr(pt, name)
        bad(f"{name}-model-str", "model", lambda f=f: f("mlp"), f"{m}.{name}")
        bad(f"{name}-model-int", "model", lambda f=f: f(3), f"{m}.{name}")
    bad("discrete-max-params", "max_params", lambda: pt.discrete(model, max_params=0))
    bad("discrete-max-params-str", "max_params", lambda: pt.discrete(model, max_params="9"))
    bad("discrete-too-many", "model", lambda: pt.discrete(model, max_params=3))
    bad("partition-shapes", "shapes", lambda: pt.Partition(((2, -1),), (0,)), f"{m}.Partition")
    bad("partition-labels-length", "labels", lambda: pt.Partition(((2,), (3,)), (0,)))
    bad("partition-labels-negative", "labels", lambda: pt.Partition(((2,),), (-1,)))
    bad("partition-labels-gap", "labels", lambda: pt.Partition(((2,), (3,)), (0, 2)))
    bad("partition-labels-float", r"labels\[0\]", lambda: pt.Partition(((2,),), (0.5,)))
    bad("partition-names", "names", lambda: pt.Partition(((2,),), (0,), ("a", "b")))
    f = pt.from_labels
    cov = f"{m}.from_labels"
    bad("from-labels-length", "labels", lambda f=f: f(model, (0, 1)), cov)
    bad("from-labels-entry", r"labels\[0\]", lambda f=f: f(model, ((0, 1), 1, 2, 3)), cov)
    bad("from-labels-model", "model", lambda f=f: f("mlp", (0,)), cov)
    bad("from-labels-str", "labels", lambda f=f: f(model, "abcd"), cov)
    cov = f"{m}.merge"
    bad("merge-mapping-length", "mapping", lambda: pt.merge(part, (0,)), cov)
    bad("merge-mapping-float", "mapping", lambda: pt.merge(part, (0.0, 1.0)), cov)
    bad("merge-partition", "partition", lambda: pt.merge("p", (0, 1)), cov)
    u = tuple(np.ones_like(p) for p in params)
    cov = f"{m}.check_partition"
    bad("check-partition-short", "direction", lambda: pt.check_partition(part, u[:1]), cov)
    bad("check-partition-shape", r"direction\[0\]", lambda: pt.check_partition(part, _setp(u, 0, u[0].T)), cov)
    bad("check-partition-list", r"direction(\[0\])?", lambda: pt.check_partition(part, [q.tolist() for q in u]), cov)
    bad("check-partition-type", "partition", lambda: pt.check_partition("p", u), cov)
    bad("check-partition-name", r"grads\[0\]", lambda: pt.check_partition(part, _setp(u, 0, u[0].T), "grads"), cov)
    for name, call in (("restrict", lambda d: pt.restrict(d, part)),
                       ("scale_groups", lambda d: pt.scale_groups(d, np.ones(2), part))):
        cov = f"{m}.{name}"
        bad(f"{name}-short", "direction", lambda call=call: call(u[:1]), cov)
        bad(f"{name}-shape", r"direction\[0\]", lambda call=call: call(_setp(u, 0, u[0].T)), cov)
        bad(f"{name}-list", r"direction(\[0\])?", lambda call=call: call([q.tolist() for q in u]), cov)
        bad(f"{name}-nan", r"direction\[0\]", lambda call=call: call(_setp(u, 0, _with(u[0], NAN))), cov)
        bad(f"{name}-strict", r"direction\[\d\]", lambda call=call: call(_setp(u, 1, STRICT.asarray(u[1]))), cov)
        bad(f"{name}-f32", r"direction\[\d\]", lambda call=call: call(_setp(u, 1, u[1].astype(np.float32))), cov)
        bad(f"{name}-int", r"direction\[\d\]", lambda call=call: call(tuple(np.ones(q.shape, dtype=np.int64)
                                                                            for q in u)), cov)
    for name, call in (("expand", lambda e: pt.expand(e, part)), ("scale_groups", lambda e: pt.scale_groups(
            u, e, part))):
        cov = f"{m}.{name}"
        bad(f"{name}-eta-shape", "eta", lambda call=call: call(np.ones(3)), cov)
        bad(f"{name}-eta-nan", "eta", lambda call=call: call(_with(np.ones(2), NAN)), cov)
        bad(f"{name}-eta-list", "eta", lambda call=call: call([1.0, 1.0]), cov)
        bad(f"{name}-eta-int", "eta", lambda call=call: call(np.ones(2, dtype=np.int64)), cov)
        bad(f"{name}-eta-complex", "eta", lambda call=call: call(np.ones(2, dtype=np.complex128)), cov)
    bad("scale-groups-eta-strict", "eta", lambda: pt.scale_groups(u, STRICT.ones(2, dtype=STRICT.float64), part))
    bad("scale-groups-eta-f32", "eta", lambda: pt.scale_groups(u, np.ones(2, dtype=np.float32), part))
    bad("expand-partition", "partition", lambda: pt.expand(np.ones(2), "p"))
    bad("group-sizes-partition", "partition", lambda: pt.group_sizes("p"), f"{m}.group_sizes")
    for name in ("group_masks", "indicator_matrix"):
        f = getattr(pt, name)
        cov = f"{m}.{name}"
        bad(f"{name}-partition", "partition", lambda f=f: f("p", np.ones(2)), cov)
        bad(f"{name}-like-list", "like", lambda f=f: f(part, [1.0]), cov)
        bad(f"{name}-like-int", "like", lambda f=f: f(part, np.ones(2, dtype=np.int64)), cov)
        bad(f"{name}-like-complex", "like", lambda f=f: f(part, np.ones(2, dtype=np.complex128)), cov)


# ----------------------------------------------------------------------------- K-FAC names
def _kfac_cases():
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    x, y = _randn(1, 5, 3), _randn(2, 5, 2)
    cov = "arraycurv.directions.kfac.kfac_qngd_direction"
    # finite inputs whose gradient overflows: the error names the caller's params, not "gradient[i]"
    big = tuple(1e160 * p for p in params)
    bad("kfac-gradient-overflow", "params", lambda: kf.kfac_qngd_direction(model, big, (x, y), 2.0), cov)
    bad("kfac-factor-overflow", r"(params|batch x)", lambda: kf.kfac_qngd_direction(
        model, params, (1e200 * x, y), 2.0), cov)
    bad("kfac-model", "model", lambda: kf.kfac_qngd_direction("mlp", params, (x, y), 2.0), cov)


# ----------------------------------------------------------------------------- Sequential internals
def _sequential_cases():
    m = "arraycurv.models.sequential"
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    x = _randn(1, 5, 3)
    lin = sq.linearize(model, params, x)
    v = ac.init_params(model, 1)
    c = _randn(3, 3, 5, 2)
    y = _randn(2, 5, 2)
    tangent_calls = {
        "jvp_linearized": (lambda ln, t: sq.jvp_linearized(ln, t), "tangent"),
        "hvp_linearized": (lambda ln, t: sq.hvp_linearized(ln, y, t), "v"),
    }
    for name, (call, arg) in tangent_calls.items():
        cov = f"{m}.{name}"
        bad(f"{name}-lin-type", "lin", lambda call=call: call("lin", v), cov)
        bad(f"{name}-lin-other", "lin", lambda call=call: call(ac.linearize(ac.DeepLinear((3, 4, 2)), (
            np.ones((4, 3)), np.ones((2, 4))), x), v), cov)
        bad(f"{name}-{arg}-list", rf"{arg}(\[0\])?", lambda call=call: call(lin, [q.tolist() for q in v]), cov)
        bad(f"{name}-{arg}-nan", rf"{arg}\[0\]", lambda call=call: call(lin, _setp(v, 0, _with(v[0], NAN))), cov)
        bad(f"{name}-{arg}-inf", rf"{arg}\[\d\]", lambda call=call: call(lin, _setp(v, 3, _with(v[3], INF))), cov)
        bad(f"{name}-{arg}-shape", rf"{arg}\[0\]", lambda call=call: call(lin, _setp(v, 0, v[0][..., :1])), cov)
        bad(f"{name}-{arg}-short", arg, lambda call=call: call(lin, v[:-1]), cov)
        bad(f"{name}-{arg}-array", arg, lambda call=call: call(lin, np.ones(3)), cov)
        bad(f"{name}-{arg}-f32", rf"{arg}\[\d\]", lambda call=call: call(lin, _setp(v, 1, v[1].astype(np.float32))),
            cov)
        bad(f"{name}-{arg}-int", rf"{arg}\[\d\]", lambda call=call: call(lin, tuple(
            np.ones(q.shape, dtype=np.int64) for q in v)), cov)
        bad(f"{name}-{arg}-strict", rf"{arg}\[\d\]", lambda call=call: call(lin, tuple(
            STRICT.asarray(q) for q in v)), cov)
        bad(f"{name}-{arg}-lead", rf"{arg}\[1\]", lambda call=call: call(lin, _setp(v, 1, np.stack([v[1]] * 2))),
            cov)
    bad("hvp-linearized-y-nan", "y", lambda: sq.hvp_linearized(lin, _with(y, NAN), v))
    bad("hvp-linearized-y-shape", "y", lambda: sq.hvp_linearized(lin, y[:4], v))
    bad("hvp-linearized-y-list", "y", lambda: sq.hvp_linearized(lin, y.tolist(), v))
    bad("hvp-linearized-y-f32", "y", lambda: sq.hvp_linearized(lin, y.astype(np.float32), v))
    bad("hvp-linearized-y-labels", "y", lambda: sq.hvp_linearized(lin, np.asarray([0, 1, 5, 1, 0]), v, CE))
    bad("hvp-linearized-loss", "loss", lambda: sq.hvp_linearized(lin, y, v, "mse"))
    cot_calls = {
        "vjp_linearized": lambda ln, c: sq.vjp_linearized(ln, c),
        "vjp_linearized_per_sample": lambda ln, c: sq.vjp_linearized(ln, c, per_sample=True),
        "backprop_to_layer_outputs": lambda ln, c: sq.backprop_to_layer_outputs(ln, c),
    }
    for name, call in cot_calls.items():
        cov = f"{m}.{name.replace('_per_sample', '')}"
        bad(f"{name}-lin-type", "lin", lambda call=call: call(params, c[0]), cov)
        bad(f"{name}-cotangent-nan", "cotangent", lambda call=call: call(lin, _with(c, NAN)), cov)
        bad(f"{name}-cotangent-inf", "cotangent", lambda call=call: call(lin, _with(c[0], -INF)), cov)
        bad(f"{name}-cotangent-list", "cotangent", lambda call=call: call(lin, c[0].tolist()), cov)
        bad(f"{name}-cotangent-shape", "cotangent", lambda call=call: call(lin, c[0, :4]), cov)
        bad(f"{name}-cotangent-width", "cotangent", lambda call=call: call(lin, c[0, :, :1]), cov)
        bad(f"{name}-cotangent-1d", "cotangent", lambda call=call: call(lin, c[0, 0]), cov)
        bad(f"{name}-cotangent-f32", "cotangent", lambda call=call: call(lin, c.astype(np.float32)), cov)
        bad(f"{name}-cotangent-int", "cotangent", lambda call=call: call(lin, np.ones((5, 2), dtype=np.int64)), cov)
        bad(f"{name}-cotangent-strict", "cotangent", lambda call=call: call(lin, STRICT.asarray(c[0])), cov)
    bad("vjp-linearized-per-sample", "per_sample", lambda: sq.vjp_linearized(lin, c[0], per_sample="yes"))
    cov = f"{m}.layer_inputs"
    bad("layer-inputs-lin-type", "lin", lambda: sq.layer_inputs("lin"), cov)
    bad("layer-inputs-lin-params", "lin", lambda: sq.layer_inputs(params), cov)
    cov = f"{m}.layer_param_indices"
    bad("layer-param-indices-str", "model", lambda: sq.layer_param_indices("mlp"), cov)
    bad("layer-param-indices-deep-linear", "model", lambda: sq.layer_param_indices(ac.DeepLinear((3, 2))), cov)
    cov = f"{m}.as_sequential"
    bad("as-sequential-str", "model", lambda: sq.as_sequential("mlp"), cov)
    bad("as-sequential-none", "model", lambda: sq.as_sequential(None), cov)
    cov = f"{m}.linearize"
    bad("sq-linearize-x-nan", "x", lambda: sq.linearize(model, params, _with(x, NAN)), cov)
    bad("sq-linearize-x-width", "x", lambda: sq.linearize(model, params, x[:, :2]), cov)
    bad("sq-linearize-params-short", "params", lambda: sq.linearize(model, params[:1], x), cov)
    bad("sq-linearize-model", "model", lambda: sq.linearize("mlp", params, x), cov)


def _sequential_builder_cases():
    m = "arraycurv.models.sequential"
    cov = f"{m}.mlp"
    for name, kw in (("sizes-int", dict(sizes=3)), ("sizes-short", dict(sizes=(3,))),
                     ("sizes-zero", dict(sizes=(3, 0))),
                     ("sizes-float", dict(sizes=(3.0, 2))), ("sizes-bool", dict(sizes=(3, True))),
                     ("sizes-str", dict(sizes="32")), ("sizes-none", dict(sizes=None)),
                     ("activation", dict(sizes=(3, 2), activation="bogus")),
                     ("activation-int", dict(sizes=(3, 2), activation=3)),
                     ("bias", dict(sizes=(3, 2), bias="yes"))):
        bad(f"mlp-{name}", name.split("-")[0], lambda kw=kw: sq.mlp(**kw), cov)
    cov = f"{m}.lenet5"
    for name, kw in (("input_shape-2d", dict(input_shape=(28, 28))), ("input_shape-int", dict(input_shape=28)),
                     ("input_shape-zero", dict(input_shape=(1, 0, 28))),
                     ("input_shape-tiny", dict(input_shape=(1, 2, 2))),
                     ("num_classes-zero", dict(num_classes=0)), ("num_classes-float", dict(num_classes=2.5)),
                     ("activation", dict(activation="bogus")), ("pool", dict(pool="min")),
                     ("padding-neg", dict(padding=(-1, 0))), ("padding-len", dict(padding=(1,))),
                     ("padding-int", dict(padding=2)), ("padding-float", dict(padding=(1.5, 0)))):
        bad(f"lenet5-{name}", name.split("-")[0], lambda kw=kw: sq.lenet5(**kw), cov)
    cov = f"{m}.Sequential"
    bad("sequential-layers-empty", "layers", lambda: sq.Sequential((), (3,)), cov)
    bad("sequential-layers-str", "layers", lambda: sq.Sequential("dense", (3,)), cov)
    bad("sequential-input-shape", "input_shape", lambda: sq.Sequential((Dense(3, 2),), (0,)), cov)
    bad("sequential-input-shape-int", "input_shape", lambda: sq.Sequential((Dense(3, 2),), 3), cov)
    bad("sequential-chain", r"layers(\[\d\])?", lambda: sq.Sequential((Dense(3, 2), Dense(3, 2)), (3,)), cov)
    bad("sequential-layer-type", r"layers(\[\d\])?", lambda: sq.Sequential(("dense",), (3,)), cov)
    bad("sequential-image-out", r"layers(\[\d\])?", lambda: sq.Sequential((Conv2d(1, 2, 3),), (1, 4, 4)), cov)


# ----------------------------------------------------------------------------- Fisher, Kronecker factors, operators
def _x_family(prefix, call, model, params, x, covers=()):
    """The common malformed calls of a routine ``call(params, x)`` (inputs only)."""
    def add(cat, arg, p=params, xx=x):
        bad(f"{prefix}-{cat}", arg, lambda: call(p, xx), *covers)

    add("params-list", r"params(\[0\])?", p=[q.tolist() for q in params])
    add("params-nan", r"params\[0\]", p=_setp(params, 0, _with(params[0], NAN)))
    add("params-shape", r"params\[0\]", p=_setp(params, 0, params[0][..., :1]))
    add("params-short", "params", p=params[:-1])
    add("params-mixed-f32", r"params\[\d\]", p=_setp(params, 0, params[0].astype(np.float32)))
    add("x-list", "x", xx=x.tolist())
    add("x-nan", "x", xx=_with(x, NAN, 3))
    add("x-inf", "x", xx=_with(x, -INF))
    add("x-empty", "x", xx=x[:0])
    add("x-width", "x", xx=np.concatenate([x, x], axis=-1))
    add("x-ndim", "x", xx=x[0])
    add("x-int", "x", xx=np.zeros(x.shape, dtype=np.int64))
    add("x-f32", "x", xx=x.astype(np.float32))
    add("x-strict", "x", xx=STRICT.asarray(x))


def _fisher_cases():
    m = "arraycurv.curvature.fisher"
    reg, cls = ac.mlp((3, 4, 2)), ac.mlp((3, 4, 3))
    preg, pcls = ac.init_params(reg, 0), ac.init_params(cls, 0)
    x = _randn(1, 5, 3)
    yreg, ycls = _randn(2, 5, 2), np.asarray([0, 1, 2, 1, 0])
    vreg = ac.init_params(reg, 1)
    x_routines = {
        "fisher_exact_matrix": lambda p, x: fi.fisher_exact_matrix(reg, p, x),
        "fisher_exact_vp": lambda p, x: fi.fisher_exact_vp(reg, p, x, vreg),
        "fisher_mc_matrix": lambda p, x: fi.fisher_mc_matrix(reg, p, x, num_samples=2),
        "fisher_mc_vp": lambda p, x: fi.fisher_mc_vp(reg, p, x, vreg, num_samples=2),
        "kron_factors": lambda p, x: kr.kron_factors(reg, p, x),
        "kron_factors_mc": lambda p, x: kr.kron_factors(reg, p, x, fisher="mc"),
    }
    for name, call in x_routines.items():
        mod = "arraycurv.curvature.kron" if name.startswith("kron") else m
        _x_family(f"m2-{name}", call, reg, preg, x, covers=(f"{mod}.{name.removesuffix('_mc')}",))
    batch_routines = {
        "fisher_empirical_matrix": (lambda p, b: fi.fisher_empirical_matrix(reg, p, b), reg, preg, yreg, False),
        "fisher_empirical_vp": (lambda p, b: fi.fisher_empirical_vp(reg, p, b, vreg), reg, preg, yreg, False),
        "per_sample_grads": (lambda p, b: fi.per_sample_grads(reg, p, b), reg, preg, yreg, False),
        "per_sample_grads_ce": (lambda p, b: fi.per_sample_grads(cls, p, b, CE), cls, pcls, ycls, True),
        "ggn_operator": (lambda p, b: op.ggn_operator(reg, p, b), reg, preg, yreg, False),
        "hessian_operator_ce": (lambda p, b: op.hessian_operator(cls, p, b, CE), cls, pcls, ycls, True),
        "fisher_operator_mc": (lambda p, b: op.fisher_operator(reg, p, b, variant="mc"), reg, preg, yreg, False),
        "fisher_operator_empirical": (lambda p, b: op.fisher_operator(cls, p, b, CE, variant="empirical"), cls,
                                      pcls, ycls, True),
    }
    for name, (call, model, params, y, labels) in batch_routines.items():
        mod = m if "grads" in name or "empirical_" in name else "arraycurv.curvature.operators"
        fn = name.replace("_ce", "").replace("_mc", "").replace("_empirical", "") if mod != m else name.replace(
            "_ce", "")
        _batch_family(f"m2-{name}", call, model, params, x, y, labels=labels, covers=(f"{mod}.{fn}",))
    b = (x, yreg)
    for name, f in (("fisher_exact_vp", lambda v: fi.fisher_exact_vp(reg, preg, x, v)),
                    ("fisher_mc_vp", lambda v: fi.fisher_mc_vp(reg, preg, x, v)),
                    ("fisher_empirical_vp", lambda v: fi.fisher_empirical_vp(reg, preg, b, v))):
        bad(f"m2-{name}-v-nan", r"v\[0\]", lambda f=f: f(_setp(vreg, 0, _with(vreg[0], NAN))))
        bad(f"m2-{name}-v-short", "v", lambda f=f: f(vreg[:1]))
        bad(f"m2-{name}-v-list", r"v(\[0\])?", lambda f=f: f([q.tolist() for q in vreg]))
        bad(f"m2-{name}-v-shape", r"v\[0\]", lambda f=f: f(_setp(vreg, 0, vreg[0].T)))
        bad(f"m2-{name}-v-f32", r"v\[\d\]", lambda f=f: f(tuple(q.astype(np.float32) for q in vreg)))
    for name, f in (("fisher_mc_matrix", lambda **kw: fi.fisher_mc_matrix(reg, preg, x, **kw)),
                    ("fisher_mc_vp", lambda **kw: fi.fisher_mc_vp(reg, preg, x, vreg, **kw)),
                    ("kron_factors", lambda **kw: kr.kron_factors(reg, preg, x, fisher="mc", **kw)),
                    ("fisher_operator", lambda **kw: op.fisher_operator(reg, preg, b, variant="mc", **kw))):
        for cat, kw in (("n-zero", dict(num_samples=0)), ("n-float", dict(num_samples=1.5)),
                        ("n-str", dict(num_samples="2")), ("n-bool", dict(num_samples=True)),
                        ("seed-neg", dict(seed=-1)), ("seed-float", dict(seed=1.5)), ("seed-str", dict(seed="0"))):
            arg = "num_samples" if cat.startswith("n-") else "seed"
            bad(f"m2-{name}-{cat}", arg, lambda f=f, kw=kw: f(**kw))
    for name, f in (("fisher_exact_matrix", lambda loss: fi.fisher_exact_matrix(reg, preg, x, loss)),
                    ("fisher_empirical_matrix", lambda loss: fi.fisher_empirical_matrix(reg, preg, b, loss)),
                    ("kron_factors", lambda loss: kr.kron_factors(reg, preg, x, loss)),
                    ("ggn_operator", lambda loss: op.ggn_operator(reg, preg, b, loss)),
                    ("hessian_operator", lambda loss: op.hessian_operator(reg, preg, b, loss))):
        bad(f"m2-{name}-loss-str", "loss", lambda f=f: f("mse"))
        bad(f"m2-{name}-loss-class", "loss", lambda f=f: f(ac.MSE))
        bad(f"m2-{name}-model", "model", lambda name=name: {
            "fisher_exact_matrix": lambda: fi.fisher_exact_matrix("mlp", preg, x),
            "fisher_empirical_matrix": lambda: fi.fisher_empirical_matrix("mlp", preg, b),
            "kron_factors": lambda: kr.kron_factors("mlp", preg, x),
            "ggn_operator": lambda: op.ggn_operator("mlp", preg, b),
            "hessian_operator": lambda: op.hessian_operator("mlp", preg, b)}[name]())
    bad("m2-kron-factors-fisher", "fisher", lambda: kr.kron_factors(reg, preg, x, fisher="bogus"))
    bad("m2-kron-factors-fisher-int", "fisher", lambda: kr.kron_factors(reg, preg, x, fisher=1))
    bad("m2-fisher-operator-variant", "variant", lambda: op.fisher_operator(reg, preg, b, variant="bogus"))
    bad("m2-fisher-operator-variant-none", "variant", lambda: op.fisher_operator(reg, preg, b, variant=None))


def _kfac_block_cases():
    reg = ac.mlp((3, 4, 2))
    fac = kr.kron_factors(reg, ac.init_params(reg, 0), _randn(1, 5, 3))[0]
    cov = "arraycurv.curvature.kron.kfac_block"
    bad("kfac-block-type", "factors", lambda: kr.kfac_block((fac.G, fac.A)), cov)
    bad("kfac-block-none", "factors", lambda: kr.kfac_block(None), cov)
    bad("kfac-block-g-nan", r"factors\.G", lambda: kr.kfac_block(kr.KFactors(_with(fac.G, NAN), fac.A)), cov)
    bad("kfac-block-a-inf", r"factors\.A", lambda: kr.kfac_block(kr.KFactors(fac.G, _with(fac.A, INF))), cov)
    bad("kfac-block-g-list", r"factors\.G", lambda: kr.kfac_block(kr.KFactors(fac.G.tolist(), fac.A)), cov)
    bad("kfac-block-a-1d", r"factors\.A", lambda: kr.kfac_block(kr.KFactors(fac.G, fac.A[0])), cov)
    bad("kfac-block-g-rect", r"factors\.G", lambda: kr.kfac_block(kr.KFactors(fac.G[:1], fac.A)), cov)
    bad("kfac-block-a-f32", r"factors\.A", lambda: kr.kfac_block(kr.KFactors(fac.G, fac.A.astype(np.float32))), cov)
    bad("kfac-block-a-strict", r"factors\.A", lambda: kr.kfac_block(kr.KFactors(fac.G, STRICT.asarray(fac.A))), cov)
    bad("kfac-block-g-int", r"factors\.G", lambda: kr.kfac_block(kr.KFactors(np.eye(2, dtype=np.int64), fac.A)),
        cov)


# ----------------------------------------------------------------------------- losses
def _losses_cases():
    m = "arraycurv.losses"
    out, y = _randn(0, 5, 3), _randn(1, 5, 3)
    lab = np.asarray([0, 1, 2, 1, 0])
    for loss, tgt in ((MSE, y), (CE, lab)):
        k = type(loss).__name__
        with_t = {"loss_value": ls.loss_value, "loss_grad": ls.loss_grad, "check_targets": ls.check_targets,
                  "loss_value_and_grad": ls.loss_value_and_grad}
        for name, f in with_t.items():
            cov = f"{m}.{name}"
            bad(f"m2-{name}-{k}-outputs-list", "outputs", lambda f=f, loss=loss, t=tgt: f(loss, out.tolist(), t), cov)
            bad(f"m2-{name}-{k}-outputs-1d", "outputs", lambda f=f, loss=loss, t=tgt: f(loss, out[0], t[0]), cov)
            bad(f"m2-{name}-{k}-outputs-3d", "outputs", lambda f=f, loss=loss, t=tgt: f(loss, out[None], t), cov)
            bad(f"m2-{name}-{k}-outputs-empty", "outputs", lambda f=f, loss=loss, t=tgt: f(loss, out[:0], t[:0]),
                cov)
            bad(f"m2-{name}-{k}-outputs-int", "outputs", lambda f=f, loss=loss, t=tgt: f(
                loss, np.ones((5, 3), dtype=np.int64), t), cov)
            bad(f"m2-{name}-{k}-outputs-complex", "outputs", lambda f=f, loss=loss, t=tgt: f(
                loss, out.astype(np.complex128), t), cov)
            bad(f"m2-{name}-{k}-targets-batch", "targets", lambda f=f, loss=loss, t=tgt: f(loss, out, t[:4]), cov)
            bad(f"m2-{name}-{k}-targets-list", "targets", lambda f=f, loss=loss, t=tgt: f(loss, out, t.tolist()), cov)
            bad(f"m2-{name}-{k}-targets-strict", "targets", lambda f=f, loss=loss, t=tgt: f(
                loss, out, STRICT.asarray(t)), cov)
            bad(f"m2-{name}-{k}-loss-str", "loss", lambda f=f, t=tgt: f("mse", out, t), cov)
            bad(f"m2-{name}-{k}-loss-class", "loss", lambda f=f, t=tgt, loss=loss: f(type(loss), out, t), cov)
        bad(f"m2-loss-value-{k}-outputs-nan", "outputs", lambda loss=loss, t=tgt: ls.loss_value(
            loss, _with(out, NAN), t))
        bad(f"m2-loss-value-{k}-targets-nan", "targets", lambda loss=loss: ls.loss_value(
            loss, out, _with(y, NAN) if loss is MSE else lab + 7))
        bad(f"m2-loss-value-and-grad-{k}-outputs-nan", "outputs", lambda loss=loss, t=tgt: ls.loss_value_and_grad(
            loss, _with(out, NAN), t))
        bad(f"m2-loss-value-and-grad-{k}-targets-nan", "targets", lambda loss=loss: ls.loss_value_and_grad(
            loss, out, _with(y, NAN) if loss is MSE else lab + 7))
        no_t = {"loss_hessian": ls.loss_hessian, "loss_hessian_factor": ls.loss_hessian_factor,
                "loss_hessian_vp": lambda loss, o: ls.loss_hessian_vp(loss, o, out),
                "sample_targets": lambda loss, o: ls.sample_targets(loss, o, 0)}
        for name, f in no_t.items():
            cov = f"{m}.{name}"
            bad(f"m2-{name}-{k}-outputs-nan", "outputs", lambda f=f, loss=loss: f(loss, _with(out, NAN)), cov)
            bad(f"m2-{name}-{k}-outputs-list", "outputs", lambda f=f, loss=loss: f(loss, out.tolist()), cov)
            bad(f"m2-{name}-{k}-outputs-1d", "outputs", lambda f=f, loss=loss: f(loss, out[0]), cov)
            bad(f"m2-{name}-{k}-outputs-int", "outputs", lambda f=f, loss=loss: f(
                loss, np.ones((5, 3), dtype=np.int64)), cov)
            bad(f"m2-{name}-{k}-loss-str", "loss", lambda f=f: f("ce", out), cov)
        f = ls.loss_hessian_vp
        bad(f"m2-loss-hvp-{k}-v-list", "v", lambda f=f, loss=loss: f(loss, out, out.tolist()))
        bad(f"m2-loss-hvp-{k}-v-1d", "v", lambda f=f, loss=loss: f(loss, out, out[0]))
        bad(f"m2-loss-hvp-{k}-v-f32", "v", lambda f=f, loss=loss: f(loss, out, out.astype(np.float32)))
        bad(f"m2-loss-hvp-{k}-v-strict", "v", lambda f=f, loss=loss: f(loss, out, STRICT.asarray(out)))
        bad(f"m2-loss-hvp-{k}-v-inf", "v", lambda f=f, loss=loss: f(loss, out, _with(out, INF)))
        f = ls.sample_targets
        bad(f"m2-sample-targets-{k}-seed-float", "seed", lambda f=f, loss=loss: f(loss, out, 1.5))
        bad(f"m2-sample-targets-{k}-seed-str", "seed", lambda f=f, loss=loss: f(loss, out, "0"))
        bad(f"m2-sample-targets-{k}-n-float", "num_samples", lambda f=f, loss=loss: f(loss, out, 0, 2.5))
        bad(f"m2-sample-targets-{k}-n-neg", "num_samples", lambda f=f, loss=loss: f(loss, out, 0, -1))
        cov = f"{m}.check_target_shape"
        bad(f"m2-check-target-shape-{k}-batch", "targets", lambda loss=loss, t=tgt: ls.check_target_shape(
            loss, t[:4], (5, 3)), cov)
        bad(f"m2-check-target-shape-{k}-list", "targets", lambda loss=loss, t=tgt: ls.check_target_shape(
            loss, t.tolist(), (5, 3)), cov)
        bad(f"m2-check-target-shape-{k}-name", "y", lambda loss=loss, t=tgt: ls.check_target_shape(
            loss, t[:4], (5, 3), "y"), cov)
    bad("m2-check-target-shape-ce-float", "targets", lambda: ls.check_target_shape(CE, lab * 1.0, (5, 3)))
    bad("m2-check-target-shape-ce-range", "targets", lambda: ls.check_target_shape(CE, lab + 3, (5, 3)))
    bad("m2-check-target-shape-mse-width", "targets", lambda: ls.check_target_shape(MSE, y, (5, 2)))


# ----------------------------------------------------------------------------- parameter trees
def _params_tree_cases():
    m = "arraycurv.params"
    t = (np.ones((2, 3)), np.ones(2))
    s = (2.0 * t[0], 3.0 * t[1])
    for name in ("tree_add", "tree_sub", "tree_vdot"):
        fn = getattr(pr, name)
        cov = f"{m}.{name}"
        bad(f"m2-{name}-a-array", "a", lambda fn=fn: fn(np.ones(3), s), cov)
        bad(f"m2-{name}-b-none", "b", lambda fn=fn: fn(t, None), cov)
        bad(f"m2-{name}-b-longer", "b", lambda fn=fn: fn(t, s + s), cov)
        bad(f"m2-{name}-b-list", r"b(\[0\])?", lambda fn=fn: fn(t, [q.tolist() for q in s]), cov)
    cov = f"{m}.tree_scale"
    bad("m2-tree-scale-inf", "s", lambda: pr.tree_scale(t, INF), cov)
    bad("m2-tree-scale-bool", "s", lambda: pr.tree_scale(t, True), cov)
    bad("m2-tree-scale-array", "s", lambda: pr.tree_scale(t, np.ones(2)), cov)
    bad("m2-tree-scale-a-array", "a", lambda: pr.tree_scale(np.ones(3), 2.0), cov)
    cov = f"{m}.tree_axpy"
    bad("m2-tree-axpy-inf", "alpha", lambda: pr.tree_axpy(INF, t, s), cov)
    bad("m2-tree-axpy-str", "alpha", lambda: pr.tree_axpy("1", t, s), cov)
    bad("m2-tree-axpy-x-list", r"x(\[0\])?", lambda: pr.tree_axpy(1.0, [q.tolist() for q in t], s), cov)
    bad("m2-tree-axpy-y-shape", r"y\[0\]", lambda: pr.tree_axpy(1.0, t, (s[0].T, s[1])), cov)
    bad("m2-tree-axpy-y-strict", r"y\[\d\]", lambda: pr.tree_axpy(1.0, t, tuple(STRICT.asarray(q) for q in s)), cov)
    cov = f"{m}.tree_norm"
    bad("m2-tree-norm-empty", "a", lambda: pr.tree_norm(()), cov)
    bad("m2-tree-norm-mixed", r"a\[1\]", lambda: pr.tree_norm((t[0], STRICT.asarray(t[1]))), cov)
    cov = f"{m}.tree_zeros_like"
    bad("m2-tree-zeros-array", "a", lambda: pr.tree_zeros_like(np.ones(3)), cov)
    bad("m2-tree-zeros-none", "a", lambda: pr.tree_zeros_like(None), cov)
    bad("m2-tree-zeros-mixed", r"a\[1\]", lambda: pr.tree_zeros_like((t[0], STRICT.asarray(t[1]))), cov)
    cov = f"{m}.tree_map"
    bad("m2-tree-map-fn-none", "fn", lambda: pr.tree_map(None, t), cov)
    bad("m2-tree-map-no-trees", "trees", lambda: pr.tree_map(lambda u: u, ), cov)
    bad("m2-tree-map-tree-array", r"trees(\[0\])?", lambda: pr.tree_map(lambda u: u, np.ones(3)), cov)
    cov = f"{m}.flatten"
    bad("m2-flatten-empty", "params", lambda: pr.flatten(()), cov)
    bad("m2-flatten-none", "params", lambda: pr.flatten(None), cov)
    cov = f"{m}.unflatten"
    sh = [(2, 3), (2,)]
    bad("m2-unflatten-shapes-str", "shapes", lambda: pr.unflatten(np.ones(8), "ab"), cov)
    bad("m2-unflatten-shapes-float", "shapes", lambda: pr.unflatten(np.ones(8), [(2, 3.0), (2,)]), cov)
    bad("m2-unflatten-name", "v", lambda: pr.unflatten(np.ones(7), sh, "v"), cov)
    bad("m2-unflatten-shapes-none", "shapes", lambda: pr.unflatten(np.ones(8), None), cov)
    cov = f"{m}.num_params"
    bad("m2-num-params-none", "shapes", lambda: pr.num_params(None), cov)
    bad("m2-num-params-float", "shapes", lambda: pr.num_params([(2, 1.5)]), cov)
    bad("m2-num-params-int", "shapes", lambda: pr.num_params(3), cov)
    cov = f"{m}.shapes_of"
    bad("m2-shapes-of-array", "params", lambda: pr.shapes_of(np.ones(3)), cov)
    bad("m2-shapes-of-none", "params", lambda: pr.shapes_of(None), cov)
    bad("m2-shapes-of-mixed", r"params\[1\]", lambda: pr.shapes_of((t[0], [1.0])), cov)


# ----------------------------------------------------------------------------- transforms and damping
def _transform_cases():
    m = "arraycurv.rules.transforms"
    for name, f in (("scale_by_lr", tf.scale_by_lr), ("clip_by_norm", tf.clip_by_norm), ("momentum", tf.momentum),
                    ("ema", tf.ema)):
        arg = {"scale_by_lr": "lr", "clip_by_norm": "max_norm", "momentum": "beta", "ema": "decay"}[name]
        cov = f"{m}.{name}"
        for cat, val in (("nan", NAN), ("inf", INF), ("neg", -0.5), ("str", "0.5"), ("bool", True), ("none", None),
                         ("array", np.ones(2))):
            bad(f"m2-{name}-{cat}", arg, lambda f=f, val=val: f(val), cov)
    bad("m2-ema-debias", "debias", lambda: tf.ema(0.9, debias="yes"))
    bad("m2-scale-by-lr-flip-sign", "flip_sign", lambda: tf.scale_by_lr(0.1, flip_sign="no"))
    cov = f"{m}.scale_by_adam"
    for arg in ("b1", "b2", "eps"):
        for cat, val in (("nan", NAN), ("inf", INF), ("neg", -0.5), ("str", "0.5"), ("none", None)):
            bad(f"m2-scale-by-adam-{arg}-{cat}", arg, lambda arg=arg, val=val: tf.scale_by_adam(**{arg: val}), cov)
    bad("m2-scale-by-adam-b1-one", "b1", lambda: tf.scale_by_adam(b1=1.0), cov)
    params = (np.ones((2, 3)), np.ones(2))
    g = (np.ones((2, 3)), np.ones(2))
    for name, rule in (("momentum", tf.momentum(0.9)), ("ema", tf.ema(0.9)), ("scale_by_adam", tf.scale_by_adam()),
                       ("scale_by_schedule", tf.scale_by_lr(lambda k: 0.1))):
        bad(f"m2-{name}-update-state", "state", lambda rule=rule: rule.update(g, (), params))
        bad(f"m2-{name}-update-state-none", "state", lambda rule=rule: rule.update(g, None, params))
        if name == "scale_by_schedule":
            continue
        st = rule.init(params)
        bad(f"m2-{name}-update-short", "updates", lambda rule=rule, st=st: rule.update(g[:1], st, params))
        bad(f"m2-{name}-update-array", "updates", lambda rule=rule, st=st: rule.update(np.ones(3), st, params))
        bad(f"m2-{name}-update-shape", r"updates\[0\]", lambda rule=rule, st=st: rule.update(
            _setp(g, 0, g[0].T), st, params))
        bad(f"m2-{name}-update-list", r"updates\[0\]", lambda rule=rule, st=st: rule.update(
            [q.tolist() for q in g], st, params))
    sched = tf.scale_by_lr(lambda k: NAN)
    bad("m2-scale-by-schedule-nan", r"lr\(0\)", lambda: sched.update(g, sched.init(params), params))
    sched = tf.scale_by_lr(lambda k: "0.1")
    bad("m2-scale-by-schedule-str", r"lr\(0\)", lambda: sched.update(g, sched.init(params), params))
    cov = f"{m}.precondition"
    bad("m2-precondition-fn-none", "direction_fn", lambda: tf.precondition(None), cov)
    bad("m2-precondition-damping", "damping", lambda: tf.precondition(lambda *a, **k: a[1], damping=0.1), cov)
    bad("m2-precondition-damping-str", "damping", lambda: tf.precondition(lambda *a, **k: a[1], damping="lm"), cov)
    cov = f"{m}.partition"
    bad("m2-partition-transforms-list", "transforms", lambda: tf.partition([tf.ema(0.9)], (0, 0)), cov)
    bad("m2-partition-transforms-entry", r"transforms\['a'\]", lambda: tf.partition({"a": "sgd"}, ("a", "a")), cov)
    part = tf.partition({"a": tf.ema(0.9)}, ("a",))
    bad("m2-partition-labels-length", "labels", lambda: part.init(params), cov)
    part2 = tf.partition({"a": tf.ema(0.9)}, ("a", "b"))
    bad("m2-partition-labels-unknown", "labels", lambda: part2.init(params), cov)
    part3 = tf.partition({"a": tf.ema(0.9)}, "aa")
    bad("m2-partition-labels-str", "labels", lambda: part3.init(params), cov)
    part4 = tf.partition({"a": tf.ema(0.9)}, ("a", "a"))
    bad("m2-partition-update-state", "state", lambda: part4.update(g, (), params), cov)
    cov = f"{m}.predicted_change"
    f = tf.predicted_change
    bad("m2-predicted-change-g-nan", "g_dot_pg", lambda: f(g, g, NAN), cov)
    bad("m2-predicted-change-g-str", "g_dot_pg", lambda: f(g, g, "1"), cov)
    bad("m2-predicted-change-g-none", "g_dot_pg", lambda: f(g, g, None), cov)
    bad("m2-predicted-change-step-nan", r"step\[0\]", lambda: f(_setp(g, 0, _with(g[0], NAN)), g, 1.0), cov)
    bad("m2-predicted-change-pg-inf", r"pg\[1\]", lambda: f(g, _setp(g, 1, _with(g[1], INF)), 1.0), cov)
    bad("m2-predicted-change-pg-short", "pg", lambda: f(g, g[:1], 1.0), cov)
    bad("m2-predicted-change-pg-shape", r"pg\[0\]", lambda: f(g, _setp(g, 0, g[0].T), 1.0), cov)
    bad("m2-predicted-change-step-list", r"step(\[0\])?", lambda: f([q.tolist() for q in g], g, 1.0), cov)
    bad("m2-predicted-change-step-array", "step", lambda: f(np.ones(3), g, 1.0), cov)
    bad("m2-predicted-change-step-empty", "step", lambda: f((), (), 1.0), cov)
    bad("m2-predicted-change-pg-f32", r"pg\[\d\]", lambda: f(g, tuple(q.astype(np.float32) for q in g), 1.0), cov)
    bad("m2-predicted-change-pg-strict", r"pg\[\d\]", lambda: f(g, tuple(STRICT.asarray(q) for q in g), 1.0), cov)
    bad("m2-predicted-change-step-int", r"step\[\d\]", lambda: f(tuple(np.ones(q.shape, dtype=np.int64) for q in g),
                                                                  g, 1.0), cov)


def _damping_cases():
    d = "arraycurv.rules.damping"
    for cat, val in (("nan", NAN), ("inf", INF), ("neg", -1.0), ("str", "1"), ("none", None), ("bool", True)):
        bad(f"m2-constant-{cat}", "damping", lambda val=val: dm.constant(val), f"{d}.constant")
        bad(f"m2-levenberg-marquardt-{cat}", "damping", lambda val=val: dm.levenberg_marquardt(val),
            f"{d}.levenberg_marquardt")
        bad(f"m2-reduce-on-plateau-{cat}", "damping", lambda val=val: dm.reduce_on_plateau(val),
            f"{d}.reduce_on_plateau")
        bad(f"m2-lm-damping-{cat}", "damping", lambda val=val: dm.lm_damping(val, 0.5), f"{d}.lm_damping")
    bad("m2-levenberg-marquardt-zero", "damping", lambda: dm.levenberg_marquardt(0.0))
    for kw in (dict(lower=NAN), dict(upper=0.1), dict(increase=0.5), dict(decrease=0.0), dict(decrease=1.5),
               dict(min_damping=-1.0), dict(max_damping=-1.0), dict(lower="a"), dict(increase=INF)):
        (arg,) = kw
        cid = f"{arg}-{kw[arg]!r}"
        bad(f"m2-levenberg-marquardt-{cid}", arg, lambda kw=kw: dm.levenberg_marquardt(1.0, **kw))
        bad(f"m2-lm-damping-{cid}", arg, lambda kw=kw: dm.lm_damping(1.0, 0.5, **kw))
    bad("m2-lm-damping-rho-str", "rho", lambda: dm.lm_damping(1.0, "0.5"))
    bad("m2-lm-damping-rho-none", "rho", lambda: dm.lm_damping(1.0, None))
    bad("m2-lm-damping-rho-array", "rho", lambda: dm.lm_damping(1.0, np.ones(2)))
    for kw in (dict(factor=NAN), dict(factor=0.0), dict(patience=-1), dict(patience=2.5), dict(rtol=-1.0),
               dict(rtol=NAN), dict(min_damping=INF), dict(min_damping="0")):
        (arg,) = kw
        bad(f"m2-reduce-on-plateau-{arg}-{kw[arg]!r}", arg, lambda kw=kw: dm.reduce_on_plateau(1.0, **kw))
    cov = f"{d}.schedule"
    bad("m2-schedule-fn", "fn", lambda: dm.schedule(0.1), cov)
    bad("m2-schedule-fn-none", "fn", lambda: dm.schedule(None), cov)
    bad("m2-schedule-value-nan", r"fn\(0\)", lambda: dm.schedule(lambda k: NAN).init(), cov)
    bad("m2-schedule-value-neg", r"fn\(0\)", lambda: dm.schedule(lambda k: -1.0).init(), cov)
    bad("m2-schedule-value-str", r"fn\(0\)", lambda: dm.schedule(lambda k: "1").init(), cov)
    for name, ctl in (("levenberg_marquardt", dm.levenberg_marquardt(1.0)), ("reduce_on_plateau",
                                                                              dm.reduce_on_plateau(1.0))):
        bad(f"m2-{name}-update-value-none", "value", lambda ctl=ctl: ctl.update(ctl.init(), value=None))
        bad(f"m2-{name}-update-value-str", "value", lambda ctl=ctl: ctl.update(ctl.init(), value="1.0"))
        bad(f"m2-{name}-update-value-array", "value", lambda ctl=ctl: ctl.update(ctl.init(), value=np.ones(2)))
        bad(f"m2-{name}-update-state", "state", lambda ctl=ctl: ctl.update((1.0,), value=1.0))
        bad(f"m2-{name}-update-state-none", "state", lambda ctl=ctl: ctl.update(None, value=1.0))
    ctl = dm.schedule(lambda k: 0.1)
    bad("m2-schedule-update-state", "state", lambda: ctl.update((0.1, 0)))


for _gen in (_class_subspace_model_cases, _subspace_object_cases, _subspace_newton_cases, _class_subspace_rule_cases,
             _subspaces_cases, _lowrank_cases, _spectral_cases, _bernacchia_cases, _summary_cases,
             _newton_step_cases, _reduce_cases, _partition_cases, _kfac_cases, _sequential_cases,
             _fisher_cases, _losses_cases, _params_tree_cases, _transform_cases,
             _sequential_builder_cases, _kfac_block_cases, _damping_cases):
    _gen()

#: the modules of this table: every public callable of their ``__all__`` must be fuzzed
MODULES = (cs, dcs, rcs, ss, lr, sp, bn, sm, ns, rd, pt, kf, sq, fi, kr, op, ls, pr, tf, dm)
#: public callables that take no caller data to get wrong, with the reason
NOT_FUZZED = {
    "arraycurv.curvature.subspace.ClassSubspace": "a NamedTuple of results (its consumers are fuzzed)",
    "arraycurv.curvature.subspace.LogitGradientDecomposition": "a NamedTuple of results",
    "arraycurv.rules.class_subspace.ClassSubspaceState": "a NamedTuple of rule state",
    "arraycurv.linalg.spectral.Eigenpairs": "a NamedTuple of results",
    "arraycurv.linalg.spectral.SpectralQuadrature": "a NamedTuple of results (its consumers are fuzzed)",
    "arraycurv.linalg.spectral.TraceEstimate": "a NamedTuple of results",
    "arraycurv.directions.bernacchia.BernacchiaFactors": "a NamedTuple of results (factor_inverses is fuzzed)",
    "arraycurv.directions.bernacchia.LayerFactors": "a NamedTuple of results",
    "arraycurv.directions.bernacchia.PathSingularity": "a NamedTuple of results",
    "arraycurv.directions.bernacchia.BottleneckWarning": "a warning class",
    "arraycurv.directions.bernacchia.SingularPathWarning": "a warning class",
    "arraycurv.curvature.summary.Summary": "a NamedTuple of results",
    "arraycurv.directions.newton_summary.CubicStep": "a NamedTuple of results",
    "arraycurv.directions.newton_summary.NewtonSummaryDirection": "a NamedTuple of results",
    "arraycurv.curvature.reduce.Accumulator": "a NamedTuple of callables (reduce_chunks checks it)",
    "arraycurv.models.sequential.SequentialLinearization": "built by linearize (fuzzed); its consumers check it",
    "arraycurv.losses.MSE": "a loss tag without fields (the loss functions check it)",
    "arraycurv.losses.SoftmaxCrossEntropy": "a loss tag without fields (the loss functions check it)",
    "arraycurv.rules.transforms.AdamState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.transforms.EmaState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.transforms.MomentumState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.transforms.PartitionState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.transforms.PreconditionState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.transforms.ScheduleCountState": "a NamedTuple of rule state (update checks its type)",
    "arraycurv.rules.damping.ConstantDampingState": "a NamedTuple of controller state",
    "arraycurv.rules.damping.LevenbergMarquardtState": "a NamedTuple of controller state",
    "arraycurv.rules.damping.PlateauState": "a NamedTuple of controller state",
    "arraycurv.rules.damping.ScheduleDampingState": "a NamedTuple of controller state",
    "arraycurv.rules.damping.DampingController": "a NamedTuple of callables (precondition checks its type)",
    "arraycurv.curvature.kron.KFactors": "a dataclass of results (kfac_block checks it)",
    "arraycurv.curvature.fisher.gradient_gram": "a trusted kernel on a Linearization (documented: callers validate)",
    "arraycurv.curvature.fisher.per_sample_rows": "a trusted kernel on a Linearization (documented: callers validate)",
}


# ----------------------------------------------------------------------------- the checks
@pytest.mark.parametrize("arg, fn", [pytest.param(a, f, id=c) for c, a, f in CASES])
def test_malformed_call_gets_a_clear_error(arg, fn):
    kind, detail = classify(arg, fn)
    assert kind == "clear", f"expected an error starting with {arg!r}: expected ...; {kind}: {detail}"


def _public_callables():
    for mod in MODULES:
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj) and (inspect.isfunction(obj) or inspect.isclass(obj)):
                yield f"{mod.__name__}.{name}"


def test_every_public_routine_is_fuzzed():
    missing = [n for n in _public_callables() if n not in COVERED and n not in NOT_FUZZED]
    assert not missing, missing


def test_the_table_is_large_and_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]
    assert len(ids) >= 600
