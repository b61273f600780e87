"""Class gradients (Tuddenham et al. 2020 eqs 1-5) and curvature in a span, against the
explicit Jacobian, GGN and Hessian."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import subspace as cs
from arraycurv.linalg.subspaces import stack_directions
from arraycurv.models.layers import Activation, AvgPool2d, Conv2d, Dense, Flatten
from tests.helpers import assert_close, assert_like

CE = ac.SoftmaxCrossEntropy()


def _batch(xp, model, b, c, seed, dtype="float64", *, classes=None):
    shape = (b, *ac.models.base.input_shape(model))
    x = backend.normal(seed, shape, xp, dtype=dtype)
    labels = np.random.default_rng(seed).integers(0, c if classes is None else classes, size=b)
    return x, xp.asarray(labels)


def _cnn(c=3):
    return ac.Sequential((Conv2d(1, 2, 3), Activation("tanh"), AvgPool2d(2), Flatten(), Dense(8, c)), (1, 6, 6))


MODELS = {
    "mlp": lambda c: ac.mlp((4, 5, c), "tanh"),
    "mlp_relu_deep": lambda c: ac.mlp((3, 4, 4, c), "relu"),
    "cnn": _cnn,
    "deep_linear": lambda c: ac.DeepLinear((4, 3, c)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", cs.METHODS)  # masked, per_sample, by_class, auto
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_class_gradients_match_the_jacobian_averaged_per_class(xp, name, method, dtype):
    c = 4
    model = MODELS[name](c)
    params = ac.init_params(model, 0, xp, dtype=dtype)
    batch = _batch(xp, model, 9, c, 1, dtype, classes=3)  # class 3 has no samples: c_3 = 0
    if method == "per_sample" and name == "deep_linear":  # its linearization has no per-sample reverse pass
        with pytest.raises(ValueError, match="method: 'per_sample' needs a linearization"):
            cs.class_gradients(model, params, batch, method=method)
        return
    got = cs.class_gradients(model, params, batch, method=method)
    assert [tuple(t.shape) for t in got] == [(c, *p.shape) for p in params]
    assert_like(got[0], params[0])
    flat = xp.matrix_transpose(stack_directions(got))
    # reference: the explicit Jacobian J (B, C, P), averaged over each class by hand on the host
    jac = backend.to_numpy(ac.jacobian(model, params, batch[0])).astype(np.float64)
    y = backend.to_numpy(batch[1])
    ref = np.stack([jac[y == k, k, :].mean(axis=0) if np.any(y == k) else np.zeros(jac.shape[2]) for k in range(c)])
    assert_close(flat, ref, rtol=1e-9 if dtype == "float64" else 1e-4)
    assert_close(cs.class_gradients_matrix(model, params, batch), ref, like=params[0],
                 rtol=1e-9 if dtype == "float64" else 1e-4)


@settings(max_examples=8)
@given(model=st.sampled_from(["mlp", "cnn"]), b=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_class_gradients_property(xp, model, b, seed):
    c = 3
    m = MODELS[model](c)
    params = ac.init_params(m, seed, xp)
    batch = _batch(xp, m, b, c, seed)
    assert_close(xp.matrix_transpose(stack_directions(cs.class_gradients(m, params, batch))),
                 cs.class_gradients_matrix(m, params, batch))


def test_decomposition_of_eq2(xp):
    model = MODELS["mlp"](3)
    params = ac.init_params(model, 2, xp)
    batch = _batch(xp, model, 10, 3, 3)
    dec = cs.class_gradient_decomposition(model, params, batch)
    jac = backend.to_numpy(ac.jacobian(model, params, batch[0]))
    y = backend.to_numpy(batch[1])
    hot = np.eye(3)[y]
    # grad z_k^mu = y_k^mu c_k + eps_k^mu, and the eps of each class's own samples average to zero
    assert_close(backend.to_numpy(dec.residuals) + hot[:, :, None] * backend.to_numpy(dec.class_grads)[None], jac)
    eps = backend.to_numpy(dec.residuals)
    for k in range(3):
        assert np.allclose(eps[y == k, k, :].mean(axis=0), 0.0, atol=1e-14)
        own = jac[y == k, k, :]
        want = np.sum(y == k) * np.sum(own.mean(axis=0) ** 2) / np.sum(own**2)
        assert_close(dec.explained[k], xp.asarray(want))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_low_rank_hessian_eqs_3_and_4(xp, dtype):
    c = 3
    model = MODELS["mlp"](c)
    params = ac.init_params(model, 4, xp, dtype=dtype)
    batch = _batch(xp, model, 11, c, 5, dtype)
    sub = cs.class_subspace(model, params, batch)
    rtol = 1e-9 if dtype == "float64" else 2e-4
    # weights of eq 3 from the logits by hand
    z = backend.to_numpy(ac.forward(model, params, batch[0])).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = backend.to_numpy(batch[1])
    w = np.array([np.sum((y == k) * p[:, k] * (1 - p[:, k])) for k in range(c)]) / len(y)
    assert_close(sub.weights, w, like=params[0], rtol=rtol)
    cg = backend.to_numpy(cs.class_gradients_matrix(model, params, batch)).astype(np.float64)
    assert_close(sub.eigenvalues, w * np.sum(cg**2, axis=1), rtol=rtol)
    assert np.array_equal(backend.to_numpy(sub.counts), np.bincount(y, minlength=c))
    # eq 3 (sum_k w_k c_k c_k^T) and eq 4 (sum_k lambda_k v_k v_k^T) are the same matrix
    h = cs.low_rank_hessian_matrix(sub)
    assert_close(h, (cg.T * w) @ cg, like=params[0], rtol=rtol)
    v = ac.unflatten(backend.normal(6, (ac.params.num_params(ac.param_shapes(model)),), xp, dtype=dtype),
                     ac.param_shapes(model))
    assert_close(ac.flatten(cs.low_rank_hessian_vp(sub, v)), h @ ac.flatten(v), rtol=rtol)


def _linear_classifier(xp, seed, c=4, n0=5, b=13):
    """A linear model f = W x + b: grad z_k = (e_k x^T, e_k), so the class gradients are
    orthogonal (they live in different rows of W), the case where eqs 4-5 are exact."""
    model = ac.mlp((n0, c))
    params = ac.init_params(model, seed, xp)
    return model, params, _batch(xp, model, b, c, seed + 1)


def test_orthogonal_class_gradients_make_eq4_an_eigendecomposition(xp):
    model, params, batch = _linear_classifier(xp, 0)
    sub = cs.class_subspace(model, params, batch)
    vmat = backend.to_numpy(stack_directions(sub.vectors))
    assert np.allclose(vmat.T @ vmat, np.eye(4), atol=1e-14)
    h = backend.to_numpy(cs.low_rank_hessian_matrix(sub))
    v = ac.unflatten(backend.normal(1, (vmat.shape[0],), xp), ac.param_shapes(model))
    # generalized inverse: the Moore-Penrose pseudo-inverse of H_LR
    assert_close(ac.flatten(cs.low_rank_hessian_pinv_vp(sub, v)), np.linalg.pinv(h, rcond=1e-12) @
                 backend.to_numpy(ac.flatten(v)))
    # eq 5: P = I - V V^T is the projector onto the complement
    pv = backend.to_numpy(ac.flatten(cs.class_complement_project(sub, v)))
    assert np.max(np.abs(vmat.T @ pv)) < 1e-12
    assert_close(pv, backend.to_numpy(ac.flatten(v)) - vmat @ (vmat.T @ backend.to_numpy(ac.flatten(v))))


@pytest.mark.parametrize("kind", cs.CURVATURES)
def test_subspace_curvature_against_materialized(xp, kind):
    c = 3
    model = MODELS["mlp"](c)
    params = ac.init_params(model, 7, xp)
    batch = _batch(xp, model, 8, c, 8)
    sub = cs.class_subspace(model, params, batch)
    basis = cs.subspace_basis(sub.class_grads)
    u = backend.to_numpy(stack_directions(basis))
    assert u.shape[1] == c and np.allclose(u.T @ u, np.eye(c), atol=1e-12)
    cg = backend.to_numpy(stack_directions(sub.class_grads))
    assert np.allclose(u @ (u.T @ cg), cg, atol=1e-12)  # spans the class gradients
    full = {"ggn": ac.ggn_matrix, "hessian": ac.hessian_matrix}.get(kind)
    k_mat = backend.to_numpy(cs.low_rank_hessian_matrix(sub) if full is None else full(model, params, batch, CE))
    got = cs.subspace_curvature(model, params, batch, basis, curvature=kind, loss=CE)
    assert_like(got, params[0])
    assert_close(got, u.T @ k_mat @ u)


def test_errors(xp):
    model = MODELS["mlp"](3)
    params = ac.init_params(model, 0, xp)
    x, y = _batch(xp, model, 4, 3, 0)
    with pytest.raises(ValueError, match="method: expected one of"):
        cs.class_gradients(model, params, (x, y), method="loop")
    with pytest.raises(TypeError, match="batch y: expected an integer dtype"):
        cs.class_gradients(model, params, (x, xp.zeros((4,), dtype=xp.float64)))
    with pytest.raises(ValueError, match=r"batch y: expected labels in \[0, 3\)"):
        cs.class_gradients(model, params, (x, xp.asarray([0, 1, 2, 3])))
    with pytest.raises(TypeError, match="batch: expected a tuple"):
        cs.class_subspace(model, params, x)
    with pytest.raises(TypeError, match="subspace: expected a ClassSubspace"):
        cs.low_rank_hessian_matrix((1, 2))
    with pytest.raises(ValueError, match="curvature: expected one of"):
        cs.subspace_curvature(model, params, (x, y), params, curvature="fisher")
