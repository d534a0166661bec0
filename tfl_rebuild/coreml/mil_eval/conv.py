"""Convolution MIL ops: conv and conv_transpose, 1-D, 2-D (NCHW) and 3-D (NCDHW)."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import MilEvalError, op
from tfl_rebuild.coreml.mil_eval.windows import as_2d, sliding_windows, spatial_pads, tap_slice, taps


@op("conv")
def _conv(a):
    x, w = a.x, a.weight
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _conv_3d(a)
    if n_sp not in (1, 2):
        raise MilEvalError(f"conv with {n_sp} spatial dimensions is not supported")
    x, w = as_2d(x, n_sp), as_2d(w, n_sp)
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    dilations = ([1] if n_sp == 1 else []) + a.ints("dilations", [1] * n_sp)
    kernel = list(w.shape[2:])
    pads = (
        spatial_pads(a, x.shape[2:], kernel, strides, dilations)
        if n_sp == 2
        else [(0, 0)] + spatial_pads(a, x.shape[3:], kernel[1:], strides[1:], dilations[1:])
    )
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    groups = int(a.scalar("groups", 1))
    win = sliding_windows(x, kernel, strides, dilations)  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo = win.shape[:4]
    cout = w.shape[0]
    win = win.reshape(n, groups, c // groups, ho, wo, *kernel)
    wg = w.reshape(groups, cout // groups, c // groups, *kernel)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, cout, ho, wo)
    bias = a.get("bias")
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y[:, :, 0, :] if n_sp == 1 else y


@op("conv_transpose")
def _conv_transpose(a):
    x, w = a.x, a.weight  # w: [C_in, C_out/groups, kh, kw]
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _conv_transpose_3d(a)
    if n_sp not in (1, 2):
        raise MilEvalError(f"conv_transpose with {n_sp} spatial dimensions is not supported")
    x, w = as_2d(x, n_sp), as_2d(w, n_sp)
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    dilations = ([1] if n_sp == 1 else []) + a.ints("dilations", [1] * n_sp)
    groups = int(a.scalar("groups", 1))
    n, cin, h, wd = x.shape
    og, kh, kw = w.shape[1:]
    full = [
        (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1,
        (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1,
    ]
    y = np.zeros((n, groups * og, *full), np.float32)
    xg = x.reshape(n, groups, cin // groups, h, wd)
    wg = w.reshape(groups, cin // groups, og, kh, kw)
    for i in range(kh):  # scatter each kernel tap: out[s*h + d*i] += x[h] * w[i]
        for j in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j]).reshape(n, groups * og, h, wd)
            oi, oj = i * dilations[0], j * dilations[1]
            y[
                :,
                :,
                oi : oi + (h - 1) * strides[0] + 1 : strides[0],
                oj : oj + (wd - 1) * strides[1] + 1 : strides[1],
            ] += contrib
    pad_type = a.scalar("pad_type", "valid")
    sizes = a.ints("output_shape")
    sizes = None if sizes is None else ([1] if n_sp == 1 else []) + sizes[2:]
    custom = a.ints("pad", [0] * 2 * n_sp)
    custom = ([0, 0] if n_sp == 1 else []) + custom
    crops = []  # (first row kept, rows kept) per spatial axis of the full scatter result
    for r in range(2):
        if pad_type in ("same", "same_lower"):
            size = sizes[r] if sizes else strides[r] * x.shape[2 + r]
            total = max(full[r] - size, 0)  # what TensorFlow's SAME conv would have padded
            before = total - total // 2 if pad_type == "same_lower" else total // 2
        else:
            before = custom[2 * r] if pad_type == "custom" else 0
            after = custom[2 * r + 1] if pad_type == "custom" else 0
            size = sizes[r] if sizes else full[r] - before - after
        crops.append((before, size))
    pad_end = [max(b + s - f, 0) for (b, s), f in zip(crops, full)]
    if any(pad_end):
        y = np.pad(y, [(0, 0), (0, 0), (0, pad_end[0]), (0, pad_end[1])])
    y = y[:, :, crops[0][0] : crops[0][0] + crops[0][1], crops[1][0] : crops[1][0] + crops[1][1]]
    bias = a.get("bias")
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y[:, :, 0, :] if n_sp == 1 else y


def _conv_3d(a):
    x, w = a.x, a.weight  # w: [C_out, C_in/groups, kd, kh, kw]
    strides, dilations = a.ints("strides", [1] * 3), a.ints("dilations", [1] * 3)
    kernel = list(w.shape[2:])
    x = np.pad(x, [(0, 0), (0, 0), *spatial_pads(a, x.shape[2:], kernel, strides, dilations)])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, d, s in zip(x.shape[2:], kernel, dilations, strides)]
    groups = int(a.scalar("groups", 1))
    n, c, cout = x.shape[0], x.shape[1], w.shape[0]
    wg = w.reshape(groups, cout // groups, c // groups, *kernel)
    y = np.zeros((n, groups, cout // groups, *out), np.float64)
    for tap in taps(kernel):
        xs = x[tap_slice(tap, dilations, out, strides)].reshape(n, groups, c // groups, *out)
        y += np.einsum("ngcdhw,goc->ngodhw", xs, wg[(slice(None),) * 3 + tap], optimize=True)
    y = y.reshape(n, cout, *out)
    bias = a.get("bias")
    return (y if bias is None else y + bias.reshape(1, -1, 1, 1, 1)).astype(np.float32)


def _conv_transpose_3d(a):
    x, w = a.x, a.weight  # w: [C_in, C_out/groups, kd, kh, kw]
    strides, dilations = a.ints("strides", [1] * 3), a.ints("dilations", [1] * 3)
    groups = int(a.scalar("groups", 1))
    n, cin, *sizes = x.shape
    og, *kernel = w.shape[1:]
    full = [(m - 1) * s + (k - 1) * d + 1 for m, s, k, d in zip(sizes, strides, kernel, dilations)]
    y = np.zeros((n, groups, og, *full), np.float64)
    xg = x.reshape(n, groups, cin // groups, *sizes)
    wg = w.reshape(groups, cin // groups, og, *kernel)
    for tap in taps(kernel):  # out[s*i + d*k] += x[i] * w[k]
        y[(slice(None),) + tap_slice(tap, dilations, sizes, strides)] += np.einsum(
            "ngcdhw,gco->ngodhw", xg, wg[(slice(None),) * 3 + tap], optimize=True
        )
    y = y.reshape(n, groups * og, *full)
    pad_type, sizes_out = a.scalar("pad_type", "valid"), a.ints("output_shape")
    custom = a.ints("pad", [0] * 6)
    crops = []  # (first kept, count kept) per spatial axis of the full scatter result
    for r in range(3):
        if pad_type in ("same", "same_lower"):
            size = sizes_out[2 + r] if sizes_out else strides[r] * sizes[r]
            total = max(full[r] - size, 0)  # what TensorFlow's SAME conv would have padded
            before = total - total // 2 if pad_type == "same_lower" else total // 2
        else:
            before = custom[2 * r] if pad_type == "custom" else 0
            after = custom[2 * r + 1] if pad_type == "custom" else 0
            size = sizes_out[2 + r] if sizes_out else full[r] - before - after
        crops.append((before, size))
    y = np.pad(y, [(0, 0), (0, 0), *((0, max(b + m - f, 0)) for (b, m), f in zip(crops, full))])
    y = y[(slice(None), slice(None), *(slice(b, b + m) for b, m in crops))]
    bias = a.get("bias")
    return (y if bias is None else y + bias.reshape(1, -1, 1, 1, 1)).astype(np.float32)
