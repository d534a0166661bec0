"""Resizing MIL ops: upsample / resize (bilinear, nearest), crop, crop_resize (NCHW)."""

from __future__ import annotations

import math

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import MilEvalError, op


def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Sample positions in input coordinates (the formulas of MIL's resize_bilinear doc)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * n_in / n_out
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:  # UNALIGN_CORNERS: half-pixel centers
        g = (i + 0.5) * n_in / n_out - 0.5
    return np.clip(g, 0, n_in - 1)


def _lerp_axis(x, grid, axis):
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (grid - lo).reshape([-1 if d == axis % x.ndim else 1 for d in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _bilinear(x, out_h, out_w, mode):
    y = _lerp_axis(x.astype(np.float64), _grid(x.shape[-2], out_h, mode), -2)
    return _lerp_axis(y, _grid(x.shape[-1], out_w, mode), -1)


@op("upsample_bilinear")
def _upsample_bilinear(a):
    x = a.x
    sh, sw = a.scalar("scale_factor_height", 1), a.scalar("scale_factor_width", 1)
    align = bool(a.scalar("align_corners", True))
    half = bool(a.scalar("half_pixel_centers", not align))
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    return _bilinear(x, int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)), mode)


@op("resize_bilinear")
def _resize_bilinear(a):
    return _bilinear(
        a.x,
        int(a.scalar("target_size_height", 1)),
        int(a.scalar("target_size_width", 1)),
        a.scalar("sampling_mode", "DEFAULT"),
    )


def _nearest(x, out_h, out_w):
    rows = np.minimum(np.floor(np.arange(out_h) * x.shape[-2] / out_h).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(out_w) * x.shape[-1] / out_w).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


@op("upsample_nearest_neighbor")
def _upsample_nearest(a):
    x = a.x
    sh, sw = a.scalar("scale_factor_height", 1), a.scalar("scale_factor_width", 1)
    return _nearest(x, int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)))


@op("resize_nearest_neighbor")
def _resize_nearest(a):
    return _nearest(a.x, int(a.scalar("target_size_height")), int(a.scalar("target_size_width")))


@op("crop")
def _crop(a):
    x, (t, b), (left, r) = a.x, a.ints("crop_height"), a.ints("crop_width")
    return x[..., t : x.shape[-2] - b, left : x.shape[-1] - r]


@op("crop_resize")
def _crop_resize(a):
    """Bilinear crops of NCHW x. iOS15/16: roi [N, 1, 4|5, 1, 1] -> [N, B|1, C, th, tw];
    iOS17: boxes [N, 4] (+ box_indices) -> [N, C, th, tw]. Only the align-corners grids, which
    is what coremltools emits (TF CropAndResize, ExtractImagePatches)."""
    x = a.x.astype(np.float64)
    th, tw = int(a.scalar("target_height", 1)), int(a.scalar("target_width", 1))
    mode = a.scalar("box_coordinate_mode", "CORNERS_HEIGHT_FIRST")
    sampling = a.scalar("sampling_mode", "DEFAULT")
    if sampling not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        raise MilEvalError(f"crop_resize sampling_mode {sampling} is not supported")
    scale, pad_value = float(a.scalar("spatial_scale", 1.0)), float(a.scalar("pad_value", 0.0))
    b, _, h, w = x.shape
    if "boxes" in a.op.inputs:
        boxes = a.boxes.reshape(-1, 4).astype(np.float64)
        idx = a.get("box_indices")
        idx = np.arange(len(boxes)) if idx is None else idx.reshape(-1)
        jobs = [([int(i)], box) for i, box in zip(idx, boxes)]
    else:
        roi = a.roi.reshape(a.roi.shape[0], -1).astype(np.float64)
        jobs = [([int(r[0])] if r.size == 5 else list(range(b)), r[-4:]) for r in roi]
    outs = []
    for images, box in jobs:
        c = box * scale
        if mode.startswith("CENTER_SIZE"):
            c = np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])
        y1, x1, y2, x2 = c if mode.endswith("HEIGHT_FIRST") else c[[1, 0, 3, 2]]
        if a.scalar("normalized_coordinates", False):
            y1, y2, x1, x2 = y1 * (h - 1), y2 * (h - 1), x1 * (w - 1), x2 * (w - 1)
        ys = _crop_grid(y1, y2, th, sampling == "STRICT_ALIGN_CORNERS")
        xs = _crop_grid(x1, x2, tw, sampling == "STRICT_ALIGN_CORNERS")
        outs.append(np.stack([_sample(x[i], ys, xs, pad_value) for i in images]))
    out = np.stack(outs)
    return out[:, 0] if "boxes" in a.op.inputs else out


def _crop_grid(lo, hi, n, strict):
    if n == 1:
        return np.array([lo if strict else (lo + hi) / 2])
    return lo + np.arange(n) * (hi - lo) / (n - 1)


def _sample(img, ys, xs, pad_value):
    c, h, w = img.shape
    out = np.full((c, ys.size, xs.size), pad_value)
    vy, vx = (ys >= 0) & (ys <= h - 1), (xs >= 0) & (xs <= w - 1)
    y, x = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = img[:, y0][:, :, x0] * (1 - fx) + img[:, y0][:, :, x1] * fx
    bottom = img[:, y1][:, :, x0] * (1 - fx) + img[:, y1][:, :, x1] * fx
    val = top * (1 - fy) + bottom * fy
    mask = vy[:, None] & vx[None, :]
    out[:, mask] = val[:, mask]
    return out
