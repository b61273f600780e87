"""Backend layer: namespaces, devices, dtype policy, reproducible random numbers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend
from tests.helpers import assert_like, seeds


@given(seed=seeds, m=st.integers(1, 6), n=st.integers(1, 6))
def test_normal_same_values_on_every_namespace(xp, seed, m, n):
    a = backend.normal(seed, (m, n), xp)
    ref = np.random.default_rng(seed).standard_normal((m, n))
    assert a.dtype == xp.float64
    np.testing.assert_array_equal(backend.to_numpy(a), ref)
    a32 = backend.normal(seed, (m, n), xp, dtype="float32")
    assert a32.dtype == xp.float32
    np.testing.assert_array_equal(backend.to_numpy(a32), ref.astype(np.float32))


@given(seed=seeds, m=st.integers(1, 6), n=st.integers(1, 6))
def test_orthogonal_has_orthonormal_rows_or_columns(xp, seed, m, n):
    q = backend.to_numpy(backend.orthogonal(seed, (m, n), xp, gain=2.0))
    gram = q @ q.T if m <= n else q.T @ q
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(m, n)), atol=1e-12)


def test_uniform_and_integers_reproducible(xp):
    u = backend.uniform(3, (5,), xp, low=-1.0, high=2.0)
    np.testing.assert_array_equal(backend.to_numpy(u), np.random.default_rng(3).uniform(-1, 2, 5))
    i = backend.integers(3, 0, 4, (7,), xp)
    np.testing.assert_array_equal(backend.to_numpy(i), np.random.default_rng(3).integers(0, 4, 7))


def test_generator_is_passed_through():
    g = np.random.default_rng(0)
    assert backend.rng(g) is g
    with pytest.raises(ValueError, match="seed"):
        backend.rng(None)


def test_mixed_namespaces_error_names_argument():
    import array_api_strict as xs

    with pytest.raises(TypeError, match=r"y: expected an array of namespace 'array_api_strict'.*got.*'numpy'"):
        backend.namespace_of(x=xs.asarray([1.0]), y=np.ones(1))
    with pytest.raises(TypeError, match=r"params\[1\]"):
        backend.namespace_of(params=(xs.asarray([1.0]), np.ones(1)))


def test_mixed_devices_error_names_argument():
    import array_api_strict as xs

    a = xs.asarray([1.0])
    b = xs.asarray([1.0], device=xs.Device("device1"))
    with pytest.raises(ValueError, match=r"b: expected an array on device"):
        backend.namespace_of(a=a, b=b)


def test_from_numpy_and_to_device_keep_namespace(xp):
    a = backend.from_numpy(np.arange(6.0).reshape(2, 3), xp)
    assert_like(a, xp.ones((1,), dtype=xp.float64))
    b = backend.to_device(a, backend.device_of(a))
    np.testing.assert_array_equal(backend.to_numpy(b), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("kernel,stride,in_hw", [((3, 2), (1, 1), (9, 8)), ((3, 2), (2, 3), (9, 8)),
                                                  ((2, 2), (2, 2), (8, 6)), ((2, 2), (2, 2), (9, 7))])
def test_col2im_is_the_adjoint_of_im2col(xp, kernel, stride, in_hw):
    """<im2col(x), c> = <x, col2im(c)> for overlapping windows (the strided adds; NumPy:
    backend.window_scatter_add) and non-overlapping ones (stride = kernel: the permutation,
    with a zero border where partial windows are dropped), on every backend."""
    from arraycurv.models._image import _col2im, _im2col

    out_hw = ((in_hw[0] - kernel[0]) // stride[0] + 1, (in_hw[1] - kernel[1]) // stride[1] + 1)
    g = np.random.default_rng(1)
    x = g.standard_normal((2, 3) + in_hw)
    c = g.standard_normal((2, 3, kernel[0] * kernel[1]) + out_hw)
    cols = backend.to_numpy(_im2col(xp, backend.from_numpy(x, xp), kernel, stride, out_hw))
    back = _col2im(xp, backend.from_numpy(c, xp), kernel, stride, in_hw)
    assert tuple(back.shape) == (2, 3) + in_hw
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, backend.to_numpy(back)), rtol=1e-12)
    if backend.namespace_name(xp) == "numpy":
        ref = np.zeros((2, 3) + in_hw)
        for t, (i, j) in enumerate(np.ndindex(*kernel)):
            ref[..., i:i + stride[0] * (out_hw[0] - 1) + 1:stride[0], j:j + stride[1] * (out_hw[1] - 1) + 1:stride[1]] \
                += c[..., t, :, :]
        np.testing.assert_allclose(backend.window_scatter_add(c, kernel, stride, in_hw), ref, rtol=0, atol=0)


def test_batch_inner_matrix_is_a_view_of_batch_inner_arrays_only():
    m = np.arange(24.0).reshape(3, 8)  # (K, B*L) with B = 2, L = 4
    cols = np.transpose(m.reshape(3, 2, 4), (1, 0, 2))  # (B, K, L), stored batch-inner
    got = backend.batch_inner_matrix(cols)
    assert np.shares_memory(got, m)
    np.testing.assert_array_equal(got, m)
    assert backend.batch_inner_matrix(np.ascontiguousarray(cols)) is None  # per-sample layout
    assert backend.batch_inner_matrix(m) is None
    strict = backend.namespace_by_name("array_api_strict")
    assert backend.batch_inner_matrix(strict.zeros((2, 3, 4))) is None


def test_from_numpy_copies_unless_asked_not_to():
    """The default always copies; ``copy=False`` reuses writeable float input of the dtype
    (NumPy: the same memory) and still copies read-only input and other dtypes."""
    host = backend.host_namespace()
    a = np.arange(6.0)
    assert not np.shares_memory(backend.from_numpy(a, host), a)
    assert np.shares_memory(backend.from_numpy(a, host, copy=False), a)
    assert not np.shares_memory(backend.from_numpy(a, host, dtype="float32", copy=False), a)
    ro = np.arange(6.0)
    ro.flags.writeable = False
    out = backend.from_numpy(ro, host, copy=False)
    assert not np.shares_memory(out, ro)
    np.testing.assert_array_equal(out, ro)


def test_float_dtype_policy(xp):
    assert backend.float_dtype(xp) == xp.float64
    assert backend.float_dtype(xp, "float32") == xp.float32
    with pytest.raises(ValueError, match="dtype: expected"):
        backend.float_dtype(xp, "float16")
    with pytest.raises(TypeError, match="x: expected dtype float32 or float64"):
        backend.check_float(xp.asarray([1, 2]), "x")


def test_namespace_by_name():
    assert backend.namespace_by_name("numpy") is not None
    with pytest.raises(ValueError, match="^backend: expected one of"):
        backend.namespace_by_name("tensorflow")


def test_unavailable_cupy_is_a_clear_error():
    try:
        import cupy  # noqa: F401

        pytest.skip("cupy is installed")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="backend: 'cupy' is not available"):
        backend.namespace_by_name("cupy")


def test_top_level_exports():
    assert ac.backend.normal is backend.normal
    assert callable(ac.flatten) and callable(ac.ggn_vp)


def test_npz_round_trip_from_any_namespace(xp, tmp_path):
    a = backend.normal(3, (4, 5), xp)
    i = xp.asarray([1, 2, 3])
    path = tmp_path / "x.npz"
    ac.results.save_npz(str(path), {"a": a, "grp/i": i})
    back = ac.results.load_npz(str(path))
    assert sorted(back) == ["a", "grp/i"]
    np.testing.assert_array_equal(back["a"], backend.to_numpy(a))
    np.testing.assert_array_equal(back["grp/i"], np.asarray([1, 2, 3]))


def test_host_scalar_and_namespace():
    assert type(backend.host_scalar(np.float32(1.5))) is float
    assert type(backend.host_scalar(np.int64(3))) is int
    assert type(backend.host_scalar(np.bool_(True))) is bool
    assert backend.host_scalar("x") == "x"
    assert backend.host_namespace().asarray([1.0]).dtype == np.float64


def test_only_the_backend_module_imports_numpy():
    import pathlib
    import re

    pkg = pathlib.Path(ac.__file__).parent
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if p.name != "backend.py" and re.search(r"^\s*(import numpy|from numpy)", p.read_text(), re.M)]
    assert offenders == [], f"modules importing numpy directly (use arraycurv.backend): {offenders}"


# ----------------------------------------------------------------------------- allocator policy
def test_set_malloc_thresholds_on_glibc_and_rejects_bad_sizes():
    import platform

    ok = backend.set_malloc_thresholds()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert ok is True
    else:
        assert ok is False
    for bad in (0, 1000, -1, 1.5e9, True, "64M"):
        with pytest.raises(ValueError, match=r"^mmap_threshold: expected an integer number of bytes >= 131072"):
            backend.set_malloc_thresholds(mmap_threshold=bad)
        with pytest.raises(ValueError, match=r"^trim_threshold: expected an integer number of bytes >= 131072"):
            backend.set_malloc_thresholds(trim_threshold=bad)


@pytest.mark.parametrize("value, calls, warns", [(None, 1, False), ("on", 1, False), ("ON ", 1, False),
                                                 ("keep", 0, False), ("off", 0, True)])
def test_apply_memory_policy_reads_the_environment(monkeypatch, value, calls, warns):
    seen = []
    monkeypatch.setattr(backend, "set_malloc_thresholds", lambda: seen.append(1) or True)
    if value is None:
        monkeypatch.delenv("ARRAYCURV_MALLOC", raising=False)
    else:
        monkeypatch.setenv("ARRAYCURV_MALLOC", value)
    if warns:
        with pytest.warns(RuntimeWarning, match="ARRAYCURV_MALLOC: expected 'on' or 'keep', got 'off'"):
            assert backend.apply_memory_policy() is False
    else:
        assert backend.apply_memory_policy() is (calls == 1)
    assert len(seen) == calls


def test_writable_view_writes_through_or_declines():
    """A reshaped block of a writeable NumPy matrix is a view that writes into the matrix;
    where a reshape would copy, or the array is read-only or of another namespace, None."""
    import numpy as np

    a = np.zeros((6, 8))
    v = backend.writable_view(a[2:6, 0:6], (2, 2, 3, 2))
    assert v is not None
    v[...] = np.arange(24.0).reshape(2, 2, 3, 2)
    np.testing.assert_array_equal(a[2:6, 0:6], np.arange(24.0).reshape(4, 6))
    assert np.all(a[:2] == 0) and np.all(a[:, 6:] == 0)
    assert backend.writable_view(a.T, (4, 12)) is None  # merging strided axes would copy
    ro = np.zeros((4, 4))
    ro.flags.writeable = False
    assert backend.writable_view(ro, (2, 8)) is None
    strict = backend.namespace_by_name("array_api_strict")
    assert backend.writable_view(strict.zeros((4, 4)), (2, 8)) is None


@pytest.mark.parametrize("stride", [(1, 1), (2, 1), (2, 3)])
def test_window_gather_matches_the_stacked_slices(stride):
    """The NumPy im2col gather equals the generic stack of the kh x kw strided slices (with
    leading axes), and declines other namespaces."""
    import numpy as np

    from arraycurv.models._image import _windows

    x = np.random.default_rng(0).standard_normal((2, 3, 4, 9, 8))
    kernel = (3, 2)
    out_hw = ((9 - 3) // stride[0] + 1, (8 - 2) // stride[1] + 1)
    ref = np.stack([x[..., r, c] for r, c in _windows(kernel, stride, out_hw)], axis=-3)
    got = backend.window_gather(x, kernel, stride, out_hw)
    assert got.shape == (2, 3, 4, 6) + out_hw
    np.testing.assert_array_equal(got, ref)
    # batch-inner storage: the same values, laid out (C, kh*kw, B, Ho, Wo) in memory
    x4 = x[0]  # (B, C, H, W) = (3, 4, 9, 8)
    got = backend.window_gather(x4, kernel, stride, out_hw, batch_inner=True)
    np.testing.assert_array_equal(got, ref[0])
    assert np.transpose(got, (1, 2, 0, 3, 4)).flags["C_CONTIGUOUS"]
    strict = backend.namespace_by_name("array_api_strict")
    assert backend.window_gather(strict.zeros((1, 4, 4)), (2, 2), (1, 1), (3, 3)) is None
