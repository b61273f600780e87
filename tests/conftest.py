"""Test harness: the ``xp`` fixture over every available array namespace, backend
skip/xfail markers, the slow-test flag, and hypothesis profiles.

Backends (ids): ``numpy``; ``numpy_readonly`` (NumPy whose creation functions return
arrays with the writeable flag off, so any routine that writes into its inputs fails);
``strict`` (array-api-strict with its strictest flags: no boolean indexing, no
data-dependent shapes, only the linalg extension); ``torch`` (CPU, when importable);
``cupy`` (when a GPU is usable). Run the slow tests with ``pytest --runslow``; select a
backend with ``-k numpy`` / ``-k readonly`` / ``-k strict`` / ``-k torch`` / ``-k cupy``.

Per-test backend marks, in the style of scipy and array-api-extra::

    @pytest.mark.skip_xp_backends("strict", "torch", reason="...")
    @pytest.mark.xfail_xp_backends("numpy_readonly", reason="...", strict=True)
"""

from __future__ import annotations

import functools
import importlib
import os

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=True,
    print_blob=True,
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default"))

#: backend id -> importable module name
BACKENDS = {
    "numpy": "numpy",
    "numpy_readonly": "numpy",
    "strict": "array_api_strict",
    "torch": "torch",
    "cupy": "cupy",
}
#: array-api-strict flags for the ``strict`` backend (the strictest that the library meets)
STRICTEST_FLAGS = {"boolean_indexing": False, "data_dependent_shapes": False, "enabled_extensions": ("linalg",)}


def _try_namespace(name):
    try:
        mod = importlib.import_module(name)
        if name == "cupy":
            if mod.cuda.runtime.getDeviceCount() < 1:
                return None
        return array_api_compat.array_namespace(mod.asarray([1.0]))
    except Exception:
        return None


class NumPyReadOnly:
    """``array_api_compat.numpy`` whose functions return read-only arrays.

    Arrays built through this namespace (``xp.asarray``, ``xp.ones``, and the backend's
    ``normal``/``from_numpy`` that call ``xp.asarray``) have the writeable flag off, so
    an in-place write into a caller's array raises ``ValueError``. ``array_namespace`` of
    such an array is still ``array_api_compat.numpy``: arrays the library creates itself
    stay writeable (after array-api-extra's ``NumPyReadOnly``).
    """

    def __init__(self, module=None):
        self._module = module if module is not None else array_api_compat.array_namespace(np.empty(0))

    def __getattr__(self, name):
        obj = getattr(self._module, name)
        if isinstance(obj, type(np)):  # submodules (linalg, fft)
            return NumPyReadOnly(obj)
        if not callable(obj) or isinstance(obj, type):
            return obj
        return self._wrap(obj)

    def __repr__(self):
        return f"NumPyReadOnly({self._module.__name__})"

    @staticmethod
    def _readonly(o):
        if isinstance(o, np.ndarray):
            o.flags.writeable = False
        elif isinstance(o, (tuple, list)):
            items = [NumPyReadOnly._readonly(i) for i in o]
            return type(o)(*items) if hasattr(o, "_fields") else type(o)(items)
        return o

    @staticmethod
    def _wrap(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return NumPyReadOnly._readonly(func(*args, **kwargs))

        return wrapper


def _apply_backend_marks(request, backend_id):
    """Honour ``skip_xp_backends`` / ``xfail_xp_backends`` marks naming this backend."""
    for marker_name, act in (("skip_xp_backends", pytest.skip), ("xfail_xp_backends", None)):
        for marker in request.node.iter_markers(marker_name):
            unknown = set(marker.args) - set(BACKENDS)
            if unknown:
                raise TypeError(f"{marker_name}: expected backend ids from {sorted(BACKENDS)}, got {sorted(unknown)}")
            if backend_id not in marker.args:
                continue
            reason = f"{backend_id}: {marker.kwargs.get('reason', marker_name)}"
            if act is not None:
                act(reason)
            else:
                request.node.add_marker(pytest.mark.xfail(reason=reason, strict=marker.kwargs.get("strict", False)))


@pytest.fixture(params=[pytest.param(b, id=b, marks=[getattr(pytest.mark, b)] if b in ("torch", "cupy") else [])
                        for b in BACKENDS])
def xp(request):
    """The array namespace under test (array-api-compat wrapped where needed)."""
    backend_id = request.param
    _apply_backend_marks(request, backend_id)
    ns = _try_namespace(BACKENDS[backend_id])
    if ns is None:
        pytest.skip(f"backend {backend_id} is not available here")
    if backend_id == "numpy_readonly":
        yield NumPyReadOnly(ns)
    elif backend_id == "strict":
        with ns.ArrayAPIStrictFlags(**STRICTEST_FLAGS):
            yield ns
    else:
        yield ns


@pytest.fixture
def numpy_xp():
    """NumPy only, for tests that compare against SciPy or loop references."""
    return _try_namespace("numpy")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test; run with --runslow")
    config.addinivalue_line("markers", "torch: runs on the PyTorch backend")
    config.addinivalue_line("markers", "cupy: runs on the CuPy backend (needs a GPU)")
    config.addinivalue_line("markers", "skip_xp_backends(*ids, reason): skip the xp fixture on these backends")
    config.addinivalue_line("markers", "xfail_xp_backends(*ids, reason, strict): xfail on these backends")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
