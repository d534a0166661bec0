"""Read .tflite bytes into the IR (`ir.py`). The only module that touches flatbuffers (with
`metadata.py`, which it calls for tflite_support's metadata).

The file is memory-mapped and constants stay where they are: a tensor's data is a zero-copy numpy
view into the map, made when first read. The tables every model is made of (model, subgraphs,
tensors, operators, buffers, signatures) are read by their fields' ids in schema.fbs with
`struct`: 5-10x faster than the generated accessors, and numpy-free, so `inspect` of a float
model never loads numpy. Builtin options, a long tail of ~200 tables, go through the generated
classes of the `tflite` package. Every length, index and offset read here is checked against the
file before it is used, and any low-level decoding fault becomes a `ModelFormatError` that says
where in the model it happened.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from tfl_rebuild.errors import ModelFormatError
from tfl_rebuild.tflite.builtin_options import builtin_op_name, decode_options, enum_names
from tfl_rebuild.tflite.calls import call_faults
from tfl_rebuild.tflite.ir import (
    ITEMSIZE,
    NUMPY_TYPES,
    TENSOR_TYPES,
    DimensionMetadata,
    MappedArray,
    Model,
    Operator,
    Quantization,
    SignatureDef,
    Sparsity,
    Subgraph,
    Tensor,
)
from tfl_rebuild.tflite.lazy import register_lazy_tflite

register_lazy_tflite()

FILE_IDENTIFIER = b"TFL3"
_LOW_LEVEL_FAULTS = (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError)


# Field ids in schema.fbs (a field's id is its place in the table, fixed for good by flatbuffers'
# compatibility rules; tests/tflite/test_reader_fields.py checks each against the generated
# accessors). Unions take two ids: their type, then the table.
class _F:
    class Model:
        VERSION, OPERATOR_CODES, SUBGRAPHS, DESCRIPTION, BUFFERS, _, METADATA, SIGNATURE_DEFS = range(8)

    class OperatorCode:
        DEPRECATED_BUILTIN_CODE, CUSTOM_CODE, VERSION, BUILTIN_CODE = range(4)

    class Buffer:
        DATA, OFFSET, SIZE = range(3)

    class Metadata:
        NAME, BUFFER = range(2)

    class SubGraph:
        TENSORS, INPUTS, OUTPUTS, OPERATORS, NAME = range(5)

    class Tensor:
        SHAPE, TYPE, BUFFER, NAME, QUANTIZATION, IS_VARIABLE, SPARSITY, SHAPE_SIGNATURE = range(8)

    class Quantization:
        MIN, MAX, SCALE, ZERO_POINT, DETAILS_TYPE, DETAILS, QUANTIZED_DIMENSION = range(7)

    class Operator:
        OPCODE_INDEX, INPUTS, OUTPUTS, BUILTIN_OPTIONS_TYPE, BUILTIN_OPTIONS, CUSTOM_OPTIONS = range(6)
        INTERMEDIATES, LARGE_CUSTOM_OPTIONS_OFFSET, LARGE_CUSTOM_OPTIONS_SIZE = 8, 9, 10
        BUILTIN_OPTIONS_2_TYPE, BUILTIN_OPTIONS_2 = 11, 12

    class SignatureDef:
        INPUTS, OUTPUTS, SIGNATURE_KEY, SUBGRAPH_INDEX = 0, 1, 2, 4

    class TensorMap:
        NAME, TENSOR_INDEX = range(2)

    class Sparsity:
        TRAVERSAL_ORDER, BLOCK_MAP, DIM_METADATA = range(3)

    class DimensionMetadata:
        FORMAT, DENSE_SIZE, SEGMENTS_TYPE, SEGMENTS, INDICES_TYPE, INDICES = range(6)


_I8 = struct.Struct("<b").unpack_from
_U8 = struct.Struct("<B").unpack_from
_U16 = struct.Struct("<H").unpack_from
_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from


class _Table:
    """One table of the flatbuffer at `pos`. Where its fields lie comes from its vtable (shared by
    the tables of one layout and read once per parse), read when a field is first asked for, so
    a fault is told where the parser is; values are read with struct, which refuses to read past
    the end of the buffer; lengths and string ends are checked here."""

    __slots__ = ("p", "pos", "slots")

    def __init__(self, p: _Parser, pos: int):
        self.p, self.pos, self.slots = p, pos, None

    def at(self, field: int) -> int:
        """Where the field's value lies, or 0 when the table leaves it out (its default holds)."""
        slots = self.slots
        if slots is None:
            slots = self.slots = self.p.vtable(self.pos)
        off = slots[field]  # vtables are padded to every field id the reader asks for
        return self.pos + off if off else 0

    def scalar(self, field: int, read, default=0):
        at = self.at(field)
        return read(self.p.buf, at)[0] if at else default

    def table(self, field: int) -> _Table | None:
        at = self.at(field)
        return _Table(self.p, at + _U32(self.p.buf, at)[0]) if at else None

    def string(self, field: int) -> str:
        at = self.at(field)
        if not at:
            return ""
        start = at + _U32(self.p.buf, at)[0]
        n = _U32(self.p.buf, start)[0]
        if start + 4 + n > self.p.size:
            raise self.p.fail(f"malformed flatbuffer (a {n}-byte string runs past the end of the file)")
        return str(self.p.buf[start + 4 : start + 4 + n], "utf-8", "replace")

    def vector(self, field: int, name: str, width: int = 4) -> tuple[int, int]:
        """(position of the first element, count) of a vector field; (0, 0) when absent."""
        at = self.at(field)
        if not at:
            return 0, 0
        p = self.p
        start = at + _U32(p.buf, at)[0]
        n = _U32(p.buf, start)[0]
        if n * width > p.size:
            raise p.fail(f"{name} claims {n} elements, more than the {p.size}-byte file holds")
        if start + 4 + n * width > p.size:
            raise p.fail(f"malformed flatbuffer ({name}: {n} elements run past the end of the file)")
        return start + 4, n

    def ints(self, field: int, name: str, code: str = "i", width: int = 4) -> tuple:
        start, n = self.vector(field, name, width)
        return struct.unpack_from(f"<{n}{code}", self.p.buf, start) if n else ()

    def tables(self, field: int, name: str) -> list[_Table]:
        start, n = self.vector(field, name)
        buf, p = self.p.buf, self.p
        return [_Table(p, q + _U32(buf, q)[0]) for q in range(start, start + 4 * n, 4)]


class _Parser:
    def __init__(self, buf, path: str):
        self.buf = buf
        self.size = len(buf)
        self.path = path
        self.where = "model header"
        self.vtables: dict[int, tuple[int, ...]] = {}

    # -- checked primitives -------------------------------------------------------------------
    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.path}: {self.where}: {what}")

    def vtable(self, pos: int) -> tuple[int, ...]:
        """The field offsets a table's vtable holds, by field id, padded with 0 (absent) to 16."""
        vt = pos - _I32(self.buf, pos)[0]
        slots = self.vtables.get(vt)
        if slots is None:
            if not 0 <= vt <= self.size - 4:
                raise self.fail(f"malformed flatbuffer (vtable at {vt} lies outside the file)")
            n = max(0, (_U16(self.buf, vt)[0] - 4) // 2)
            slots = struct.unpack_from(f"<{n}H", self.buf, vt + 4) + (0,) * (16 - n)
            self.vtables[vt] = slots
        return slots

    def index(self, i: int, limit: int, what: str, optional: bool = False) -> int:
        if (optional and i == -1) or 0 <= i < limit:
            return i
        raise self.fail(f"{what} index {i} is out of range (0..{limit - 1})")

    def indices(self, ids: tuple[int, ...], limit: int, what: str, optional: bool = False) -> tuple[int, ...]:
        """`ids`, each checked by `index` (a whole vector at once: the common case costs one pass)."""
        low = -1 if optional else 0
        if ids and (min(ids) < low or max(ids) >= limit):
            for i in ids:
                self.index(i, limit, what, optional)
        return ids

    # -- model ----------------------------------------------------------------------------------
    def parse(self) -> dict:
        if self.size < 8:
            raise self.fail(f"file is {self.size} bytes, too short to be a TFLite model")
        if bytes(self.buf[:4]) == b"PK\x03\x04":
            from tfl_rebuild.tflite.metadata import zip_text

            raise self.fail(zip_text(self.buf))
        if bytes(self.buf[4:8]) != FILE_IDENTIFIER:
            raise self.fail(f"file identifier is {bytes(self.buf[4:8])!r}, not {FILE_IDENTIFIER!r}")
        root = _U32(self.buf, 0)[0]
        if not 8 <= root < self.size:
            raise self.fail(f"root table offset {root} lies outside the file")
        try:
            return self._parse_model(_Table(self, root))
        except _LOW_LEVEL_FAULTS as exc:
            raise self.fail(f"malformed flatbuffer ({type(exc).__name__}: {exc})") from None
        except RecursionError:
            raise self.fail("malformed flatbuffer (nesting too deep)") from None

    def _parse_model(self, fb: _Table) -> dict:
        F = _F.OperatorCode
        self.where = "operator codes"
        opcodes = []
        for oc in fb.tables(_F.Model.OPERATOR_CODES, "operator_codes"):
            # The larger of the two: files before schema v3a set only the deprecated byte, newer
            # ones set builtin_code (and the deprecated byte only below 127).
            code = max(oc.scalar(F.BUILTIN_CODE, _I32), oc.scalar(F.DEPRECATED_BUILTIN_CODE, _I8))
            custom = oc.string(F.CUSTOM_CODE) or None
            opcodes.append((builtin_op_name(code), max(1, oc.scalar(F.VERSION, _I32, 1)), custom))

        self.where = "buffers"
        F = _F.Buffer
        buffers, external = [], False
        for j, b in enumerate(fb.tables(_F.Model.BUFFERS, "buffers")):
            self.where = f"buffer {j}"
            off, size = b.scalar(F.OFFSET, _U64), b.scalar(F.SIZE, _U64)
            if off > 1:  # stored outside the flatbuffer (models over 2 GB); offset from file start
                if off + size > self.size:
                    raise self.fail(f"external data [{off}, {off + size}) lies past the end of the file")
                buffers.append((off, size))
                external = True
            else:
                start, n = b.vector(F.DATA, "data", 1)
                buffers.append((start, n) if n else None)

        self.where = "metadata"
        metadata: dict[str, bytes] = {}
        for md in fb.tables(_F.Model.METADATA, "metadata"):
            bi = self.index(md.scalar(_F.Metadata.BUFFER, _U32), len(buffers), "metadata buffer")
            span = buffers[bi]
            name = md.string(_F.Metadata.NAME)
            metadata[name] = bytes(self.buf[span[0] : span[0] + span[1]]) if span else b""

        self.where = "subgraphs"
        subgraphs = tuple(
            self._parse_subgraph(sg, s, opcodes, buffers)
            for s, sg in enumerate(fb.tables(_F.Model.SUBGRAPHS, "subgraphs"))
        )
        if not subgraphs:
            raise self.fail("model has no subgraphs")
        self._check_calls(subgraphs)

        signatures = []
        self.where = "signature defs"
        F = _F.SignatureDef
        for j, sd in enumerate(fb.tables(_F.Model.SIGNATURE_DEFS, "signature_defs")):
            self.where = f"signature def {j}"
            sg = self.index(sd.scalar(F.SUBGRAPH_INDEX, _U32), len(subgraphs), "signature subgraph")
            n_t = len(subgraphs[sg].tensors)

            def tensor_map(field, name, sd=sd, n_t=n_t):
                F = _F.TensorMap
                return tuple(
                    (tm.string(F.NAME), self.index(tm.scalar(F.TENSOR_INDEX, _U32), n_t, "signature tensor"))
                    for tm in sd.tables(field, name)
                )

            ins, outs = tensor_map(F.INPUTS, "inputs"), tensor_map(F.OUTPUTS, "outputs")
            signatures.append(SignatureDef(sd.string(F.SIGNATURE_KEY), sg, ins, outs))

        flat_end = min((b[0] for b in buffers if b and external and b[0] > 0), default=self.size)
        info = None
        if "TFLITE_METADATA" in metadata:  # tflite_support's (a flatbuffer of its own)
            from tfl_rebuild.tflite.metadata import read_model_info

            info = read_model_info(metadata["TFLITE_METADATA"])
        return dict(
            version=fb.scalar(_F.Model.VERSION, _U32),
            description=fb.string(_F.Model.DESCRIPTION),
            subgraphs=subgraphs,
            signatures=tuple(signatures),
            metadata=metadata,
            min_runtime_version=metadata["min_runtime_version"].rstrip(b"\0").decode("ascii", "replace")
            if "min_runtime_version" in metadata
            else None,
            info=info,
            external_buffers=external,
            flatbuffer_size=flat_end if external else self.size,
        )

    def _check_calls(self, subgraphs) -> None:
        for where, what in call_faults(subgraphs):
            self.where = where
            raise self.fail(what)

    def _parse_subgraph(self, sg: _Table, s: int, opcodes, buffers) -> Subgraph:
        F = _F.SubGraph
        self.where = f"subgraph {s}"
        tensors = tuple(
            self._parse_tensor(t, i, s, buffers) for i, t in enumerate(sg.tables(F.TENSORS, "tensors"))
        )
        n_t = len(tensors)
        self.where = f"subgraph {s}"
        inputs = self.indices(sg.ints(F.INPUTS, "inputs"), n_t, "input tensor")
        outputs = self.indices(sg.ints(F.OUTPUTS, "outputs"), n_t, "output tensor")
        operators = []
        F = _F.Operator
        for o, op in enumerate(sg.tables(_F.SubGraph.OPERATORS, "operators")):
            self.where = f"subgraph {s} operator {o}"
            name, version, custom = opcodes[
                self.index(op.scalar(F.OPCODE_INDEX, _U32), len(opcodes), "opcode")
            ]
            options_type, options = self._options(op)
            custom_opts = b""
            start, n = op.vector(F.CUSTOM_OPTIONS, "custom_options", 1)
            if n:
                custom_opts = bytes(self.buf[start : start + n])
            elif (size := op.scalar(F.LARGE_CUSTOM_OPTIONS_SIZE, _U64)) > 0:
                off = op.scalar(F.LARGE_CUSTOM_OPTIONS_OFFSET, _U64)
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
                    inputs=self.indices(op.ints(F.INPUTS, "inputs"), n_t, "operator input", optional=True),
                    outputs=self.indices(
                        op.ints(F.OUTPUTS, "outputs"), n_t, "operator output", optional=True
                    ),
                    intermediates=self.indices(
                        op.ints(F.INTERMEDIATES, "intermediates"), n_t, "intermediate"
                    ),
                    options=options,
                    options_type=options_type,
                    custom_code=custom,
                    custom_options=custom_opts,
                )
            )
        return Subgraph(s, sg.string(_F.SubGraph.NAME), inputs, outputs, tensors, tuple(operators))

    def _options(self, op: _Table) -> tuple[str | None, dict]:
        F = _F.Operator
        for type_field, table_field, union in (
            (F.BUILTIN_OPTIONS_TYPE, F.BUILTIN_OPTIONS, "BuiltinOptions"),
            (F.BUILTIN_OPTIONS_2_TYPE, F.BUILTIN_OPTIONS_2, "BuiltinOptions2"),
        ):
            kind = op.scalar(type_field, _U8)
            if kind == 0:
                continue
            class_name = enum_names(union).get(kind)
            table = op.table(table_field)
            if class_name is None or table is None:
                return class_name, {}
            slots = self.vtable(table.pos)
            return class_name, decode_options(class_name, self.buf, table.pos, slots, self.fail)
        return None, {}

    def _parse_tensor(self, t: _Table, idx: int, s: int, buffers) -> Tensor:
        F = _F.Tensor
        self.where = f"subgraph {s} tensor {idx}"
        shape = t.ints(F.SHAPE, "shape")
        if shape and min(shape) < -1:
            raise self.fail(f"shape {list(shape)} has a negative dimension")
        type_code = t.scalar(F.TYPE, _I8)
        dtype = TENSOR_TYPES.get(type_code)
        if dtype is None:
            raise self.fail(f"unknown tensor type {type_code}")
        bi = self.index(t.scalar(F.BUFFER, _U32), max(len(buffers), 1), "buffer")
        quant = self._quantization(t.table(F.QUANTIZATION), shape)
        sparsity = self._sparsity(t.table(F.SPARSITY))
        name = t.string(F.NAME)
        data = None
        span = buffers[bi] if bi < len(buffers) else None
        if span is not None:
            off, nbytes = span
            if sparsity is not None or dtype not in NUMPY_TYPES:
                view = dtype if dtype in NUMPY_TYPES else "uint8"
                if nbytes % ITEMSIZE[view]:
                    raise self.fail(f"buffer {bi} size {nbytes} is not a multiple of {ITEMSIZE[view]}")
                data = MappedArray(self.buf, off, nbytes // ITEMSIZE[view], view)
            else:
                if shape and min(shape) < 0:
                    raise self.fail(f"constant tensor has dynamic shape {list(shape)}")
                count = 1
                for d in shape:
                    count *= d
                want = count * ITEMSIZE[dtype]
                if want != nbytes:
                    raise self.fail(
                        f"buffer {bi} holds {nbytes} bytes, shape {list(shape)} {dtype} needs {want}"
                    )
                data = MappedArray(self.buf, off, count, dtype, shape)
        sig = t.ints(F.SHAPE_SIGNATURE, "shape_signature") or None
        return Tensor(
            index=idx,
            name=name,
            shape=shape,
            dtype=dtype,
            buffer=bi,
            shape_signature=sig,
            is_variable=bool(t.scalar(F.IS_VARIABLE, _U8)),
            quantization=quant,
            sparsity=sparsity,
            data=data,
        )

    def _quantization(self, q: _Table | None, shape) -> Quantization | None:
        if q is None:
            return None
        F = _F.Quantization
        scale_at, n = q.vector(F.SCALE, "scale")
        if n == 0:
            return None
        import numpy as np

        scale = np.frombuffer(self.buf, "<f4", n, scale_at).astype(np.float32)
        zp_at, nz = q.vector(F.ZERO_POINT, "zero_point", 8)
        zp = np.frombuffer(self.buf, "<i8", nz, zp_at).astype(np.int64) if nz else np.zeros(n, np.int64)
        if nz not in (0, n):
            zp = np.broadcast_to(zp[:1], (n,)).copy() if nz == 1 else None
            if zp is None:
                raise self.fail(f"{n} scales but {nz} zero points")
        qd = q.scalar(F.QUANTIZED_DIMENSION, _I32)
        if n > 1 and not (0 <= qd < len(shape) and shape[qd] == n):
            raise self.fail(f"{n} per-channel scales do not match dimension {qd} of shape {list(shape)}")
        min_at, n_min = q.vector(F.MIN, "min")
        max_at, n_max = q.vector(F.MAX, "max")
        mn = np.frombuffer(self.buf, "<f4", n_min, min_at) if n_min else None
        mx = np.frombuffer(self.buf, "<f4", n_max, max_at) if n_max else None
        return Quantization(scale, zp, qd, mn, mx)

    def _sparsity(self, sp: _Table | None) -> Sparsity | None:
        if sp is None:
            return None
        import numpy as np

        F = _F.DimensionMetadata
        kinds = {1: ("<i4", 4), 2: ("<u2", 2), 3: ("u1", 1)}  # Int32Vector, Uint16Vector, Uint8Vector

        def index_vector(kind: int, table: _Table | None):
            if kind == 0 or table is None:
                return None
            if kind not in kinds:
                raise self.fail(f"unknown sparse index vector type {kind}")
            dtype, width = kinds[kind]
            start, n = table.vector(0, "values", width)  # the vector tables' one field
            return np.frombuffer(self.buf, dtype, n, start).astype(np.int64) if n else np.zeros(0, np.int64)

        dims = []
        for dm in sp.tables(_F.Sparsity.DIM_METADATA, "dim_metadata"):
            fmt = "SPARSE_CSR" if dm.scalar(F.FORMAT, _I8) == 1 else "DENSE"
            dims.append(
                DimensionMetadata(
                    fmt,
                    dm.scalar(F.DENSE_SIZE, _I32),
                    index_vector(dm.scalar(F.SEGMENTS_TYPE, _U8), dm.table(F.SEGMENTS)),
                    index_vector(dm.scalar(F.INDICES_TYPE, _U8), dm.table(F.INDICES)),
                )
            )
        return Sparsity(
            sp.ints(_F.Sparsity.TRAVERSAL_ORDER, "traversal_order"),
            sp.ints(_F.Sparsity.BLOCK_MAP, "block_map"),
            tuple(dims),
        )


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
    return Model(path=path if path != "<bytes>" else "", size=len(buf), _storage=buf, **fields)
