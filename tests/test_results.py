"""Result files: atomic writes (an interrupted write leaves the old file intact), JSON and
NPZ round trips for arrays of every namespace, the console table."""

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from arraycurv import backend
from arraycurv.results import (
    atomic_write,
    format_table,
    jsonable,
    read_json,
    read_npz,
    write_json,
    write_npz,
    write_text,
)


def _leftovers(directory, name):
    return [f for f in os.listdir(directory) if f != name]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {"rule": "sgd", "loss": 1.5})
    before = path.read_bytes()

    def interrupted(f):
        f.write('{"rule": "ngd", "lo')  # half of the new content, then the "interruption"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted, mode="w")
    assert path.read_bytes() == before
    assert read_json(path) == {"loss": 1.5, "rule": "sgd"}
    assert _leftovers(tmp_path, "summary.json") == []  # the temporary file is removed


def test_atomic_write_failure_at_replace_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "history.npz"
    write_npz(path, {"a": np.arange(3.0)})
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_npz(path, {"a": np.arange(1000.0)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    np.testing.assert_array_equal(read_npz(path)["a"], np.arange(3.0))
    assert _leftovers(tmp_path, "history.npz") == []


def test_unserializable_json_keeps_old_file(tmp_path):
    path = tmp_path / "s.json"
    write_json(path, {"x": 1})
    with pytest.raises(TypeError, match="obj: expected JSON-convertible data"):
        write_json(path, {"x": object()})
    assert read_json(path) == {"x": 1}
    assert _leftovers(tmp_path, "s.json") == []


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    path = tmp_path / "t.txt"
    write_text(path, "a")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # like open(path, "w"), not mkstemp's 0o600
    os.chmod(path, 0o640)
    write_text(path, "b")
    assert os.stat(path).st_mode & 0o777 == 0o640  # a replaced file keeps its permissions


def test_atomic_write_creates_directory_and_rejects_bad_mode(tmp_path):
    path = tmp_path / "a" / "b" / "t.txt"
    write_text(path, "hello\n")
    assert path.read_text() == "hello\n"
    with pytest.raises(ValueError, match="mode: expected 'wb' or 'w'"):
        atomic_write(path, lambda f: None, mode="a")


@dataclass(frozen=True)
class _Small:
    a: int
    b: float


def test_jsonable_converts_numbers_arrays_and_non_finite(xp):
    x = backend.from_numpy(np.array([[1.0, 2.0], [3.0, 4.0]]), xp)
    obj = {"arr": x, "nan": math.nan, "inf": float("inf"), "i": np.int64(3), "f": np.float32(0.5),
           "t": (1, 2), "dc": _Small(1, 2.5), 4: "int key", "scalar": xp.asarray(2.0)}
    out = jsonable(obj)
    assert out == {"arr": [[1.0, 2.0], [3.0, 4.0]], "nan": None, "inf": None, "i": 3, "f": 0.5, "t": [1, 2],
                   "dc": {"a": 1, "b": 2.5}, "4": "int key", "scalar": 2.0}
    json.dumps(out, allow_nan=False)  # strict JSON


@given(seed=st.integers(0, 2**31 - 1), m=st.integers(1, 5), n=st.integers(0, 4))
def test_npz_round_trip_every_namespace(xp, tmp_path_factory, seed, m, n):
    path = tmp_path_factory.mktemp("npz") / "h.npz"
    a = backend.normal(seed, (m, n), xp)
    b = backend.normal(seed + 1, (m,), xp, dtype="float32")
    write_npz(path, {"sgd/a": a, "ngd/b": b, "steps": np.arange(m)})
    back = read_npz(path)
    assert sorted(back) == ["ngd/b", "sgd/a", "steps"]
    np.testing.assert_array_equal(back["sgd/a"], np.random.default_rng(seed).standard_normal((m, n)))
    np.testing.assert_array_equal(back["ngd/b"], np.random.default_rng(seed + 1).standard_normal(m).astype(np.float32))
    assert back["ngd/b"].dtype == np.float32
    np.testing.assert_array_equal(back["steps"], np.arange(m))


def test_format_table_aligns_columns():
    rows = [{"rule": "SGD", "loss": 0.123456, "step": 10}, {"rule": "sqrt-NGD", "loss": None, "step": 12345}]
    text = format_table(rows, ["rule", "loss", "step"])
    lines = text.splitlines()
    assert len(lines) == 4
    assert len({len(line.rstrip()) for line in lines[2:]} | {len(lines[1])}) <= 2  # ragged only by rstrip of text
    header, rule, first, second = lines
    assert first.startswith("SGD ") and second.startswith("sqrt-NGD")
    # numbers right-aligned: the step column ends at the same position in every row
    assert first.endswith("   10") and second.endswith("12345")
    assert "0.1235" in first and " - " in second
    with pytest.raises(ValueError, match="headers: expected 3 names"):
        format_table(rows, ["rule", "loss", "step"], headers=["a"])
