"""Direct NumPy loops for the layers: convolution, pooling, activations, and the test
for finite differences that could cross a kink (relu/elu at 0, max-pool ties)."""

from __future__ import annotations

import numpy as np
import scipy.special

from arraycurv.models.layers import Activation, MaxPool2d


def conv_ref(x, k, b, stride, padding):
    """Direct loop: y[n,o,u,v] = b_o + sum_{c,i,j} K[o,c,i,j] xpad[n,c,s u+i,s v+j]."""
    (sh, sw), (ph, pw) = stride, padding
    n_b, _, h, w = x.shape
    o, _, kh, kw = k.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.zeros((n_b, o, ho, wo))
    for n in range(n_b):
        for oc in range(o):
            for u in range(ho):
                for v in range(wo):
                    patch = xpad[n, :, u * sh : u * sh + kh, v * sw : v * sw + kw]
                    y[n, oc, u, v] = np.sum(k[oc] * patch) + (0.0 if b is None else b[oc])
    return y


def pool_ref(x, kernel, stride, op):
    (kh, kw), (sh, sw) = kernel, stride
    n_b, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n_b, c, ho, wo))
    for n in range(n_b):
        for ch in range(c):
            for u in range(ho):
                for v in range(wo):
                    y[n, ch, u, v] = op(x[n, ch, u * sh : u * sh + kh, v * sw : v * sw + kw])
    return y


def act_ref(name, x):
    return {
        "identity": x,
        "tanh": np.tanh(x),
        "relu": np.maximum(x, 0.0),
        "elu": np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
        "sigmoid": scipy.special.expit(x),
        "softplus": np.logaddexp(0.0, x),
        "gelu": 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3))),  # tanh form
    }[name]


KINK_GAP = 3e-4


def near_kink(layer, x):
    """True if a finite difference of step ~1e-5 at input ``x`` (NumPy) could cross a kink:
    a relu/elu input within KINK_GAP of 0, or a max-pool window whose two largest entries
    are within KINK_GAP (the argmax could change)."""
    if isinstance(layer, Activation) and layer.name in ("relu", "elu"):
        return bool(np.min(np.abs(x)) < KINK_GAP)
    if isinstance(layer, MaxPool2d):
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
        win = np.sort(win.reshape(*win.shape[:4], -1), axis=-1)
        return win.shape[-1] > 1 and bool(np.min(win[..., -1] - win[..., -2]) < KINK_GAP)
    return False
