"""Result files of the reproductions: atomic writes of JSON summaries, NPZ arrays, text
and figures, and an aligned text table for the console.

Every file is written to a temporary file in the destination directory and then moved
over the destination with :func:`os.replace`, which is atomic on POSIX and Windows: a
reader (or a rerun after an interruption) sees either the old complete file or the new
complete file, never a half-written one. A failure while writing removes the temporary
file and leaves any previous file untouched.

This is an *output* module: it takes NumPy arrays (or arrays of any namespace, converted
with :func:`arraycurv.backend.to_numpy`) and plain Python data. The experiment logic stays
array-agnostic.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import backend

__all__ = [
    "atomic_write",
    "format_table",
    "jsonable",
    "load_npz",
    "read_json",
    "read_npz",
    "save_npz",
    "write_json",
    "write_npz",
    "write_text",
]


def save_npz(file: Any, arrays: Any, *, compressed: bool = True) -> None:
    """Write ``arrays`` (a mapping name -> array of any namespace) as a ``.npz`` archive into
    ``file`` (a path or a binary file object), converting each array with :func:`to_numpy`."""
    np = backend.host_namespace()
    data = {str(k): np.asarray(backend.to_numpy(v)) for k, v in arrays.items()}
    (np.savez_compressed if compressed else np.savez)(file, **data)


def load_npz(path: Any) -> dict:
    """Read a ``.npz`` archive into a dict of NumPy arrays (no pickled objects)."""
    np = backend.host_namespace()
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _file_mode(path: str) -> int:
    """Permission bits for a new file: those of the file being replaced, else 0o666 minus
    the umask (what ``open`` would give; ``mkstemp`` alone would leave 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, writer: Callable[[Any], None], *, mode: str = "wb") -> str:
    """Write a file atomically: ``writer(file)`` fills a temporary file that then replaces ``path``.

    Parameters
    ----------
    path : str or path-like
        Destination. Its directory is created if missing.
    writer : callable
        Called with an open file object (binary for ``mode='wb'``, text for ``'w'``).
    mode : {'wb', 'w'}
        File mode of the temporary file.

    Returns
    -------
    str
        The destination path.

    Notes
    -----
    The temporary file lives in the same directory (so :func:`os.replace` never crosses a
    file system), is flushed and fsync'ed before the replace, and is removed if
    ``writer`` or the replace raises (including ``KeyboardInterrupt``); the previous
    content of ``path``, if any, is then left intact.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON data: arrays to (nested) lists, NumPy scalars to
    Python numbers, tuples to lists, non-finite floats to ``None`` (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    obj = backend.host_scalar(obj)
    if isinstance(obj, (str, bool)) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        v = float(obj)
        return v if math.isfinite(v) else None
    if backend.is_array(obj):
        a = backend.to_numpy(obj)
        return jsonable(a.tolist()) if a.ndim else jsonable(a.item())
    if hasattr(obj, "__dataclass_fields__"):
        return {f: jsonable(getattr(obj, f)) for f in obj.__dataclass_fields__}
    raise TypeError(f"obj: expected JSON-convertible data (dict, list, number, str, array), got {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Atomically write ``obj`` (converted by :func:`jsonable`) as indented, key-sorted JSON."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_text(path: str | os.PathLike, text: str) -> str:
    """Atomically write a text file (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text), mode="w")


def write_npz(path: str | os.PathLike, arrays: Mapping[str, Any], *, compressed: bool = True) -> str:
    """Atomically write a ``.npz`` archive; arrays of any namespace go through ``backend.to_numpy``.

    Keys may contain ``/`` (e.g. ``"sgd/train_loss"``) to group per-rule arrays.
    """
    def writer(f):
        buf = io.BytesIO()
        save_npz(buf, arrays, compressed=compressed)
        f.write(buf.getvalue())

    return atomic_write(path, writer)


def read_npz(path: str | os.PathLike) -> dict:
    """Read a ``.npz`` archive into a plain dict of NumPy arrays."""
    return load_npz(path)


def _fmt(v: Any, float_format: str) -> str:
    v = backend.host_scalar(v)
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format(float(v), float_format)
    return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, float_format: str = ".4g",
                 headers: Sequence[str] | None = None) -> str:
    """Aligned plain-text table: one row per mapping, the given columns (missing -> ``-``).

    Text columns are left-aligned, numbers right-aligned.
    """
    headers = list(headers) if headers is not None else list(columns)
    if len(headers) != len(columns):
        raise ValueError(f"headers: expected {len(columns)} names (one per column), got {len(headers)}")
    cells = [[_fmt(r.get(c), float_format) for c in columns] for r in rows]
    numeric = [all(isinstance(backend.host_scalar(r.get(c)), (int, float))
                   and not isinstance(backend.host_scalar(r.get(c)), bool)
                   for r in rows if r.get(c) is not None) for c in columns]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)
