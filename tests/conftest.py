"""Test harness: the ``xp`` fixture over every available array namespace, the slow-test
flag, and hypothesis profiles.

Backends: NumPy and array-api-strict always; PyTorch (CPU) when importable; CuPy when a
GPU is usable (skipped otherwise). Run the slow tests with ``pytest --runslow``; select a
backend with ``-k numpy`` / ``-k strict`` / ``-k torch`` / ``-k cupy``.
"""

from __future__ import annotations

import importlib
import os

import array_api_compat
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


def _try_namespace(name):
    try:
        mod = importlib.import_module(name)
        if name == "cupy":
            if mod.cuda.runtime.getDeviceCount() < 1:
                return None
        return array_api_compat.array_namespace(mod.asarray([1.0]))
    except Exception:
        return None


def _backend_params():
    params = []
    for name, mark in [
        ("numpy", None),
        ("array_api_strict", None),
        ("torch", "torch"),
        ("cupy", "cupy"),
    ]:
        marks = [getattr(pytest.mark, mark)] if mark else []
        params.append(pytest.param(name, id=name if name != "array_api_strict" else "strict", marks=marks))
    return params


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def xp(request):
    """The array namespace under test (array-api-compat wrapped where needed)."""
    ns = _try_namespace(request.param)
    if ns is None:
        pytest.skip(f"backend {request.param} is not available here")
    return ns


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


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
