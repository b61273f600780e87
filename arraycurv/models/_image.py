"""Layers with hand-written forward, tangent (JVP), reverse (VJP) and R-operator passes
(spec 2.2-2.4), written only against the array API standard.

A layer is a small frozen dataclass describing its architecture; its parameters are a
tuple of arrays (``()`` for layers without parameters). Every pass is a generic function
dispatching on the layer type (``functools.singledispatch``), so a new layer is added by
registering

* :func:`layer_param_shapes` -- shapes of its parameter tensors;
* :func:`layer_output_shape` -- output shape (without batch) for an input shape;
* :func:`layer_forward` -- ``(y, cache)`` for a batch ``x``;
* :func:`layer_jvp` -- tangent of the output for tangents of the parameters *and* input;
* :func:`layer_vjp` -- cotangents of the input and of the parameters;
* :func:`layer_rop_vjp` -- Pearlmutter's (1994) R-operator applied to the backward pass:
  given the forward tangents ``(dp, dx)``, the output cotangent ``dy`` and its
  R-derivative ``rdy``, returns ``R{dx}`` and ``R{dp}``. It is the backward pass of the
  linearized cotangent ``rdy`` plus the second-order terms of the layer (the bilinear
  terms of Dense/Conv2d, the phi'' term of activations, nothing for linear or piecewise
  linear layers).

Shapes: activations have the batch on the leading axis, ``x`` of shape ``(B, *in_shape)``
with ``in_shape = (n,)`` for vectors and ``(C, H, W)`` for images (NCHW). Tangents,
cotangents and R-derivatives may carry extra *leading* axes in front of the batch
(``(*lead, B, ...)`` for activations and ``(*lead, *p.shape)`` for parameter tangents), so
that several directions are pushed through at once; parameter cotangents keep those
axes and sum over the batch axis (``params_mode="sum"``) or keep it
(``params_mode="per_sample"``, per-sample gradients of shape ``(*lead, B, *p.shape)``).
``None`` as a tangent means zero.
"""

from __future__ import annotations

from .. import backend


# --------------------------------------------------------- image gather / scatter
def _pad2d(xp, x, ph: int, pw: int):
    """Zero-pad the last two axes by (ph, pw) on each side (concatenation, no writes)."""
    if ph:
        z = xp.zeros(tuple(x.shape[:-2]) + (ph, x.shape[-1]), dtype=x.dtype, device=backend.device_of(x))
        x = xp.concat([z, x, z], axis=-2)
    if pw:
        z = xp.zeros(tuple(x.shape[:-1]) + (pw,), dtype=x.dtype, device=backend.device_of(x))
        x = xp.concat([z, x, z], axis=-1)
    return x


def _pad_to(xp, x, top: int, bottom: int, left: int, right: int):
    dev = backend.device_of(x)
    parts = []
    if top:
        parts.append(xp.zeros(tuple(x.shape[:-2]) + (top, x.shape[-1]), dtype=x.dtype, device=dev))
    parts.append(x)
    if bottom:
        parts.append(xp.zeros(tuple(x.shape[:-2]) + (bottom, x.shape[-1]), dtype=x.dtype, device=dev))
    x = xp.concat(parts, axis=-2) if len(parts) > 1 else x
    parts = []
    if left:
        parts.append(xp.zeros(tuple(x.shape[:-1]) + (left,), dtype=x.dtype, device=dev))
    parts.append(x)
    if right:
        parts.append(xp.zeros(tuple(x.shape[:-1]) + (right,), dtype=x.dtype, device=dev))
    return xp.concat(parts, axis=-1) if len(parts) > 1 else x


def _im2col(xp, x, kernel, stride, out_hw):
    """Gather the receptive fields of ``x`` (..., Hp, Wp) -> (..., kh*kw, Ho, Wo).

    Entry [..., i*kw + j, u, v] is x[..., stride_h*u + i, stride_w*v + j]; built from
    static slices and one ``xp.stack``.
    """
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    slices = [x[..., i : i + span_h : sh, j : j + span_w : sw] for i in range(kh) for j in range(kw)]
    return xp.stack(slices, axis=-3)


def _dilate(xp, a, sh: int, sw: int):
    """Insert (s - 1) zeros between the entries of the last two axes."""
    ho, wo = a.shape[-2:]
    if sh > 1:
        z = xp.zeros_like(a)
        a = xp.stack([a] + [z] * (sh - 1), axis=-2)  # (..., ho, sh, wo)
        a = xp.reshape(a, tuple(a.shape[:-3]) + (ho * sh, wo))[..., : sh * (ho - 1) + 1, :]
    if sw > 1:
        hd = a.shape[-2]
        z = xp.zeros_like(a)
        a = xp.stack([a] + [z] * (sw - 1), axis=-1)  # (..., hd, wo, sw)
        a = xp.reshape(a, tuple(a.shape[:-3]) + (hd, wo * sw))[..., : sw * (wo - 1) + 1]
    return a


def _col2im(xp, cols, kernel, stride, in_hw):
    """Adjoint of :func:`_im2col`: scatter-add (..., kh*kw, Ho, Wo) into (..., Hp, Wp)."""
    (kh, kw), (sh, sw), (hp, wp) = kernel, stride, in_hw
    d = _dilate(xp, cols, sh, sw)  # (..., kk, hd, wd)
    hd, wd = d.shape[-2:]
    total = None
    for i in range(kh):
        row = None
        for j in range(kw):
            t = _pad_to(xp, d[..., i * kw + j, :, :], 0, 0, j, wp - wd - j)
            row = t if row is None else row + t
        row = _pad_to(xp, row, i, hp - hd - i, 0, 0)
        total = row if total is None else total + row
    return total
