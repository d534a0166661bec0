"""Padding and sliding windows shared by conv and pool (NCHW; 1-D as 2-D with height 1).

3-D (NCDHW) goes one strided slice per kernel tap, so any number of spatial axes reads the same.
"""

from __future__ import annotations

import itertools

import numpy as np


def same_pads(size: int, k_eff: int, stride: int, lower: bool = False) -> tuple[int, int]:
    """(before, after) padding of SAME (TensorFlow: the odd one after; same_lower: before)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def spatial_pads(a, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(before, after) per spatial axis from the op's pad_type (valid, same, same_lower, custom)."""
    pad_type = a.scalar("pad_type", "valid")
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if pad_type in ("same", "same_lower"):
        return [same_pads(n, k, s, pad_type == "same_lower") for n, k, s in zip(in_sizes, k_eff, strides)]
    if pad_type == "custom":
        p = a.ints("pad")
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(in_sizes))]
    return [(0, 0)] * len(in_sizes)


def as_2d(x, n_spatial):
    """A 1-D input [N, C, W] as 2-D with height 1."""
    return x[:, :, None, :] if n_spatial == 1 else x


def sliding_windows(x, kernel, strides, dilations):
    """(N, C, Ho, Wo, kh, kw) view of the 2-D windows of x (already padded)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    win = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def ceil_extra(padded: int, k: int, s: int) -> int:
    """End padding that makes ceil_mode's partial last window count."""
    out_floor = (padded - k) // s + 1
    out_ceil = -(-(padded - k) // s) + 1
    return (out_ceil - out_floor) * s if out_ceil > out_floor else 0


def taps(kernel):
    """Every kernel tap (index tuple) of an N-D kernel."""
    return itertools.product(*(range(k) for k in kernel))


def tap_slice(tap, dilations, out, strides) -> tuple:
    """The input positions kernel tap `tap` meets for every output position (padded input)."""
    return (
        slice(None),
        slice(None),
        *(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out, strides)),
    )
