"""A sweep as plain data: the product of seeds x experiment parameters over a frozen config.

A :class:`Sweep` holds a base configuration (any frozen dataclass, e.g. an experiment's
``Config``), an ordered grid of field values, and replicate seeds. :meth:`Sweep.cells`
expands it into :class:`Cell` records, one per (grid point, replicate), each with the full
configuration it runs and a key (a hash of that configuration) that names its record file.

Seeds: replicate ``r`` of a sweep with root seed ``s`` runs with the integer drawn from
``SeedSequence(s).spawn(R)[r]`` (NumPy's spawned seed sequences: independent streams
whatever the number of replicates). The seed depends on the replicate only, not on the
grid point, so that every grid point of one replicate sees the same data (common random
numbers: paired comparisons between settings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .. import backend
from ..validation import check_int

__all__ = ["Cell", "Sweep", "config_key", "parse_grid", "parse_seeds", "spawn_seeds"]


def spawn_seeds(root: int, n: int) -> tuple[int, ...]:
    """``n`` independent 32-bit seeds spawned from ``SeedSequence(root)``."""
    root = check_int(root, "seed", lo=0)
    n = check_int(n, "n", lo=0)
    ss = backend.host_namespace().random.SeedSequence(root)
    return tuple(int(child.generate_state(1)[0]) for child in ss.spawn(n))


def _jsonable_config(config: Any) -> dict:
    return {"type": f"{type(config).__module__}.{type(config).__qualname__}", "fields": dataclasses.asdict(config)}


def config_key(config: Any) -> str:
    """A stable 16-hex-digit hash of a frozen dataclass configuration (type and fields)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config: expected a dataclass instance, got {type(config).__name__}")
    text = json.dumps(_jsonable_config(config), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a sweep: its grid values, replicate, seed, configuration and key."""

    index: int
    values: tuple[tuple[str, Any], ...]
    replicate: int
    seed: int
    config: Any
    key: str


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Seeds x grid over a base configuration.

    Parameters
    ----------
    base : dataclass instance
        The configuration every cell starts from (frozen dataclass).
    grid : mapping or sequence of (field, values)
        Field names of ``base`` and the values each takes; the cells are their product
        (in the given order, last field fastest).
    replicates : int or sequence of int
        The replicates per grid point: ``n`` means ``0, ..., n-1``; a sequence gives the
        replicate indices (``range(10, 20)`` extends a sweep over ``range(10)`` with ten
        new seeds, leaving the first ten cells unchanged).
    seed : int
        Root seed of the spawned per-replicate seeds.
    seed_field : str
        The field of ``base`` that receives the seed.
    """

    base: Any
    grid: tuple[tuple[str, tuple], ...] = ()
    replicates: Any = 1
    seed: int = 0
    seed_field: str = "seed"

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.base) or isinstance(self.base, type):
            got = type(self.base).__name__
            raise TypeError(f"base: expected a dataclass instance (an experiment Config), got {got}")
        items = tuple(self.grid.items()) if isinstance(self.grid, Mapping) else tuple(self.grid)
        fields = {f.name for f in dataclasses.fields(self.base)}
        grid = []
        for entry in items:
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise TypeError(f"grid: expected (field, values) pairs, got {entry!r}")
            name, values = entry
            if name not in fields:
                raise ValueError(f"grid: expected fields of {type(self.base).__name__} {sorted(fields)}, got {name!r}")
            if name == self.seed_field:
                raise ValueError(f"grid: the seed field {name!r} is set by replicates, not by the grid")
            values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
            if not values:
                raise ValueError(f"grid: expected at least one value for {name!r}, got none")
            grid.append((name, values))
        if len({n for n, _ in grid}) != len(grid):
            raise ValueError(f"grid: expected each field once, got {[n for n, _ in grid]}")
        if self.seed_field not in fields:
            raise ValueError(f"seed_field: expected a field of {type(self.base).__name__}, got {self.seed_field!r}")
        object.__setattr__(self, "grid", tuple(grid))
        reps = self.replicates
        if isinstance(reps, (range, tuple, list)):
            reps = tuple(check_int(r, "replicates", lo=0) for r in reps)
        else:
            reps = tuple(range(check_int(reps, "replicates", lo=1)))
        if not reps or len(set(reps)) != len(reps):
            raise ValueError(f"replicates: expected distinct replicate indices, got {self.replicates!r}")
        object.__setattr__(self, "replicates", reps)
        object.__setattr__(self, "seed", check_int(self.seed, "seed", lo=0))

    def cells(self) -> list[Cell]:
        """All cells, grid point by grid point, replicates innermost."""
        seeds = spawn_seeds(self.seed, max(self.replicates) + 1)
        names = [n for n, _ in self.grid]
        out = []
        for combo in itertools.product(*(v for _, v in self.grid)):
            values = tuple(zip(names, combo))
            for r in self.replicates:
                s = seeds[r]
                config = dataclasses.replace(self.base, **dict(values), **{self.seed_field: s})
                out.append(Cell(len(out), values, r, s, config, config_key(config)))
        return out


def _parse_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def parse_grid(items: Sequence[str], base: Any = None) -> tuple[tuple[str, tuple], ...]:
    """Parse command-line grid items ``field=v1,v2,...`` into ``((field, values), ...)``.

    With ``base``, each value is converted to the type of the field's current value
    (a tuple field takes ``+``-separated entries, e.g. ``rules=sgd+ngd``)."""
    out = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"grid: expected items field=v1,v2,..., got {item!r}")
        name, _, vals = item.partition("=")
        if not vals:
            raise ValueError(f"grid: expected values after {name}=, got none")
        values = []
        for v in vals.split(","):
            current = getattr(base, name, None) if base is not None else None
            if isinstance(current, tuple):
                values.append(tuple(_parse_value(p) for p in v.split("+")))
            elif isinstance(current, bool):
                values.append(_parse_value(v) is True)
            elif isinstance(current, float):
                values.append(float(v))
            else:
                values.append(_parse_value(v))
        out.append((name.strip(), tuple(values)))
    return tuple(out)


def parse_seeds(text: str) -> tuple[int, ...]:
    """Replicate indices from ``"N"`` (``0..N-1``) or a range ``"A:B"`` (``A..B-1``)."""
    a, sep, b = str(text).partition(":")
    try:
        reps = tuple(range(int(a), int(b))) if sep else tuple(range(int(a)))
    except ValueError:
        raise ValueError(f"seeds: expected N or A:B with integers, got {text!r}") from None
    if not reps or reps[0] < 0:
        raise ValueError(f"seeds: expected at least one seed index >= 0, got {text!r}")
    return reps
