"""Craft small .tflite models byte by byte, for tests the converter cannot produce.

Uses the flatbuffers `Builder` with the builder functions of the `tflite` package (`ModelStart`,
`TensorAddBuffer`, ...), so any field can be set to any value: hostile tensor/op names (bytes that
are not UTF-8, quotes, template syntax), out-of-range indices, and weight buffers stored after the
flatbuffer (`Buffer.offset/size`, as TFLite writes models over 2 GB).

    from flatbuf import Op, T, build_model
    blob = build_model(
        tensors=[T("x", [4]), T("w", [4], data=np.arange(4, dtype=np.float32), external=True), T("y", [4])],
        ops=[Op("MUL", [0, 1], [2], options={"fused_activation_function": "NONE"})],
        inputs=[0], outputs=[2],
    )

Tests import it as `from flatbuf import ...` (tests/conftest.py puts this directory on sys.path).

Indices (tensor buffer, op inputs/outputs, opcode index) are written exactly as given, so a test can
point them anywhere. The default `options_type` of a few common ops is filled in; pass
`options_type="Conv2DOptions"` (a `BuiltinOptions` member name) for others. Option values are plain
ints/floats/bools, strings, lists (int32 vectors) or numpy arrays (vectors of their dtype), or enum
member names for the enum fields listed in `ENUM_OPTION_FIELDS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import flatbuffers
import numpy as np
import tflite

from tfl_rebuild.tflite.ir import TENSOR_TYPES

TENSOR_TYPE_CODES = {name: code for code, name in TENSOR_TYPES.items()}
DEFAULT_OPTIONS_TYPE = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "CONCATENATION": "ConcatenationOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
}
# Option field (snake case) -> the schema enum its names come from.
ENUM_OPTION_FIELDS = {
    "padding": tflite.Padding,
    "fused_activation_function": tflite.ActivationFunctionType,
    "weights_format": tflite.FullyConnectedOptionsWeightsFormat,
}
# Placeholder written in pass 1 for external buffer offsets: non-default, so the field is present.
_OFFSET_PLACEHOLDER = 1 << 40


@dataclass
class T:
    """One tensor. `data` makes it a constant; `external` stores that data after the flatbuffer."""

    name: str | bytes
    shape: Sequence[int]
    dtype: str = "float32"
    data: np.ndarray | bytes | None = None
    external: bool = False
    scale: Sequence[float] | None = None
    zero_point: Sequence[int] | None = None
    quantized_dimension: int = 0
    shape_signature: Sequence[int] | None = None
    is_variable: bool = False
    buffer: int | None = None  # force this buffer index (default: its own buffer, or the empty buffer 0)
    type_code: int | None = None  # force this TensorType code (default: from dtype)


@dataclass
class Op:
    """One operator: a builtin name ("ADD") or, with custom_code set, a CUSTOM op."""

    opcode: str
    inputs: Sequence[int]
    outputs: Sequence[int]
    options: dict = field(default_factory=dict)
    options_type: str | None = None  # BuiltinOptions member, e.g. "AddOptions"
    custom_code: str | bytes | None = None
    custom_options: bytes = b""
    version: int = 1
    intermediates: Sequence[int] = ()
    opcode_index: int | None = None  # force this opcode index
    # Force the OperatorCode fields (default: builtin_code = code, deprecated = min(code, 127)).
    builtin_code: int | None = None
    deprecated_builtin_code: int | None = None


@dataclass
class Signature:
    key: str | bytes
    inputs: dict[str, int]
    outputs: dict[str, int]
    subgraph_index: int = 0


@dataclass
class Graph:
    """A further subgraph (index 1, 2, ... in the order given): what control flow and
    STABLEHLO_COMPOSITE ops call. Its tensors index their own list; buffers are shared."""

    tensors: Sequence[T]
    ops: Sequence[Op]
    inputs: Sequence[int]
    outputs: Sequence[int]
    name: str | bytes = ""


def builtin_code(name: str) -> int:
    return getattr(tflite.BuiltinOperator, name)


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _int_vector(b: flatbuffers.Builder, values: Sequence[int], dtype=np.int32) -> int:
    return b.CreateNumpyVector(np.asarray(values, dtype=dtype))


def _table_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _options(b: flatbuffers.Builder, options_type: str, options: dict) -> int:
    start = getattr(tflite, f"{options_type}Start")
    end = getattr(tflite, f"{options_type}End")
    # Vectors (lists: int32; arrays keep their dtype) and strings are written before the table.
    made = {}
    for key, value in options.items():
        if isinstance(value, np.ndarray):
            made[key] = b.CreateNumpyVector(value)
        elif isinstance(value, (list, tuple)):
            made[key] = _int_vector(b, value)
        elif isinstance(value, (str, bytes)) and key not in ENUM_OPTION_FIELDS:
            made[key] = b.CreateString(value)
    start(b)
    for key, value in options.items():
        add = getattr(tflite, f"{options_type}Add{_camel(key)}")
        if key in made:
            value = made[key]
        elif isinstance(value, str):
            value = getattr(ENUM_OPTION_FIELDS[key], value)
        add(b, value)
    return end(b)


def _code_key(op: Op) -> tuple:
    return op.opcode, op.custom_code, op.version, op.builtin_code, op.deprecated_builtin_code


def _blob(data: np.ndarray | bytes) -> bytes:
    return data if isinstance(data, bytes) else np.ascontiguousarray(data).tobytes()


def _subgraph(b: flatbuffers.Builder, g: Graph, tensor_buffer: list[int], codes: list[tuple]) -> int:
    """One SubGraph table: its tensors, operators, inputs and outputs."""
    # Tensors.
    tensor_offsets = []
    for t, own_buffer in zip(g.tensors, tensor_buffer):
        name = b.CreateString(t.name)
        shape = _int_vector(b, t.shape)
        sig = _int_vector(b, t.shape_signature) if t.shape_signature is not None else None
        quant = None
        if t.scale is not None:
            scale = b.CreateNumpyVector(np.asarray(t.scale, np.float32))
            zp = _int_vector(b, t.zero_point if t.zero_point is not None else [0] * len(t.scale), np.int64)
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t.type_code if t.type_code is not None else TENSOR_TYPE_CODES[t.dtype])
        tflite.TensorAddBuffer(b, t.buffer if t.buffer is not None else own_buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        if t.is_variable:
            tflite.TensorAddIsVariable(b, True)
        if sig is not None:
            tflite.TensorAddShapeSignature(b, sig)
        tensor_offsets.append(tflite.TensorEnd(b))

    # Operators.
    op_offsets = []
    for op in g.ops:
        ins, outs = _int_vector(b, op.inputs), _int_vector(b, op.outputs)
        inter = _int_vector(b, op.intermediates) if op.intermediates else None
        custom_opts = b.CreateByteVector(op.custom_options) if op.custom_options else None
        options_type = op.options_type or (
            None if op.custom_code is not None else DEFAULT_OPTIONS_TYPE.get(op.opcode)
        )
        opts = _options(b, options_type, op.options) if options_type else None
        tflite.OperatorStart(b)
        index = op.opcode_index if op.opcode_index is not None else codes.index(_code_key(op))
        tflite.OperatorAddOpcodeIndex(b, index)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opts is not None and hasattr(tflite.BuiltinOptions, options_type):
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, options_type))
            tflite.OperatorAddBuiltinOptions(b, opts)
        elif opts is not None:  # the second union, for tables added after the first filled up
            tflite.OperatorAddBuiltinOptions2Type(b, getattr(tflite.BuiltinOptions2, options_type))
            tflite.OperatorAddBuiltinOptions2(b, opts)
        if custom_opts is not None:
            tflite.OperatorAddCustomOptions(b, custom_opts)
        if inter is not None:
            tflite.OperatorAddIntermediates(b, inter)
        op_offsets.append(tflite.OperatorEnd(b))

    tensors_vec = _table_vector(b, tensor_offsets)
    ops_vec = _table_vector(b, op_offsets)
    in_vec, out_vec = _int_vector(b, g.inputs), _int_vector(b, g.outputs)
    sg_name = b.CreateString(g.name)
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vec)
    tflite.SubGraphAddInputs(b, in_vec)
    tflite.SubGraphAddOutputs(b, out_vec)
    tflite.SubGraphAddOperators(b, ops_vec)
    tflite.SubGraphAddName(b, sg_name)
    return tflite.SubGraphEnd(b)


def _build(
    tensors: Sequence[T],
    ops: Sequence[Op],
    inputs: Sequence[int],
    outputs: Sequence[int],
    description: str | bytes,
    subgraph_name: str | bytes,
    metadata: dict[str, bytes],
    signatures: Sequence[Signature],
    version: int,
    external_offsets: dict[int, tuple[int, int]] | None,
    graphs: Sequence[Graph] = (),
) -> tuple[bytes, list[bytes]]:
    """One flatbuffer; returns it and the external blobs (in buffer order) to append after it."""
    b = flatbuffers.Builder(1024)
    graphs = [Graph(tensors, ops, inputs, outputs, subgraph_name), *graphs]

    # Buffers: 0 is the conventional empty buffer; each constant gets its own; metadata after.
    buffer_blobs: list[tuple[bytes, bool]] = [(b"", False)]
    graph_buffers = []
    for g in graphs:
        tensor_buffer = []
        for t in g.tensors:
            if t.data is not None:
                tensor_buffer.append(len(buffer_blobs))
                buffer_blobs.append((_blob(t.data), t.external))
            else:
                tensor_buffer.append(0)
        graph_buffers.append(tensor_buffer)
    metadata_buffer = {}
    for name, blob in metadata.items():
        metadata_buffer[name] = len(buffer_blobs)
        buffer_blobs.append((blob, False))

    externals = []
    buffer_offsets = []
    for i, (blob, external) in enumerate(buffer_blobs):
        data_vec = None
        if blob and not external:
            data_vec = b.CreateByteVector(blob)
        tflite.BufferStart(b)
        if data_vec is not None:
            tflite.BufferAddData(b, data_vec)
        if external:
            off, size = (external_offsets or {}).get(i, (_OFFSET_PLACEHOLDER, len(blob)))
            tflite.BufferAddOffset(b, off)
            tflite.BufferAddSize(b, size)
            externals.append(blob)
        buffer_offsets.append(tflite.BufferEnd(b))

    # Operator codes, deduplicated in order of first use.
    codes: list[tuple] = []
    for op in (op for g in graphs for op in g.ops):
        key = _code_key(op)
        if key not in codes:
            codes.append(key)
    code_offsets = []
    for name, custom, ver, forced_code, forced_deprecated in codes:
        custom_off = b.CreateString(custom) if custom is not None else None
        code = builtin_code("CUSTOM" if custom is not None else name)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(
            b, min(code, 127) if forced_deprecated is None else forced_deprecated
        )
        tflite.OperatorCodeAddBuiltinCode(b, code if forced_code is None else forced_code)
        tflite.OperatorCodeAddVersion(b, ver)
        if custom_off is not None:
            tflite.OperatorCodeAddCustomCode(b, custom_off)
        code_offsets.append(tflite.OperatorCodeEnd(b))

    subgraph_offsets = [
        _subgraph(b, g, tensor_buffer, codes) for g, tensor_buffer in zip(graphs, graph_buffers)
    ]

    md_offsets = []
    for name, bi in metadata_buffer.items():
        md_name = b.CreateString(name)
        tflite.MetadataStart(b)
        tflite.MetadataAddName(b, md_name)
        tflite.MetadataAddBuffer(b, bi)
        md_offsets.append(tflite.MetadataEnd(b))

    sig_offsets = []
    for sig in signatures:
        maps = []
        for side in (sig.inputs, sig.outputs):
            entries = []
            for name, idx in side.items():
                n = b.CreateString(name)
                tflite.TensorMapStart(b)
                tflite.TensorMapAddName(b, n)
                tflite.TensorMapAddTensorIndex(b, idx)
                entries.append(tflite.TensorMapEnd(b))
            maps.append(_table_vector(b, entries))
        key = b.CreateString(sig.key)
        tflite.SignatureDefStart(b)
        tflite.SignatureDefAddInputs(b, maps[0])
        tflite.SignatureDefAddOutputs(b, maps[1])
        tflite.SignatureDefAddSignatureKey(b, key)
        tflite.SignatureDefAddSubgraphIndex(b, sig.subgraph_index)
        sig_offsets.append(tflite.SignatureDefEnd(b))

    codes_vec = _table_vector(b, code_offsets)
    subgraphs_vec = _table_vector(b, subgraph_offsets)
    buffers_vec = _table_vector(b, buffer_offsets)
    md_vec = _table_vector(b, md_offsets) if md_offsets else None
    sig_vec = _table_vector(b, sig_offsets) if sig_offsets else None
    desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, version)
    tflite.ModelAddOperatorCodes(b, codes_vec)
    tflite.ModelAddSubgraphs(b, subgraphs_vec)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, buffers_vec)
    if md_vec is not None:
        tflite.ModelAddMetadata(b, md_vec)
    if sig_vec is not None:
        tflite.ModelAddSignatureDefs(b, sig_vec)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output()), externals


def build_model(
    tensors: Sequence[T],
    ops: Sequence[Op],
    inputs: Sequence[int],
    outputs: Sequence[int],
    *,
    description: str | bytes = "crafted by tests/flatbuf.py",
    subgraph_name: str | bytes = "main",
    metadata: dict[str, bytes] | None = None,
    signatures: Sequence[Signature] = (),
    version: int = 3,
    align: int = 64,
    subgraphs: Sequence[Graph] = (),
) -> bytes:
    """A complete .tflite file. External buffers follow the flatbuffer, each `align`-ed, with
    `Buffer.offset` the absolute file offset of its bytes (what TFLite's runtime reads).
    `subgraphs` are further subgraphs after the main one (subgraph 0)."""
    args = (tensors, ops, inputs, outputs, description, subgraph_name, metadata or {}, signatures, version)
    flat, externals = _build(*args, external_offsets=None, graphs=subgraphs)
    if not externals:
        return flat
    # Pass 2: the offsets are fixed-width fields, so the flatbuffer keeps its size.
    all_tensors = [t for ts in (tensors, *(g.tensors for g in subgraphs)) for t in ts]
    ext_ids = [i for i, blob in enumerate(_buffer_layout(all_tensors)) if blob]
    pos, offsets, out_tail = len(flat), {}, b""
    for bi, blob in zip(ext_ids, externals):
        pad = -pos % align
        out_tail += b"\0" * pad
        pos += pad
        offsets[bi] = (pos, len(blob))
        out_tail += blob
        pos += len(blob)
    flat2, _ = _build(*args, external_offsets=offsets, graphs=subgraphs)
    if len(flat2) != len(flat):
        raise AssertionError("external offsets changed the flatbuffer size")
    return flat2 + out_tail


def _buffer_layout(tensors: Sequence[T]) -> list[bool]:
    """Per buffer index (0 = empty): whether it is stored externally."""
    return [False] + [t.external for t in tensors if t.data is not None]


def simple_model(
    x_name: str | bytes = "x",
    w_name: str | bytes = "w",
    y_name: str | bytes = "y",
    weights: np.ndarray | None = None,
    external: bool = False,
    opcode: str = "MUL",
    **kwargs,
) -> bytes:
    """y = x (op) w, with w a float32 constant of shape [4]: a runnable two-input elementwise model."""
    w = np.array([0.5, -1.0, 2.0, 3.25], np.float32) if weights is None else weights
    return build_model(
        [
            T(x_name, list(w.shape)),
            T(w_name, list(w.shape), data=w, external=external),
            T(y_name, list(w.shape)),
        ],
        [Op(opcode, [0, 1], [2], options={"fused_activation_function": "NONE"})],
        inputs=[0],
        outputs=[2],
        **kwargs,
    )


_PATH_ACCESSORS = {
    "subgraph": "Subgraphs",
    "tensor": "Tensors",
    "operator": "Operators",
    "buffer": "Buffers",
    "operator_code": "OperatorCodes",
    "metadata": "Metadata",
    "signature_def": "SignatureDefs",
}


def _resolve(blob: bytes, path: str):
    """(table object, field accessor name) for a dotted path like "subgraph0.tensor1.shape"."""
    from tflite.Model import Model

    obj = Model.GetRootAs(blob, 0)
    *parents, last = path.split(".")
    for part in parents:
        m = re.fullmatch(r"([a-z_]+?)(\d+)", part)
        if m is None or m.group(1) not in _PATH_ACCESSORS:
            raise ValueError(f"bad path element {part!r}")
        obj = getattr(obj, _PATH_ACCESSORS[m.group(1)])(int(m.group(2)))
    return obj, _camel(last)


def _slot(cls, accessor: str) -> int:
    import inspect

    # The generated accessor reads `self._tab.Offset(<vtable slot>)`.
    return int(re.search(r"Offset\((\d+)\)", inspect.getsource(getattr(cls, accessor))).group(1))


def vector_length_offset(blob: bytes, path: str) -> int:
    """File offset of the uint32 length of a vector, named like "subgraphs", "subgraph0.tensors",
    "subgraph0.tensor1.shape", "subgraph0.operator0.inputs", "buffer1.data" - for tests that
    overwrite it with a hostile value."""
    obj, name = _resolve(blob, path)
    o = obj._tab.Offset(_slot(type(obj), f"{name}Length"))
    if not o:
        raise ValueError(f"{path} is absent")
    return obj._tab.Vector(o) - 4


def scalar_offset(blob: bytes, path: str) -> int:
    """File offset of a scalar field that is present in the file, e.g. "metadata0.buffer",
    "subgraph0.tensor1.buffer", "subgraph0.operator0.opcode_index"."""
    obj, name = _resolve(blob, path)
    o = obj._tab.Offset(_slot(type(obj), name))
    if not o:
        raise ValueError(f"{path} is absent (written only when it differs from its default)")
    return obj._tab.Pos + o


def patch(blob: bytes, offset: int, value: int, fmt: str = "<I") -> bytes:
    """A copy of `blob` with `value` packed (struct format `fmt`) at `offset`."""
    import struct

    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def model_metadata(
    name: str = "",
    description: str = "",
    version: str = "",
    author: str = "",
    license: str = "",
    inputs: Sequence[tuple[str, str]] = (),
    outputs: Sequence[tuple[str, str]] = (),
    associated_files: Sequence[str] = (),
) -> bytes:
    """A TFLITE_METADATA blob: tflite_support's ModelMetadata flatbuffer ("M001"), strings only.

    Field slots follow metadata_schema.fbs: ModelMetadata {name, description, version,
    subgraph_metadata, author, license, associated_files}; SubGraphMetadata {name, description,
    input_tensor_metadata, output_tensor_metadata}; TensorMetadata/AssociatedFile {name, description}.
    """
    b = flatbuffers.Builder(256)

    def table(fields: dict[int, int]) -> int:
        b.StartObject(max(fields, default=-1) + 1)
        for slot, off in fields.items():
            b.PrependUOffsetTRelativeSlot(slot, off, 0)
        return b.EndObject()

    def named(items) -> int:
        entries = []
        for n, d in items:
            fields = {0: b.CreateString(n)}
            if d:
                fields[1] = b.CreateString(d)
            entries.append(table(fields))
        return _table_vector(b, entries)

    ins, outs = named(inputs), named(outputs)
    sub = table({2: ins, 3: outs})
    files = named([(f, "") for f in associated_files])
    fields = {
        k: b.CreateString(v)
        for k, v in ((0, name), (1, description), (2, version), (4, author), (5, license))
        if v
    }
    fields[3] = _table_vector(b, [sub])
    fields[6] = files
    b.Finish(table(dict(sorted(fields.items()))), file_identifier=b"M001")
    return bytes(b.Output())


# ---------------------------------------------------------------------------------------------
# Broken models: each is a valid model with exactly one thing wrong (or not a model at all).


def _valid(n: int = 256, **kwargs) -> bytes:
    """A valid model whose weight buffer (n float32) sits at the end of the file."""
    return simple_model(weights=np.linspace(-1, 1, n, dtype=np.float32), **kwargs)


def _random(seed: int, n: int = 4096, identifier: bool = False) -> bytes:
    out = bytearray(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    if identifier:  # get past the header checks: root table at 16, "TFL3" in place
        out[0:4] = (16).to_bytes(4, "little")
        out[4:8] = b"TFL3"
    return bytes(out)


def _claim(path: str, count: int = 1 << 31) -> bytes:
    blob = _valid()
    return patch(blob, vector_length_offset(blob, path), count)


def _model(tensors=None, ops=None, inputs=(0,), outputs=(2,), **kwargs) -> bytes:
    w = np.ones(4, np.float32)
    tensors = tensors or [T("x", [4]), T("w", [4], data=w), T("y", [4])]
    ops = ops or [Op("MUL", [0, 1], [2])]
    return build_model(tensors, ops, list(inputs), list(outputs), **kwargs)


def _zip(members: dict[str, bytes]) -> bytes:
    """A zip archive, as a MediaPipe .task bundle is."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


BAD_MODELS = {
    "empty": lambda: b"",
    "short": lambda: b"TFL3",
    "wrong-identifier": lambda: _valid()[:4] + b"XXXX" + _valid()[8:],
    "truncated-header": lambda: _valid()[:12],
    "truncated-half": lambda: _valid()[: len(_valid()) // 2],
    "truncated-last-byte": lambda: _valid()[:-1],
    "random-bytes": lambda: _random(1),
    "random-bytes-with-identifier": lambda: _random(2, identifier=True),
    "task-bundle": lambda: _zip({"hand_detector.tflite": _valid(), "labels.txt": b"a"}),
    "root-offset-past-end": lambda: patch(_valid(), 0, 1 << 30),
    "tensor-buffer-index": lambda: _model([T("x", [4]), T("w", [4], buffer=99), T("y", [4])]),
    "operator-input-index": lambda: _model(ops=[Op("MUL", [0, 57], [2])]),
    "operator-output-index": lambda: _model(ops=[Op("MUL", [0, 1], [99])]),
    "opcode-index": lambda: _model(ops=[Op("MUL", [0, 1], [2], opcode_index=5)]),
    "subgraph-input-index": lambda: _model(inputs=[42]),
    "negative-dimension": lambda: _model(
        [T("x", [-5, 4]), T("w", [4], data=np.ones(4, np.float32)), T("y", [4])]
    ),
    "unknown-tensor-type": lambda: _model(
        [T("x", [4], type_code=99), T("w", [4], data=np.ones(4, np.float32)), T("y", [4])]
    ),
    "buffer-size-mismatch": lambda: _model(
        [T("x", [4]), T("w", [4], data=np.ones(2, np.float32)), T("y", [4])]
    ),
    "scale-count-mismatch": lambda: _model(
        [T("x", [4]), T("w", [4], dtype="int8", data=np.ones(4, np.int8), scale=[1.0, 2.0, 3.0]), T("y", [4])]
    ),
    "zero-point-count-mismatch": lambda: _model(
        [
            T("x", [4]),
            T("w", [4], dtype="int8", data=np.ones(4, np.int8), scale=[1.0, 2.0], zero_point=[0, 0, 0]),
            T("y", [4]),
        ]
    ),
    "signature-tensor-index": lambda: _model(signatures=[Signature("serving_default", {"x": 0}, {"y": 99})]),
    "metadata-buffer-index": lambda: (lambda b: patch(b, scalar_offset(b, "metadata0.buffer"), 77))(
        _model(metadata={"min_runtime_version": b"1.5.0"})
    ),
    "external-buffer-past-end": lambda: simple_model(weights=np.ones(64, np.float32), external=True)[:-8],
    "2^31-subgraphs": lambda: _claim("subgraphs"),
    "2^31-operator-codes": lambda: _claim("operator_codes"),
    "2^31-buffers": lambda: _claim("buffers"),
    "2^31-tensors": lambda: _claim("subgraph0.tensors"),
    "2^31-operators": lambda: _claim("subgraph0.operators"),
    "2^31-shape": lambda: _claim("subgraph0.tensor1.shape"),
    "2^31-operator-inputs": lambda: _claim("subgraph0.operator0.inputs"),
    "2^31-buffer-data": lambda: _claim("buffer1.data"),
    "2^32-1-tensors": lambda: _claim("subgraph0.tensors", 0xFFFFFFFF),
}
