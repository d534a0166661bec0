"""The in-memory form of a .tflite model: frozen dataclasses, no flatbuffers, no TensorFlow.

Constant data are numpy views into the memory-mapped file (read-only, zero copy); anything that
transforms them (dequantize, densify, relayout) lives in `weights.py` and returns a new array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads when a constant is first read: `inspect` of a float model never does
    import numpy as np

# TensorType enum of the schema -> numpy dtype name ("int4" stays packed as uint8 bytes).
TENSOR_TYPES: dict[int, str] = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
}
# Types whose buffers can be viewed directly as numpy arrays of the tensor's shape.
NUMPY_TYPES = frozenset(
    [
        "float32",
        "float16",
        "int32",
        "uint8",
        "int64",
        "bool",
        "int16",
        "complex64",
        "int8",
        "float64",
        "complex128",
        "uint64",
        "uint32",
        "uint16",
    ]
)
# Bytes per element of each numpy-viewable type (what np.dtype(name).itemsize says).
ITEMSIZE: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "int32": 4,
    "uint8": 1,
    "int64": 8,
    "bool": 1,
    "int16": 2,
    "complex64": 8,
    "int8": 1,
    "float64": 8,
    "complex128": 16,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
}


class MappedArray:
    """Where a constant's elements lie in the file: `count` items of numpy type `dtype` at byte
    `offset` of `storage` (the mapping), in `shape` (None: flat). The reader has checked that they
    fit; `Tensor.data` makes the zero-copy numpy view the first time someone reads it. (A plain
    slotted class: one is made per constant, at a tenth of a frozen dataclass's cost.)"""

    __slots__ = ("storage", "offset", "count", "dtype", "shape")

    def __init__(self, storage, offset: int, count: int, dtype: str, shape: tuple[int, ...] | None = None):
        self.storage, self.offset, self.count, self.dtype, self.shape = storage, offset, count, dtype, shape

    def __repr__(self) -> str:
        return (
            f"MappedArray(offset={self.offset}, count={self.count}, dtype={self.dtype!r}, shape={self.shape})"
        )

    @property
    def nbytes(self) -> int:
        return self.count * ITEMSIZE[self.dtype]

    def array(self) -> np.ndarray:
        import numpy as np

        view = np.frombuffer(self.storage, self.dtype, self.count, self.offset)
        return view if self.shape is None else view.reshape(self.shape)


class _ConstantData:
    """`Tensor.data`, a dataclass field that may hold a `MappedArray` until first read, then the
    array it makes (kept). `Tensor(data=array)` still takes an array; `is_constant` and `nbytes`
    answer without making one."""

    def __get__(self, obj, owner=None):
        if obj is None:
            return None  # the field's default, as dataclasses asks for it
        value = obj.__dict__["_data"]
        if isinstance(value, MappedArray):
            value = obj.__dict__["_data"] = value.array()
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__["_data"] = None if value is self else value


@dataclass(frozen=True, eq=False)
class Quantization:
    scale: np.ndarray  # float32, one per channel (or one)
    zero_point: np.ndarray  # int64, same length as scale
    quantized_dimension: int = 0
    min: np.ndarray | None = None
    max: np.ndarray | None = None

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": [float(s) for s in self.scale],
            "zero_point": [int(z) for z in self.zero_point],
            "quantized_dimension": self.quantized_dimension,
        }


@dataclass(frozen=True, eq=False)
class DimensionMetadata:
    format: str  # "DENSE" | "SPARSE_CSR"
    dense_size: int = 0
    array_segments: np.ndarray | None = None
    array_indices: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Sparsity:
    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    dim_metadata: tuple[DimensionMetadata, ...]


@dataclass(frozen=True, eq=False)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy name, or "string"/"resource"/"variant"/"int4"/"bfloat16"
    buffer: int
    shape_signature: tuple[int, ...] | None = None
    is_variable: bool = False
    quantization: Quantization | None = None
    sparsity: Sparsity | None = None
    # Constant contents: a read-only view into the file (for sparse tensors: the packed values),
    # made on first read from the reader's MappedArray.
    data: np.ndarray | None = field(default=_ConstantData(), repr=False)

    @property
    def is_constant(self) -> bool:
        return self.__dict__["_data"] is not None

    @property
    def quantized(self) -> bool:
        return self.quantization is not None and self.quantization.scale.size > 0

    @property
    def nbytes(self) -> int:
        value = self.__dict__["_data"]
        return 0 if value is None else int(value.nbytes)


@dataclass(frozen=True, eq=False)
class Operator:
    index: int
    opcode: str  # builtin name ("CONV_2D") or "CUSTOM"
    version: int
    inputs: tuple[int, ...]  # -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)  # decoded builtin options, plain values
    options_type: str | None = None  # e.g. "Conv2DOptions"
    custom_code: str | None = None
    custom_options: bytes = b""
    intermediates: tuple[int, ...] = ()

    @property
    def key(self) -> str:
        """What a user calls this op: the builtin name or the custom code."""
        return self.custom_code if self.opcode == "CUSTOM" and self.custom_code else self.opcode


@dataclass(frozen=True, eq=False)
class Subgraph:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]


@dataclass(frozen=True)
class SignatureDef:
    key: str
    subgraph_index: int
    inputs: tuple[tuple[str, int], ...]  # (signature name, tensor index)
    outputs: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class TensorInfo:
    """Descriptive metadata of one input or output, from the TFLITE_METADATA buffer."""

    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """The human-facing part of the TFLITE_METADATA buffer (tflite_support's ModelMetadata)."""

    name: str = ""
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    associated_files: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Model:
    path: str
    size: int
    version: int
    description: str
    subgraphs: tuple[Subgraph, ...]
    signatures: tuple[SignatureDef, ...]
    metadata: dict[str, bytes]  # metadata entry name -> buffer bytes
    min_runtime_version: str | None
    info: ModelInfo | None  # decoded TFLITE_METADATA, when present and readable
    external_buffers: bool  # some buffer lives outside the flatbuffer (Buffer.offset/size)
    flatbuffer_size: int  # where the flatbuffer ends (buffers appended after it start here)
    # The mapping the constant views point into; kept so the views stay valid.
    _storage: Any = field(default=None, repr=False)

    @cached_property
    def sha256(self) -> str:
        import hashlib
        import mmap

        # In 4 MiB steps, letting go of each hashed step of a mapped file: hashing must not leave
        # the whole model resident (`inspect` of a 2 GB model would otherwise hold 2 GB of RSS).
        h, step, storage = hashlib.sha256(), 1 << 22, self._storage
        with memoryview(storage) as view:
            for start in range(0, len(view), step):
                h.update(view[start : start + step])
                if isinstance(storage, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
                    storage.madvise(mmap.MADV_DONTNEED, start, min(step, len(view) - start))
        return h.hexdigest()

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    @property
    def name(self) -> str:
        from pathlib import Path

        return Path(self.path).stem if self.path else "model"
