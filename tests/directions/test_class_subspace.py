"""The quasi-Newton step of Tuddenham et al. (2020) eq (6), both variants, against the
explicit formula with materialized matrices."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import subspace as cs
from arraycurv.directions import class_subspace as dcs
from arraycurv.linalg.subspaces import stack_directions
from tests.helpers import assert_close, assert_like

CE = ac.SoftmaxCrossEntropy()


def _case(xp, model, seed, b=10, dtype="float64"):
    params = ac.init_params(model, seed, xp, dtype=dtype)
    x = backend.normal(seed + 1, (b, *ac.models.base.input_shape(model)), xp, dtype=dtype)
    c = ac.models.base.output_shape(model)[0]
    y = xp.asarray(np.random.default_rng(seed).integers(0, c, size=b))
    return params, (x, y)


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), lr=st.floats(1e-3, 1.0), dtype=st.sampled_from(["float64", "float32"]),
       sizes=st.sampled_from([(4, 5, 3), (3, 4, 4, 2), (5, 3)]))
def test_eq6_against_the_explicit_formula(xp, seed, lr, dtype, sizes):
    """theta' - theta = -(sum_k v_k v_k^T / lambda_k) g - eta (I - sum_k v_k v_k^T) g,
    with the matrices materialized from the flat v_k (an algebraic identity of eq 6; no
    orthogonality needed)."""
    model = ac.mlp(sizes, "tanh")
    params, batch = _case(xp, model, seed, dtype=dtype)
    _, g = ac.value_and_grad(model, params, batch, CE)
    got = dcs.class_subspace_direction(model, params, batch, lr=lr, loss=CE)
    assert_like(got[0], params[0])
    sub = cs.class_subspace(model, params, batch)
    v = backend.to_numpy(stack_directions(sub.vectors)).astype(np.float64)  # (P, C)
    lam = backend.to_numpy(sub.eigenvalues).astype(np.float64)
    inv = np.where(lam > lam.size * np.finfo(dtype).eps * lam.max(), 1 / np.where(lam > 0, lam, 1), 0.0)
    gf = backend.to_numpy(ac.flatten(g)).astype(np.float64)
    want = -(v * inv) @ (v.T @ gf) - lr * (gf - v @ (v.T @ gf))
    assert_close(ac.flatten(got), want, rtol=1e-9 if dtype == "float64" else 5e-4)


def test_eq6_with_orthogonal_class_gradients_is_pinv_newton_plus_projected_sgd(xp):
    """For a linear classifier the class gradients are orthogonal: eq 6 is then exactly
    -pinv(H_LR) g - eta P g with H_LR materialized (eq 3) and P = I - V V^T (eq 5), and the
    assumption-free variant with K = H_LR gives the same step."""
    model = ac.mlp((5, 4))
    params, batch = _case(xp, model, 3, b=14)
    _, g = ac.value_and_grad(model, params, batch, CE)
    sub = cs.class_subspace(model, params, batch)
    h = backend.to_numpy(cs.low_rank_hessian_matrix(sub))
    v = backend.to_numpy(stack_directions(sub.vectors))
    gf = backend.to_numpy(ac.flatten(g))
    lr = 0.3
    want = -np.linalg.pinv(h, rcond=1e-12) @ gf - lr * (gf - v @ (v.T @ gf))
    orth = dcs.class_subspace_direction(model, params, batch, lr=lr, loss=CE)
    exact = dcs.class_subspace_direction(model, params, batch, lr=lr, loss=CE, variant="exact", curvature="low_rank")
    assert_close(ac.flatten(orth), want)
    assert_close(ac.flatten(exact), want)


@pytest.mark.parametrize("curvature", cs.CURVATURES)
def test_exact_variant_against_materialized_curvature(xp, curvature):
    model = ac.mlp((4, 5, 3), "tanh")
    params, batch = _case(xp, model, 5)
    _, g = ac.value_and_grad(model, params, batch, CE)
    sub = cs.class_subspace(model, params, batch)
    u = backend.to_numpy(stack_directions(cs.subspace_basis(sub.class_grads)))
    k = {"ggn": lambda: ac.ggn_matrix(model, params, batch, CE),
         "hessian": lambda: ac.hessian_matrix(model, params, batch, CE),
         "low_rank": lambda: cs.low_rank_hessian_matrix(sub)}[curvature]()
    k_u = u.T @ backend.to_numpy(k) @ u
    gf = backend.to_numpy(ac.flatten(g))
    lr = 0.05
    want = -u @ np.linalg.solve(k_u, u.T @ gf) - lr * (gf - u @ (u.T @ gf))
    got = dcs.class_subspace_direction(model, params, batch, lr=lr, loss=CE, variant="exact", curvature=curvature)
    assert_close(ac.flatten(got), want, rtol=1e-8)


def test_nonorthogonal_class_gradients_make_the_variants_differ(xp):
    """With a hidden layer the class gradients overlap, and the orthogonality assumption
    changes the step (what the exact variant measures)."""
    model = ac.mlp((4, 6, 3), "tanh")
    params, batch = _case(xp, model, 11)
    a = backend.to_numpy(ac.flatten(dcs.class_subspace_direction(model, params, batch, lr=0.1, loss=CE)))
    b = backend.to_numpy(ac.flatten(dcs.class_subspace_direction(model, params, batch, lr=0.1, loss=CE,
                                                                 variant="exact")))
    assert np.linalg.norm(a - b) > 1e-6 * np.linalg.norm(a)


def test_damping_and_zero_eigenvalues(xp):
    """damping shifts 1/lambda -> 1/(lambda + damping); a zero eigenvalue drops the Newton
    part, leaving -eta P g along that v_k; an empty class (v_k = 0) contributes nothing."""
    model = ac.mlp((4, 3))
    params, batch = _case(xp, model, 2)
    _, g = ac.value_and_grad(model, params, batch, CE)
    sub = cs.class_subspace(model, params, batch)
    lam = xp.concat([sub.eigenvalues[:2], xp.zeros((1,), dtype=xp.float64)])
    got = dcs.class_subspace_newton_direction(g, sub.vectors, lam, 0.2, damping=0.5)
    v = backend.to_numpy(stack_directions(sub.vectors))
    lh = backend.to_numpy(lam)
    gf = backend.to_numpy(ac.flatten(g))
    inv = np.array([1 / (lh[0] + 0.5), 1 / (lh[1] + 0.5), 0.0])
    assert_close(ac.flatten(got), -0.2 * gf - v @ ((inv - 0.2) * (v.T @ gf)))
    zero = tuple(xp.zeros_like(t) for t in sub.vectors)
    assert_close(ac.flatten(dcs.class_subspace_newton_direction(g, zero, sub.eigenvalues, 0.2)), -0.2 * gf)


def test_errors(xp):
    model = ac.mlp((4, 3))
    params, batch = _case(xp, model, 0)
    with pytest.raises(ValueError, match="variant: expected one of"):
        dcs.class_subspace_direction(model, params, batch, lr=0.1, variant="diag")
    with pytest.raises(ValueError, match="lr: expected a finite real number > 0"):
        dcs.class_subspace_direction(model, params, batch, lr=0.0)
    with pytest.raises(ValueError, match="damping: expected a finite real number >= 0"):
        dcs.class_subspace_direction(model, params, batch, lr=0.1, damping=-1.0)
    sub = cs.class_subspace(model, params, batch)
    with pytest.raises(ValueError, match=r"curvature: expected shape \(3, 3\)"):
        dcs.subspace_newton_direction(params, sub.vectors, xp.eye(2, dtype=xp.float64), 0.1)
