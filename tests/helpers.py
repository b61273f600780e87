"""Assertion helpers and hypothesis strategies shared by the tests.

Everything here lives in the public :mod:`arraycurv.testing`; this module re-exports it
(the strategies as ready-made strategy objects where the tests use them unparameterized),
so that ``from tests.helpers import ...`` keeps working.
"""

from __future__ import annotations

from arraycurv import testing
from arraycurv.testing import *  # noqa: F403  (re-exports arraycurv.testing.__all__, listed there once)

dtypes = testing.dtypes()
seeds = testing.seeds()
batch_sizes = testing.batch_sizes()

#: The same names as :data:`arraycurv.testing.__all__` (three of them as strategy objects here).
__all__ = list(testing.__all__)
