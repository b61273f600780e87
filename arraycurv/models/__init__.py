"""Model families and their passes (spec 2.2-2.4).

* :mod:`.base`: the generic passes every family implements (``param_shapes``,
  ``init_params``, ``forward``, ``jvp``, ``vjp``, ``hvp``) and ``linearize``;
* :mod:`.layers`: the layers of :class:`Sequential` networks and their per-layer generics;
* :mod:`.sequential`: MLP / LeNet-style CNN networks and the cached linearization;
* :mod:`.deep_linear`: deep linear networks (Huh 2020; Bernacchia et al. 2018).
"""

from . import base, deep_linear, layers, sequential
from .base import Linearization, forward, hvp, init_params, jvp, linearize, param_shapes, vjp
from .deep_linear import DeepLinear, LinearMoments, moments, partial_products, total_map, whitened_moments
from .sequential import Sequential, SequentialLinearization, as_sequential, lenet5, mlp

__all__ = [
    "DeepLinear",
    "LinearMoments",
    "Linearization",
    "Sequential",
    "SequentialLinearization",
    "as_sequential",
    "base",
    "deep_linear",
    "forward",
    "hvp",
    "init_params",
    "jvp",
    "layers",
    "lenet5",
    "linearize",
    "mlp",
    "moments",
    "param_shapes",
    "partial_products",
    "sequential",
    "total_map",
    "vjp",
    "whitened_moments",
]
