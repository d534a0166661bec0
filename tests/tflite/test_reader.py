"""reader.read_model against the TFLite runtime's own view of the same files, plus crafted models."""

from __future__ import annotations

import inspect as pyinspect
import mmap
import re

import numpy as np
import pytest
import tflite
from conftest import (
    corpus_params,
    interpreter,
    invoke,
    model_params,
    require_corpus,
    require_fixture,
    require_model,
)
from flatbuf import BAD_MODELS, Op, Signature, T, build_model, model_metadata, simple_model

from tfl_rebuild.errors import ModelFormatError, TflRebuildError
from tfl_rebuild.tflite.reader import read_model

MODELS = model_params()


def _mismatches(items) -> list[str]:
    return [m for m in items if m]


# ---------------------------------------------------------------------------------------------
# Against the interpreter (fixtures and corpus)


@pytest.mark.parametrize("path", MODELS)
def test_tensors_match_interpreter(path):
    model = read_model(require_model(path))
    details = interpreter(path, allocate=False).get_tensor_details()
    tensors = model.main.tensors
    assert len(details) >= len(tensors)  # the runtime may add scratch tensors after the model's
    bad = []
    for t, d in zip(tensors, details):
        assert d["index"] == t.index
        q = d["quantization_parameters"]
        scales = t.quantization.scale if t.quantization else np.zeros(0, np.float32)
        zps = t.quantization.zero_point if t.quantization else np.zeros(0, np.int64)
        qdim = t.quantization.quantized_dimension if t.quantization else 0
        bad.append(
            (t.name != d["name"] and f"{t.index}: name {t.name!r} != {d['name']!r}")
            or (t.shape != tuple(d["shape"]) and f"{t.index}: shape {t.shape} != {tuple(d['shape'])}")
            or (
                (t.shape_signature or t.shape) != tuple(d["shape_signature"])
                and f"{t.index}: shape_signature {t.shape_signature} != {tuple(d['shape_signature'])}"
            )
            or (t.dtype != np.dtype(d["dtype"]).name and f"{t.index}: dtype {t.dtype} != {d['dtype']}")
            or (not np.array_equal(scales, q["scales"]) and f"{t.index}: scales differ")
            or (not np.array_equal(zps, q["zero_points"]) and f"{t.index}: zero points differ")
            or (
                len(scales) > 1
                and qdim != q["quantized_dimension"]
                and f"{t.index}: quantized_dimension differs"
            )
        )
    assert _mismatches(bad) == []


@pytest.mark.parametrize("path", MODELS)
def test_sparsity_matches_interpreter(path):
    model = read_model(require_model(path))
    details = interpreter(path, allocate=False).get_tensor_details()
    bad = []
    for t in model.main.tensors:
        sp = details[t.index]["sparsity_parameters"]
        if t.sparsity is None:
            bad.append(sp and f"{t.index}: runtime sees sparsity, we do not")
            continue
        ours = t.sparsity
        dims = sp.get("dim_metadata", [])
        ok = (
            list(ours.traversal_order) == list(sp["traversal_order"])
            and list(ours.block_map) == list(sp.get("block_map", []))
            and len(ours.dim_metadata) == len(dims)
        )
        for md, d in zip(ours.dim_metadata, dims):
            if d["format"] == 0:
                ok = ok and md.format == "DENSE" and md.dense_size == d["dense_size"]
            else:
                ok = (
                    ok
                    and md.format == "SPARSE_CSR"
                    and np.array_equal(md.array_segments, d["array_segments"])
                    and np.array_equal(md.array_indices, d["array_indices"])
                )
        bad.append(not ok and f"{t.index} {t.name}: sparsity differs")
    assert _mismatches(bad) == []


@pytest.mark.parametrize("path", MODELS)
def test_operators_match_interpreter(path):
    model = read_model(require_model(path))
    ops = interpreter(path, allocate=False)._get_ops_details()
    assert len(ops) == len(model.main.operators)
    bad = []
    for op, d in zip(model.main.operators, ops):
        bad.append(
            (op.key != d["op_name"] and f"{op.index}: {op.key} != {d['op_name']}")
            or (
                op.inputs != tuple(d["inputs"])
                and f"{op.index} {op.key}: inputs {op.inputs} != {tuple(d['inputs'])}"
            )
            or (op.outputs != tuple(d["outputs"]) and f"{op.index} {op.key}: outputs differ")
        )
    assert _mismatches(bad) == []


@pytest.mark.parametrize("path", MODELS)
def test_constants_match_interpreter(path):
    """interpreter.get_tensor on every constant equals our view (packed values for sparse ones)."""
    model = read_model(require_model(path))
    interp = interpreter(path, allocate=False)
    constants = [t for t in model.main.tensors if t.data is not None]
    assert constants
    bad = []
    for t in constants:
        theirs = interp.get_tensor(t.index)
        ours = t.data if t.sparsity is None else t.data.reshape(theirs.shape)
        bad.append(
            (theirs.dtype != ours.dtype or not np.array_equal(theirs, ours, equal_nan=True))
            and f"{t.index} {t.name}: values differ"
        )
    assert _mismatches(bad) == []


@pytest.mark.parametrize("path", MODELS)
def test_inputs_outputs_match_interpreter(path):
    model = read_model(require_model(path))
    interp = interpreter(path, allocate=False)
    assert model.main.inputs == tuple(d["index"] for d in interp.get_input_details())
    assert model.main.outputs == tuple(d["index"] for d in interp.get_output_details())


def _buffer_owner(arr: np.ndarray):
    """The object at the end of an array's base chain (through a memoryview to what it views)."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


@pytest.mark.parametrize("path", MODELS)
def test_constants_are_zero_copy_views_into_the_map(path):
    model = read_model(require_model(path))
    assert isinstance(model._storage, mmap.mmap)
    for t in (t for t in model.main.tensors if t.data is not None):
        arr = t.data
        assert not arr.flags.owndata and not arr.flags.writeable, t.name
        assert _buffer_owner(arr) is model._storage, t.name
    arr = next(t.data for t in model.main.tensors if t.data is not None and t.data.size)
    with pytest.raises(ValueError, match="read-only"):
        arr.reshape(-1)[0] = 0


# ---------------------------------------------------------------------------------------------
# Model-level fields


@pytest.mark.parametrize("name", ["mnist", "mobilenet_v2_int8", "ops_zoo"])
def test_converter_fixture_header(name):
    model = read_model(require_fixture(name))
    assert model.version == 3
    assert model.description == "MLIR Converted."
    assert re.fullmatch(r"\d+\.\d+\.\d+", model.min_runtime_version)
    assert model.info is None  # the converter writes no TFLITE_METADATA
    assert not model.external_buffers and model.flatbuffer_size == model.size
    assert len(model.subgraphs) == 1 and model.main is model.subgraphs[0]


@pytest.mark.corpus
@pytest.mark.parametrize(
    "name, runtime, info_name, n_outputs",
    [
        ("face_detection_full_range_sparse", "2.2.0", "Full Range Face Detection", 2),
        ("face_detection_short_range", None, "Short Range Face Detection", 2),
        ("hand_landmark_full", "1.14.0", "HandLandmarkDetector", 4),
        ("selfie_segmentation", None, "ImageSegmenter", 1),
        ("hand_recrop", None, None, 0),
    ],
)
def test_corpus_metadata(name, runtime, info_name, n_outputs):
    model = read_model(require_corpus(name))
    assert model.min_runtime_version == runtime
    if info_name is None:
        assert model.info is None and "TFLITE_METADATA" not in model.metadata
        return
    assert model.info.name == info_name
    assert model.info.description and model.info.description.encode() in model.metadata["TFLITE_METADATA"]
    assert [i.name for i in model.info.inputs] == ["image"]
    assert len(model.info.outputs) == n_outputs == len(model.main.outputs)


def test_crafted_metadata_decodes_into_model_info():
    blob = model_metadata(
        name="Crafted",
        description="a test model",
        version="v7",
        author="tests",
        license="Apache-2.0",
        inputs=[("image", "an image")],
        outputs=[("scores", "class scores"), ("boxes", "")],
        associated_files=["labels.txt"],
    )
    model = read_model(
        simple_model(metadata={"TFLITE_METADATA": blob, "min_runtime_version": b"1.5.0" + b"\0" * 11})
    )
    assert model.min_runtime_version == "1.5.0"
    assert model.metadata["TFLITE_METADATA"] == blob
    info = model.info
    assert (info.name, info.description, info.version, info.author, info.license) == (
        "Crafted",
        "a test model",
        "v7",
        "tests",
        "Apache-2.0",
    )
    assert [(i.name, i.description) for i in info.inputs] == [("image", "an image")]
    assert [(o.name, o.description) for o in info.outputs] == [("scores", "class scores"), ("boxes", "")]
    assert info.associated_files == ("labels.txt",)


@pytest.mark.parametrize("blob", [b"", b"junk", b"\xff" * 64], ids=["empty", "short", "garbage"])
def test_unreadable_tflite_metadata_gives_no_info(blob):
    model = read_model(simple_model(metadata={"TFLITE_METADATA": blob}))
    assert model.info is None and model.metadata["TFLITE_METADATA"] == blob


def test_description_version_and_subgraph_name():
    model = read_model(simple_model(description="hello", subgraph_name="body", version=3))
    assert (model.description, model.version, model.main.name) == ("hello", 3, "body")


def test_signature_defs_match_interpreter():
    blob = simple_model(signatures=[Signature("serving_default", {"in_x": 0}, {"out_y": 2})])
    model = read_model(blob)
    (sig,) = model.signatures
    assert (sig.key, sig.subgraph_index, sig.inputs, sig.outputs) == (
        "serving_default",
        0,
        (("in_x", 0),),
        (("out_y", 2),),
    )
    runtime = interpreter(blob, allocate=False).get_signature_list()
    assert runtime == {"serving_default": {"inputs": ["in_x"], "outputs": ["out_y"]}}


# ---------------------------------------------------------------------------------------------
# Tensor fields


def test_tensor_fields_on_a_crafted_model():
    w = np.arange(6, dtype=np.int8).reshape(2, 3)
    blob = build_model(
        [
            T("x", [1, 3], shape_signature=[-1, 3]),
            T(
                "w",
                [2, 3],
                dtype="int8",
                data=w,
                scale=[0.5, 0.25],
                zero_point=[1, -2],
                quantized_dimension=0,
            ),
            T("state", [1, 2], is_variable=True),
            T("y", [1, 2]),
        ],
        [Op("FULLY_CONNECTED", [0, 1, -1], [3], options={"fused_activation_function": "RELU"}, version=2)],
        inputs=[0],
        outputs=[3],
    )
    x, wt, state, y = read_model(blob).main.tensors
    assert (x.shape, x.shape_signature, x.dtype, x.buffer, x.data) == ((1, 3), (-1, 3), "float32", 0, None)
    assert wt.dtype == "int8" and wt.buffer == 1 and np.array_equal(wt.data, w)
    assert wt.quantization.per_channel and wt.quantization.quantized_dimension == 0
    assert np.array_equal(wt.quantization.scale, [0.5, 0.25]) and wt.quantization.scale.dtype == np.float32
    assert np.array_equal(wt.quantization.zero_point, [1, -2])
    assert state.is_variable and not x.is_variable
    assert y.quantization is None and y.sparsity is None


# ---------------------------------------------------------------------------------------------
# Operator fields


def test_operator_fields_on_a_crafted_model():
    blob = build_model(
        [
            T("x", [1, 3]),
            T("w", [2, 3], data=np.ones((2, 3), np.float32)),
            T("y", [1, 2]),
            T("z", [1, 2]),
            T("tmp", [1, 2]),
        ],
        [
            Op(
                "FULLY_CONNECTED",
                [0, 1, -1],
                [2],
                options={"fused_activation_function": "RELU"},
                version=9,
                intermediates=[4],
            ),
            Op("CUSTOM", [2], [3], custom_code="MyCustomOp", custom_options=b"\x01\x02\x03", version=1),
        ],
        inputs=[0],
        outputs=[3],
    )
    fc, custom = read_model(blob).main.operators
    assert (fc.opcode, fc.key, fc.version, fc.inputs, fc.outputs, fc.intermediates) == (
        "FULLY_CONNECTED",
        "FULLY_CONNECTED",
        9,
        (0, 1, -1),
        (2,),
        (4,),
    )
    assert fc.options_type == "FullyConnectedOptions"
    assert fc.options["fused_activation_function"] == "RELU"
    assert (fc.custom_code, fc.custom_options) == (None, b"")
    assert (custom.opcode, custom.key, custom.custom_code, custom.custom_options) == (
        "CUSTOM",
        "MyCustomOp",
        "MyCustomOp",
        b"\x01\x02\x03",
    )
    assert custom.options_type is None and custom.options == {}


@pytest.mark.parametrize(
    "builtin, deprecated, expected",
    [
        (None, None, "CONV_2D"),  # a current writer: both fields agree
        (0, 3, "CONV_2D"),  # an old writer: only the deprecated int8 field (builtin_code defaults to 0 = ADD)
        (150, 127, None),  # a code past 127: deprecated holds the placeholder 127
        (3, 0, "CONV_2D"),  # only the new field set
    ],
    ids=["both", "deprecated-only", "extended-code", "builtin-only"],
)
def test_opcode_is_max_of_builtin_and_deprecated_code(builtin, deprecated, expected):
    if expected is None:
        expected = next(k for k, v in vars(tflite.BuiltinOperator).items() if v == 150)
    blob = build_model(
        [
            T("x", [1, 4, 4, 1]),
            T("w", [1, 1, 1, 1], data=np.ones((1, 1, 1, 1), np.float32)),
            T("y", [1, 4, 4, 1]),
        ],
        [
            Op(
                "CONV_2D",
                [0, 1, -1],
                [2],
                builtin_code=builtin,
                deprecated_builtin_code=deprecated,
                options={"padding": "VALID", "stride_w": 1, "stride_h": 1},
            )
        ],
        inputs=[0],
        outputs=[2],
    )
    (op,) = read_model(blob).main.operators
    assert op.opcode == expected


@pytest.mark.parametrize("path", corpus_params(["selfie_segmentation"]))
def test_corpus_custom_op(path):
    model = read_model(require_model(path))
    custom = [op for op in model.main.operators if op.opcode == "CUSTOM"]
    assert [op.custom_code for op in custom] == ["Convolution2DTransposeBias"]
    assert custom[0].key == "Convolution2DTransposeBias" and len(custom[0].custom_options) > 0


def test_conv2d_options_on_fixture():
    """ops_zoo: Conv2D(8, 3, strides=2, padding="same", activation="relu") and the dilated
    Conv2D(8, 3, padding="valid", dilation_rate=2); DepthwiseConv2D(3, depth_multiplier=2) + ReLU6."""
    sg = read_model(require_fixture("ops_zoo")).main
    first = sg.operators[0]
    assert first.opcode == "CONV_2D" and first.options_type == "Conv2DOptions"
    assert first.options == {
        "padding": "SAME",
        "stride_w": 2,
        "stride_h": 2,
        "dilation_w_factor": 1,
        "dilation_h_factor": 1,
        "fused_activation_function": "RELU",
        "quantized_bias_type": "FLOAT32",
    }
    dilated = [op for op in sg.operators if op.opcode == "CONV_2D" and op.options["dilation_h_factor"] != 1]
    assert [
        (op.options["dilation_h_factor"], op.options["dilation_w_factor"], op.options["padding"])
        for op in dilated
    ] == [(2, 2, "VALID")]
    (dw,) = [op for op in sg.operators if op.opcode == "DEPTHWISE_CONV_2D"]
    assert dw.options["depth_multiplier"] == 2 and dw.options["fused_activation_function"] == "RELU6"
    (tc,) = [op for op in sg.operators if op.opcode == "TRANSPOSE_CONV"]
    assert (tc.options["stride_h"], tc.options["stride_w"], tc.options["padding"]) == (2, 2, "SAME")
    (leaky,) = [op for op in sg.operators if op.opcode == "LEAKY_RELU"]
    assert leaky.options == {"alpha": pytest.approx(0.2)}


# ---------------------------------------------------------------------------------------------
# Every builtin options table decodes generically


def _options_tables() -> list[str]:
    names = []
    for enum in (tflite.BuiltinOptions, tflite.BuiltinOptions2):
        names += [
            k for k, v in vars(enum).items() if not k.startswith("_") and k != "NONE" and isinstance(v, int)
        ]
    return sorted(set(names))


# Enum-typed option fields: the value 1 must come back as the enum member's name.
ENUM_FIELDS = {
    "padding": tflite.Padding,
    "fused_activation_function": tflite.ActivationFunctionType,
    "mode": tflite.MirrorPadMode,
    "weights_format": tflite.FullyConnectedOptionsWeightsFormat,
    "kernel_type": tflite.LSTMKernelType,
    "combiner": tflite.CombinerType,
    "type": tflite.LSHProjectionType,
    "in_data_type": tflite.TensorType,
    "out_data_type": tflite.TensorType,
    "output_type": tflite.TensorType,
    "idx_out_type": tflite.TensorType,
    "quantized_bias_type": tflite.TensorType,
}


def _enum_name(enum, value: int):
    return next((k for k, v in vars(enum).items() if v == value and not k.startswith("_")), value)


def _schema_fields(table: str) -> list[tuple[str, str, str, object]]:
    """(snake name, builder field, kind, default) of each field, read from the builder functions
    `<Table>Add<Field>` (one per schema field) - independent of how the reader finds them."""
    prefix = f"{table}Add"
    out = []
    for fn in sorted(f for f in dir(tflite) if f.startswith(prefix)):
        field_name = fn[len(prefix) :]
        src = pyinspect.getsource(getattr(tflite, fn))
        m = re.search(r"builder\.Prepend(\w+)Slot\(\d+, .+, (.+?)\)\s*$", src, re.M)
        kind, default = m.group(1), m.group(2)
        if kind == "UOffsetTRelative":
            accessor = pyinspect.getsource(getattr(getattr(tflite, table), field_name))
            if hasattr(tflite, f"{table}Start{field_name}Vector"):
                elem = re.search(r"_tab\.Get\(flatbuffers\.number_types\.(\w+)Flags", accessor)
                kind = "vector:" + (elem.group(1) if elem else "table")
            elif "._tab.String(" in accessor:
                kind = "string"
            else:
                kind = "table"
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", field_name).lower()
        out.append((snake, field_name, kind, default))
    return out


_NUMPY_OF = {
    "Bool": np.bool_,
    "Int8": np.int8,
    "Uint8": np.uint8,
    "Int16": np.int16,
    "Int32": np.int32,
    "Int64": np.int64,
    "Uint32": np.uint32,
    "Uint16": np.uint16,
    "Uint64": np.uint64,
    "Float32": np.float32,
}


def _options_model(table: str, options: dict) -> bytes:
    return build_model(
        [T("x", [2]), T("y", [2])],
        [Op("ADD", [0], [1], options_type=table, options=options)],
        inputs=[0],
        outputs=[1],
    )


@pytest.mark.parametrize("table", _options_tables())
def test_every_options_table_decodes_set_fields(table):
    """Each field set to a distinct non-default value comes back under its schema name."""
    options, expected = {}, {}
    for k, (snake, _, kind, _default) in enumerate(_schema_fields(table)):
        if kind == "table" or kind == "vector:table":
            continue  # nested tables are not decoded
        if kind == "Bool":
            options[snake], expected[snake] = True, True
        elif kind == "Float32":
            options[snake] = expected[snake] = k + 0.5
        elif kind == "string":
            options[snake] = expected[snake] = f"s{k}"
        elif kind.startswith("vector:"):
            elem = kind.split(":")[1]
            values = [True, False, True] if elem == "Bool" else [k, k + 1, 7]
            options[snake] = np.array(values, dtype=_NUMPY_OF[elem])
            expected[snake] = values
        elif snake in ENUM_FIELDS:
            options[snake], expected[snake] = 1, _enum_name(ENUM_FIELDS[snake], 1)
        else:
            options[snake] = expected[snake] = k + 2
    (op,) = read_model(_options_model(table, options)).main.operators
    assert op.options_type == table
    assert op.options == expected


@pytest.mark.parametrize("table", _options_tables())
def test_every_options_table_decodes_defaults(table):
    """An empty table decodes to the schema defaults: scalars at their default, vectors empty,
    absent strings left out, and no field that the schema does not have."""
    expected = {}
    for snake, _, kind, default in _schema_fields(table):
        if kind in ("table", "vector:table", "string"):
            continue
        if kind.startswith("vector:"):
            expected[snake] = []
        elif kind == "Bool":
            expected[snake] = bool(int(default))
        else:
            value = float(default) if kind == "Float32" else int(default)
            expected[snake] = _enum_name(ENUM_FIELDS[snake], value) if snake in ENUM_FIELDS else value
    (op,) = read_model(_options_model(table, {})).main.operators
    assert op.options_type == table
    assert op.options == expected


# ---------------------------------------------------------------------------------------------
# Buffers stored outside the flatbuffer (Buffer.offset/size)


WEIGHTS = np.array([0.5, -1.0, 2.0, 3.25], np.float32)


@pytest.fixture
def external_model(tmp_path):
    path = tmp_path / "external.tflite"
    path.write_bytes(simple_model(weights=WEIGHTS, external=True))
    return path


def test_external_buffer_is_read_from_after_the_flatbuffer(external_model):
    model = read_model(external_model)
    w = model.main.tensors[1]
    assert model.external_buffers
    assert np.array_equal(w.data, WEIGHTS)
    # The bytes really live past the flatbuffer, and the view points into the mapped file.
    raw = external_model.read_bytes()
    assert model.flatbuffer_size < model.size
    at = raw.index(WEIGHTS.tobytes())
    assert at >= model.flatbuffer_size
    assert _buffer_owner(w.data) is model._storage and not w.data.flags.writeable
    # In the flatbuffer itself, the buffer has no data vector, only offset/size.
    fb = tflite.Model.GetRootAs(raw, 0).Buffers(1)
    assert fb.DataLength() == 0 and (fb.Offset(), fb.Size()) == (at, WEIGHTS.nbytes)


def test_external_buffer_from_bytes():
    blob = simple_model(weights=WEIGHTS, external=True)
    assert np.array_equal(read_model(blob).main.tensors[1].data, WEIGHTS)


def test_runtime_agrees_on_external_buffer(external_model):
    interp = interpreter(external_model)
    x = np.array([1.0, 2.0, -3.0, 0.5], np.float32)
    invoke(interp, [x])
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    model = read_model(external_model)
    np.testing.assert_array_equal(y, x * model.main.tensors[1].data)
    np.testing.assert_array_equal(interp.get_tensor(1), model.main.tensors[1].data)


def test_external_buffer_past_end_of_file_is_refused(tmp_path):
    blob = simple_model(weights=WEIGHTS, external=True)
    path = tmp_path / "cut.tflite"
    path.write_bytes(blob[:-4])
    with pytest.raises(ModelFormatError, match=r"cut\.tflite: buffer 1: external data .* past the end"):
        read_model(path)


def test_inline_and_external_buffers_mixed():
    a, b = np.arange(4, dtype=np.float32), np.arange(4, 8).astype(np.int32)
    blob = build_model(
        [T("x", [4]), T("a", [4], data=a, external=True), T("b", [4], dtype="int32", data=b), T("y", [4])],
        [Op("MUL", [0, 1], [3])],
        inputs=[0],
        outputs=[3],
    )
    ts = read_model(blob).main.tensors
    assert np.array_equal(ts[1].data, a) and np.array_equal(ts[2].data, b) and ts[2].data.dtype == np.int32


# ---------------------------------------------------------------------------------------------
# Hostile names survive as data


HOSTILE = [
    "a\"b'c",
    "line\nbreak",
    "{{ evil }}",
    "__import__('os').system('x')",
    "ünïcødé/名前",
    "",
    "x" * 5000,
]


@pytest.mark.parametrize(
    "name", HOSTILE, ids=["quotes", "newline", "template", "code", "unicode", "empty", "long"]
)
def test_hostile_names_are_kept_verbatim(name):
    model = read_model(simple_model(x_name=name, w_name=name + "_w", y_name=name + "_y"))
    assert [t.name for t in model.main.tensors] == [name, name + "_w", name + "_y"]


def test_invalid_utf8_name_is_replaced_not_fatal():
    model = read_model(simple_model(x_name=b"bad\xff\xfe"))
    assert model.main.tensors[0].name == "bad\ufffd\ufffd"


# ---------------------------------------------------------------------------------------------
# Bad input: one TflRebuildError, one line, saying what and where

# name -> (where, what) the message must contain, as regexes.
BAD_EXPECTED = {
    "empty": ("model header", r"file is 0 bytes, too short"),
    "short": ("model header", r"file is 4 bytes, too short"),
    "wrong-identifier": ("model header", r"file identifier is b'XXXX', not b'TFL3'"),
    "truncated-header": (r"operator codes", r"malformed flatbuffer"),
    "truncated-half": (r"buffer \d+", r"malformed flatbuffer|past the end"),
    "truncated-last-byte": (r"buffer \d+", r"malformed flatbuffer|past the end"),
    "random-bytes": ("model header", r"file identifier"),
    "random-bytes-with-identifier": (r"operator codes", r"malformed flatbuffer|claims"),
    "task-bundle": (
        "model header",
        r"a zip archive \(a MediaPipe \.task bundle\?\), not a \.tflite model; it "
        r"holds 'hand_detector\.tflite': extract one",
    ),
    "root-offset-past-end": ("model header", r"root table offset 1073741824 lies outside the file"),
    "tensor-buffer-index": ("subgraph 0 tensor 1", r"buffer index 99 is out of range"),
    "operator-input-index": ("subgraph 0 operator 0", r"operator input index 57 is out of range"),
    "operator-output-index": ("subgraph 0 operator 0", r"operator output index 99 is out of range"),
    "opcode-index": ("subgraph 0 operator 0", r"opcode index 5 is out of range"),
    "subgraph-input-index": ("subgraph 0", r"input tensor index 42 is out of range"),
    "negative-dimension": ("subgraph 0 tensor 0", r"shape \[-5, 4\] has a negative dimension"),
    "unknown-tensor-type": ("subgraph 0 tensor 0", r"unknown tensor type 99"),
    "buffer-size-mismatch": ("subgraph 0 tensor 1", r"buffer 1 holds 8 bytes, shape \[4\] float32 needs 16"),
    "scale-count-mismatch": ("subgraph 0 tensor 1", r"3 per-channel scales do not match dimension 0"),
    "zero-point-count-mismatch": ("subgraph 0 tensor 1", r"2 scales but 3 zero points"),
    "signature-tensor-index": ("signature def 0", r"signature tensor index 99 is out of range"),
    "metadata-buffer-index": ("metadata", r"metadata buffer index 77 is out of range"),
    "external-buffer-past-end": ("buffer 1", r"external data \[\d+, \d+\) lies past the end of the file"),
    "2^31-subgraphs": ("subgraphs", r"subgraphs claims 2147483648 elements"),
    "2^31-operator-codes": ("operator codes", r"operator_codes claims 2147483648 elements"),
    "2^31-buffers": ("buffers", r"buffers claims 2147483648 elements"),
    "2^31-tensors": ("subgraph 0", r"tensors claims 2147483648 elements"),
    "2^31-operators": ("subgraph 0", r"operators claims 2147483648 elements"),
    "2^31-shape": ("subgraph 0 tensor 1", r"shape claims 2147483648 elements"),
    "2^31-operator-inputs": ("subgraph 0 operator 0", r"inputs claims 2147483648 elements"),
    "2^31-buffer-data": ("buffer 1", r"data claims 2147483648 elements"),
    "2^32-1-tensors": ("subgraph 0", r"tensors claims 4294967295 elements"),
}


def test_every_bad_model_has_an_expectation():
    assert set(BAD_EXPECTED) == set(BAD_MODELS)


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
def test_bad_model_raises_one_line_error(name, tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(BAD_MODELS[name]())
    where, what = BAD_EXPECTED[name]
    with pytest.raises(TflRebuildError) as info:
        read_model(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert re.match(rf"bad\.tflite: {where}: (.*: )?({what})", message), message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("name", ["empty", "truncated-half", "opcode-index", "2^31-tensors"])
def test_bad_model_from_bytes(name):
    with pytest.raises(ModelFormatError, match=r"^<bytes>: "):
        read_model(BAD_MODELS[name]())


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="is a directory"):
        read_model(tmp_path)
    with pytest.raises(ModelFormatError, match="cannot read"):
        read_model(tmp_path / "nope.tflite")


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.75, 0.95, 0.999])
def test_truncated_real_model_is_refused(fraction):
    """Cutting a converter-written model anywhere loses bytes something points at."""
    blob = require_fixture("mobilenet_v2_int8").read_bytes()
    with pytest.raises(ModelFormatError):
        read_model(blob[: int(len(blob) * fraction)])


@pytest.mark.parametrize("name", ["mnist", "mobilenet_v2_float"])
def test_sha256_of_the_file_leaves_views_intact(name):
    """sha256 hashes the mapped file and lets hashed pages go (MADV_DONTNEED): the constant views
    must read the same bytes afterwards."""
    import hashlib

    path = require_fixture(name)
    model = read_model(path)
    before = [t.data.copy() for t in model.main.tensors if t.data is not None]
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    after = [t.data for t in model.main.tensors if t.data is not None]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert read_model(path.read_bytes()).sha256 == model.sha256  # the in-memory path too


def test_tflite_package_loads_lazily_and_then_fully():
    """Reading imports only the generated modules it needs; the package then behaves as usual."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tfl_rebuild.tflite.reader import read_model\n"
        f"read_model({str(require_fixture('ops_zoo'))!r})\n"
        "loaded = sum(1 for m in sys.modules if m.startswith('tflite.'))\n"
        "import tflite\n"
        "from tflite import Conv2DOptions\n"
        "import tflite.Model as M\n"
        "print(loaded, isinstance(tflite.Model, type), M is tflite.Model, callable(tflite.ModelStart),\n"
        "      Conv2DOptions.__name__, tflite.__version__, sum(1 for m in sys.modules if m.startswith('tflite.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(out[0]) < 60
    assert out[1:6] == ["True", "True", "True", "Conv2DOptions", tflite.__version__]
    assert int(out[6]) > 150
