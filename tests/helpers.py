"""Assertion helpers and hypothesis strategies shared by the tests.

Everything here lives in the public :mod:`arraycurv.testing`; this module re-exports it
(the strategies as ready-made strategy objects where the tests use them unparameterized),
so that ``from tests.helpers import ...`` keeps working.
"""

from __future__ import annotations

from arraycurv import testing
from arraycurv.testing import (
    FD_RTOL,
    RTOL,
    assert_close,
    assert_like,
    assert_tree_close,
    cnn_models,
    deep_linear_cases,
    default_form,
    dtype_name,
    fd_step,
    materialize,
    mlp_models,
    widths,
)

dtypes = testing.dtypes()
seeds = testing.seeds()
batch_sizes = testing.batch_sizes()

__all__ = [
    "FD_RTOL",
    "RTOL",
    "assert_close",
    "assert_like",
    "assert_tree_close",
    "batch_sizes",
    "cnn_models",
    "deep_linear_cases",
    "default_form",
    "dtype_name",
    "dtypes",
    "fd_step",
    "materialize",
    "mlp_models",
    "seeds",
    "widths",
]
