"""Partitions of the parameters into groups, as plain data (Wolinski, GroupedNewton).

A :class:`Partition` of the P scalars of a parameter tuple into S disjoint, non-empty
groups T_1, ..., T_S (spec grouped_newton.md, section 1). It holds one group label per
tensor (the whole tensor belongs to that group) or, for fine partitions such as the
discrete one, one label per scalar of a tensor (C order). Labels are 0, ..., S-1.

The partition matrix I_{P:S} (GN-1) has (I_{P:S})_{ps} = 1 iff theta_p is in T_s; for a
direction u the restricted directions are u^(s) = u * 1_{T_s} and V = [u^(1) | ... | u^(S)]
= Diag(u) I_{P:S}, so that V eta = sum_s eta_s u^(s) (GN-2, GN-10).

Builders: :func:`canonical` (one group per tensor), :func:`trivial` (one group),
:func:`discrete` (one group per scalar, for small nets), :func:`by_layer` (the tensors
of a layer together), :func:`by_kind` (weights / biases), :func:`from_labels` (any
hashable labels per tensor). :func:`merge` coarsens a partition by merging groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import backend
from ..validation import ArgumentTypeError, check_arrays, check_int

__all__ = [
    "Partition",
    "by_kind",
    "by_layer",
    "canonical",
    "check_partition",
    "discrete",
    "expand",
    "from_labels",
    "group_masks",
    "group_sizes",
    "indicator_matrix",
    "merge",
    "restrict",
    "scale_groups",
    "trivial",
]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Partition:
    """A partition of the parameter scalars into ``num_groups`` groups (GN-1).

    Parameters
    ----------
    shapes : tuple of tuple of int
        Shapes of the parameter tensors, in order.
    labels : tuple
        One entry per tensor: an int ``s`` (the whole tensor is in group s) or a tuple of
        ``prod(shape)`` ints (one label per scalar, C order).
    names : tuple of str, optional
        A name per group (for plots); defaults to ``"g0", "g1", ...``.

    Raises
    ------
    ValueError
        If ``labels`` does not have one entry per tensor, a per-scalar entry has the
        wrong length, a label is not an int in [0, S), or a group in 0..S-1 is empty.
    """

    shapes: tuple
    labels: tuple
    names: tuple | None = None

    def __post_init__(self):
        shapes = self.shapes
        if not isinstance(shapes, (tuple, list)) or not all(
            isinstance(s, (tuple, list)) and all(_is_int(n) and n >= 0 for n in s) for s in shapes
        ):
            raise ValueError(f"shapes: expected a tuple of shapes (tuples of non-negative ints), got {shapes!r}")
        object.__setattr__(self, "shapes", tuple(tuple(s) for s in shapes))
        labels = self.labels
        if not isinstance(labels, (tuple, list)) or len(labels) != len(shapes):
            got = f"{len(labels)} entries" if isinstance(labels, (tuple, list)) else repr(labels)
            raise ValueError(f"labels: expected one label per tensor ({len(shapes)} entries), got {got}")
        fixed = []
        for i, (lab, s) in enumerate(zip(labels, self.shapes)):
            if _is_int(lab):
                fixed.append(lab)
                continue
            if not isinstance(lab, (tuple, list)) or len(lab) != math.prod(s) or not all(map(_is_int, lab)):
                raise ValueError(
                    f"labels[{i}]: expected an int or {math.prod(s)} ints (one per scalar of shape {s}), got {lab!r}"
                )
            fixed.append(tuple(lab))
        object.__setattr__(self, "labels", tuple(fixed))
        used = set()
        for lab, s in zip(self.labels, self.shapes):
            if _is_int(lab):
                if math.prod(s):
                    used.add(lab)
            else:
                used.update(lab)
        n = max(used) + 1 if used else 0
        bad = [v for v in used if v < 0]
        if bad:
            raise ValueError(f"labels: expected group labels in [0, S), got negative labels {sorted(bad)}")
        if n == 0:
            raise ValueError(f"labels: expected at least one non-empty group, got labels {self.labels!r}")
        empty = sorted(set(range(n)) - used)
        if empty:
            raise ValueError(f"labels: expected every group 0..{n - 1} to be non-empty, got empty groups {empty}")
        object.__setattr__(self, "_num_groups", n)
        object.__setattr__(self, "_tensor_groups", tuple(
            ((lab,) if math.prod(s) else ()) if _is_int(lab) else tuple(sorted(set(lab)))
            for lab, s in zip(self.labels, self.shapes)))
        if self.names is None:
            object.__setattr__(self, "names", tuple(f"g{s}" for s in range(n)))
        elif not isinstance(self.names, (tuple, list)) or len(self.names) != n:
            raise ValueError(f"names: expected {n} group names, got {self.names!r}")
        else:
            object.__setattr__(self, "names", tuple(str(v) for v in self.names))

    def __hash__(self):  # computed once: per-scalar labels make the fields long
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.shapes, self.labels, self.names))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def num_groups(self) -> int:
        """Number of groups S."""
        return self._num_groups

    def tensor_groups(self, i: int) -> tuple[int, ...]:
        """The groups that hold scalars of tensor ``i`` (sorted)."""
        return self._tensor_groups[i]


# ------------------------------------------------------------------- the shapes
def _shapes_of(obj, name="model") -> tuple:
    """Parameter shapes from a model, a parameter tuple or a tuple of shapes."""
    if isinstance(obj, Partition):
        return obj.shapes
    if isinstance(obj, (tuple, list)):
        if all(hasattr(p, "shape") for p in obj):
            return tuple(tuple(p.shape) for p in obj)
        if all(isinstance(s, (tuple, list)) for s in obj):
            return tuple(tuple(s) for s in obj)
        raise TypeError(f"{name}: expected a model, a tuple of arrays or a tuple of shapes, got {obj!r}")
    from ..models.base import param_shapes

    return tuple(tuple(s) for s in param_shapes(obj))


def canonical(model) -> Partition:
    """One group per parameter tensor (the reference code's ``canonical``; S = #tensors).

    ``model`` may be a model, a parameter tuple or a tuple of shapes.
    """
    shapes = _shapes_of(model)
    return Partition(shapes, tuple(range(len(shapes))), tuple(f"t{i}" for i in range(len(shapes))))


def trivial(model) -> Partition:
    """A single group (S = 1): Cauchy's steepest descent along u (spec 3)."""
    shapes = _shapes_of(model)
    return Partition(shapes, (0,) * len(shapes), ("all",))


def discrete(model, max_params: int = 4096) -> Partition:
    """One group per scalar (S = P): Newton's method (spec 3). Meant for small nets.

    Raises ``ValueError`` when P exceeds ``max_params``.
    """
    max_params = check_int(max_params, "max_params", lo=1)
    shapes = _shapes_of(model)
    p = sum(math.prod(s) for s in shapes)
    if p > max_params:
        raise ValueError(f"model: expected at most max_params = {max_params} scalars for a discrete partition, got {p}")
    labels, start = [], 0
    for s in shapes:
        n = math.prod(s)
        labels.append(tuple(range(start, start + n)))
        start += n
    return Partition(shapes, tuple(labels))


def by_layer(model) -> Partition:
    """One group per layer: weight and bias of a layer together.

    For :class:`~arraycurv.models.Sequential` the layers come from
    :func:`~arraycurv.models.sequential.layer_param_indices` (layers without parameters
    get no group); for :class:`~arraycurv.models.DeepLinear` it is one group per weight.
    """
    from ..models.deep_linear import DeepLinear
    from ..models.sequential import Sequential, layer_param_indices

    if isinstance(model, DeepLinear):
        part = canonical(model)
        return Partition(part.shapes, part.labels, tuple(f"W{i + 1}" for i in range(len(part.shapes))))
    if not isinstance(model, Sequential):
        raise TypeError(f"model: expected a Sequential or a DeepLinear, got {type(model).__name__}")
    labels, names = [], []
    for li, (a, b) in enumerate(layer_param_indices(model)):
        if b > a:
            labels.extend([len(names)] * (b - a))
            names.append(f"layer{li}")
    return Partition(_shapes_of(model), tuple(labels), tuple(names))


def by_kind(model) -> Partition:
    """Two groups, weights (tensors of >= 2 axes) and biases (1 axis): the reference code's
    ``wb`` partition. A model with only one kind gets one group."""
    shapes = _shapes_of(model)
    return from_labels(shapes, tuple("weights" if len(s) >= 2 else "biases" for s in shapes))


def from_labels(model, labels: Sequence[Any], names=None) -> Partition:
    """Partition from user labels: one hashable per tensor (e.g. ``"conv"``, ``"fc"``), or a
    sequence of hashables per scalar for a tensor. Groups are numbered in order of first
    appearance; their names are the labels (unless ``names`` is given)."""
    shapes = _shapes_of(model)
    if not isinstance(labels, (tuple, list)) or len(labels) != len(shapes):
        got = f"{len(labels)} entries" if isinstance(labels, (tuple, list)) else repr(labels)
        raise ValueError(f"labels: expected one label per tensor ({len(shapes)} entries), got {got}")
    index: dict = {}

    def num(v):
        if v not in index:
            index[v] = len(index)
        return index[v]

    out = []
    for i, (lab, s) in enumerate(zip(labels, shapes)):
        if isinstance(lab, (tuple, list)):
            if len(lab) != math.prod(s):
                raise ValueError(f"labels[{i}]: expected {math.prod(s)} labels (one per scalar of shape {s}), "
                                 f"got {len(lab)}")
            out.append(tuple(num(v) for v in lab))
        else:
            try:
                hash(lab)
            except TypeError:
                raise TypeError(f"labels[{i}]: expected a hashable label, got {type(lab).__name__}") from None
            out.append(num(lab) if math.prod(s) else 0)
    if names is None:
        names = tuple(str(k) for k in index)
    return Partition(shapes, tuple(out), names)


def merge(partition: Partition, mapping: Sequence[int], names=None) -> Partition:
    """Coarsen ``partition`` by merging groups: fine group s goes to coarse group
    ``mapping[s]`` (coarse labels 0..S_c-1, all used). With M[s, c] = 1 iff mapping[s] = c,
    I_{P:S_c} = I_{P:S} M (spec 2.1, coarsening property)."""
    _check_partition_type(partition)
    s = partition.num_groups
    if not isinstance(mapping, (tuple, list)) or len(mapping) != s or not all(map(_is_int, mapping)):
        raise ValueError(f"mapping: expected {s} ints (the coarse group of each fine group), got {mapping!r}")
    mapping = tuple(mapping)
    labels = tuple(mapping[lab] if _is_int(lab) else tuple(mapping[v] for v in lab) for lab in partition.labels)
    return Partition(partition.shapes, labels, names)


# ------------------------------------------------------------------ array views
def _check_partition_type(partition):
    if not isinstance(partition, Partition):
        raise TypeError(f"partition: expected a Partition, got {type(partition).__name__}")


def check_partition(partition: Partition, tree, name: str = "direction") -> None:
    """Raise unless ``tree`` is a tuple of arrays with the partition's shapes (leading
    axes allowed in front)."""
    _check_partition_type(partition)
    if not isinstance(tree, (tuple, list)) or len(tree) != len(partition.shapes):
        got = f"{len(tree)} arrays" if isinstance(tree, (tuple, list)) else type(tree).__name__
        raise ValueError(f"{name}: expected a tuple of {len(partition.shapes)} arrays like the partition, got {got}")
    for i, (t, s) in enumerate(zip(tree, partition.shapes)):
        if not hasattr(t, "shape") or t.ndim < len(s) or tuple(t.shape[t.ndim - len(s):]) != s:
            got = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
            raise ValueError(f"{name}[{i}]: expected shape (..., {', '.join(map(str, s))}), got {got}")


def _direction_pairs(partition, direction):
    check_partition(partition, direction)
    for i, t in enumerate(direction):
        if not backend.is_array(t):
            raise ArgumentTypeError(f"direction[{i}]: expected an array, got {type(t).__name__}")
    return [(f"direction[{i}]", t) for i, t in enumerate(direction)]


def _check_eta(eta, partition, name="eta"):
    if not backend.is_array(eta) or not hasattr(eta, "shape"):
        raise ArgumentTypeError(f"{name}: expected an array of shape ({partition.num_groups},), "
                                f"got {type(eta).__name__}")
    if eta.ndim != 1 or eta.shape[0] != partition.num_groups:
        raise ValueError(f"{name}: expected shape ({partition.num_groups},), got {tuple(eta.shape)}")
    return (name, eta)


def _labels_array(xp, lab, shape, device):
    return xp.reshape(xp.asarray(lab, dtype=xp.int64, device=device), shape)


def group_masks(partition: Partition, like) -> tuple:
    """Per tensor, the (S, *shape) 0/1 masks of the groups (rows of I_{S:P}, GN-1), in
    the namespace, dtype and device of the array ``like``."""
    _check_partition_type(partition)
    xp = backend.namespace_of(like=like)
    backend.check_float(like, "like", xp)
    dev = backend.device_of(like)
    key = (backend.namespace_name(xp), str(like.dtype), str(dev))
    cache = partition.__dict__.setdefault("_masks", {})
    if key not in cache:
        cache.clear()  # one namespace/dtype/device at a time
        cache[key] = _masks(xp, partition, like.dtype, dev)
    return cache[key]


def _masks(xp, partition, dtype, dev):
    ar = xp.arange(partition.num_groups, device=dev)
    out = []
    for lab, s in zip(partition.labels, partition.shapes):
        if _is_int(lab):
            row = xp.astype(ar == lab, dtype)
            out.append(xp.broadcast_to(xp.reshape(row, (-1,) + (1,) * len(s)), (partition.num_groups, *s)))
        else:
            labs = _labels_array(xp, lab, s, dev)
            out.append(xp.astype(xp.reshape(ar, (-1,) + (1,) * len(s)) == labs[None, ...], dtype))
    return tuple(out)


def restrict(direction, partition: Partition) -> tuple:
    """The S restricted directions u^(s) = u * 1_{T_s} stacked: V = Diag(u) I_{P:S} (GN-2).

    Returns a tuple like ``direction`` whose tensor i has shape (S, *shape_i); row s of
    every tensor together is u^(s). A tensor in a single group is stored once in its row
    (the others are zero).
    """
    check_arrays(_direction_pairs(partition, direction))
    masks = group_masks(partition, direction[0])
    return tuple(m * u[None, ...] for m, u in zip(masks, direction))


def expand(eta, partition: Partition) -> tuple:
    """Per-scalar values of a per-group vector: tensor i gets eta[label] at each scalar,
    i.e. I_{P:S} eta reshaped like the parameters (one array per tensor, shape_i)."""
    _check_partition_type(partition)
    xp = check_arrays([_check_eta(eta, partition)])
    return _expand(xp, eta, partition)


def _expand(xp, eta, partition):
    out = []
    for lab, s in zip(partition.labels, partition.shapes):
        if _is_int(lab):
            out.append(xp.broadcast_to(xp.reshape(eta[lab], (1,) * len(s)), s))
        else:
            out.append(xp.reshape(xp.take(eta, xp.reshape(_labels_array(xp, lab, s, backend.device_of(eta)),
                                                           (-1,))), s))
    return tuple(out)


def scale_groups(direction, eta, partition: Partition) -> tuple:
    """V eta = Diag(u) I_{P:S} eta = sum_s eta_s u^(s): the step of GN-10 (before the
    minus sign and the damping), as a tuple like ``direction``."""
    pairs = _direction_pairs(partition, direction)
    xp = check_arrays(pairs + [_check_eta(eta, partition)])
    return tuple(e * u for e, u in zip(_expand(xp, eta, partition), direction))


def group_sizes(partition: Partition) -> tuple[int, ...]:
    """|T_1|, ..., |T_S|: the diagonal of I_{S:P} I_{P:S} (GN-1)."""
    _check_partition_type(partition)
    sizes = [0] * partition.num_groups
    for lab, s in zip(partition.labels, partition.shapes):
        if _is_int(lab):
            sizes[lab] += math.prod(s)
        else:
            for v in lab:
                sizes[v] += 1
    return tuple(sizes)


def indicator_matrix(partition: Partition, like):
    """The P x S partition matrix I_{P:S} of GN-1 (flat order of
    :func:`arraycurv.params.flatten`), in the namespace/dtype/device of ``like``."""
    xp = backend.namespace_of(like=like)
    masks = group_masks(partition, like)
    return xp.concat([xp.matrix_transpose(xp.reshape(m, (partition.num_groups, -1))) for m in masks], axis=0)
