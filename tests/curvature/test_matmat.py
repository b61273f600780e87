"""Batched curvature products (ggn_matmat, hvp_matmat, jacobian_matmat): k directions at once
== the k single products stacked == the materialized matrix times V, on every namespace, for
an MLP, a small LeNet-like CNN and a deep linear network, MSE and cross-entropy, float64 and
float32; the Hessian product also against central differences of the gradient; the
operators' ``matmat`` and block Lanczos on a batched product; and bad stacks of directions.

References: the GGN is the generic default (jvp then vjp per unit column,
:func:`tests.references.curvature.default_ggn_matrix`), the Jacobian the explicit
per-sample-VJP ``jacobian``, the Hessian ``hessian_matrix`` (closed form for deep linear
networks) and finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import ggn_matmat, hvp_matmat, jacobian_matmat
from arraycurv.models.layers import Activation, AvgPool2d, Conv2d, Dense, Flatten
from tests.cases import CE, MSE, make_case
from tests.helpers import RTOL, assert_close, default_form
from tests.references.curvature import default_ggn_matrix, npf

LENET_SMALL = ac.Sequential(
    (Conv2d(1, 2, 3, padding=1), Activation("tanh"), AvgPool2d(2), Conv2d(2, 3, 2), Activation("tanh"),
     Flatten(), Dense(3, 4), Activation("tanh"), Dense(4, 3)),
    (1, 4, 4),
)
MODELS = {
    "mlp": ac.mlp((3, 4, 3), "tanh"),
    "cnn": LENET_SMALL,
    "deep_linear": ac.DeepLinear((3, 4, 2)),
}
CASES = [(name, loss, dtype) for name in MODELS for loss in (MSE, CE) if not (name == "deep_linear" and loss == CE)
         for dtype in ("float64", "float32")]
K = 3


def _setup(xp, name, loss, dtype, seed=0, b=4):
    model = MODELS[name]
    params, x, y, _ = make_case(xp, model, b, dtype, seed, loss)
    g = np.random.default_rng(seed + 1)
    big_v = tuple(backend.normal(g, (K, *s), xp, dtype=dtype) for s in ac.param_shapes(model))
    return model, params, x, y, big_v


def _rows(big_v):
    """(k, P) float64 NumPy rows of a stack of directions."""
    return np.concatenate([backend.to_numpy(t).astype(np.float64).reshape(K, -1) for t in big_v], axis=1)


def _single(big_v, j):
    return tuple(t[j, ...] for t in big_v)


def _tol(dtype, *mats):
    return 10 * RTOL[dtype] * max(1.0, *(float(np.abs(m).max()) for m in mats))


@pytest.mark.parametrize("name, loss, dtype", CASES)
def test_ggn_matmat_equals_stacked_products_and_matrix_times_v(xp, name, loss, dtype):
    model, params, x, y, big_v = _setup(xp, name, loss, dtype)
    got = ggn_matmat(model, params, (x, y), big_v, loss)
    assert len(got) == len(big_v)
    for t, v in zip(got, big_v):
        assert tuple(t.shape) == tuple(v.shape)
    g = npf(default_ggn_matrix(model, params, (x, y), loss)).reshape(_rows(big_v).shape[1], -1)
    want = _rows(big_v) @ g.T  # row j = G v_j
    assert_close(xp.stack([ac.flatten(tuple(t[j, ...] for t in got)) for j in range(K)]), want, like=x,
                 atol=_tol(dtype, want))
    for j in range(K):
        assert_close(ac.flatten(_single(got, j)), npf(ac.ggn_vp(model, params, (x, y), _single(big_v, j), loss)),
                     like=x, atol=_tol(dtype, want))


@pytest.mark.parametrize("name, loss, dtype", CASES)
def test_hvp_matmat_equals_stacked_products_and_matrix_times_v(xp, name, loss, dtype):
    model, params, x, y, big_v = _setup(xp, name, loss, dtype)
    got = hvp_matmat(model, params, (x, y), big_v, loss)
    h = npf(ac.hessian_matrix(model, params, (x, y), loss)).reshape(_rows(big_v).shape[1], -1)
    want = _rows(big_v) @ h.T
    rows = xp.stack([ac.flatten(_single(got, j)) for j in range(K)])
    assert_close(rows, want, like=x, atol=_tol(dtype, want))
    for j in range(K):
        assert_close(ac.flatten(_single(got, j)), npf(ac.hvp(model, params, (x, y), _single(big_v, j), loss)),
                     like=x, atol=_tol(dtype, want))


@pytest.mark.parametrize("name, loss", [(n, lo) for n, lo, d in CASES if d == "float64"])
def test_hvp_matmat_matches_central_differences_of_the_gradient(name, loss):
    np_ns = backend.namespace_by_name("numpy")
    model, params, x, y, big_v = _setup(np_ns, name, loss, "float64", seed=3)
    got = _rows(hvp_matmat(model, params, (x, y), big_v, loss))
    eps = 1e-5
    for j in range(K):
        v = _single(big_v, j)
        plus = ac.value_and_grad(model, tuple(p + eps * t for p, t in zip(params, v)), (x, y), loss)[1]
        minus = ac.value_and_grad(model, tuple(p - eps * t for p, t in zip(params, v)), (x, y), loss)[1]
        fd = (npf(plus) - npf(minus)) / (2 * eps)
        np.testing.assert_allclose(got[j], fd, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("name, loss, dtype", CASES)
def test_jacobian_matmat_equals_jacobian_times_v(xp, name, loss, dtype):
    model, params, x, y, big_v = _setup(xp, name, loss, dtype)
    got = jacobian_matmat(model, params, x, big_v)
    jac = backend.to_numpy(ac.jacobian(model, params, x)).astype(np.float64)  # (B, k_out, P)
    want = np.einsum("bop,jp->jbo", jac, _rows(big_v))
    assert_close(got, want, like=x, atol=_tol(dtype, want))
    for j in range(K):
        assert_close(got[j, ...], ac.jvp(model, params, x, _single(big_v, j))[1], like=x, atol=_tol(dtype, want))


@pytest.mark.parametrize("name, loss", [("mlp", CE), ("cnn", MSE)])
def test_ggn_matmat_default_form_equals_the_sequential_form(xp, name, loss):
    """The generic default (one stacked jvp, loss Hessian, one stacked vjp for families
    with stacked tangents) against the Sequential registration (one linearization)."""
    model, params, x, y, big_v = _setup(xp, name, loss, "float64")
    got = default_form(ggn_matmat)(model, params, (x, y), big_v, loss)
    assert_close(got, ggn_matmat(model, params, (x, y), big_v, loss), like=x)


def test_one_direction_is_k_equal_one():
    np_ns = backend.namespace_by_name("numpy")
    model, params, x, y, big_v = _setup(np_ns, "mlp", CE, "float64")
    one = tuple(t[:1, ...] for t in big_v)
    got = ggn_matmat(model, params, (x, y), one, CE)
    assert_close(ac.flatten(_single(got, 0)), ac.flatten(ac.ggn_vp(model, params, (x, y), _single(big_v, 0), CE)))


@pytest.mark.parametrize("name", ["mlp", "deep_linear"])
def test_bad_stacks_of_directions_name_v(name):
    np_ns = backend.namespace_by_name("numpy")
    model, params, x, y, big_v = _setup(np_ns, name, MSE, "float64")
    batch = (x, y)
    with pytest.raises(ValueError, match=r"V\[0\]: expected shape \(k, "):
        ggn_matmat(model, params, batch, params)  # no leading axis
    with pytest.raises(ValueError, match=r"V\[0\]: expected shape \(k, "):
        hvp_matmat(model, params, batch, tuple(t[None, ...] for t in big_v))  # two leading axes
    with pytest.raises(ValueError, match=r"V\[0\]: expected shape \(k, "):
        jacobian_matmat(model, params, x, tuple(t[:0, ...] for t in big_v))  # k = 0
    with pytest.raises(ValueError, match=r"V\[1\]"):
        ggn_matmat(model, params, batch, (big_v[0],) + tuple(t[:1, ...] for t in big_v[1:]))
    with pytest.raises(TypeError, match=r"V\[0\]"):
        ggn_matmat(model, params, batch, tuple(t.astype(np.float32) for t in big_v))


@pytest.mark.parametrize("name, loss", [("mlp", CE), ("cnn", MSE), ("deep_linear", MSE)])
def test_operator_matmat_equals_matrix_times_columns(name, loss):
    """``op @ X`` for X (P, 5): one stacked product for Sequential networks (SciPy's column
    loop for the deep linear network) against the materialized matrices."""
    np_ns = backend.namespace_by_name("numpy")
    model, params, x, y, _ = _setup(np_ns, name, loss, "float64")
    p = ac.params.num_params(ac.param_shapes(model))
    mat = np.random.default_rng(5).standard_normal((p, 5))
    ops = ac.curvature.operators
    batch = (x, y)
    pairs = [(ops.ggn_operator(model, params, batch, loss), default_ggn_matrix(model, params, batch, loss)),
             (ops.hessian_operator(model, params, batch, loss), ac.hessian_matrix(model, params, batch, loss)),
             (ops.fisher_operator(model, params, batch, loss, variant="empirical"),
              ac.curvature.fisher_empirical_matrix(model, params, batch, loss)),
             (ops.fisher_operator(model, params, batch, loss, variant="mc", num_samples=2, seed=1),
              ac.curvature.fisher_mc_matrix(model, params, x, loss, num_samples=2, seed=1))]
    for op, m in pairs:
        assert op._batched == isinstance(model, ac.Sequential)
        m = npf(m).reshape(p, p)
        got = op @ mat
        assert got.shape == (p, 5) and got.dtype == np.float64
        np.testing.assert_allclose(got, m @ mat, rtol=0, atol=1e-10 * max(1.0, np.abs(m @ mat).max()))


@pytest.mark.parametrize("name", ["mlp", "deep_linear"])
def test_block_lanczos_on_ggn_matmat_finds_the_top_eigenvalues(name):
    """Block Lanczos with ``batched=True`` pushes each block through one ``ggn_matmat``
    call; its top eigenvalues match eigvalsh of the materialized GGN."""
    from arraycurv.linalg import spectral

    np_ns = backend.namespace_by_name("numpy")
    model, params, x, y, _ = _setup(np_ns, name, MSE, "float64", b=6)
    p = ac.params.num_params(ac.param_shapes(model))
    want = np.linalg.eigvalsh(npf(default_ggn_matrix(model, params, (x, y), MSE)).reshape(p, p))[::-1][:3]
    res = spectral.block_lanczos(lambda vs: ggn_matmat(model, params, (x, y), vs, MSE), params, 3, block_size=3,
                                 num_iters=p, tol=0.0, batched=True)
    np.testing.assert_allclose(np.sort(backend.to_numpy(res.eigenvalues))[::-1], want, rtol=1e-8,
                               atol=1e-10 * max(1.0, want[0]))
