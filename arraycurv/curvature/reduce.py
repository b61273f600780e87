"""Chunked reductions: curvature over data sets larger than one batch, exactly.

Every curvature verb of arraycurv returns a *mean* over its batch (the loss, gradient,
GGN/Fisher products and matrices, Kronecker factors, deep-linear moments). Over a data
set split into chunks of sizes B_c the full-batch mean is the weighted mean
``sum_c B_c m_c / sum_c B_c``: an :class:`Accumulator` carries the sum form
``(sum_c B_c m_c, sum_c B_c)`` (optax's microbatching ``Accumulator`` with
init / update / finalize and an associative ``combine``), so the result equals the
one-shot call up to rounding and is normalized once, at the end.

``combine`` is associative, which makes the same reduction a tree-reduce over chunks on
Dask workers (:func:`reduce_chunks` with ``client=``): each worker computes its chunks'
partial sums and the partials are combined pairwise, never moving the data set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import backend
from ..validation import ArgumentTypeError, check_int

__all__ = ["Accumulator", "chunk_batch", "mean_accumulator", "reduce_chunks"]


class Accumulator(NamedTuple):
    """A reduction over chunks as four pure functions (sum form)."""

    init: Callable[[], Any]
    update: Callable[[Any, Any], Any]
    finalize: Callable[[Any], Any]
    combine: Callable[[Any, Any], Any]


def _tree_map2(fn, a, b):
    if isinstance(a, (tuple, list)):
        return type(a)(_tree_map2(fn, x, y) for x, y in zip(a, b, strict=True))
    return fn(a, b)


def _tree_map(fn, a):
    if isinstance(a, (tuple, list)):
        return type(a)(_tree_map(fn, x) for x in a)
    return fn(a)


def _batch_size(chunk) -> int:
    lead = chunk[0] if isinstance(chunk, (tuple, list)) else chunk
    return int(lead.shape[0])


def mean_accumulator(fn: Callable[[Any], Any], *, size: Callable[[Any], int] = _batch_size) -> Accumulator:
    """Accumulator of ``fn(chunk)``, a tuple tree of batch means, into the full-data mean.

    Parameters
    ----------
    fn : callable
        ``fn(chunk) -> tree`` of means over the chunk (arrays or Python floats in nested
        tuples), e.g. ``lambda b: ac.value_and_grad(model, params, b)``.
    size : callable
        The weight of a chunk: its batch size (the leading axis of ``x``) by default.

    Notes
    -----
    State ``(sum_c B_c fn(chunk_c), sum_c B_c)``; ``finalize`` divides once. ``update`` and
    ``combine`` never write into their inputs.
    """

    if not callable(fn):
        raise ArgumentTypeError(f"fn: expected a callable chunk -> tree of means, got {type(fn).__name__}")
    if not callable(size):
        raise ArgumentTypeError(f"size: expected a callable chunk -> int, got {type(size).__name__}")

    def init():
        return None

    def update(state, chunk):
        b = size(chunk)
        part = (_tree_map(lambda m: m * b, fn(chunk)), b)
        return part if state is None else combine(state, part)

    def combine(s, t):
        if s is None:
            return t
        if t is None:
            return s
        return (_tree_map2(lambda a, c: a + c, s[0], t[0]), s[1] + t[1])

    def finalize(state):
        if state is None or state[1] == 0:
            raise ValueError("chunks: expected at least one non-empty chunk, got none")
        total = state[1]
        return _tree_map(lambda a: a / total, state[0])

    return Accumulator(init, update, finalize, combine)


def chunk_batch(batch: Any, chunk_size: int) -> list:
    """Split ``batch`` (an array or a tuple of arrays with a common leading axis) into chunks."""
    chunk_size = check_int(chunk_size, "chunk_size", lo=1)
    n = _check_batch(batch)
    bounds = [(i, min(i + chunk_size, n)) for i in range(0, n, chunk_size)]  # in-bounds slices (strict)
    if isinstance(batch, (tuple, list)):
        return [tuple(a[i:j, ...] for a in batch) for i, j in bounds]
    return [batch[i:j, ...] for i, j in bounds]


def _check_batch(batch) -> int:
    """The common leading size (>= 1) of an array or a non-empty tuple of arrays."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("batch: expected an array or a non-empty tuple of arrays, got an empty tuple")
        names = ("batch x", "batch y") if len(batch) == 2 else tuple(f"batch[{i}]" for i in range(len(batch)))
        named = list(zip(names, batch))
    else:
        named = [("batch", batch)]
    n = None
    for name, a in named:
        if not backend.is_array(a) or not hasattr(a, "shape"):
            raise ArgumentTypeError(f"{name}: expected an array, got {type(a).__name__}")
        if a.ndim < 1:
            raise ValueError(f"{name}: expected an array with a leading batch axis, got shape ()")
        if n is None:
            n = int(a.shape[0])
        elif int(a.shape[0]) != n:
            raise ValueError(f"{name}: expected a leading axis of {n} samples like {named[0][0]}, "
                             f"got shape {tuple(a.shape)}")
    if n == 0:
        raise ValueError(f"{named[0][0]}: expected at least one sample, got an empty batch")
    return n


def _update_many(acc: Accumulator, chunks: Sequence[Any]):
    state = acc.init()
    for c in chunks:
        state = acc.update(state, c)
    return state


def reduce_chunks(acc: Accumulator, chunks: Sequence[Any], *, client: Any = None, per_task: int = 1) -> Any:
    """Reduce ``chunks`` with ``acc``: serially, or as a Dask tree-reduce with ``client``.

    Parameters
    ----------
    acc : Accumulator
        The reduction (:func:`mean_accumulator`).
    chunks : sequence
        Chunks (e.g. from :func:`chunk_batch`); with a client they are sent to the workers
        once (``client.scatter``).
    client : dask.distributed.Client, optional
        Run each group of ``per_task`` chunks' partial sum on a worker and combine the
        partials pairwise on the workers (a binary tree of depth log2(#groups)).
    per_task : int
        Chunks per worker task.
    """
    if not isinstance(acc, Accumulator):
        raise TypeError(f"acc: expected an arraycurv.curvature.reduce.Accumulator, got {type(acc).__name__}")
    if isinstance(chunks, (str, bytes)) or not hasattr(chunks, "__iter__"):
        raise ArgumentTypeError(f"chunks: expected a sequence of chunks, got {type(chunks).__name__}")
    chunks = list(chunks)
    if not chunks:
        raise ValueError("chunks: expected at least one chunk, got none")
    if client is None:
        return acc.finalize(_update_many(acc, chunks))
    per_task = check_int(per_task, "per_task", lo=1)
    groups = [chunks[i : i + per_task] for i in range(0, len(chunks), per_task)]
    parts = client.map(_update_many, [acc] * len(groups), client.scatter(groups), pure=False)
    while len(parts) > 1:
        nxt = [client.submit(acc.combine, parts[i], parts[i + 1], pure=False) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return acc.finalize(parts[0].result())
