"""Benchmark: arraycurv against its peers -- the former name of ``compare_peers.py``.

``python benchmarks/bench_peers.py [options]`` runs :mod:`compare_peers` with the same
options (``--threads 1``, ``--threads 1,2``, ``--quick``, ``--competing``, ...; see its
docstring) and writes benchmarks/results/compare_peers.json.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from compare_peers import main  # noqa: E402

if __name__ == "__main__":
    main()
