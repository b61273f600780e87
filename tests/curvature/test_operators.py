"""SciPy LinearOperator views (arraycurv.operators): products against the materialized
matrices (``ggn_matrix``, ``hessian_matrix`` and the Fisher matrices, each tested against
its own independent reference elsewhere), ``eigsh`` against ``numpy.linalg.eigvalsh``,
``cg`` against ``numpy.linalg.solve``, the cached forward pass, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator, cg, eigsh

import arraycurv as ac
from arraycurv import backend
from arraycurv.models import sequential as networks
from tests.cases import CE, MSE, cases, cnn_models, deep_linear_models, make_case, mlp_models
from tests.helpers import RTOL, seeds
from tests.references.curvature import npf


def operators_and_matrices(model, params, x, y, loss, seed):
    batch = (x, y)
    return [
        ("GGN", ac.curvature.ggn_operator(model, params, batch, loss), ac.ggn_matrix(model, params, batch, loss)),
        ("exact", ac.curvature.fisher_operator(model, params, batch, loss),
         ac.curvature.fisher_exact_matrix(model, params, x, loss)),
        ("mc", ac.curvature.fisher_operator(model, params, batch, loss, variant="mc", num_samples=3, seed=seed),
         ac.curvature.fisher_mc_matrix(model, params, x, loss, num_samples=3, seed=seed)),
        ("empirical", ac.curvature.fisher_operator(model, params, batch, loss, variant="empirical"),
         ac.curvature.fisher_empirical_matrix(model, params, batch, loss)),
        ("Hessian", ac.curvature.hessian_operator(model, params, batch, loss),
         ac.hessian_matrix(model, params, batch, loss)),
    ]


@settings(max_examples=10)
@given(case=cases(models=st.one_of(mlp_models(), cnn_models(), deep_linear_models())))
def test_matvec_equals_materialized_matrix_times_vector(xp, case):
    model, b, dtype, seed, loss = case
    params, x, y, _ = make_case(xp, model, b, dtype, seed, loss)
    p = ac.params.num_params(ac.param_shapes(model))
    g = np.random.default_rng(seed)
    v = g.standard_normal(p)
    mat = g.standard_normal((p, 2))
    np_dtype = np.float32 if dtype == "float32" else np.float64
    for name, op, m in operators_and_matrices(model, params, x, y, loss, seed):
        assert isinstance(op, LinearOperator) and op.shape == (p, p) and op.dtype == np_dtype, name
        m = npf(m)
        scale = max(1e-30, np.abs(m).max()) * np.abs(v).sum()
        for got in (op.matvec(v), op @ v, op.rmatvec(v), op.H @ v):
            assert isinstance(got, np.ndarray) and got.dtype == np_dtype and got.shape == (p,), name
            assert np.abs(got - m @ v).max() <= 10 * RTOL[dtype] * scale, name
        got = op.matmat(mat)
        assert got.shape == (p, 2)
        assert np.abs(got - m @ mat).max() <= 10 * RTOL[dtype] * max(1e-30, np.abs(m).max()) * np.abs(mat).sum(), name


@settings(max_examples=6)
@given(model=st.one_of(mlp_models(max_width=6), deep_linear_models(max_width=5)), seed=seeds,
       loss=st.sampled_from([MSE, CE]))
def test_eigsh_on_the_operator_reproduces_eigvalsh(model, seed, loss):
    """Top-3 eigenvalues of the GGN (largest algebraic) and of the Hessian (largest
    magnitude) from ARPACK on the operator, against the dense eigvalsh."""
    if isinstance(model, ac.DeepLinear) or model.layers[-1].n_out < 2:
        loss = MSE
    np_ns = backend.namespace_by_name("numpy")
    params, x, y, _ = make_case(np_ns, model, 6, "float64", seed, loss)
    p = ac.params.num_params(ac.param_shapes(model))
    assume(p >= 6)
    v0 = np.random.default_rng(seed).standard_normal(p)
    g = ac.ggn_matrix(model, params, (x, y), loss)
    want = np.linalg.eigvalsh(g)[-3:]
    got = np.sort(eigsh(ac.curvature.ggn_operator(model, params, (x, y), loss), k=3, which="LA", v0=v0, tol=1e-12)[0])
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * max(1.0, want[-1]))
    h = ac.hessian_matrix(model, params, (x, y), loss)
    wh = np.linalg.eigvalsh(h)
    got_h = eigsh(ac.curvature.hessian_operator(model, params, (x, y), loss), k=3, which="LM", v0=v0, tol=1e-12)[0]
    tol = 1e-8 * max(1.0, np.abs(wh).max())
    # magnitudes are the top three (eigenvalues +-lambda may tie), each is in the spectrum
    np.testing.assert_allclose(np.sort(np.abs(got_h)), np.sort(np.abs(wh))[-3:], rtol=1e-8, atol=tol)
    assert all(np.min(np.abs(wh - lam)) <= tol for lam in got_h), (got_h, wh)


def test_cg_solves_the_damped_ggn_system(xp):
    """(G + lambda I) d = g by conjugate gradients on the operator vs numpy.linalg.solve."""
    model = ac.mlp((4, 5, 3), "tanh")
    params, x, y, _ = make_case(xp, model, 7, "float64", 3)
    op = ac.curvature.ggn_operator(model, params, (x, y))
    p = op.shape[0]
    damped = op + 0.1 * LinearOperator((p, p), matvec=lambda v: v, dtype=op.dtype)
    _, grad = ac.value_and_grad(model, params, (x, y))
    g = npf(grad)
    sol, info = cg(damped, g, rtol=1e-12, atol=0.0, maxiter=10 * p)
    assert info == 0
    ref = np.linalg.solve(npf(ac.ggn_matrix(model, params, (x, y))) + 0.1 * np.eye(p), g)
    np.testing.assert_allclose(sol, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sequential_operators_reuse_one_forward_pass(monkeypatch, dtype):
    """Built once, the operators never call linearize/forward again for their products."""
    model = ac.mlp((3, 4, 2), "tanh")
    np_ns = backend.namespace_by_name("numpy")
    params, x, y, _ = make_case(np_ns, model, 5, dtype, 1)
    ops = [ac.curvature.ggn_operator(model, params, (x, y)), ac.curvature.hessian_operator(model, params, (x, y)),
           ac.curvature.fisher_operator(model, params, (x, y), variant="mc"),
           ac.curvature.fisher_operator(model, params, (x, y), variant="empirical")]
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        raise AssertionError("forward pass recomputed")

    monkeypatch.setattr(networks, "linearize", spy)
    monkeypatch.setattr(networks, "layer_forward", spy)  # no forward pass at all, by any route
    v = np.ones(ops[0].shape[0], dtype=dtype)
    for op in ops:
        for _ in range(3):
            assert np.all(np.isfinite(op @ v))
    assert not calls


@pytest.mark.parametrize("model", [ac.mlp((3, 4, 2)), ac.DeepLinear((3, 4, 2))], ids=["mlp", "deep_linear"])
def test_mc_operator_draws_its_targets_once(model):
    """With a NumPy Generator as seed, every product still uses the draws made at construction."""
    np_ns = backend.namespace_by_name("numpy")
    params, x, y, _ = make_case(np_ns, model, 4, "float64", 2)
    op = ac.curvature.fisher_operator(model, params, (x, y), variant="mc", num_samples=2, seed=np.random.default_rng(5))
    ref = npf(ac.curvature.fisher_mc_matrix(model, params, x, MSE, 2, np.random.default_rng(5)))
    v = np.arange(op.shape[0], dtype=float)
    np.testing.assert_allclose(op @ v, ref @ v, rtol=1e-12)
    np.testing.assert_allclose(op @ v, ref @ v, rtol=1e-12)


def test_bad_inputs_raise_named_errors(xp):
    model = ac.mlp((3, 4, 2))
    params, x, y, _ = make_case(xp, model, 3, "float64", 0)
    with pytest.raises(ValueError, match="variant: expected one of"):
        ac.curvature.fisher_operator(model, params, (x, y), variant="true")
    with pytest.raises(ValueError, match="num_samples: expected a positive integer"):
        ac.curvature.fisher_operator(model, params, (x, y), variant="mc", num_samples=-1)
    with pytest.raises(TypeError, match="batch: expected a tuple"):
        ac.curvature.ggn_operator(model, params, x)
    with pytest.raises(ValueError, match=r"params: expected 4 arrays"):
        ac.curvature.hessian_operator(model, params[:2], (x, y))
    with pytest.raises(ValueError, match="batch y: expected shape"):
        ac.curvature.ggn_operator(model, params, (x, y[:, :1]))
    op = ac.curvature.ggn_operator(model, params, (x, y))
    with pytest.raises(ValueError):
        op @ np.ones(5)
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
        ac.curvature.ggn_operator(model, params, (xp.astype(x, xp.int64), y))


@pytest.mark.parametrize("name", ["ggn_operator", "hessian_operator", "fisher_operator"])
def test_operator_products_reject_non_finite_vectors(name):
    """``op @ v`` and ``op @ X`` name the vector the caller passed when it holds NaN/Inf."""
    model = ac.mlp((3, 4, 2))
    params = ac.init_params(model, 0)
    batch = (np.ones((5, 3)), np.zeros((5, 2)))
    op = getattr(ac.curvature, name)(model, params, batch)
    n = op.shape[0]
    with pytest.raises(ValueError, match=r"^v: expected finite values, got 1 NaN/Inf"):
        op @ np.where(np.arange(n) == 3, np.nan, 1.0)
    bad = np.ones((n, 2))
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match=r"^(X|v): expected finite values"):
        op @ bad
    assert np.all(np.isfinite(op @ np.ones(n)))
