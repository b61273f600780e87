"""arraycurv's test suite.

BLAS policy of the suite: one thread (set here, before NumPy is first imported by
conftest). The matrices are small, where threads only add spin-waiting on two cores,
and multi-threaded OpenBLAS was seen to hang in ``exec_blas`` on a loaded 2-core machine
after tests that run worker threads (Dask). Override by exporting the variables.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
