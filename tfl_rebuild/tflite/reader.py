"""Read .tflite bytes into the IR (`ir.py`). The only module that touches flatbuffers (with
`metadata.py`, which it calls for tflite_support's metadata).

The file is memory-mapped and constant tensors are numpy views into the map. The flatbuffers
accessors do no bounds checking, so every length, index and offset read here is checked against
the file before it is used, and any low-level decoding fault is turned into a `ModelFormatError`
that says where in the model it happened.
"""

from __future__ import annotations

import importlib
import importlib.util
import mmap
import os
import re
import struct
import sys
import types
from functools import cache
from pathlib import Path

import flatbuffers
import numpy as np

from tfl_rebuild.errors import ModelFormatError
from tfl_rebuild.tflite.calls import call_faults
from tfl_rebuild.tflite.ir import (
    NUMPY_TYPES,
    TENSOR_TYPES,
    DimensionMetadata,
    Model,
    Operator,
    Quantization,
    SignatureDef,
    Sparsity,
    Subgraph,
    Tensor,
)
from tfl_rebuild.tflite.metadata import read_model_info, zip_text


class _LazyPackage(types.ModuleType):
    """The `tflite` package, registered without running its __init__ (which imports all ~190
    generated modules: a fifth of `inspect`'s start-up). `import tflite.Model` then loads just that
    module. The first attribute lookup on the package itself (tflite.ModelStart, tflite.Model) runs
    the real __init__, so every other user of `tflite` sees the usual package."""

    def __getattr__(self, name):
        if self.__class__ is _LazyPackage:
            self.__class__ = types.ModuleType
            self.__spec__.loader.exec_module(self)
            if name in self.__dict__:
                return self.__dict__[name]
        sub = sys.modules.get(f"{self.__name__}.{name}")
        if sub is not None:
            return sub
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        # The import system binds each loaded submodule on its package; the real __init__ rebinds
        # those names to the classes (tflite.Model is the class). Leave them to __getattr__.
        if isinstance(value, types.ModuleType) and name[:1].isupper():
            return
        super().__setattr__(name, value)


def _register_lazy_tflite() -> None:
    if "tflite" in sys.modules:
        return
    spec = importlib.util.find_spec("tflite")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _LazyPackage
    sys.modules["tflite"] = module


_register_lazy_tflite()

FILE_IDENTIFIER = b"TFL3"
# Options fields whose integer values are schema enums: decoded to their names for readability.
_ENUM_FIELDS = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "mode": "MirrorPadMode",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "type": "LSHProjectionType",
    "in_data_type": "TensorType",
    "out_data_type": "TensorType",
    "output_type": "TensorType",
    "idx_out_type": "TensorType",
    "quantized_bias_type": "TensorType",
}
_LOW_LEVEL_FAULTS = (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError)


@cache
def _enum_names(enum_class: str) -> dict[int, str]:
    cls = getattr(importlib.import_module(f"tflite.{enum_class}"), enum_class)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_name(code: int) -> str:
    return _enum_names("BuiltinOperator").get(code, f"BUILTIN_{code}")


def _snake(name: str) -> str:
    """FlatBuffers accessor name -> schema field name: DilationHFactor -> dilation_h_factor."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@cache
def _options_fields(class_name: str):
    """(snake name, accessor, is_vector) for each field of a generated options table class."""
    try:
        cls = getattr(importlib.import_module(f"tflite.{class_name}"), class_name)
    except (ImportError, AttributeError):
        return None, ()
    methods = {k for k, v in vars(cls).items() if callable(v) and not k.startswith("_")}
    fields = []
    for m in sorted(methods):
        if m == "Init" or m.startswith("GetRootAs") or m.endswith("BufferHasIdentifier"):
            continue
        if any(
            m.endswith(suffix) and m.removesuffix(suffix) in methods
            for suffix in ("Length", "IsNone", "AsNumpy")
        ):
            continue  # helpers of a vector field, not fields
        fields.append((_snake(m), m, f"{m}Length" in methods))
    return cls, tuple(fields)


class _Parser:
    def __init__(self, buf, path: str):
        self.buf = buf
        self.size = len(buf)
        self.path = path
        self.where = "model header"

    # -- checked primitives -------------------------------------------------------------------
    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {self.where}: {what}")

    def count(self, obj, field: str, elem_size: int = 4) -> int:
        """Length of a vector field, refused if the file cannot possibly hold that many elements."""
        n = getattr(obj, f"{field}Length")()
        if n < 0 or n * elem_size > self.size:
            raise self.fail(f"{_snake(field)} claims {n} elements, more than the {self.size}-byte file holds")
        return n

    def ints(self, obj, field: str, elem_size: int = 4) -> tuple[int, ...]:
        if self.count(obj, field, elem_size) == 0:
            return ()
        return tuple(int(v) for v in getattr(obj, f"{field}AsNumpy")())

    def index(self, i: int, limit: int, what: str, optional: bool = False) -> int:
        if (optional and i == -1) or 0 <= i < limit:
            return i
        raise self.fail(f"{what} index {i} is out of range (0..{limit - 1})")

    def string(self, raw) -> str:
        return raw.decode("utf-8", errors="replace") if raw else ""

    # -- model ----------------------------------------------------------------------------------
    def parse(self) -> dict:
        if self.size < 8:
            raise self.fail(f"file is {self.size} bytes, too short to be a TFLite model")
        if bytes(self.buf[:4]) == b"PK\x03\x04":
            raise self.fail(zip_text(self.buf))
        if bytes(self.buf[4:8]) != FILE_IDENTIFIER:
            raise self.fail(f"file identifier is {bytes(self.buf[4:8])!r}, not {FILE_IDENTIFIER!r}")
        root = struct.unpack_from("<I", self.buf, 0)[0]
        if not 8 <= root < self.size:
            raise self.fail(f"root table offset {root} lies outside the file")
        from tflite.Model import Model as FbModel

        try:
            return self._parse_model(FbModel.GetRootAs(self.buf, 0))
        except _LOW_LEVEL_FAULTS as exc:
            raise self.fail(f"malformed flatbuffer ({type(exc).__name__}: {exc})") from None
        except RecursionError:
            raise self.fail("malformed flatbuffer (nesting too deep)") from None

    def _parse_model(self, fb) -> dict:
        self.where = "operator codes"
        opcodes = []
        for j in range(self.count(fb, "OperatorCodes")):
            oc = fb.OperatorCodes(j)
            # The raw builtin_code field: tflite's BuiltinCode() substitutes the deprecated field
            # whenever builtin_code < 127, which misreads files that set only builtin_code.
            o = oc._tab.Offset(10)
            raw = oc._tab.Get(flatbuffers.number_types.Int32Flags, o + oc._tab.Pos) if o else 0
            code = max(int(raw), int(oc.DeprecatedBuiltinCode()))
            custom = self.string(oc.CustomCode()) or None
            opcodes.append((builtin_op_name(code), max(1, int(oc.Version())), custom))

        self.where = "buffers"
        buffers, external = [], False
        for j in range(self.count(fb, "Buffers")):
            self.where = f"buffer {j}"
            b = fb.Buffers(j)
            off, size = int(b.Offset()), int(b.Size())
            if off > 1:  # stored outside the flatbuffer (models over 2 GB); offset from file start
                if off + size > self.size:
                    raise self.fail(f"external data [{off}, {off + size}) lies past the end of the file")
                buffers.append((off, size))
                external = True
            elif n := self.count(b, "Data", 1):
                start = b._tab.Vector(b._tab.Offset(4))  # absolute position of the bytes
                if start + n > self.size:
                    raise self.fail(f"data [{start}, {start + n}) lies past the end of the file")
                buffers.append((start, n))
            else:
                buffers.append(None)

        self.where = "metadata"
        metadata: dict[str, bytes] = {}
        for j in range(self.count(fb, "Metadata")):
            md = fb.Metadata(j)
            bi = self.index(int(md.Buffer()), len(buffers), "metadata buffer")
            span = buffers[bi]
            metadata[self.string(md.Name())] = bytes(self.buf[span[0] : span[0] + span[1]]) if span else b""

        self.where = "subgraphs"
        subgraphs = tuple(
            self._parse_subgraph(fb.Subgraphs(s), s, opcodes, buffers)
            for s in range(self.count(fb, "Subgraphs"))
        )
        if not subgraphs:
            raise self.fail("model has no subgraphs")
        self._check_calls(subgraphs)

        signatures = []
        self.where = "signature defs"
        for j in range(self.count(fb, "SignatureDefs")):
            self.where = f"signature def {j}"
            sd = fb.SignatureDefs(j)
            sg = self.index(int(sd.SubgraphIndex()), len(subgraphs), "signature subgraph")
            n_t = len(subgraphs[sg].tensors)

            def tensor_map(kind, sd=sd, n_t=n_t):
                out = []
                for k in range(self.count(sd, kind)):
                    tm = getattr(sd, kind)(k)
                    out.append(
                        (self.string(tm.Name()), self.index(int(tm.TensorIndex()), n_t, "signature tensor"))
                    )
                return tuple(out)

            signatures.append(
                SignatureDef(self.string(sd.SignatureKey()), sg, tensor_map("Inputs"), tensor_map("Outputs"))
            )

        flat_end = min((b[0] for b in buffers if b and external and b[0] > 0), default=self.size)
        return dict(
            version=int(fb.Version()),
            description=self.string(fb.Description()),
            subgraphs=subgraphs,
            signatures=tuple(signatures),
            metadata=metadata,
            min_runtime_version=metadata["min_runtime_version"].rstrip(b"\0").decode("ascii", "replace")
            if "min_runtime_version" in metadata
            else None,
            info=read_model_info(metadata["TFLITE_METADATA"]) if "TFLITE_METADATA" in metadata else None,
            external_buffers=external,
            flatbuffer_size=flat_end if external else self.size,
        )

    def _check_calls(self, subgraphs) -> None:
        for where, what in call_faults(subgraphs):
            self.where = where
            raise self.fail(what)

    def _parse_subgraph(self, sg, s: int, opcodes, buffers) -> Subgraph:
        self.where = f"subgraph {s}"
        tensors = tuple(
            self._parse_tensor(sg.Tensors(t), t, s, buffers) for t in range(self.count(sg, "Tensors"))
        )
        n_t = len(tensors)
        self.where = f"subgraph {s}"
        inputs = tuple(self.index(i, n_t, "input tensor") for i in self.ints(sg, "Inputs"))
        outputs = tuple(self.index(i, n_t, "output tensor") for i in self.ints(sg, "Outputs"))
        operators = []
        for o in range(self.count(sg, "Operators")):
            self.where = f"subgraph {s} operator {o}"
            op = sg.Operators(o)
            name, version, custom = opcodes[self.index(int(op.OpcodeIndex()), len(opcodes), "opcode")]
            options_type, options = self._options(op)
            custom_opts = b""
            if self.count(op, "CustomOptions", 1):
                custom_opts = op.CustomOptionsAsNumpy().tobytes()
            elif int(op.LargeCustomOptionsSize()) > 0:
                off, size = int(op.LargeCustomOptionsOffset()), int(op.LargeCustomOptionsSize())
                if off + size > self.size:
                    raise self.fail(
                        f"large custom options [{off}, {off + size}) lie past the end of the file"
                    )
                custom_opts = bytes(self.buf[off : off + size])
            operators.append(
                Operator(
                    index=o,
                    opcode=name,
                    version=version,
                    inputs=tuple(
                        self.index(i, n_t, "operator input", optional=True) for i in self.ints(op, "Inputs")
                    ),
                    outputs=tuple(
                        self.index(i, n_t, "operator output", optional=True) for i in self.ints(op, "Outputs")
                    ),
                    intermediates=tuple(
                        self.index(i, n_t, "intermediate") for i in self.ints(op, "Intermediates")
                    ),
                    options=options,
                    options_type=options_type,
                    custom_code=custom,
                    custom_options=custom_opts,
                )
            )
        return Subgraph(s, self.string(sg.Name()), inputs, outputs, tensors, tuple(operators))

    def _options(self, op) -> tuple[str | None, dict]:
        for type_field, table_field, enum in (
            ("BuiltinOptionsType", "BuiltinOptions", "BuiltinOptions"),
            ("BuiltinOptions2Type", "BuiltinOptions2", "BuiltinOptions2"),
        ):
            kind = int(getattr(op, type_field)())
            if kind == 0:
                continue
            class_name = _enum_names(enum).get(kind)
            table = getattr(op, table_field)()
            if class_name is None or table is None:
                return class_name, {}
            cls, fields = _options_fields(class_name)
            if cls is None:
                return class_name, {}
            obj = cls()
            obj.Init(table.Bytes, table.Pos)
            out = {}
            for snake, method, is_vector in fields:
                if is_vector:
                    n = self.count(obj, method)
                    value = [_plain(getattr(obj, method)(j)) for j in range(n)]
                else:
                    try:
                        value = _plain(getattr(obj, method)())
                    except TypeError:  # nested table/union accessor needing arguments: not decoded
                        continue
                if value is None:
                    continue
                if snake in _ENUM_FIELDS and isinstance(value, int):
                    value = _enum_names(_ENUM_FIELDS[snake]).get(value, value)
                out[snake] = value
            return class_name, out
        return None, {}

    def _parse_tensor(self, t, idx: int, s: int, buffers) -> Tensor:
        self.where = f"subgraph {s} tensor {idx}"
        shape = self.ints(t, "Shape")
        if any(d < -1 for d in shape):
            raise self.fail(f"shape {list(shape)} has a negative dimension")
        dtype = TENSOR_TYPES.get(int(t.Type()))
        if dtype is None:
            raise self.fail(f"unknown tensor type {int(t.Type())}")
        bi = self.index(int(t.Buffer()), max(len(buffers), 1), "buffer")
        quant = self._quantization(t.Quantization(), shape)
        sparsity = self._sparsity(t.Sparsity())
        name = self.string(t.Name())
        data = None
        span = buffers[bi] if bi < len(buffers) else None
        if span is not None:
            off, nbytes = span
            if sparsity is not None or dtype not in NUMPY_TYPES:
                np_dtype = np.dtype(dtype) if dtype in NUMPY_TYPES else np.dtype(np.uint8)
                if nbytes % np_dtype.itemsize:
                    raise self.fail(f"buffer {bi} size {nbytes} is not a multiple of {np_dtype.itemsize}")
                data = np.frombuffer(self.buf, np_dtype, nbytes // np_dtype.itemsize, off)
            else:
                if any(d < 0 for d in shape):
                    raise self.fail(f"constant tensor has dynamic shape {list(shape)}")
                want = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                if want != nbytes:
                    raise self.fail(
                        f"buffer {bi} holds {nbytes} bytes, shape {list(shape)} {dtype} needs {want}"
                    )
                data = np.frombuffer(self.buf, dtype, int(np.prod(shape, dtype=np.int64)), off).reshape(shape)
        sig = self.ints(t, "ShapeSignature") or None
        return Tensor(
            index=idx,
            name=name,
            shape=shape,
            dtype=dtype,
            buffer=bi,
            shape_signature=sig,
            is_variable=bool(t.IsVariable()),
            quantization=quant,
            sparsity=sparsity,
            data=data,
        )

    def _quantization(self, q, shape) -> Quantization | None:
        if q is None:
            return None
        n = self.count(q, "Scale")
        if n == 0:
            return None
        scale = q.ScaleAsNumpy().astype(np.float32)
        nz = self.count(q, "ZeroPoint", 8)
        zp = q.ZeroPointAsNumpy().astype(np.int64) if nz else np.zeros(n, np.int64)
        if nz not in (0, n):
            zp = np.broadcast_to(zp[:1], (n,)).copy() if nz == 1 else None
            if zp is None:
                raise self.fail(f"{n} scales but {nz} zero points")
        qd = int(q.QuantizedDimension())
        if n > 1 and not (0 <= qd < len(shape) and shape[qd] == n):
            raise self.fail(f"{n} per-channel scales do not match dimension {qd} of shape {list(shape)}")
        mn = q.MinAsNumpy() if self.count(q, "Min") else None
        mx = q.MaxAsNumpy() if self.count(q, "Max") else None
        return Quantization(scale, zp, qd, mn, mx)

    def _sparsity(self, sp) -> Sparsity | None:
        if sp is None:
            return None
        from tflite.Int32Vector import Int32Vector
        from tflite.Uint8Vector import Uint8Vector
        from tflite.Uint16Vector import Uint16Vector

        kinds = {1: (Int32Vector, 4), 2: (Uint16Vector, 2), 3: (Uint8Vector, 1)}

        def index_vector(kind: int, table):
            if kind == 0 or table is None:
                return None
            if kind not in kinds:
                raise self.fail(f"unknown sparse index vector type {kind}")
            cls, width = kinds[kind]
            vec = cls()
            vec.Init(table.Bytes, table.Pos)
            return (
                vec.ValuesAsNumpy().astype(np.int64)
                if self.count(vec, "Values", width)
                else np.zeros(0, np.int64)
            )

        dims = []
        for j in range(self.count(sp, "DimMetadata")):
            dm = sp.DimMetadata(j)
            fmt = "SPARSE_CSR" if int(dm.Format()) == 1 else "DENSE"
            dims.append(
                DimensionMetadata(
                    fmt,
                    int(dm.DenseSize()),
                    index_vector(int(dm.ArraySegmentsType()), dm.ArraySegments()),
                    index_vector(int(dm.ArrayIndicesType()), dm.ArrayIndices()),
                )
            )
        return Sparsity(self.ints(sp, "TraversalOrder"), self.ints(sp, "BlockMap"), tuple(dims))


def _plain(value):
    """Option values as plain Python: bytes -> str, numpy scalars -> int/float/bool."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return None


def read_model(source: str | os.PathLike | bytes | bytearray) -> Model:
    """Parse a .tflite file (memory-mapped) or an in-memory model."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        buf, path = bytes(source), "<bytes>"
    else:
        path = str(source)
        try:
            if os.path.exists(path) and not os.path.isdir(path) and not os.path.isfile(path):
                # a FIFO blocks open() until a writer comes, a device reads forever: not a model file
                raise ModelFormatError(f"{path}: not a regular file (a pipe or a device), not a .tflite file")
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except IsADirectoryError:
            raise ModelFormatError(f"{path}: is a directory, not a .tflite file") from None
        except OSError as exc:
            raise ModelFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    fields = _Parser(buf, Path(path).name if path != "<bytes>" else path).parse()
    return Model(
        path=path if path != "<bytes>" else "",
        size=len(buf),
        _storage=buf,
        **fields,
    )
