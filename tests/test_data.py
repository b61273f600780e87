"""Teacher-student data (spec 4.4): Huh (2020) Sec. 6 and Bernacchia et al. (2018) Fig. 1A-C.

Statistical checks use deterministic seeds and tolerances of 5 standard errors, stated in
each test (sample std of m Gaussian draws: relative standard error 1/sqrt(2m); sample
mean: sigma/sqrt(m))."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from arraycurv.data import (
    BERNACCHIA_FIG1_WIDTHS,
    TeacherStudentData,
    bernacchia_teacher_student,
    huh_teacher_student,
    input_covariance_spectrum,
)
from tests.helpers import assert_close, assert_like, dtypes, seeds


def _np(a):
    return backend.to_numpy(a).astype(np.float64)


# ================================================================== Huh Sec. 6
@given(n=st.integers(1, 12), extra=st.integers(0, 20), seed=seeds, dtype=dtypes)
def test_training_inputs_are_exactly_whitened(xp, n, extra, seed, dtype):
    p = n + extra
    data = huh_teacher_student(n=n, rank=1, num_train=p, num_test=3, seed=seed, xp=xp, dtype=dtype)
    x = data.x_train
    assert tuple(x.shape) == (p, n)
    gram = xp.matmul(xp.matrix_transpose(x), x) / p
    atol = 1e-12 if dtype == "float64" else 1e-5
    assert_close(gram, np.eye(n), like=x, rtol=0.0, atol=atol)


def test_default_is_p_equals_n_with_orthogonal_inputs():
    data = huh_teacher_student(seed=4)
    x = _np(data.x_train)
    assert x.shape == (16, 16) and data.y_train.shape == (16, 16)
    np.testing.assert_allclose(x @ x.T / 16, np.eye(16), atol=1e-12)  # X / sqrt(P) is orthogonal
    assert data.x_test.shape == (1000, 16)


@given(n=st.integers(2, 10), seed=seeds, data=st.data())
def test_teacher_rank_and_singular_values(n, seed, data):
    rank = data.draw(st.integers(1, n))
    s = sorted(data.draw(st.lists(st.floats(0.1, 5.0), min_size=rank, max_size=rank)), reverse=True)
    d = huh_teacher_student(n=n, rank=rank, teacher_singular_values=s, seed=seed)
    sv = np.linalg.svd(_np(d.teacher_map), compute_uv=False)
    np.testing.assert_allclose(sv[:rank], s, rtol=1e-12)
    assert np.all(sv[rank:] <= 1e-12 * max(s))
    u, v = _np(d.info["u"]), _np(d.info["v"])
    np.testing.assert_allclose(u.T @ u, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(u @ np.diag(s) @ v.T, _np(d.teacher_map), atol=1e-12)


def test_default_teacher_singular_values_are_documented_values():
    d = huh_teacher_student(seed=0)
    sv = np.linalg.svd(_np(d.teacher_map), compute_uv=False)
    np.testing.assert_allclose(sv[:3], [4.0, 2.0, 1.0], rtol=1e-12)
    np.testing.assert_allclose(_np(d.info["singular_values"]), [4.0, 2.0, 1.0])
    d5 = huh_teacher_student(rank=5, seed=0)
    np.testing.assert_allclose(_np(d5.info["singular_values"]), [4.0, 2.0, 1.0, 0.5, 0.25])


def test_noise_statistics_and_test_inputs():
    n, p, p_test, noise = 16, 400, 3000, 0.3
    d = huh_teacher_student(n=n, num_train=p, num_test=p_test, noise_std=noise, seed=11)
    w = _np(d.teacher_map)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        z = _np(y) - _np(x) @ w.T
        m = z.size
        assert abs(z.std() / noise - 1.0) <= 5.0 / math.sqrt(2 * m)
        assert abs(z.mean()) <= 5.0 * noise / math.sqrt(m)
    xt = _np(d.x_test)
    m = xt.size
    assert abs(xt.mean()) <= 5.0 / math.sqrt(m)
    assert abs(xt.var() - 1.0) <= 5.0 * math.sqrt(2.0 / m)
    # no noise: targets are exactly the teacher's outputs
    d0 = huh_teacher_student(n=6, rank=2, noise_std=0.0, num_test=5, seed=1)
    np.testing.assert_allclose(_np(d0.y_train), _np(d0.x_train) @ _np(d0.teacher_map).T, atol=1e-12)


def test_train_target_map_is_the_training_set_desired_map():
    d = huh_teacher_student(n=8, rank=2, noise_std=0.2, seed=3)
    x, y = _np(d.x_train), _np(d.y_train)
    # Huh eq (1): w_bar_* = E[y x^T] Sigma_x^-1, with Sigma_x = I exactly on the training set
    desired = (y.T @ x / 8) @ np.linalg.inv(x.T @ x / 8)
    np.testing.assert_allclose(_np(d.info["train_target_map"]), desired, atol=1e-12)
    assert np.max(np.abs(desired - _np(d.teacher_map))) > 1e-3  # the noise modes of Fig. 4A


@settings(max_examples=10)
@given(seed=seeds, dtype=dtypes)
def test_huh_same_data_on_every_namespace(xp, seed, dtype):
    ref = huh_teacher_student(n=5, rank=2, num_test=7, seed=seed, dtype=dtype)
    got = huh_teacher_student(n=5, rank=2, num_test=7, seed=seed, xp=xp, dtype=dtype)
    assert isinstance(got, TeacherStudentData)
    for name in ("x_train", "y_train", "x_test", "y_test", "teacher_map"):
        a, b = getattr(got, name), getattr(ref, name)
        assert_like(a, got.x_train, name=name)
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    assert got.x_train.dtype == (xp.float64 if dtype == "float64" else xp.float32)
    other = huh_teacher_student(n=5, rank=2, num_test=7, seed=seed + 1)
    assert not np.allclose(backend.to_numpy(other.teacher_map), backend.to_numpy(ref.teacher_map))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 17}, "rank: expected an integer <= n = 16"),
        ({"rank": 0}, "rank: expected an integer >= 1"),
        ({"n": 0}, "n: expected an integer >= 1"),
        ({"num_train": 10}, "num_train: expected P >= n = 16"),
        ({"num_test": -1}, "num_test: expected an integer >= 0"),
        ({"noise_std": -0.1}, "noise_std: expected a finite number >= 0"),
        ({"noise_std": math.nan}, "noise_std: expected a finite number >= 0"),
        ({"teacher_singular_values": [1.0, 2.0]}, "teacher_singular_values: expected 3 finite numbers >= 0"),
        ({"teacher_singular_values": [1.0, -2.0, 1.0]}, "teacher_singular_values: expected 3 finite numbers"),
        ({"dtype": "float16"}, "dtype: expected 'float32' or 'float64'"),
        ({"seed": None}, "seed: expected an int"),
    ],
)
def test_huh_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        huh_teacher_student(**kwargs)


# ============================================================ Bernacchia Fig. 1
def test_input_covariance_spectrum(xp):
    lam = input_covariance_spectrum(20, xp, dtype="float32")
    assert_close(lam, np.exp(-5.0 * np.arange(20) / 20), like=xp.ones((1,), dtype=xp.float32))
    assert float(lam[0]) == 1.0
    with pytest.raises(ValueError, match="n0: expected an integer >= 1"):
        input_covariance_spectrum(0)


@given(ws=st.lists(st.integers(1, 6), min_size=2, max_size=5), seed=seeds)
def test_bernacchia_teacher_network_and_covariance(ws, seed):
    d = bernacchia_teacher_student(tuple(ws), num_train=50, num_test=5, seed=seed)
    params = [_np(w) for w in d.info["teacher_params"]]
    assert [p.shape for p in params] == [(b, a) for a, b in zip(ws[:-1], ws[1:])]
    prod = np.eye(ws[0])
    for w in params:
        prod = w @ prod
    np.testing.assert_allclose(_np(d.teacher_map), prod, atol=1e-12)
    sigma = _np(d.info["input_covariance"])
    np.testing.assert_allclose(sigma, sigma.T, atol=1e-15)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(sigma))[::-1], np.exp(-5.0 * np.arange(ws[0]) / ws[0]),
                               atol=1e-12)
    q = _np(d.info["input_eigenvectors"])
    np.testing.assert_allclose(q.T @ q, np.eye(ws[0]), atol=1e-12)
    assert d.x_train.shape == (50, ws[0]) and d.y_test.shape == (5, ws[-1])


def test_bernacchia_sample_statistics():
    ws = (20, 15, 10)
    n_train, noise_var = 10_000, 1e-4
    d = bernacchia_teacher_student(ws, num_train=n_train, noise_var=noise_var, seed=2)
    sigma = _np(d.info["input_covariance"])
    x = _np(d.x_train)
    s_hat = x.T @ x / n_train
    # E ||S_hat - Sigma||_F^2 = (tr(Sigma)^2 + ||Sigma||_F^2) / N for zero-mean Gaussian inputs
    expected_rms = math.sqrt((np.trace(sigma) ** 2 + np.sum(sigma**2)) / n_train)
    assert np.linalg.norm(s_hat - sigma) <= 3.0 * expected_rms
    z = _np(d.y_train) - x @ _np(d.teacher_map).T
    m = z.size
    assert abs(z.std() / math.sqrt(noise_var) - 1.0) <= 5.0 / math.sqrt(2 * m)
    assert abs(z.mean()) <= 5.0 * math.sqrt(noise_var) / math.sqrt(m)
    # Gaussian weights with std 1/sqrt(fan_in): pooled standardized entries have unit variance
    zw = np.concatenate([(_np(w) * math.sqrt(w.shape[1])).reshape(-1) for w in d.info["teacher_params"]])
    assert abs(zw.std() - 1.0) <= 5.0 / math.sqrt(2 * zw.size)


def test_fig1_architectures():
    a, b, c = (BERNACCHIA_FIG1_WIDTHS[k] for k in "ABC")
    assert len(a) - 1 == 16 and set(a) == {20}
    assert len(b) - 1 == 16 and b[:3] == (20, 30, 40) and b[8] == 100 and b[-3:] == (40, 30, 20)
    assert len(c) - 1 == 12 and c == (200, 80, 34, 20, 10, 5, 2, 5, 10, 20, 34, 80, 200)


@settings(max_examples=10)
@given(seed=seeds, dtype=dtypes)
def test_bernacchia_same_data_on_every_namespace(xp, seed, dtype):
    ref = bernacchia_teacher_student((4, 3, 2), num_train=20, num_test=4, seed=seed, dtype=dtype)
    got = bernacchia_teacher_student((4, 3, 2), num_train=20, num_test=4, seed=seed, xp=xp, dtype=dtype)
    for name in ("x_train", "y_train", "x_test", "y_test", "teacher_map"):
        assert_like(getattr(got, name), got.x_train, name=name)
        np.testing.assert_array_equal(backend.to_numpy(getattr(got, name)), backend.to_numpy(getattr(ref, name)))
    for a, b in zip(got.info["teacher_params"], ref.info["teacher_params"]):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))
    other = bernacchia_teacher_student((4, 3, 2), num_train=20, num_test=4, seed=seed + 1, dtype=dtype)
    assert not np.allclose(backend.to_numpy(other.x_train), backend.to_numpy(ref.x_train))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (((5,),), {}, "widths: expected a sequence"),
        (((5, 0, 3),), {}, "widths: expected positive ints"),
        (((5, 3),), {"noise_var": -1e-6}, "noise_var: expected a finite number >= 0"),
        (((5, 3),), {"num_train": 0}, "num_train: expected an integer >= 1"),
        (((5, 3),), {"num_test": 2.5}, "num_test: expected an integer >= 0"),
    ],
)
def test_bernacchia_argument_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bernacchia_teacher_student(*args, **kwargs)


def test_exports():
    assert ac.data.huh_teacher_student is huh_teacher_student
    assert ac.data.bernacchia_teacher_student is bernacchia_teacher_student
