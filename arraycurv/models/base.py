"""The passes every model family implements (Julia-style generics via ``functools.singledispatch``).

A model is a small frozen dataclass describing the architecture; parameters are a tuple
of arrays (see :mod:`arraycurv.params`); a batch is a tuple ``(x, y)`` with the batch on
the leading axis. A model family registers implementations for its type::

    @forward.register
    def _(model: DeepLinear, params, x): ...

``param_shapes``, ``init_params``, ``forward``, ``jvp`` and ``vjp`` must be registered by
every family; ``hvp`` needs a second-order pass. The curvature verbs built on them are in
:mod:`arraycurv.curvature.generic`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..losses import MSE, loss_hessian_vp, loss_value_and_grad
from ..validation import check_call, validated

__all__ = [
    'Linearization',
    'forward',
    'hvp',
    'init_params',
    'input_shape',
    'jvp',
    'linearize',
    'output_shape',
    'param_shapes',
    'stacked_tangents',
    'vjp',
]


def _missing(fn: str, model: Any):
    raise TypeError(
        f"model: expected a model of arraycurv (DeepLinear, Sequential/MLP/CNN, ...), got {model!r} "
        f"({fn} is not implemented for {type(model).__name__})"
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
def input_shape(model) -> tuple[int, ...]:
    """Shape of one input of ``model`` without the batch axis, e.g. ``(n0,)`` or ``(C, H, W)``."""
    _missing("input_shape", model)


@functools.singledispatch
def output_shape(model) -> tuple[int, ...]:
    """Shape of one output of ``model`` without the batch axis, ``(k,)``."""
    _missing("output_shape", model)


@functools.singledispatch
def stacked_tangents(model) -> bool:
    """Whether the passes of ``model`` accept tangents and cotangents with extra leading
    axes (several directions at once); False unless the family registers True."""
    return False


# Each pass is a public function that validates its call once (validation.check_call) and
# then runs the implementation registered for the model's type with ``xp=``; nested calls
# use ``forward.trusted(..., xp=xp)`` (docs/design.md, "Validation at the boundary").
@functools.singledispatch
def _forward(model, params, x, *, xp=None):
    _missing("forward", model)


@validated(_forward)
def forward(model, params, x):
    """Network outputs f(x) for a batch ``x`` (leading axis = batch), shape (B, k)."""
    return check_call(model, params, x=x)


@functools.singledispatch
def _jvp(model, params, x, tangent, *, xp=None):
    _missing("jvp", model)


@validated(_jvp)
def jvp(model, params, x, tangent):
    """Forward-mode tangent pass: returns ``(f(x), J tangent)``, both of shape (B, k).

    ``tangent`` is a tuple of arrays shaped like ``params``.
    """
    return check_call(model, params, x=x, tangent=tangent, tangent_lead=None)


@functools.singledispatch
def _vjp(model, params, x, cotangent, *, xp=None):
    _missing("vjp", model)


@validated(_vjp)
def vjp(model, params, x, cotangent):
    """Reverse pass: sum_b J_b^T cotangent_b as a tuple shaped like ``params``.

    ``cotangent`` has shape (B, k). No 1/B factor is applied.
    """
    return check_call(model, params, x=x, cotangent=cotangent, tangent_lead=None)


@functools.singledispatch
def _hvp(model, params, batch, v, loss=MSE(), *, xp=None):
    _missing("hvp", model)


@validated(_hvp)
def hvp(model, params, batch, v, loss=MSE()):
    """Exact Hessian-vector product of the mean loss (needs a second-order pass)."""
    return check_call(model, params, batch=batch, tangent=v, loss=loss, names=_V,
                      tangent_lead=None)


_V = {"tangent": "v"}


# -------------------------------------------------------------- the linearization
@dataclass(frozen=True, eq=False)
class Linearization:
    """A model linearized at ``(params, x)``: its outputs and the products J v, J^T u, H v there.

    This default is built from closures over the generic passes (each product calls
    :func:`jvp`, :func:`vjp` or :func:`hvp` afresh); a family whose passes can keep their
    intermediates registers :func:`linearize` to return a subclass that reuses one forward
    pass (:class:`arraycurv.models.sequential.SequentialLinearization`).

    Attributes
    ----------
    model, params, x
        The model, its parameters and the input batch.
    outputs : array
        The network outputs f(x), shape (B, k).
    """

    model: Any
    params: tuple
    x: Any
    outputs: Any

    def jvp(self, tangent):
        """J v at the linearization point, shape (B, k)."""
        return jvp(self.model, self.params, self.x, tangent)[1]

    def vjp(self, cotangent):
        """sum_b J_b^T u_b shaped like the parameters (no 1/B)."""
        return vjp(self.model, self.params, self.x, cotangent)

    def hvp(self, y, v, loss=MSE()):
        """Exact Hessian-vector product of the mean loss on the batch ``(x, y)``."""
        return hvp(self.model, self.params, (self.x, y), v, loss)

    def ggn_vp(self, v, loss=MSE()):
        """GGN-vector product G v = (1/B) sum_b J_b^T H_b J_b v at the linearization point
        (Huh eq (3); spec 3.2): J v, the output-Hessian products, J^T (targets not needed)."""
        jv = self.jvp(v)
        return self.vjp(loss_hessian_vp(loss, self.outputs, jv) / self.x.shape[0])

    def value_and_grad(self, y, loss=MSE()):
        """Mean loss on the batch ``(x, y)`` and its gradient, from the cached outputs."""
        value, g = loss_value_and_grad(loss, self.outputs, y)
        return value, self.vjp(g / self.x.shape[0])


@functools.singledispatch
def _linearize(model, params, x, *, xp=None):
    return Linearization(model, tuple(params), x, forward.trusted(model, params, x, xp=xp))


@validated(_linearize)
def linearize(model, params, x) -> Linearization:
    """One forward pass of ``model`` at ``(params, x)``, kept for repeated products.

    Returns a :class:`Linearization`; the default holds the outputs and calls the generic
    passes per product, a family may register a cached one (Sequential networks keep
    every layer's input and cache).
    """
    return check_call(model, params, x=x)
