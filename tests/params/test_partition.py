"""Partitions of the parameters (Wolinski GN-1, GN-2): builders, restriction, coarsening, errors."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv.params import partition as P
from tests.helpers import assert_close, assert_tree_close, mlp_models, seeds

BUILDERS = ("canonical", "trivial", "discrete", "by_layer", "by_kind")


def _params(model, xp, seed, dtype="float64"):
    return ac.init_params(model, seed, xp, dtype=dtype)


def _random_like(params, xp, seed):
    g = ac.backend.rng(seed)
    return tuple(ac.backend.normal(g, tuple(p.shape), xp, dtype=p.dtype) for p in params)


@given(model=mlp_models(max_depth=3, max_width=5), name=st.sampled_from(BUILDERS))
def test_indicator_matrix_properties(model, name):
    """I_{P:S} 1_S = 1_P and I_{S:P} I_{P:S} = Diag(|T_s|) (GN-1)."""
    part = getattr(P, name)(model)
    params = _params(model, np, 0)
    m = ac.backend.to_numpy(P.indicator_matrix(part, params[0]))
    p = sum(math.prod(s) for s in part.shapes)
    assert m.shape == (p, part.num_groups)
    np.testing.assert_array_equal(m.sum(axis=1), np.ones(p))
    np.testing.assert_array_equal(m.T @ m, np.diag(P.group_sizes(part)))
    assert sum(P.group_sizes(part)) == p


def test_builders_group_counts():
    model = ac.mlp((3, 4, 2))
    assert P.canonical(model).num_groups == 4
    assert P.trivial(model).num_groups == 1
    assert P.discrete(model).num_groups == 3 * 4 + 4 + 4 * 2 + 2
    assert P.by_layer(model).labels == (0, 0, 1, 1)
    assert P.by_kind(model).labels == (0, 1, 0, 1)
    assert P.by_kind(model).names == ("weights", "biases")
    assert P.by_layer(ac.DeepLinear((2, 3, 4))).num_groups == 2
    cnn = ac.lenet5((1, 8, 8), 3)
    assert P.by_layer(cnn).num_groups == 5 and P.canonical(cnn).num_groups == 10
    user = P.from_labels(model, ("conv", "conv", "fc", "x"))
    assert user.labels == (0, 0, 1, 2) and user.names == ("conv", "fc", "x")


def test_restrict_sums_to_the_direction(xp):
    """sum_s u^(s) = u and u^(s) = u * 1_{T_s} (GN-2), on every backend."""
    model = ac.mlp((3, 4, 2))
    params = _params(model, xp, 1)
    u = _random_like(params, xp, 2)
    for name in BUILDERS:
        part = getattr(P, name)(model)
        v = P.restrict(u, part)
        assert_tree_close(tuple(xp.sum(t, axis=0) for t in v), u, like=u[0])
        ind = P.indicator_matrix(part, u[0])
        flat_u = ac.flatten(u)
        for s in range(part.num_groups):
            assert_close(ac.flatten(tuple(t[s, ...] for t in v)), flat_u * ind[:, s], like=u[0])


@given(seed=seeds)
def test_scale_groups_is_v_eta(seed):
    """V eta = Diag(u) I_{P:S} eta (GN-10)."""
    model = ac.mlp((2, 3, 2))
    params = _params(model, np, seed % 100)
    u = _random_like(params, np, seed)
    for name in BUILDERS:
        part = getattr(P, name)(model)
        eta = np.random.default_rng(seed).standard_normal(part.num_groups)
        vmat = ac.flatten(u)[:, None] * P.indicator_matrix(part, u[0])
        assert_close(ac.flatten(P.scale_groups(u, eta, part)), vmat @ eta)


def test_merge_gives_the_coarse_indicator():
    """Merging with M: I_{P:S_c} = I_{P:S} M (spec 2.1)."""
    model = ac.mlp((3, 4, 2))
    fine = P.canonical(model)
    mapping = (0, 0, 1, 1)
    coarse = P.merge(fine, mapping)
    assert coarse.labels == P.by_layer(model).labels
    m = np.zeros((4, 2))
    m[np.arange(4), mapping] = 1.0
    x = np.zeros(1)
    np.testing.assert_array_equal(P.indicator_matrix(coarse, x), P.indicator_matrix(fine, x) @ m)
    disc = P.discrete(model)
    to_trivial = P.merge(disc, (0,) * disc.num_groups)
    assert to_trivial.num_groups == 1


def test_expand_and_group_masks_dtype(xp):
    model = ac.mlp((2, 3, 1))
    params = _params(model, xp, 0, "float32")
    part = P.discrete(model)
    masks = P.group_masks(part, params[0])
    assert masks[0].shape == (part.num_groups, 3, 2) and masks[0].dtype == params[0].dtype
    eta = xp.arange(part.num_groups, dtype=xp.float32)
    ex = P.expand(eta, part)
    assert_close(ac.flatten(ex), eta, like=params[0])


@pytest.mark.parametrize(
    ("labels", "msg"),
    [
        ((0, 1), "labels: expected one label per tensor"),
        ((0, 2, 0, 0), "non-empty, got empty groups [1]"),
        ((0, -1, 0, 0), "negative"),
        ((0, (0, 1), 0, 0), "labels[1]: expected an int or 4 ints"),
    ],
)
def test_impossible_partitions_raise(labels, msg):
    shapes = ((4, 3), (4,), (2, 4), (2,))
    with pytest.raises(ValueError, match=r".*" + msg.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        P.Partition(shapes, labels)


def test_errors_name_the_argument():
    model = ac.mlp((3, 4, 2))
    part = P.canonical(model)
    with pytest.raises(ValueError, match="names: expected 4 group names"):
        P.Partition(part.shapes, part.labels, ("a",))
    with pytest.raises(ValueError, match="max_params"):
        P.discrete(ac.mlp((100, 100)), max_params=10)
    with pytest.raises(TypeError, match="model: expected a Sequential or a DeepLinear"):
        P.by_layer(((2, 2),))
    with pytest.raises(ValueError, match="mapping: expected 4 ints"):
        P.merge(part, (0, 1))
    with pytest.raises(ValueError, match="empty groups"):
        P.merge(part, (0, 0, 2, 2))
    with pytest.raises(TypeError, match="partition: expected a Partition"):
        P.restrict((np.zeros((4, 3)),), "canonical")
    with pytest.raises(ValueError, match=r"direction\[1\]: expected shape \(\.\.\., 4\)"):
        P.restrict((np.zeros((4, 3)), np.zeros(3), np.zeros((2, 4)), np.zeros(2)), part)
    with pytest.raises(ValueError, match=r"eta: expected shape \(4,\)"):
        P.expand(np.zeros(3), part)
    with pytest.raises(ValueError, match=r"labels\[0\]: expected 12 labels"):
        P.from_labels(model, ([0, 1], 0, 0, 0))
