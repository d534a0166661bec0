"""Numpy references of custom TFLite ops the runtime lacks (MediaPipe's; TF's MaxPool3D /
AvgPool3D); their options are decoded by tflite.custom_options.

Each function follows mediapipe/util/tflite/operations/<op>.cc step by step, in float32 as the
C++ does. They stand in for the runtime where ai-edge-litert lacks the op (segmented.py runs the
rest of the model in TFLite) and they are what the Keras layers of these ops are tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tfl_rebuild.tflite.custom_options import (
    OptionsError,
    Pool3DOptions,
    PoolOptions,
    TransformMatrixOptions,
    TransformMatrixV1Options,
    compute_padding,
    pool3d_options,
    pool_options,
    pool_output_size,
    transform_landmarks_options,
    transform_matrix_options,
    transform_tensor_options,
    transpose_conv_options,
)

F32 = np.float32


_CLAMP = {"relu": (0.0, None), "relu_n1_to_1": (-1.0, 1.0), "relu6": (0.0, 6.0)}


def _clamp(x: np.ndarray, activation: str) -> np.ndarray:
    lo, hi = _CLAMP.get(activation, (None, None))
    return x if lo is None else np.clip(x, lo, hi if hi is not None else np.inf).astype(F32)


def max_pool_argmax(x: np.ndarray, o: PoolOptions) -> tuple[np.ndarray, np.ndarray]:
    """(max, index) per window: index = max_y * filter_width + max_x + 0.1 (a float, as MediaPipe
    stores it), the first maximum in row-major window order; padding never wins."""
    x = np.asarray(x, F32)
    b, h, w, c = x.shape
    (sh, sw), (fh, fw) = o.stride, o.filter
    oh, ow = pool_output_size(h, fh, sh, o.padding), pool_output_size(w, fw, sw, o.padding)
    ph, pw = compute_padding(sh, h, fh, oh), compute_padding(sw, w, fw, ow)
    full_h, full_w = (oh - 1) * sh + fh, (ow - 1) * sw + fw
    padded = np.full((b, max(full_h, ph + h), max(full_w, pw + w), c), -np.inf, F32)
    padded[:, ph : ph + h, pw : pw + w] = x
    windows = np.stack(
        [
            padded[:, ky : ky + (oh - 1) * sh + 1 : sh, kx : kx + (ow - 1) * sw + 1 : sw]
            for ky in range(fh)
            for kx in range(fw)
        ]
    )  # [fh*fw, b, oh, ow, c]
    best = windows.max(axis=0)
    index = np.argmax(windows == best, axis=0)  # first window position holding the maximum
    return _clamp(best, o.activation), (index.astype(F32) + F32(0.1))


def pool3d(x: np.ndarray, o: Pool3DOptions, kind: str) -> np.ndarray:
    """MaxPool3D / AvgPool3D on NDHWC: windows over the valid (unpadded) elements only, so a SAME
    average divides by the count of real elements, as the kernel's filter_count does."""
    x = np.asarray(x, F32)
    spatial = x.shape[1:4]
    out = [pool_output_size(n, f, s, o.padding) for n, f, s in zip(spatial, o.filter, o.stride)]
    pad = [compute_padding(s, n, f, m) for s, n, f, m in zip(o.stride, spatial, o.filter, out)]
    full = [max((m - 1) * s + f, p + n) for m, s, f, p, n in zip(out, o.stride, o.filter, pad, spatial)]
    fill = -np.inf if kind == "max" else 0.0
    padded = np.full((x.shape[0], *full, x.shape[4]), fill, F32)
    valid = np.zeros((1, *full, 1), F32)
    inner = (slice(None), *(slice(p, p + n) for p, n in zip(pad, spatial)), slice(None))
    padded[inner], valid[inner] = x, 1.0

    def windows(a: np.ndarray) -> np.ndarray:  # [kd*kh*kw, batch, od, oh, ow, c]
        return np.stack(
            [
                a[
                    :,
                    i : i + (out[0] - 1) * o.stride[0] + 1 : o.stride[0],
                    j : j + (out[1] - 1) * o.stride[1] + 1 : o.stride[1],
                    k : k + (out[2] - 1) * o.stride[2] + 1 : o.stride[2],
                ]
                for i in range(o.filter[0])
                for j in range(o.filter[1])
                for k in range(o.filter[2])
            ]
        )

    if kind == "max":
        return windows(padded).max(axis=0)
    count = windows(valid).sum(axis=0)
    return (windows(padded).astype(np.float64).sum(axis=0) / count).astype(F32)


def max_unpooling(x: np.ndarray, indices: np.ndarray, o: PoolOptions) -> np.ndarray:
    """Each input value goes to the window position its index names; the rest is zero."""
    x, indices = np.asarray(x, F32), np.asarray(indices, F32)
    b, h, w, c = x.shape
    (sh, sw), (fh, fw) = o.stride, o.filter
    oh, ow = h * fh, w * fw
    ph, pw = compute_padding(sh, oh, fh, h), compute_padding(sw, ow, fw, w)
    out = np.zeros((b, oh, ow, c), F32)
    idx = indices.astype(np.int64)  # C++ `int idx = float`: truncation toward zero
    # Same traversal order as the kernel, so overlapping windows keep its last-write-wins result.
    bb, yy, xx, cc = np.meshgrid(np.arange(b), np.arange(h), np.arange(w), np.arange(c), indexing="ij")
    mx = np.fmod(idx, fw)  # C++ % and / truncate toward zero, also for negative indices
    my = (idx - mx) // fw
    oy, ox = yy * sh - ph + my, xx * sw - pw + mx
    ok = (ox >= 0) & (ox < ow) & (oy >= 0) & (oy < oh)
    out[bb[ok], oy[ok], ox[ok], cc[ok]] = x[ok]
    return out


def transform_tensor_bilinear(
    x: np.ndarray, matrix: np.ndarray, out_hw: tuple[int, int], version: int
) -> np.ndarray:
    """Resample batch 0 of `x` at (M @ [out_x, out_y, 0, 1]) bilinearly; pixels mapped outside are 0.
    v2 adds the align-corners correction (sample at pixel centres)."""
    x, m = np.asarray(x, F32), np.asarray(matrix, F32).reshape(-1)
    _, h, w, c = x.shape
    oh, ow = out_hw
    xt, yt = m[0:4].copy(), m[4:8].copy()
    if version == 2:
        xt[3] = F32(np.float64(xt[3]) + xt[0] * 0.5 + xt[1] * 0.5 - 0.5)
        yt[3] = F32(np.float64(yt[3]) + yt[0] * 0.5 + yt[1] * 0.5 - 0.5)
    oy, ox = np.meshgrid(np.arange(oh, dtype=F32), np.arange(ow, dtype=F32), indexing="ij")
    tx = xt[0] * ox + xt[1] * oy + xt[2] * F32(0) + xt[3]
    ty = yt[0] * ox + yt[1] * oy + yt[2] * F32(0) + yt[3]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    fx, fy = np.floor(tx), np.floor(ty)
    img = x[0]

    def read(yi: np.ndarray, xi: np.ndarray) -> np.ndarray:
        ok = (yi >= 0) & (xi >= 0) & (yi < h) & (xi < w)
        v = img[np.clip(yi, 0, h - 1).astype(np.int64), np.clip(xi, 0, w - 1).astype(np.int64)]
        return np.where(ok[..., None], v, F32(0))

    q11, q21 = read(fy, fx), read(fy, fx + 1)
    q12, q22 = read(fy + 1, fx), read(fy + 1, fx + 1)
    right, lower = (tx - fx)[..., None], (ty - fy)[..., None]
    upper_row = (1 - right) * q11 + right * q21
    lower_row = (1 - right) * q12 + right * q22
    out = lower * lower_row + (1 - lower) * upper_row
    return np.where(inside[..., None], out, F32(0)).astype(F32)[None]


def transform_landmarks(
    landmarks: np.ndarray, matrix: np.ndarray, dims: int, scale: float = 1.0
) -> np.ndarray:
    """x, y <- first two rows of M (translation times `scale`) applied to (x, y, 0, 1); z is kept."""
    lm, m = np.asarray(landmarks, F32), np.asarray(matrix, F32).reshape(-1)
    pts = lm.reshape(-1, dims)
    x, y = pts[:, 0], pts[:, 1]
    out = pts.copy()
    out[:, 0] = m[0] * x + m[1] * y + m[2] * F32(0) + m[3] * F32(scale)
    out[:, 1] = m[4] * x + m[5] * y + m[6] * F32(0) + m[7] * F32(scale)
    return out.reshape(lm.shape)


def _mat4(*rows: float) -> np.ndarray:
    return np.array(rows, F32).reshape(4, 4)


def landmarks_to_transform_matrix(landmarks: np.ndarray, o: TransformMatrixOptions) -> np.ndarray:
    """v2: the [1, 4, 4] matrix mapping output-crop pixels to input coordinates: a crop around the
    subset's bounding box in the frame rotated so that left->right landmarks point at the target angle."""
    lm = np.asarray(landmarks, F32).reshape(-1, 3)
    left, right = lm[o.left_rotation_idx], lm[o.right_rotation_idx]
    rotation = F32(o.target_rotation_radians) - np.arctan2(right[1] - left[1], right[0] - left[0], dtype=F32)
    r = F32(rotation)
    cr, sr = np.cos(r, dtype=F32), np.sin(r, dtype=F32)
    pts = lm[o.points][:, :2]
    rx, ry = cr * pts[:, 0] - sr * pts[:, 1], sr * pts[:, 0] + cr * pts[:, 1]
    xmax, xmin, ymax, ymin = rx.max(), rx.min(), ry.max(), ry.min()
    width, height = xmax - xmin, ymax - ymin
    mx, my = (xmin + xmax) / F32(2), (ymin + ymax) / F32(2)
    ci, si = np.cos(-r, dtype=F32), np.sin(-r, dtype=F32)
    crop_x, crop_y = ci * mx - si * my, si * mx + ci * my
    t = _mat4(1, 0, 0, crop_x, 0, 1, 0, crop_y, 0, 0, 1, 0, 0, 0, 0, 1)
    t = t @ _mat4(ci, -si, 0, 0, si, ci, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1)
    sx = F32(o.scale_x) * width / F32(o.output_width)
    sy = F32(o.scale_y) * height / F32(o.output_height)
    t = t @ _mat4(sx, 0, 0, 0, 0, sy, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1)
    t = t @ _mat4(1, 0, 0, -o.output_width / 2.0, 0, 1, 0, -o.output_height / 2.0, 0, 0, 1, 0, 0, 0, 0, 1)
    return t.astype(F32)[None]


def _mat3(*rows: float) -> np.ndarray:
    return np.array(rows, F32).reshape(3, 3)


def landmarks_to_transform_matrix_v1(landmarks: np.ndarray, o: TransformMatrixV1Options) -> np.ndarray:
    """v1: the same idea in relative coordinates: to_absolute * rotation * scale * to_relative."""
    lm = np.asarray(landmarks, F32).reshape(-1, 3)
    left, right = lm[o.left_rotation_idx], lm[o.right_rotation_idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = -np.arctan((right[1] - left[1]) / (right[0] - left[0]), dtype=F32)
    ca, sa = np.cos(alpha, dtype=F32), np.sin(alpha, dtype=F32)
    pts = lm[o.points][:, :2]
    rx, ry = pts[:, 0] * ca - pts[:, 1] * sa, pts[:, 0] * sa + pts[:, 1] * ca
    x_max, y_max = max(F32(-100000), rx.max()), max(F32(-100000), ry.max())
    x_min, y_min = min(F32(100000), rx.min()), min(F32(100000), ry.min())
    lr, mult = F32(o.landmarks_range), F32(o.bbox_size_multiplier)
    scale = _mat3((x_max - x_min) * mult / lr, 0, 0, 0, (y_max - y_min) * mult / lr, 0, 0, 0, 1)
    mx, my = (x_max + x_min) / F32(2), (y_max + y_min) / F32(2)
    ci, si = np.cos(-alpha, dtype=F32), np.sin(-alpha, dtype=F32)
    rmx, rmy = mx * ci - my * si, mx * si + my * ci
    rotation = _mat3(ci, -si, rmx / lr * 2 - 1, si, ci, rmy / lr * 2 - 1, 0, 0, 1)
    (oh, ow), (ih, iw) = o.output_hw, o.input_hw
    to_relative = _mat3(2 / (ow - 1), 0, -1, 0, 2 / (oh - 1), -1, 0, 0, 1)
    to_absolute = _mat3((iw - 1) / 2, 0, (iw - 1) / 2, 0, (ih - 1) / 2, (ih - 1) / 2, 0, 0, 1)
    m = ((to_absolute @ rotation) @ scale) @ to_relative
    return np.array(
        [
            [m[0, 0], m[0, 1], 0, m[0, 2]],
            [m[1, 0], m[1, 1], 0, m[1, 2]],
            [m[2, 0], m[2, 1], m[2, 2], 0],
            [0, 0, 0, 1],
        ],
        F32,
    )[None]


def transpose_conv_bias(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray,
    padding: str,
    stride: tuple[int, int],
    out_shape: Sequence[int],
) -> np.ndarray:
    """TFLite TRANSPOSE_CONV (weights [O, kh, kw, I]) plus a bias: every input pixel scatters its
    kernel-weighted copy; the full result is cropped by the SAME padding."""
    x, wt = np.asarray(x, F32), np.asarray(weights, F32)
    b, h, w, _ = x.shape
    o, kh, kw, _ = wt.shape
    sh, sw = stride
    oh, ow = int(out_shape[1]), int(out_shape[2])
    ph = compute_padding(sh, oh, kh, h) if padding == "same" else 0
    pw = compute_padding(sw, ow, kw, w) if padding == "same" else 0
    full = np.zeros((b, max((h - 1) * sh + kh, ph + oh), max((w - 1) * sw + kw, pw + ow), o), np.float64)
    contrib = np.einsum("bhwi,oyxi->bhwyxo", x.astype(np.float64), wt.astype(np.float64))
    for ky in range(kh):
        for kx in range(kw):
            full[:, ky : ky + (h - 1) * sh + 1 : sh, kx : kx + (w - 1) * sw + 1 : sw] += contrib[
                :, :, :, ky, kx
            ]
    out = full[:, ph : ph + oh, pw : pw + ow] + np.asarray(bias, np.float64).reshape(-1)
    return out.astype(F32)


# -- dispatch ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpCall:
    """What a reference needs to know about one custom op in a model."""

    code: str
    version: int
    options: bytes
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    what: str  # for messages: "<code> op <index>"


Reference = Callable[[OpCall, list[np.ndarray]], list[np.ndarray]]
REFERENCES: dict[str, Reference] = {}  # custom code -> its numpy reference, registered by `reference`


def reference(*codes: str) -> Callable[[Reference], Reference]:
    """Register `fn` as the numpy reference of these custom codes (each next to its function)."""

    def register(fn: Reference) -> Reference:
        for code in codes:
            if code in REFERENCES:
                raise RuntimeError(f"reference for custom op {code} registered twice")
            REFERENCES[code] = fn
        return fn

    return register


@reference("MaxPoolingWithArgmax2D")
def _mp_pool(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    return list(max_pool_argmax(ins[0], pool_options(call.options, call.what)))


@reference("MaxUnpooling2D")
def _mp_unpool(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    return [max_unpooling(ins[0], ins[1], pool_options(call.options, call.what))]


@reference("TransformTensorBilinear")
def _mp_bilinear(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    out_hw = transform_tensor_options(call.options, call.version, call.what)
    return [transform_tensor_bilinear(ins[0], ins[1], out_hw, call.version)]


@reference("TransformLandmarks")
def _mp_landmarks(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    dims, scale = transform_landmarks_options(call.options, call.version, ins[0].shape, call.what)
    return [transform_landmarks(ins[0], ins[1], dims, scale)]


@reference("Landmarks2TransformMatrix")
def _mp_matrix(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    o = transform_matrix_options(call.options, call.version, ins[0].size // 3, call.what)
    if isinstance(o, TransformMatrixV1Options):
        return [landmarks_to_transform_matrix_v1(ins[0], o)]
    return [landmarks_to_transform_matrix(ins[0], o)]


@reference("Convolution2DTransposeBias")
def _mp_deconv(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
    padding, stride = transpose_conv_options(call.options, call.what)
    return [transpose_conv_bias(ins[0], ins[1], ins[2], padding, stride, call.output_shapes[0])]


def _pool3d(kind: str) -> Reference:
    def run(call: OpCall, ins: list[np.ndarray]) -> list[np.ndarray]:
        if ins[0].ndim != 5:
            raise OptionsError(
                f"{call.what}: input of shape {list(ins[0].shape)}, the kernel needs 5-D NDHWC"
            )
        return [pool3d(ins[0], pool3d_options(call.options, call.what), kind)]

    return run


reference("MaxPool3D")(_pool3d("max"))
reference("AvgPool3D", "AveragePool3D")(_pool3d("avg"))


def run_reference(call: OpCall, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The op's outputs from its inputs (float32 arrays), via its numpy reference."""
    fn = REFERENCES.get(call.code)
    if fn is None:
        raise OptionsError(f"{call.what}: no numpy reference for custom op {call.code}")
    return fn(call, [np.asarray(v) for v in inputs])
