"""Test cases as data: model x loss x batch x dtype (after curvlinops' ``test/cases.py``).

* :data:`CASES`: a fixed list of small frozen :class:`Case` records over every model
  family (deep linear, MLPs with the activations, layer norm, small CNNs with pooling), both losses
  where they apply, two batch sizes and both dtypes; ``case.build(xp)`` returns
  ``(model, params, batch)`` and ``case.tangent(xp)`` a parameter-shaped direction.
  Parametrize with ``@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)``.
* hypothesis strategies over the same space for property tests: :func:`cases` draws
  ``(model, batch size, dtype, seed, loss)`` and :func:`make_case` builds it;
  :func:`mlp_models`, :func:`cnn_models`, :func:`deep_linear_models` are the small
  architectures the curvature tests materialize P x P matrices on.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from hypothesis import strategies as st

import arraycurv as ac
from arraycurv import backend, testing
from arraycurv.models.base import input_shape, output_shape
from arraycurv.models.layers import Activation, AvgPool2d, Conv2d, Dense, Flatten, LayerNorm, MaxPool2d

MSE, CE = ac.MSE(), ac.SoftmaxCrossEntropy()


# ------------------------------------------------------------------ model helpers
def out_dim(model) -> int:
    """Output width k of a model (any family: the ``output_shape`` generic)."""
    return output_shape(model)[0]


def in_shape(model) -> tuple[int, ...]:
    """Shape of one input sample (the ``input_shape`` generic)."""
    return tuple(input_shape(model))


def make_case(xp, model, b, dtype, seed, loss=MSE, scale=0.7):
    """Seeded ``(params, x, y, v)`` for ``model``: parameters of std ``scale``, a batch of
    ``b`` Gaussian inputs with Gaussian (MSE) or uniform class (CE) targets, a tangent."""
    g = np.random.default_rng(seed)
    params = tuple(backend.normal(g, s, xp, dtype=dtype, scale=scale) for s in ac.param_shapes(model))
    x = backend.normal(g, (b, *in_shape(model)), xp, dtype=dtype)
    k = out_dim(model)
    y = backend.normal(g, (b, k), xp, dtype=dtype) if loss == MSE else backend.integers(g, 0, k, (b,), xp)
    v = tuple(backend.normal(g, s, xp, dtype=dtype) for s in ac.param_shapes(model))
    return params, x, y, v


# ------------------------------------------------------------------- fixed cases
@dataclasses.dataclass(frozen=True)
class Case:
    """One model x loss x batch x dtype combination, built on demand in any namespace."""

    name: str
    model: Any
    loss: Any = MSE
    batch: int = 3
    dtype: str = "float64"
    seed: int = 0

    @property
    def id(self) -> str:
        loss = "mse" if self.loss == MSE else "ce"
        return f"{self.name}-{loss}-b{self.batch}-{self.dtype}"

    def build(self, xp):
        """``(model, params, (x, y))`` in namespace ``xp``."""
        params, x, y, _ = make_case(xp, self.model, self.batch, self.dtype, self.seed, self.loss)
        return self.model, params, (x, y)

    def tangent(self, xp):
        """A parameter-shaped direction v (same draws as :meth:`build`)."""
        return make_case(xp, self.model, self.batch, self.dtype, self.seed, self.loss)[3]

    @property
    def num_params(self) -> int:
        return ac.params.num_params(ac.param_shapes(self.model))


#: (name, model, losses it supports)
MODELS = (
    ("deep_linear_3-4-2", ac.DeepLinear((3, 4, 2)), (MSE,)),
    ("deep_linear_2-3-3-2", ac.DeepLinear((2, 3, 3, 2)), (MSE,)),
    *((f"mlp_{act}", ac.mlp((3, 3, 2), act), (MSE, CE)) for act in ("tanh", "relu", "elu", "sigmoid")),
    ("mlp_nobias", ac.mlp((2, 3, 2), "tanh", bias=False), (MSE, CE)),
    ("mlp_softplus", ac.mlp((3, 3, 2), "softplus"), (MSE, CE)),
    ("layernorm_gelu", ac.Sequential((Dense(2, 3), LayerNorm(3), Activation("gelu"), Dense(3, 2)), (2,)), (MSE, CE)),
    ("cnn", ac.Sequential((Conv2d(1, 1, 2, padding=1), Activation("tanh"), AvgPool2d(2), Flatten(), Dense(4, 3)),
                          (1, 3, 3)), (MSE, CE)),
    ("cnn_maxpool", ac.Sequential((Conv2d(2, 1, 2), Activation("relu"), MaxPool2d(2), Flatten(), Dense(4, 2)),
                                  (2, 5, 5)), (MSE, CE)),
)
CASES = [
    Case(name, model, loss, batch, dtype, seed=i)
    for i, (name, model, losses) in enumerate(MODELS)
    for loss in losses
    for batch in (1, 3)
    for dtype in ("float64", "float32")
]
CASE_IDS = [c.id for c in CASES]


# -------------------------------------------------------------------- strategies
#: small architectures: the curvature tests materialize P x P matrices
mlp_models = functools.partial(testing.mlp_models, max_depth=3, max_width=5)
cnn_models = functools.partial(testing.cnn_models, max_channels=2, min_hw=4, max_hw=5,
                               pools=(AvgPool2d(2), MaxPool2d(2)))


@st.composite
def deep_linear_models(draw, max_depth=3, max_width=4):
    """DeepLinear nets of depth 1..max_depth, widths 1..max_width."""
    depth = draw(st.integers(1, max_depth))
    return ac.DeepLinear(tuple(draw(st.integers(1, max_width)) for _ in range(depth + 1)))


@st.composite
def cases(draw, models=None, max_batch=5, losses=(MSE, CE)):
    """(model, batch size, dtype, seed, loss); CE only for Sequential models with k >= 2."""
    model = draw(models if models is not None else st.one_of(mlp_models(), cnn_models(), deep_linear_models()))
    loss = draw(st.sampled_from(losses))
    if isinstance(model, ac.DeepLinear) or out_dim(model) < 2:
        loss = MSE
    return model, draw(st.integers(1, max_batch)), draw(testing.dtypes()), draw(testing.seeds()), loss


__all__ = ["CASES", "CASE_IDS", "CE", "MODELS", "MSE", "Case", "cases", "cnn_models", "deep_linear_models",
           "in_shape", "make_case", "mlp_models", "out_dim"]
