"""Parameters as plain data: tuples of arrays, and their flat-vector view.

Spec, Conventions: parameters are a tuple of arrays in layer order (W1, b1, W2, ...);
the flat view concatenates them in that order, each in C (row-major) order. Tree
arithmetic here works on tuples of arrays of any namespace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..backend import ArgumentTypeError, is_array, namespace_of
from ..validation import check_real, check_shape
from . import partition  # noqa: F401  (GroupedNewton partitions: arraycurv.params.partition)

__all__ = [
    "flatten",
    "num_params",
    "shapes_of",
    "tree_add",
    "tree_axpy",
    "tree_map",
    "tree_norm",
    "tree_scale",
    "tree_sub",
    "tree_vdot",
    "tree_zeros_like",
    "unflatten",
]


def shapes_of(params: Sequence[Any]) -> tuple[tuple[int, ...], ...]:
    """Shapes of the tensors of a parameter tuple."""
    _check_tree(params, "params")
    return tuple(tuple(p.shape) for p in params)


def num_params(shapes: Sequence[Sequence[int]]) -> int:
    """Total number of scalars P for a list of tensor shapes."""
    ok = isinstance(shapes, (tuple, list)) and all(
        isinstance(s, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in s)
        for s in shapes)
    if not ok:
        raise ValueError(f"shapes: expected a sequence of shapes (tuples of non-negative ints), got {shapes!r}")
    return sum(math.prod(s) for s in shapes)


def flatten(params: Sequence[Any]):
    """Concatenate a tuple of arrays into one vector (C order, tensors in order)."""
    _check_tree(params, "params")
    xp = namespace_of(params=tuple(params))
    for i, p in enumerate(params[1:], 1):
        if p.dtype != params[0].dtype:
            raise TypeError(f"params[{i}]: expected dtype {params[0].dtype} (like params[0]), got {p.dtype}")
    return xp.concat([xp.reshape(p, (-1,)) for p in params])


def unflatten(vector: Any, shapes: Sequence[Sequence[int]], name: str = "vector"):
    """Split a flat vector (or a (..., P) batch of them) into a tuple of arrays of ``shapes``.

    Leading batch axes are kept: an input of shape (k, P) gives tensors of shape (k, *s).
    """
    if not is_array(vector):
        raise ArgumentTypeError(f"{name}: expected an array, got {type(vector).__name__}")
    xp = namespace_of(**{name: vector})
    total = num_params(shapes)
    if vector.ndim < 1 or vector.shape[-1] != total:
        raise ValueError(f"{name}: expected last axis of length P = {total}, got shape {tuple(vector.shape)}")
    lead = tuple(vector.shape[:-1])
    out, start = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(xp.reshape(vector[..., start : start + n], lead + tuple(s)))
        start += n
    return tuple(out)


def tree_map(fn, *trees):
    """Apply ``fn`` leaf-wise over tuples of arrays of the same structure."""
    if not callable(fn):
        raise ArgumentTypeError(f"fn: expected a callable, got {fn!r}")
    if not trees:
        raise ValueError("trees: expected at least one tuple of arrays, got none")
    if not isinstance(trees[0], (tuple, list)):
        raise ArgumentTypeError(f"trees[0]: expected a tuple of arrays, got {type(trees[0]).__name__}")
    n = len(trees[0])
    for i, t in enumerate(trees[1:], 1):
        if not isinstance(t, (tuple, list)) or len(t) != n:
            got = len(t) if isinstance(t, (tuple, list)) else type(t).__name__
            raise ValueError(f"trees[{i}]: expected a tuple of {n} arrays like trees[0], got {got}")
    return tuple(fn(*leaves) for leaves in zip(*trees))


def _check_tree(a, name):
    """``a`` a tuple/list of arrays (one namespace); raise naming ``name`` or ``name[i]``."""
    if not isinstance(a, (tuple, list)):
        raise ArgumentTypeError(f"{name}: expected a tuple of arrays, got {type(a).__name__}")
    for i, x in enumerate(a):
        if not is_array(x):
            raise ArgumentTypeError(f"{name}[{i}]: expected an array, got {type(x).__name__}")


def _check_like(a, b, name_a="a", name_b="b"):
    _check_tree(a, name_a)
    _check_tree(b, name_b)
    if len(a) != len(b):
        raise ValueError(f"{name_b}: expected a tuple of {len(a)} arrays like {name_a}, got {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        check_shape(y, tuple(x.shape), f"{name_b}[{i}]")
    if a:
        named = {f"{name_a}[{i}]": x for i, x in enumerate(a)}
        named.update({f"{name_b}[{i}]": y for i, y in enumerate(b)})
        namespace_of(**named)


def tree_add(a, b):
    """Leaf-wise a + b."""
    _check_like(a, b)
    return tuple(x + y for x, y in zip(a, b))


def tree_sub(a, b):
    """Leaf-wise a - b."""
    _check_like(a, b)
    return tuple(x - y for x, y in zip(a, b))


def tree_scale(a, s):
    """Leaf-wise s * a for a scalar s (a finite real number or a 0-d array)."""
    _check_tree(a, "a")
    if not is_array(s):
        s = check_real(s, "s")
    elif s.ndim != 0:
        raise ValueError(f"s: expected a finite real number or a 0-d array, got shape {tuple(s.shape)}")
    return tuple(s * x for x in a)


def tree_axpy(alpha, x, y):
    """Leaf-wise alpha * x + y (``alpha`` a finite real number or a 0-d array)."""
    _check_like(x, y, "x", "y")
    if not is_array(alpha):
        alpha = check_real(alpha, "alpha")
    return tuple(alpha * u + v for u, v in zip(x, y))


def tree_vdot(a, b):
    """Euclidean inner product sum_i <a_i, b_i> as a 0-d array."""
    _check_like(a, b)
    xp = namespace_of(a=tuple(a), b=tuple(b))
    return sum(xp.sum(x * y) for x, y in zip(a, b))


def tree_norm(a):
    """Euclidean norm of a tuple of arrays as a 0-d array.

    The entries are divided by the largest magnitude before squaring, so the norm neither
    overflows (a norm of 2e200 is 2e200) nor underflows; an Inf entry gives inf.
    """
    _check_tree(a, "a")
    xp = namespace_of(a=tuple(a))
    mags = [xp.max(xp.abs(x)) for x in a if math.prod(x.shape)]
    if not mags:
        return xp.sqrt(tree_vdot(a, a))
    amax = xp.max(xp.stack(mags))
    scale = xp.where((amax > 0) & xp.isfinite(amax), amax, xp.ones_like(amax))
    scaled = tuple(x / scale for x in a)
    return xp.where(xp.isinf(amax), amax, scale * xp.sqrt(tree_vdot(scaled, scaled)))


def tree_zeros_like(a):
    """Tuple of zero arrays with the shapes, dtype and device of ``a``."""
    _check_tree(a, "a")
    xp = namespace_of(a=tuple(a))
    return tuple(xp.zeros_like(x) for x in a)
