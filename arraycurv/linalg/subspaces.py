"""Subspaces of R^n given by spanning vectors: orthonormal bases, projections, principal
angles and overlap measures, written against the array API.

A subspace is given by an (n, k) matrix whose *columns* span it (the layout of
``eigh``'s eigenvectors and of :func:`arraycurv.linalg.spectral.lanczos` on flat
spaces). For parameter tuples, stack directions with a leading axis and pass
``stack_directions(tree)`` (an (n, k) matrix in the flat parameter order).

These are the measurements behind "gradient descent happens in a tiny subspace"
(Gur-Ari, Roberts & Dyer 2018: the fraction of the gradient inside the top-k Hessian
eigenspace, and the overlap of top eigenspaces at two times) and behind Papyan's (2019,
2020) comparison of the top-C eigenspace with the span of the class means, which
Tuddenham, Pruegel-Bennett & Hare (2020) build their quasi-Newton method on.
"""

from __future__ import annotations

import math
from numbers import Real

from .. import backend
from ..validation import ArgumentTypeError, check_arrays, check_finite, check_ndim

__all__ = [
    "complement_project",
    "fraction_in_span",
    "orthonormal_basis",
    "principal_angles",
    "project",
    "stack_directions",
    "subspace_overlap",
]


def _check_vectors(a, name: str, xp=None):
    xp = xp or backend.namespace_of(**{name: a})
    check_ndim(a, 2, name)
    backend.check_float(a, name, xp)
    check_finite(a, name, xp)
    if a.shape[0] == 0:
        raise ValueError(f"{name}: expected vectors of positive length n, got shape {tuple(a.shape)}")
    return xp


def _check_rcond(rcond, n: int, dtype, xp) -> float:
    if rcond is None:
        return max(n, 1) * float(xp.finfo(dtype).eps)
    if isinstance(rcond, bool) or not isinstance(rcond, Real) or math.isnan(rcond) or rcond < 0:
        raise ValueError(f"rcond: expected a real number >= 0 or None, got {rcond!r}")
    return float(rcond)


def _direction_pairs(tree, name: str, *, shapes=None, s=None, like: str = ""):
    """``(name[i], array)`` pairs of a non-empty tuple of (S, *shape_i) arrays with a common
    leading axis S (``s`` if given) and tails ``shapes`` (if given, those of ``like``);
    returns ``(pairs, S)``."""
    ref = f" like {like}" if like else ""
    if not isinstance(tree, (tuple, list)) or not tree:
        got = "an empty tuple" if isinstance(tree, (tuple, list)) else type(tree).__name__
        raise ArgumentTypeError(f"{name}: expected a non-empty tuple of (S, *shape) arrays, got {got}")
    if shapes is not None and len(tree) != len(shapes):
        raise ValueError(f"{name}: expected {len(shapes)} arrays (one per tensor{ref}), got {len(tree)}")
    pairs = []
    for i, t in enumerate(tree):
        nm = f"{name}[{i}]"
        if not backend.is_array(t) or not hasattr(t, "shape"):
            raise ArgumentTypeError(f"{nm}: expected an array, got {type(t).__name__}")
        if t.ndim < 1:
            raise ValueError(f"{nm}: expected an array (S, *shape) with a leading axis of S directions, got shape ()")
        if s is None:
            s = t.shape[0]
        elif t.shape[0] != s:
            raise ValueError(f"{nm}: expected a leading axis of length {s} (S directions), got shape {tuple(t.shape)}")
        if shapes is not None and tuple(t.shape[1:]) != tuple(shapes[i]):
            want = ", ".join(map(str, (s, *shapes[i])))
            raise ValueError(f"{nm}: expected shape ({want}){ref}, got {tuple(t.shape)}")
        pairs.append((nm, t))
    return pairs, s


def _stack(xp, tree):
    """(n, k) columns of k checked directions (a tuple of (k, *shape) arrays)."""
    k = tree[0].shape[0]
    return xp.matrix_transpose(xp.concat([xp.reshape(t, (k, -1)) for t in tree], axis=1))


def stack_directions(tree, name: str = "directions"):
    """A tuple of (k, *shape_i) arrays (k directions in parameter layout) as the (n, k)
    matrix of their flat vectors (columns, in :func:`arraycurv.params.flatten` order).
    The arrays must share one namespace, device and real floating dtype and be finite."""
    pairs, _ = _direction_pairs(tree, name)
    return _stack(check_arrays(pairs), tree)


def orthonormal_basis(a, *, rcond: float | None = None):
    """Orthonormal basis of the column span of ``a`` (n, k), shape (n, r), r = rank.

    From the thin SVD ``a = U diag(s) V^T``: the columns of U whose singular value
    exceeds ``rcond * max(s)`` (default ``rcond = max(n, k) * eps``, the rank rule of
    ``numpy.linalg.matrix_rank``). A zero matrix has the empty basis (n, 0).
    """
    xp = _check_vectors(a, "a")
    n, k = a.shape
    rcond = _check_rcond(rcond, max(n, k), a.dtype, xp)
    if k == 0:
        return a
    u, s, _ = xp.linalg.svd(a, full_matrices=False)
    smax = float(xp.max(s))
    r = int(xp.sum(xp.astype(s > rcond * smax, xp.int64))) if smax > 0 else 0
    return u[:, :r]


def _check_basis_vector(basis, v, name_b="basis", name_v="v"):
    check_ndim(basis, 2, name_b)
    check_ndim(v, (1, 2), name_v)
    if v.shape[0] != basis.shape[0]:
        raise ValueError(f"{name_v}: expected a leading axis of length n = {basis.shape[0]} like {name_b}, "
                         f"got shape {tuple(v.shape)}")
    return check_arrays([(name_b, basis), (name_v, v)])


def project(basis, v):
    """U U^T v: the orthogonal projection of v (n,) or (n, m) onto the span of the
    orthonormal columns of ``basis`` (n, r)."""
    xp = _check_basis_vector(basis, v)
    return basis @ (xp.matrix_transpose(basis) @ v)


def complement_project(basis, v):
    """P v = (I - U U^T) v, the projection onto the orthogonal complement of the span of
    the orthonormal columns of ``basis`` (Tuddenham et al. 2020 eq 5 with U = [v_1 ...
    v_C]); ``v`` is (n,) or (n, m)."""
    return v - project(basis, v)


def _two_bases(a, b, rcond):
    """``(xp, Q_a, Q_b)``: ``a`` and ``b`` checked as vectors of one space (same rows, one
    namespace) and their orthonormal bases (:func:`orthonormal_basis`)."""
    _check_vectors(a, "a")
    _check_vectors(b, "b")
    xp = check_arrays([("a", a), ("b", b)])
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"b: expected {a.shape[0]} rows like a, got shape {tuple(b.shape)}")
    return xp, orthonormal_basis(a, rcond=rcond), orthonormal_basis(b, rcond=rcond)


def principal_angles(a, b, *, rcond: float | None = None):
    """Principal angles between span(a) and span(b), ascending, in radians.

    With orthonormal bases Q_a (n, r_a), Q_b (n, r_b) (:func:`orthonormal_basis`), the
    cosines are the singular values of Q_a^T Q_b (Bjorck & Golub 1973). Small angles,
    whose cosines are near 1 and lose accuracy, are taken from the sines instead: the
    singular values of Q_b - Q_a (Q_a^T Q_b) (Knyazev & Argentati 2002, as in
    ``scipy.linalg.subspace_angles``). Returns min(r_a, r_b) angles in [0, pi/2].
    """
    xp, qa, qb = _two_bases(a, b, rcond)
    if qa.shape[1] < qb.shape[1]:
        qa, qb = qb, qa
    r = qb.shape[1]
    if r == 0:
        return xp.zeros((0,), dtype=a.dtype, device=backend.device_of(a))
    m = xp.matrix_transpose(qa) @ qb  # (r_a, r_b), r_a >= r_b
    cos = xp.clip(xp.linalg.svdvals(m), 0.0, 1.0)  # descending
    sin = xp.clip(xp.linalg.svdvals(qb - qa @ m), 0.0, 1.0)  # descending; sin_i pairs with cos_{r-1-i}
    small = cos**2 >= 0.5
    return xp.where(small, xp.asin(xp.flip(sin)), xp.acos(cos))


def fraction_in_span(a, v, *, rcond: float | None = None):
    """Fraction of v inside span(a): ``||Q Q^T v||^2 / ||v||^2`` (Gur-Ari et al. 2018,
    the overlap of the gradient with the top-k Hessian eigenspace).

    ``v`` is (n,) (a 0-d result) or (n, m) (one fraction per column). A zero vector has
    fraction 0.
    """
    xp = _check_vectors(a, "a")
    check_ndim(v, (1, 2), "v")
    if v.shape[0] != a.shape[0]:
        raise ValueError(f"v: expected a leading axis of length n = {a.shape[0]} like a, got shape {tuple(v.shape)}")
    check_arrays([("a", a), ("v", v)])
    q = orthonormal_basis(a, rcond=rcond)
    inside = xp.sum((xp.matrix_transpose(q) @ v) ** 2, axis=0)
    total = xp.sum(v**2, axis=0)
    safe = xp.where(total > 0, total, xp.ones_like(total))
    return xp.where(total > 0, inside / safe, xp.zeros_like(total))


def subspace_overlap(a, b, *, rcond: float | None = None):
    """Overlap of span(a) with span(b): ``||Q_a^T Q_b||_F^2 / r_a``, in [0, 1].

    The mean over an orthonormal basis of span(a) of the fraction inside span(b), i.e.
    the mean squared cosine of the principal angles counted over r_a = dim span(a)
    (Gur-Ari et al. 2018 Sec. 3 for top eigenspaces at two times; Papyan 2019/2020 and
    Tuddenham et al. 2020 for the top-C Hessian eigenspace against the span of the class
    gradients). 1 iff span(a) is inside span(b). An empty span(a) has overlap 0.
    """
    xp, qa, qb = _two_bases(a, b, rcond)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return xp.asarray(0.0, dtype=a.dtype, device=backend.device_of(a))
    return xp.sum((xp.matrix_transpose(qa) @ qb) ** 2) / qa.shape[1]
