"""A tiny picklable experiment for the sweep tests (module level, so workers can import it)."""

from __future__ import annotations

import dataclasses

from arraycurv import backend


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    seed: int = 0
    scale: float = 1.0
    n: int = 6
    fail_above: float = float("inf")


def run_one(config: ToyConfig) -> dict:
    """Record of a toy run: a sum of seeded normals and a curve of partial sums."""
    z = backend.to_numpy(backend.normal(config.seed, (config.n,)))
    if config.scale > config.fail_above:
        raise ValueError(f"scale {config.scale} too large")
    partial = [float(config.scale * s) for s in z.cumsum()]
    return {"total": partial[-1], "first": partial[0], "curve": partial}
