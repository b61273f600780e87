"""Curvature references for every model family: the generic GGN (jvp then vjp per
column, bypassing the fast forms a family registers) and float64 host copies."""

from __future__ import annotations

import numpy as np

import arraycurv as ac
from arraycurv import backend
from arraycurv.testing import default_form, materialize


def npf(a):
    """Flat float64 NumPy copy of an array or a parameter tuple."""
    if isinstance(a, (tuple, list)):
        return np.concatenate([npf(t).ravel() for t in a])
    return backend.to_numpy(a).astype(np.float64)


def default_ggn_matrix(model, params, batch, loss):
    """The generic GGN matrix (jvp then vjp per column) in the namespace of ``params``."""
    vp = default_form(ac.ggn_vp)
    return materialize(lambda v: vp(model, params, batch, v, loss), ac.param_shapes(model), like=params[0])


def default_ggn(model, params, batch, loss):
    """:func:`default_ggn_matrix` as a float64 NumPy array."""
    return npf(default_ggn_matrix(model, params, batch, loss))
