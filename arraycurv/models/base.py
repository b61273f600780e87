"""The generic functions every model family implements, and the curvature defaults
built from them (Julia-style generic functions via ``functools.singledispatch``).

A model is a small frozen dataclass describing the architecture; parameters are a tuple
of arrays (see :mod:`arraycurv.params`); a batch is a tuple ``(x, y)`` with the batch on
the leading axis. A model family registers implementations for its type::

    @forward.register
    def _(model: DeepLinear, params, x): ...

The *passes* (``param_shapes``, ``init_params``, ``forward``, ``jvp``, ``vjp``) must be
registered by every family; the curvature functions (``jacobian``, ``ggn_vp``,
``ggn_matrix``, ``ggn_blocks``, ``ggn_block_diag``, ``value_and_grad``) have generic
defaults here, written only in terms of the passes and the loss, that a family may
override with a faster exact form (e.g. Kronecker structure for deep linear networks).
``hvp`` and ``hessian_matrix`` need a second-order pass and have no default.

Conventions (spec): losses are means over the batch; G = (1/B) sum_b J_b^T H_b J_b.
"""

from __future__ import annotations

import functools
from typing import Any

from ..losses import MSE

__all__ = ['forward', 'hvp', 'init_params', 'jvp', 'param_shapes', 'vjp']


def _missing(fn: str, model: Any):
    raise TypeError(
        f"model: {fn} is not implemented for {type(model).__name__}; expected a model of "
        f"arraycurv (DeepLinear, Sequential/MLP/CNN, ...), got {model!r}"
    )


# ------------------------------------------------------------------------ the passes
@functools.singledispatch
def param_shapes(model) -> tuple[tuple[int, ...], ...]:
    """Shapes of the parameter tensors of ``model``, in order."""
    _missing("param_shapes", model)


@functools.singledispatch
def init_params(model, seed, xp=None, *, dtype=None, device=None, **kwargs):
    """Seeded initial parameters of ``model`` in namespace ``xp`` (NumPy by default)."""
    _missing("init_params", model)


@functools.singledispatch
def forward(model, params, x):
    """Network outputs f(x) for a batch ``x`` (leading axis = batch), shape (B, k)."""
    _missing("forward", model)


@functools.singledispatch
def jvp(model, params, x, tangent):
    """Forward-mode tangent pass: returns ``(f(x), J tangent)``, both of shape (B, k).

    ``tangent`` is a tuple of arrays shaped like ``params``.
    """
    _missing("jvp", model)


@functools.singledispatch
def vjp(model, params, x, cotangent):
    """Reverse pass: sum_b J_b^T cotangent_b as a tuple shaped like ``params``.

    ``cotangent`` has shape (B, k). No 1/B factor is applied.
    """
    _missing("vjp", model)


@functools.singledispatch
def hvp(model, params, batch, v, loss=MSE()):
    """Exact Hessian-vector product of the mean loss (needs a second-order pass)."""
    _missing("hvp", model)
