"""Chunked reductions equal the one-shot curvature to rounding (hypothesis over chunkings)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.curvature import reduce as red


def _close(a, b, rtol=1e-12):
    a, b = backend.to_numpy(a), backend.to_numpy(b)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert float(np.max(np.abs(a - b))) <= rtol * scale


def _flat(tree):
    out = []
    for t in tree if isinstance(tree, (tuple, list)) else (tree,):
        if isinstance(t, (tuple, list)):
            out.extend(_flat(t))
        else:
            out.append(t)
    return out


def _case(xp, family, n, seed):
    if family == "deep_linear":
        model = ac.DeepLinear((3, 4, 2))
        x = ac.backend.normal(seed, (n, 3), xp)
        y = ac.backend.normal(seed + 1, (n, 2), xp)
        loss = ac.MSE()
    else:
        model = ac.mlp((3, 5, 4))
        x = ac.backend.normal(seed, (n, 3), xp)
        y = ac.backend.integers(seed + 1, 0, 4, (n,), xp)
        loss = ac.SoftmaxCrossEntropy()
    params = ac.init_params(model, seed + 2, xp)
    return model, params, (x, y), loss


@settings(max_examples=15, deadline=None)
@given(family=st.sampled_from(["deep_linear", "mlp"]), n=st.integers(1, 23), chunk=st.integers(1, 9),
       seed=st.integers(0, 2**16))
def test_chunked_gradient_ggn_and_matrix_equal_one_shot(xp, family, n, chunk, seed):
    model, params, batch, loss = _case(xp, family, n, seed)
    v = ac.init_params(model, seed + 3, xp)
    chunks = red.chunk_batch(batch, chunk)
    assert sum(c[0].shape[0] for c in chunks) == n
    for fn in (
        lambda b: ac.value_and_grad(model, params, b, loss),
        lambda b: ac.ggn_vp(model, params, b, v, loss),
        lambda b: (ac.ggn_matrix(model, params, b, loss),),
    ):
        got = red.reduce_chunks(red.mean_accumulator(fn), chunks)
        want = fn(batch)
        for a, b in zip(_flat(got), _flat(want), strict=True):
            _close(a, b)


@settings(max_examples=10, deadline=None)
@given(n=st.integers(2, 30), chunk=st.integers(1, 11), seed=st.integers(0, 2**16))
def test_chunked_kron_factors_and_moments_equal_one_shot(xp, n, chunk, seed):
    model, params, (x, y), loss = _case(xp, "mlp", n, seed)
    chunks = red.chunk_batch(x, chunk)
    fac = lambda xc: tuple((f.G, f.A) for f in ac.curvature.kron_factors(model, params, xc, loss))  # noqa: E731
    for a, b in zip(_flat(red.reduce_chunks(red.mean_accumulator(fac), chunks)), _flat(fac(x)), strict=True):
        _close(a, b)
    xd, yd = ac.backend.normal(seed, (n, 3), xp), ac.backend.normal(seed + 1, (n, 2), xp)
    mom = lambda b: (ac.models.moments(*b).sxx, ac.models.moments(*b).syx)  # noqa: E731
    got = red.reduce_chunks(red.mean_accumulator(mom), red.chunk_batch((xd, yd), chunk))
    for a, b in zip(got, mom((xd, yd)), strict=True):
        _close(a, b)


def test_dask_tree_reduce_equals_serial():
    distributed = pytest.importorskip("distributed")
    import array_api_compat.numpy as xp

    model, params, batch, loss = _case(xp, "mlp", 37, 5)
    acc = red.mean_accumulator(lambda b: ac.value_and_grad(model, params, b, loss))
    chunks = red.chunk_batch(batch, 4)
    serial = red.reduce_chunks(acc, chunks)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        for per_task in (1, 3):
            tree = red.reduce_chunks(acc, chunks, client=client, per_task=per_task)
            for a, b in zip(_flat(tree), _flat(serial), strict=True):
                _close(a, b)


def test_reduce_errors_name_the_argument():
    x = ac.backend.normal(0, (4, 2))
    with pytest.raises(ValueError, match="chunk_size: expected"):
        red.chunk_batch(x, 0)
    with pytest.raises(ValueError, match="batch: expected at least one sample"):
        red.chunk_batch(x[:0, ...], 2)
    with pytest.raises(ValueError, match="chunks: expected at least one chunk"):
        red.reduce_chunks(red.mean_accumulator(lambda b: b), [])
    with pytest.raises(TypeError, match="acc: expected"):
        red.reduce_chunks(lambda b: b, [x])
