"""Shape and data movement MIL ops: reshape, transpose, concat, split, slice, pad, tile, fill,
depth/space/batch rearrangements."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op


@op("reshape")
def _reshape(a):
    x, shape = a.x, a.ints("shape")
    if len(shape) == x.ndim:  # 0 copies the input's dimension
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("reshape_like")
def _reshape_like(a):
    x, refs = a.x, a.ref_tensors
    begins, ends = a.ints("begins"), a.ints("ends")
    end_masks = [bool(m) for m in np.asarray(a.end_masks).reshape(-1)]
    shape: list[int] = []
    for ref, b, e, m in zip(refs, begins, ends, end_masks):
        shape += list(ref.shape[b:] if m else ref.shape[b:e])
    return x.reshape(shape)


@op("transpose")
def _transpose(a):
    return np.transpose(a.x, a.ints("perm"))


@op("concat")
def _concat(a):
    values, axis = a.values, int(a.scalar("axis"))
    if a.scalar("interleave", False):
        parts = [np.split(v, v.shape[axis], axis=axis) for v in values]
        return np.concatenate([p for group in zip(*parts) for p in group], axis=axis)
    return np.concatenate(values, axis=axis)


@op("stack")
def _stack(a):
    return np.stack(a.values, axis=int(a.scalar("axis")))


@op("split")
def _split(a):
    x, axis = a.x, int(a.scalar("axis"))
    sizes = a.ints("split_sizes")
    if sizes is None:
        return tuple(np.split(x, int(a.scalar("num_splits")), axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@op("squeeze")
def _squeeze(a):
    axes = a.ints("axes")
    return np.squeeze(a.x, axis=None if axes is None else tuple(axes))


@op("expand_dims")
def _expand_dims(a):
    x, axes = a.x, a.ints("axes")
    rank = x.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = np.expand_dims(x, ax)
    return x


@op("slice_by_index")
def _slice_by_index(a):
    x = a.x
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * x.ndim)
    begin_mask = [bool(m) for m in a.ints("begin_mask", [0] * x.ndim)]
    end_mask = [bool(m) for m in a.ints("end_mask", [0] * x.ndim)]
    squeeze = [bool(m) for m in a.ints("squeeze_mask", [0] * x.ndim)]
    index = []
    for i in range(x.ndim):
        if squeeze[i]:
            index.append(begin[i])
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        index.append(slice(b, e, stride[i]))
    return x[tuple(index)]


@op("slice_by_size")
def _slice_by_size(a):
    x, begin, size = a.x, a.ints("begin"), a.ints("size")
    index = []
    for i, (b, s) in enumerate(zip(begin, size)):
        b = b % x.shape[i] if b < 0 else b
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


@op("tile")
def _tile(a):
    return np.tile(a.x, a.ints("reps"))


@op("reverse")
def _reverse(a):
    axes = a.ints("axes")
    return np.flip(a.x, axis=None if axes is None else tuple(axes))


@op("pad")
def _pad(a):
    x, p = a.x, a.ints("pad")
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = a.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=a.scalar("constant_val", 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@op("shape")
def _shape(a):
    return np.array(a.x.shape, np.int32)


@op("fill")
def _fill(a):
    return np.full(a.ints("shape"), a.scalar("value", 0.0))


@op("fill_like")
def _fill_like(a):
    return np.full(a.ref_tensor.shape, a.scalar("value", 0.0))


@op("range_1d")
def _range_1d(a):
    return np.arange(a.scalar("start"), a.scalar("end"), a.scalar("step"))


@op("depth_to_space")
def _depth_to_space(a):
    x, b = a.x, int(a.scalar("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)  # DCR, as TensorFlow
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("space_to_depth")
def _space_to_depth(a):
    x, b = a.x, int(a.scalar("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("space_to_batch")
def _space_to_batch(a):
    # TensorFlow's SpaceToBatchND in NCHW: batch index (i * bw + j) * n + k for block offset (i, j).
    x, (bh, bw) = a.x, a.ints("block_shape")
    pads = np.asarray(a.paddings).reshape(2, 2)
    x = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return y.reshape(bh * bw * n, c, h // bh, w // bw)


@op("batch_to_space")
def _batch_to_space(a):
    x, (bh, bw) = a.x, a.ints("block_shape")
    crops = np.asarray(a.crops).reshape(2, 2)
    b, c, h, w = x.shape
    n = b // (bh * bw)
    y = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return y[:, :, crops[0, 0] : h * bh - crops[0, 1], crops[1, 0] : w * bw - crops[1, 1]]


@op("pixel_shuffle")
def _pixel_shuffle(a):
    x, f = a.x, int(a.scalar("upscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)  # CRD, as PyTorch
    return y.reshape(n, c // (f * f), h * f, w * f)


@op("flatten2d")
def _flatten2d(a):
    x, axis = a.x, int(a.scalar("axis", 1)) % max(a.x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)
