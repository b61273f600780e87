"""NumPy references for deep linear networks (independent of arraycurv's curvature code).

The Jacobian of the total map is built from Kronecker products,
d vec_r(W) = sum_i kron(W_{>i}, W_{<i}^T) vec_r(dW_i); the GGN is G = J^T kron(I, Sxx) J
and the gradient g = J^T vec_r(R), R = <(f(x) - y) x^T>; spectral powers by numpy eigh.
Shared by tests/directions/test_fractional.py, tests/rules/test_rules.py and
tests/dynamics/test_training.py.
"""

from __future__ import annotations

import math

import numpy as np

from arraycurv import DeepLinear, backend


def np_partials(ws):
    """W_{<i} and W_{>i} (0-based lists) by direct products."""
    n0, nl = ws[0].shape[1], ws[-1].shape[0]
    pre, suf = [], []
    for i in range(len(ws)):
        p = np.eye(n0)
        for w in ws[:i]:
            p = w @ p
        s = np.eye(nl)
        for w in ws[i + 1 :][::-1]:
            s = s @ w
        pre.append(p)
        suf.append(s)
    return pre, suf


def np_map_jacobian(ws):
    """d vec_r(W) / d theta, (nL n0, P), from Kronecker products."""
    pre, suf = np_partials(ws)
    return np.concatenate([np.kron(s, p.T) for p, s in zip(pre, suf)], axis=1)


def np_ggn_grad(ws, x, y):
    """G (P x P) and g (P,) of the mean MSE of a deep linear network, in float64."""
    ws = [np.asarray(w, dtype=np.float64) for w in ws]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    nl = ws[-1].shape[0]
    wbar = ws[0]
    for w in ws[1:]:
        wbar = w @ wbar
    b = x.shape[0]
    sxx = x.T @ x / b
    resid = (x @ wbar.T - y).T @ x / b
    jm = np_map_jacobian(ws)
    g = jm.T @ resid.reshape(-1)
    gg = jm.T @ np.kron(np.eye(nl), sxx) @ jm
    return 0.5 * (gg + gg.T), g


def np_psd_power(a, p, rcond, damping=0.0):
    """(A + damping I)^p on eigenvalues > rcond * max (numpy eigh)."""
    lam, v = np.linalg.eigh(a + damping * np.eye(a.shape[0]))
    keep = lam > rcond * lam.max()
    f = np.where(keep, np.where(keep, np.abs(lam), 1.0) ** p, 0.0)
    return (v * f) @ v.T


def ref_qngd(ws, x, y, q, rcond, damping=0.0):
    """Flat q-NGD direction -(G + damping I)^{+1/q} g."""
    gg, g = np_ggn_grad(ws, x, y)
    if math.isinf(q):
        return -g
    return -np_psd_power(gg, -1.0 / q, rcond, damping) @ g


def make_case(xp, widths, nb, seed, dtype="float64", scale=1.0):
    """A DeepLinear model, seeded parameters (scale / sqrt(fan_in)) and a random batch (x, y)."""
    model = DeepLinear(widths)
    params = tuple(
        backend.normal(seed + i, (widths[i + 1], widths[i]), xp, dtype=dtype, scale=scale / math.sqrt(widths[i]))
        for i in range(len(widths) - 1)
    )
    x = backend.normal(seed + 100, (nb, widths[0]), xp, dtype=dtype)
    y = backend.normal(seed + 200, (nb, widths[-1]), xp, dtype=dtype)
    return model, params, (x, y)


def np_of(tree):
    """Arrays of any namespace as float64 NumPy arrays."""
    return [backend.to_numpy(t).astype(np.float64) for t in tree]


def ref_blockdiag(ws, x, y, q, rcond=None, damping=0.0):
    """Flat block-diagonal q-NGD direction, blocks cut from the reference GGN, / d^{1/q}."""
    gg, g = np_ggn_grad(ws, x, y)
    out, off = [], 0
    for w in ws:
        n = w.size
        rc = n * np.finfo(np.float64).eps if rcond is None else rcond
        blk = gg[off : off + n, off : off + n]
        out.append(-np_psd_power(blk, -1.0 / q, rc, damping) @ g[off : off + n] / len(ws) ** (1.0 / q))
        off += n
    return np.concatenate(out)


def np_loss(ws, x, y):
    """Mean MSE loss 1/(2B) sum_b ||W x_b - y_b||^2 of a deep linear network."""
    ws = [np.asarray(w, dtype=np.float64) for w in ws]
    wbar = ws[0]
    for w in ws[1:]:
        wbar = w @ wbar
    r = np.asarray(x, dtype=np.float64) @ wbar.T - np.asarray(y, dtype=np.float64)
    return 0.5 * np.sum(r * r) / r.shape[0]


def np_grad_tree(ws, x, y):
    """Gradient of the mean MSE as a list of matrices shaped like ``ws``."""
    _, g = np_ggn_grad(ws, x, y)
    out, off = [], 0
    for w in ws:
        out.append(g[off : off + w.size].reshape(w.shape))
        off += w.size
    return out
