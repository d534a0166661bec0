"""Constant tensors on demand: dequantized, densified, and moved to Keras layout.

Everything here returns new arrays; the IR's views into the file are never written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import numpy as np

from tfl_rebuild.errors import ModelFormatError
from tfl_rebuild.fileio import atomic_output
from tfl_rebuild.tflite.ir import Model, Operator, Subgraph, Tensor

# Dense outputs larger than this are refused: a hostile sparsity block must not exhaust memory.
MAX_DENSE_ELEMENTS = 1 << 31


def unpack_int4(packed: np.ndarray, count: int) -> np.ndarray:
    """TFLite's packed int4 (two values a byte, the low nibble first) -> `count` int8 values."""
    b = np.asarray(packed, np.uint8).reshape(-1)
    nibbles = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def typed(t: Tensor) -> np.ndarray:
    """A dense constant's values in its shape: int4 unpacked to int8, bfloat16 as its uint16 bits
    (the reader keeps both as raw bytes); other types as read."""
    data = np.asarray(t.data)
    if t.dtype not in ("int4", "bfloat16"):
        return data
    data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)  # the bytes, whatever array holds them
    n = int(np.prod(t.shape, dtype=np.int64))
    want = (n + 1) // 2 if t.dtype == "int4" else 2 * n
    if any(d < 0 for d in t.shape) or data.size != want:
        raise ModelFormatError(
            f"tensor {t.name!r}: {data.size} bytes do not hold shape {list(t.shape)} {t.dtype}"
        )
    if t.dtype == "int4":
        return unpack_int4(data, n).reshape(t.shape)
    return data.view("<u2").reshape(t.shape)


def densify(t: Tensor) -> np.ndarray:
    """Expand a sparse constant (TFLite sparsity parameters) to its dense array.

    Follows TFLite's FormatConverter: levels in traversal order, each DENSE (all `dense_size`
    positions) or SPARSE_CSR (segments/indices); block dimensions come after the original ones
    and are folded back into the dimension named by `block_map`. Vectorized level by level.
    """
    sp = t.sparsity
    if sp is None:
        return typed(t)
    if t.dtype in ("int4", "bfloat16"):
        raise ModelFormatError(f"tensor {t.name!r}: sparse {t.dtype} constants are not supported")
    shape, rank = tuple(t.shape), len(t.shape)
    order, block_map, dims = sp.traversal_order, sp.block_map, sp.dim_metadata
    total = int(np.prod(shape, dtype=np.int64))
    if (
        len(order) != len(dims)
        or len(order) != rank + len(block_map)
        or sorted(order) != list(range(len(order)))
    ):
        raise ModelFormatError(f"tensor {t.name!r}: inconsistent sparsity (traversal order {list(order)})")
    if total > MAX_DENSE_ELEMENTS:
        raise ModelFormatError(f"tensor {t.name!r}: dense shape {list(shape)} is too large to densify")
    if any(b < 0 or b >= rank for b in block_map):
        raise ModelFormatError(f"tensor {t.name!r}: block map {list(block_map)} names a missing dimension")

    # Expand every path through the levels; `prev` is the index the next level's metadata uses.
    values = np.asarray(t.data).reshape(-1)

    def check_fits(level: int, n: int) -> None:
        """The paths after a level must fit the next CSR level's segments, or else the packed values:
        refused before expanding (a few bytes of metadata could otherwise ask for gigabytes)."""
        csr = next((d for d in dims[level + 1 :] if d.format != "DENSE"), None)
        cap = (
            values.size if csr is None else (0 if csr.array_segments is None else csr.array_segments.size - 1)
        )
        if n > cap:
            raise ModelFormatError(
                f"tensor {t.name!r}: sparsity level {level} expands to {n} entries, more than the {cap} "
                "the packed data holds"
            )

    prev = np.zeros(1, np.int64)
    coords: list[np.ndarray] = []
    for level, md in enumerate(dims):
        if md.format == "DENSE":
            size = md.dense_size
            if size < 0 or prev.size * max(size, 1) > total:
                raise ModelFormatError(f"tensor {t.name!r}: sparsity level {level} is larger than the tensor")
            check_fits(level, prev.size * size)
            coords = [np.repeat(c, size) for c in coords]
            idx = np.tile(np.arange(size, dtype=np.int64), prev.size)
            prev = np.repeat(prev, size) * size + idx
        else:
            seg, ind = md.array_segments, md.array_indices
            if seg is None or ind is None or prev.size and (prev.max() + 1 >= seg.size):
                raise ModelFormatError(f"tensor {t.name!r}: sparsity level {level} segments are too short")
            start, stop = seg[prev], seg[prev + 1]
            counts = stop - start
            if (counts < 0).any() or (stop > ind.size).any() or counts.sum() > total:
                raise ModelFormatError(f"tensor {t.name!r}: sparsity level {level} segments are out of range")
            check_fits(level, int(counts.sum()))
            coords = [np.repeat(c, counts) for c in coords]
            # Positions start[i] .. stop[i]-1 for every path i, flattened in order.
            prev = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            idx = ind[prev]
        coords.append(idx)

    if prev.size != values.size:
        raise ModelFormatError(
            f"tensor {t.name!r}: sparsity describes {prev.size} values, buffer has {values.size}"
        )
    orig = [np.zeros(prev.size, np.int64) for _ in range(rank)]
    block_sizes = [dims[rank + k].dense_size for k in range(len(block_map))]
    for level, dim in enumerate(order):
        if dim < rank:
            orig[dim] = coords[level]
        else:
            k = dim - rank
            orig[block_map[k]] = orig[block_map[k]] * block_sizes[k] + coords[level]
    for d in range(rank):
        if orig[d].size and (orig[d].min() < 0 or orig[d].max() >= shape[d]):
            raise ModelFormatError(f"tensor {t.name!r}: sparse index out of range in dimension {d}")
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(orig)] = values
    return dense


def dequantize(t: Tensor, data: np.ndarray | None = None) -> np.ndarray:
    """float32 value of a constant: fp16/bf16 widened, quantized integers scaled per tensor/channel."""
    arr = densify(t) if data is None else data
    if t.dtype == "float16":
        return arr.astype(np.float32)
    if t.dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if t.quantized and np.issubdtype(arr.dtype, np.integer):
        q = t.quantization
        bshape = [1] * arr.ndim
        if q.per_channel and arr.ndim:
            bshape[q.quantized_dimension] = -1
        scale = q.scale.astype(np.float32).reshape(bshape) if arr.ndim else q.scale[0]
        zp = q.zero_point.reshape(bshape) if arr.ndim else q.zero_point[0]
        return ((arr.astype(np.int64) - zp).astype(np.float32) * scale).astype(np.float32)
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    return np.array(arr)


def value(t: Tensor, dequant: bool = True) -> np.ndarray:
    """A constant as a fresh array: densified, and dequantized unless asked not to."""
    if t.data is None:
        raise ModelFormatError(f"tensor {t.name!r} is not a constant")
    return dequantize(t) if dequant else densify(t).copy()


# Weight slot of each op whose kernel layout differs between TFLite and Keras.
KERNEL_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "TRANSPOSE_CONV": 1, "FULLY_CONNECTED": 1}


def to_keras_layout(arr: np.ndarray, op_type: str, in_channels: int | None = None) -> np.ndarray:
    """TFLite kernel -> Keras kernel (see the layout table in DESIGN.md). A kernel of another rank
    than its op takes (a corrupt file) is a ModelFormatError."""
    if op_type in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV") and arr.ndim != 4:
        raise ModelFormatError(f"{op_type} kernel of shape {list(arr.shape)}: a kernel has rank 4")
    if op_type == "FULLY_CONNECTED" and arr.ndim < 1:
        raise ModelFormatError(f"{op_type} kernel of shape {list(arr.shape)}: a kernel has rank 2")
    if op_type == "CONV_2D":
        return np.ascontiguousarray(arr.transpose(1, 2, 3, 0))
    if op_type == "DEPTHWISE_CONV_2D":
        _, h, w, im = arr.shape
        i = in_channels or im
        if i <= 0 or im % i:
            raise ModelFormatError(
                f"depthwise kernel {list(arr.shape)} does not divide into {i} input channels"
            )
        return np.ascontiguousarray(arr.reshape(h, w, i, im // i))
    if op_type == "TRANSPOSE_CONV":
        return np.ascontiguousarray(arr.transpose(1, 2, 0, 3))
    if op_type == "FULLY_CONNECTED":
        return np.ascontiguousarray(arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:]))).T)
    return arr


def constant_source(sg: Subgraph, tensor_id: int, producers: dict[int, Operator]) -> Tensor | None:
    """The constant behind a tensor, looking through DEQUANTIZE/DENSIFY of constants."""
    seen = 0
    while tensor_id >= 0 and seen < 4:
        t = sg.tensors[tensor_id]
        if t.data is not None:
            return t
        op = producers.get(tensor_id)
        if op is None or op.opcode not in ("DEQUANTIZE", "DENSIFY") or not op.inputs:
            return None
        tensor_id, seen = op.inputs[0], seen + 1
    return None


def producers_of(sg: Subgraph) -> dict[int, Operator]:
    return {o: op for op in sg.operators for o in op.outputs if o >= 0}


def kernel_consumers(sg: Subgraph) -> dict[int, tuple[str, int | None]]:
    """Constant tensor id -> (op type, input channels) for constants used as conv/dense kernels."""
    producers = producers_of(sg)
    out = {}
    for op in sg.operators:
        slot = KERNEL_INPUT.get(op.opcode)
        if slot is None or len(op.inputs) <= slot:
            continue
        src = constant_source(sg, op.inputs[slot], producers)
        if src is not None:
            data_in = op.inputs[0]
            if op.opcode == "TRANSPOSE_CONV":  # output_shape, weights, input: -1 when it is missing
                data_in = op.inputs[2] if len(op.inputs) > 2 else -1
            in_ch = sg.tensors[data_in].shape[-1] if data_in >= 0 and sg.tensors[data_in].shape else None
            out[src.index] = (op.opcode, in_ch)
    return out


def unique_keys(names: list[str], taken: Iterable[str] = ()) -> list[str]:
    """Each name, or with `__1`, `__2` ... appended when an earlier one (or `taken`) has it."""
    seen: dict[str, int] = dict.fromkeys(taken, 0)
    keys = []
    for n in names:
        base = n or "tensor"
        k, i = base, seen.get(base, 0)
        while k in seen:
            i += 1
            k = f"{base}__{i}"
        seen[base] = i
        seen[k] = 0
        keys.append(k)
    return keys


# The .npz member holding [[key, tensor name], ...] when a key is not its tensor's name.
NAMES_MEMBER = "__names__"
# Characters no archive member name may hold: controls, and what some file systems refuse.
_UNSAFE_IN_MEMBER = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')


def safe_key(name: str) -> str:
    """A tensor name as a relative archive member path: '/'-separated parts that are neither empty,
    '.' nor '..' (so '../../x' -> 'x', '/etc/passwd' -> 'etc/passwd'), no control characters, no
    backslash or drive colon; cut where a zip member name must end (64 KiB)."""
    parts = [_UNSAFE_IN_MEMBER.sub("_", p).strip() for p in name.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return "/".join(parts)[:16000].strip("/") or "tensor"


def archive_keys(names: list[str]) -> list[str]:
    """Safe member keys for tensor names (see `safe_key`), unique even to a case-blind unzip (`__1`,
    `__2` ... appended), and never the manifest's name."""
    keys, seen = [], {NAMES_MEMBER.lower()}
    for name in names:
        base = safe_key(name)
        k, i = base, 0
        while k.lower() in seen:
            i += 1
            k = f"{base}__{i}"
        seen.add(k.lower())
        keys.append(k)
    return keys


def constant_arrays(model: Model, layout: str = "raw", dequantize: bool = False) -> dict[str, np.ndarray]:
    """Every constant of every subgraph, keyed by tensor name (made unique; subgraph prefix past 0).

    Sparse constants are always densified (their packed values mean nothing alone). With
    layout="keras", conv/dense kernels are transposed to Keras layout (and dequantized first).
    """
    names, values = _constants(model, layout, dequantize)
    return dict(zip(unique_keys(names), values))


def _constants(model: Model, layout: str, dequantize: bool) -> tuple[list[str], list[np.ndarray]]:
    names, values = [], []
    for sg in model.subgraphs:
        kernels = kernel_consumers(sg) if layout == "keras" else {}
        prefix = "" if sg.index == 0 else f"subgraph{sg.index}/"
        for t in sg.tensors:
            if t.data is None or t.dtype in ("string", "resource", "variant"):
                continue
            kernel = kernels.get(t.index)
            arr = value(t, dequant=dequantize or kernel is not None)
            if kernel is not None:
                try:
                    arr = to_keras_layout(arr, *kernel)
                except ModelFormatError as exc:
                    raise ModelFormatError(f"tensor {t.name!r}: {exc}") from None
            names.append(prefix + t.name)
            values.append(arr)
    return names, values


def export_weights(model: Model, path: str, layout: str = "raw", dequantize: bool = False) -> tuple[int, int]:
    """`constant_arrays` into one .npz. Keys are safe relative member names (`archive_keys`); when
    one is not its tensor's name (a name made safe, or made unique), the `__names__` member maps
    every key to its tensor name."""
    names, values = _constants(model, layout, dequantize)
    keys = archive_keys(names)
    arrays = dict(zip(keys, values))
    manifest = {}
    if keys != names:
        manifest[NAMES_MEMBER] = np.array([[k, n] for k, n in zip(keys, names)], dtype=str).reshape(-1, 2)
    write_npz_atomic(path, {**arrays, **manifest})
    return len(arrays), sum(a.nbytes for a in arrays.values())


def names_of(npz) -> dict[str, str]:
    """Archive key -> tensor name of an exported .npz (np.load's result): the manifest, else identity."""
    if NAMES_MEMBER in npz.files:
        return {str(k): str(n) for k, n in npz[NAMES_MEMBER]}
    return {k: k for k in npz.files}


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz, like np.savez, but any key works (np.savez takes keys as keyword
    arguments: a tensor named 'file' or 'allow_pickle' broke it) and nothing is pickled."""
    import zipfile

    with atomic_output(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
