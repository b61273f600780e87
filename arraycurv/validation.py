"""Argument checks that raise errors naming the argument, the expectation and what came.

Every public routine validates its inputs with these helpers so that a wrong shape is
never broadcast silently and NaN/Inf never reach the linear algebra unannounced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat

__all__ = [
    "check_finite",
    "check_matrix",
    "check_ndim",
    "check_params",
    "check_shape",
    "check_square",
    "check_symmetric",
]


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def check_ndim(x: Any, ndim: int | Sequence[int], name: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim`` is ``ndim`` (or one of them)."""
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.ndim not in allowed:
        want = " or ".join(str(a) for a in allowed)
        raise ValueError(f"{name}: expected an array with {want} dimensions, got shape {tuple(x.shape)}")


def check_shape(x: Any, shape: Sequence[int | None], name: str) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``shape`` (``None`` is a wildcard)."""
    got = tuple(x.shape)
    if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
        raise ValueError(f"{name}: expected shape {_fmt_shape(tuple(shape))}, got {got}")


def check_matrix(x: Any, name: str) -> None:
    """Raise unless ``x`` has at least two dimensions (a matrix or a batch of them)."""
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a matrix (ndim >= 2), got shape {tuple(x.shape)}")


def check_square(x: Any, name: str) -> None:
    """Raise unless the last two axes of ``x`` are equal."""
    check_matrix(x, name)
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (..., n, n), got shape {tuple(x.shape)}")


def check_finite(x: Any, name: str, xp=None) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or Inf."""
    xp = xp or array_api_compat.array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        n_bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        raise ValueError(f"{name}: expected finite values, got {n_bad} NaN/Inf entries in shape {tuple(x.shape)}")


def check_symmetric(a: Any, name: str, xp=None, *, rtol: float | None = None) -> None:
    """Raise ``ValueError`` unless ``a`` (..., n, n) is symmetric to a relative tolerance.

    The tolerance defaults to ``1000 * eps`` of the dtype, relative to the largest entry.
    """
    xp = xp or array_api_compat.array_namespace(a)
    check_square(a, name)
    if rtol is None:
        rtol = 1000.0 * float(xp.finfo(a.dtype).eps)
    scale = float(xp.max(xp.abs(a))) if a.size != 0 else 0.0
    asym = float(xp.max(xp.abs(a - xp.matrix_transpose(a)))) if a.size != 0 else 0.0
    if asym > rtol * max(scale, float(xp.finfo(a.dtype).smallest_normal)):
        raise ValueError(
            f"{name}: expected a symmetric matrix, got max |A - A^T| = {asym:.3g} "
            f"(relative {asym / max(scale, 1e-300):.3g} > rtol {rtol:.3g})"
        )


def check_params(params: Any, shapes: Sequence[Sequence[int]], name: str = "params") -> None:
    """Raise unless ``params`` is a tuple of arrays with exactly the given shapes."""
    if not isinstance(params, (tuple, list)):
        raise TypeError(f"{name}: expected a tuple of {len(shapes)} arrays, got {type(params).__name__}")
    if len(params) != len(shapes):
        want = list(map(tuple, shapes))
        raise ValueError(f"{name}: expected {len(shapes)} arrays (shapes {want}), got {len(params)}")
    for i, (p, s) in enumerate(zip(params, shapes)):
        check_shape(p, tuple(s), f"{name}[{i}]")
