"""Image gather and scatter shared by the convolution and pooling layers and by K-FAC
(Grosse & Martens 2016 use the same im2col patches for the input factor of a
convolution): zero padding, im2col and its adjoint col2im, written only against the
array API standard and array-api-extra.

All three take arrays with any number of leading axes in front of the two spatial axes
(``(..., H, W)``), so that batches, channels and stacked tangent directions go through
at once. None of them writes into its input.
"""

from __future__ import annotations

import array_api_extra as xpx

from .. import backend


def _pad2d(xp, x, ph: int, pw: int):
    """Zero-pad the last two axes of ``x`` by ``(ph, pw)`` on each side (``xpx.pad``)."""
    if not (ph or pw):
        return x
    return xpx.pad(x, [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)], xp=xp)


def _windows(kernel, stride, out_hw):
    """The static slices (rows, cols) of every kernel offset (i, j), in row-major order."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    span_h, span_w = sh * (ho - 1) + 1, sw * (wo - 1) + 1
    return [(slice(i, i + span_h, sh), slice(j, j + span_w, sw)) for i in range(kh) for j in range(kw)]


def _im2col(xp, x, kernel, stride, out_hw, batch_inner=False):
    """Gather the receptive fields of ``x`` (..., Hp, Wp) -> (..., kh*kw, Ho, Wo).

    Entry [..., i*kw + j, u, v] is x[..., stride_h*u + i, stride_w*v + j]; built from
    static slices and one ``xp.stack`` (NumPy: one copy of a strided window view,
    :func:`arraycurv.backend.window_gather`, stored batch-inner with ``batch_inner``).
    """
    fast = backend.window_gather(x, kernel, stride, out_hw, batch_inner=batch_inner)
    if fast is not None:
        return fast
    return xp.stack([x[..., r, c] for r, c in _windows(kernel, stride, out_hw)], axis=-3)


def _col2im(xp, cols, kernel, stride, in_hw):
    """Adjoint of :func:`_im2col`: scatter-add (..., kh*kw, Ho, Wo) into (..., Hp, Wp).

    Non-overlapping windows (stride = kernel, e.g. 2 x 2 pooling) place every column entry
    once: a permutation of the axes and a zero border where partial windows were dropped.
    Otherwise one strided add per kernel offset into a fresh zero array (NumPy: in place,
    :func:`arraycurv.backend.window_scatter_add`; elsewhere ``xpx.at(...).add``). The
    only array written to is the one created here.
    """
    out_hw = tuple(cols.shape[-2:])
    (kh, kw), lead = tuple(kernel), tuple(cols.shape[:-3])
    if tuple(stride) == (kh, kw):
        (ho, wo), (hp, wp) = out_hw, tuple(in_hw)
        n = len(lead)
        t = xp.reshape(cols, lead + (kh, kw, ho, wo))
        t = xp.permute_dims(t, tuple(range(n)) + (n + 2, n, n + 3, n + 1))  # (..., ho, kh, wo, kw)
        t = xp.reshape(t, lead + (ho * kh, wo * kw))
        if (hp, wp) == (ho * kh, wo * kw):
            return t
        return xpx.pad(t, [(0, 0)] * n + [(0, hp - ho * kh), (0, wp - wo * kw)], xp=xp)
    fast = backend.window_scatter_add(cols, kernel, stride, in_hw)
    if fast is not None:
        return fast
    total = xp.zeros(lead + tuple(in_hw), dtype=cols.dtype, device=backend.device_of(cols))
    for t, (r, c) in enumerate(_windows(kernel, stride, out_hw)):
        total = xpx.at(total)[..., r, c].add(cols[..., t, :, :])
    return total
