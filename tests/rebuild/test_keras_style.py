"""The generated Keras module reads like code a careful person wrote.

float32 values in their shortest form, no arguments equal to the layer's default, no call wider
than the layout width, names from the Keras layer scope rather than TensorFlow's op mechanics, a
shell-quoted rebuild command, normal file permissions, and integer inputs that stay integers.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require_fixture
from hypothesis import given, settings
from hypothesis import strategies as st

from tfl_rebuild.commands.pipeline import write_generated
from tfl_rebuild.rebuild.codegen.defaults import KERAS_DEFAULTS, SameAs, signature_defaults
from tfl_rebuild.rebuild.codegen.emit import generate
from tfl_rebuild.rebuild.codegen.emitter import Emitter as _Emitter
from tfl_rebuild.rebuild.codegen.layout import WIDTH, call
from tfl_rebuild.rebuild.codegen.literals import Code, lit, shell_command
from tfl_rebuild.rebuild.codegen.naming import (
    MAX_LEN,
    Namer,
    identifier,
    keras3_scopes,
    model_scope,
    sanitize,
    snake,
)
from tfl_rebuild.rebuild.codegen.templates import class_source, environment
from tfl_rebuild.rebuild.codegen.templates import class_template as _class_template
from tfl_rebuild.rebuild.ops import LayerSpec
from tfl_rebuild.tflite.reader import read_model

GOLDEN = Path(__file__).resolve().parent / "golden"


def source_of(name: str) -> str:
    return generate(read_model(require_fixture(name)), name).source


def build_model_body(source: str) -> list[str]:
    lines = source.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("def build_model("))
    return lines[start:]


# --- 1. float32 values: the shortest repr that round-trips to the same float32 --------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (float(np.float32(0.1)), "0.1"),  # 0.10000000149011612 as a float64
        (np.float32(0.2), "0.2"),
        (float(np.float32(0.02122931)), "0.02122931"),
        (0.1, "0.1"),  # a float64 value that is not a float32 stays exact
        (1 / 3, repr(1 / 3)),
        (6.0, "6.0"),
        (-0.0, "-0.0"),
        (1e300, "1e+300"),  # beyond float32: untouched, and no overflow warning
    ],
)
def test_float_literals(value, text):
    assert lit(value) == text


@settings(max_examples=500, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_literal_round_trips_and_is_never_longer(x):
    text = lit(float(x))
    assert np.float32(ast.literal_eval(text)) == np.float32(x)
    assert len(text) <= len(repr(float(x)))


def test_leaky_relu_slope_is_written_short():
    assert "negative_slope=0.2," in source_of("ops_zoo") or "negative_slope=0.2)" in source_of("ops_zoo")
    assert "0.20000000298023224" not in source_of("ops_zoo")


# --- 2. defaults ----------------------------------------------------------------------------------


def _keras_default_cases():
    return [(cls, key) for cls, table in KERAS_DEFAULTS.items() for key in table]


@pytest.mark.parametrize(("cls", "key"), _keras_default_cases())
def test_keras_defaults_table_matches_installed_keras(cls, key):
    import keras

    params = inspect.signature(getattr(keras.layers, cls).__init__).parameters
    assert key in params, f"keras.layers.{cls} has no argument {key}"
    want = KERAS_DEFAULTS[cls][key]
    got = params[key].default
    if isinstance(want, SameAs):  # None in Keras means "the value of that other argument"
        assert got is None and want.key in params
    else:
        assert got == want and type(got) is type(want), (cls, key, got, want)


def _emitted(spec: LayerSpec) -> str:
    em = _Emitter(read_model(require_fixture("add_one")), fake_quant=False)
    return "\n".join(em._call(spec, Code("y"), [Code("x")], "y"))


@pytest.mark.parametrize(
    ("spec", "present", "absent"),
    [
        pytest.param(LayerSpec("Softmax", {"axis": -1}), [], ["axis"], id="softmax-axis"),
        pytest.param(LayerSpec("Softmax", {"axis": 1}), ["axis=1"], [], id="softmax-other-axis"),
        pytest.param(LayerSpec("Concatenate", {"axis": -1}), [], ["axis"], id="concatenate-axis"),
        pytest.param(
            LayerSpec("GlobalAveragePooling2D", {"keepdims": False}), [], ["keepdims"], id="keepdims-false"
        ),
        pytest.param(
            LayerSpec("GlobalAveragePooling2D", {"keepdims": True}), ["keepdims=True"], [], id="keepdims-true"
        ),
        pytest.param(
            LayerSpec("MaxPooling2D", {"pool_size": (2, 2), "strides": (2, 2), "padding": "valid"}),
            ["pool_size=(2, 2)"],
            ["strides", "padding"],
            id="pool-strides-equal-pool-size",
        ),
        pytest.param(
            LayerSpec("MaxPooling2D", {"pool_size": (3, 3), "strides": (1, 1), "padding": "same"}),
            ["strides=(1, 1)", 'padding="same"'],
            [],
            id="pool-stride-1-kept",
        ),
        pytest.param(
            LayerSpec("AveragePooling2D", {"pool_size": (3, 3), "strides": (2, 2)}),
            ["strides=(2, 2)"],
            [],
            id="avgpool-stride-differs",
        ),
        pytest.param(
            LayerSpec("ZeroPadding2D", {"padding": "valid"}), ['padding="valid"'], [], id="padding-per-class"
        ),
        pytest.param(
            LayerSpec(
                "Conv2D",
                {
                    "filters": 4,
                    "kernel_size": (1, 1),
                    "strides": (1, 1),
                    "padding": "valid",
                    "dilation_rate": (1, 1),
                    "use_bias": True,
                },
            ),
            ["filters=4", "kernel_size=(1, 1)"],
            ["strides", "padding", "dilation", "use_bias"],
            id="conv",
        ),
        pytest.param(LayerSpec("Dense", {"units": 3, "use_bias": 1}), ["use_bias=1"], [], id="1-is-not-True"),
        pytest.param(
            LayerSpec("LeakyReLU", {"negative_slope": 0.3}), [], ["negative_slope"], id="leaky-default"
        ),
        pytest.param(
            LayerSpec("Pad", {"paddings": [[0, 1]], "mode": "constant", "constant_values": 0.0}, custom=True),
            ["paddings="],
            ["mode", "constant_values"],
            id="custom-class-signature",
        ),
        pytest.param(
            LayerSpec("Pad", {"paddings": [[0, 1]], "mode": "reflect"}, custom=True),
            ['mode="reflect"'],
            [],
            id="custom-class-non-default",
        ),
    ],
)
def test_defaults_are_left_out(spec, present, absent):
    text = _emitted(spec)
    for part in present:
        assert part in text, text
    for part in absent:
        assert part not in text, text


def test_custom_defaults_come_from_the_template_signature():
    assert signature_defaults(_class_template("Pad"), "Pad") == {"mode": "constant", "constant_values": 0.0}


@pytest.mark.parametrize("name", ["mnist", "ops_zoo", "mobilenet_v2_float"])
def test_fixture_modules_write_no_keras_default(name):
    tree = ast.parse(source_of(name))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func.value) == "keras.layers"
        ):
            table = KERAS_DEFAULTS.get(node.func.attr, {})
            for kw in node.keywords:
                default = table.get(kw.arg)
                if (
                    default is not None
                    and not isinstance(default, SameAs)
                    and ast.literal_eval(kw.value) == default
                ):
                    found.append(ast.unparse(node))
    assert found == []


# --- 3. line layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ops_zoo", "mobilenet_v2_int8", "mnist"])
def test_code_lines_fit_the_width(name):
    wide = [
        ln for ln in build_model_body(source_of(name)) if len(ln) > WIDTH and not ln.lstrip().startswith("#")
    ]
    assert wide == []


def test_long_list_value_is_wrapped_and_exact():
    indices = list(range(300))
    lines = call("y = Gather", [("axis", 0), ("indices", indices), ("name", "y")], "(x)")
    assert all(len(ln) + 4 <= WIDTH for ln in lines)
    text = "\n".join(lines)
    node = ast.parse(text).body[0].value.func
    assert [ast.literal_eval(k.value) for k in node.keywords] == [0, indices, "y"]


def test_many_inputs_are_one_per_line():
    names = [f"branch_with_a_long_name_{k}" for k in range(8)]
    lines = call("merged = keras.layers.Concatenate", [("name", "merged")], f"([{', '.join(names)}])")
    assert all(len(ln) + 4 <= WIDTH for ln in lines)
    call_node = ast.parse("\n".join(lines)).body[0].value
    assert [a.id for a in call_node.args[0].elts] == names


# --- 4. names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("camel", "snake_name"),
    [
        ("Conv2D", "conv2d"),
        ("Conv2DTranspose", "conv2d_transpose"),
        ("DepthwiseConv2D", "depthwise_conv2d"),
        ("BatchReshape", "batch_reshape"),
        ("ReLU", "relu"),
        ("PReLU", "prelu"),
        ("LeakyReLU", "leaky_relu"),
        ("FusedBatchNormV3", "fused_batch_norm_v3"),
        ("GatherNd", "gather_nd"),
        ("MatMul", "mat_mul"),
        ("UpSampling2D", "up_sampling2d"),
    ],
)
def test_snake(camel, snake_name):
    assert snake(camel) == snake_name


def test_every_custom_class_template_is_found_by_its_snake_name():
    root = Path(__file__).resolve().parents[2] / "tfl_rebuild" / "rebuild" / "templates" / "layers"
    for path in root.glob("*.py.j2"):
        for uses, table in ((frozenset(), False), (frozenset({"subtract", "symmetric"}), True)):
            # The least and more of each class's helper code (templates.class_source) both parse.
            text = (
                environment()
                .get_template(f"layers/{path.name}")
                .render(uses=uses, uses_table=table, package=lit("pkg"))
            )
            classes = [n.name for n in ast.parse(text).body if isinstance(n, ast.ClassDef)]
            for name in classes:
                assert snake(name) == path.name.removesuffix(".py.j2"), (name, path.name)


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("model/batchnorm/add_1;model/conv/Conv2D;model/conv/BiasAdd", "conv"),  # the fused conv names it
        ("net/block_1_project_BN/batchnorm/add_1;net/block_1_project/convolution", "block_1_project"),
        (
            "net/block_1_expand_relu/Relu6;net/block_1_expand_BN/batchnorm/add_1;net/block_1_expand/Conv2D",
            "block_1_expand",
        ),
        ("m/conv1d/Relu;m/conv1d/convolution/Squeeze1", "conv1d"),  # the conv, not its fused ReLU
        ("m/max_pooling1d/MaxPool1d", "max_pooling1d"),
        ("m/layer_normalization/moments/mean", "layer_normalization"),
        ("add_10__xeno_compat__1", "add_10"),  # a converter's internals are not the authors' name
        ("m/conv2d_1/Conv2D_dequantize2", "conv2d_1"),  # a folded DEQUANTIZE's name
        ("m/dense/Tensordot/MatMul", "dense"),  # a Dense kernel on a rank-3 input
        ("sequential/dense_1/MatMul;sequential/dense_1/BiasAdd", "dense_1"),
        ("model/conv2d_3/Sigmoid", "conv2d_3_sigmoid"),
        ("model/leaky_re_lu/LeakyRelu", "leaky_re_lu"),
        ("model/up_sampling2d/resize/ResizeBilinear", "up_sampling2d"),
        ("model/Conv1_relu/Relu6", "conv1_relu"),
        ("StatefulPartitionedCall:0", "stateful_partitioned_call"),
        ("caf\u00e9/na\u00efve", "cafe_naive"),  # accents folded
        ("a\u2192b\u00b7c", "a_b_c"),  # non-ASCII separators separate words
        ("\u65e5\u672c", "t"),
    ],
)
def test_sanitize(raw, name):
    assert sanitize(raw) == name


def test_long_names_are_cut_at_a_word_boundary():
    raw = "_".join(["segment"] * 20)
    name = identifier(raw)
    assert len(name) <= MAX_LEN and not name.endswith("_") and all(p == "segment" for p in name.split("_"))


def test_fused_mechanics_do_not_make_numbered_duplicates():
    """MobileNetV2's project convolutions used to be batchnorm_add_1, batchnorm_add_1_1, ..."""
    sg = read_model(require_fixture("mobilenet_v2_float")).main
    names = [sg.tensors[op.outputs[0]].name for op in sg.operators]
    scope = model_scope(names)
    namer = Namer(scope, keras3_scopes(names, scope))
    got = [namer.name(n) for n in names]
    assert len(set(got)) == len(got)
    assert not [n for n in got if "batchnorm" in n]
    # The convolution, not its fused batch norm or ReLU6, names the layer: the authors' names.
    assert {"conv1", "block_1_expand", "block_1_depthwise", "block_1_project"} <= set(got)


KERAS3 = [  # (layer names in a Keras 3 model, the scopes TensorFlow gives them when converting)
    ("dense", "dense_1"),
    ("dense_1", "dense_1_2"),  # 'dense_1' was taken by the first
    ("conv_1", "conv_1_1"),
    ("conv_1_1", "conv_1_1_2"),
    ("conv", "conv_2"),  # 'conv_1' was taken
    ("block_1_expand", "block_1_expand_1"),
    ("Conv1", "Conv1_1"),
]


def test_keras3_scope_suffixes_give_back_the_layer_names():
    """The rule measured on models built here (scripts/measure_keras_recovery.py): Keras 3 opens
    each layer's scope twice, so TensorFlow's second, unique one ends in one extra '_<n>'."""
    names = [f"model_1/{scope}/MatMul" for _, scope in KERAS3] + ["model_1/Const_1", "Identity"]
    scope = model_scope(names)
    assert scope == ("model_1",) and keras3_scopes(names, scope)
    namer = Namer(scope, True)
    got = [(namer.keras_name(n, namer.name(n))) for n in names[: len(KERAS3)]]
    assert got == [layer for layer, _ in KERAS3]


def test_keras2_scopes_keep_their_numbers():
    """Keras 2 (and TF1) scopes are the layer names as they are: 'conv2d' has no suffix."""
    names = ["model/conv2d/Conv2D", "model/conv2d_1/Conv2D", "model/dense/MatMul"]
    scope = model_scope(names)
    assert not keras3_scopes(names, scope)
    namer = Namer(scope, keras3_scopes(names, scope))
    assert [namer.name(n) for n in names] == ["conv2d", "conv2d_1", "dense"]


def test_keras_names_are_the_authors_spelling_and_stay_distinct():
    namer = Namer(("m",))
    a, b = namer.name("m/Conv1/Conv2D"), namer.name("m/conv1/Conv2D")
    assert (a, b) == ("conv1", "conv1_conv2d")
    assert namer.keras_name("m/Conv1/Conv2D", a) == "Conv1"
    assert namer.keras_name("m/conv1/Conv2D", b) == "conv1_Conv2D"
    c = namer.name("m/class/add")  # a keyword is an identifier with '_', its layer name is as written
    assert (c, namer.keras_name("m/class/add", c)) == ("class_", "class")


def test_namer_adds_context_before_numbers():
    namer = Namer(("m",))
    assert namer.name("m/bn/batchnorm/mul_1") == "bn"
    assert namer.name("m/bn/batchnorm/add_1") == "bn_add_1"
    assert namer.name("m/bn/batchnorm/add_1") == "bn_batchnorm_add_1"
    assert namer.name("m/bn/batchnorm/add_1") == "bn_1"


@pytest.mark.parametrize("raw", ["keras", "np", "w", "model", "os", "print", "class", "match", "build_model"])
def test_reserved_names_are_never_used(raw):
    assert Namer().name(raw) == f"{raw}_"


def test_sidecar_pairs_every_tensor_with_a_layer(tmp_path):
    import json

    from tfl_rebuild.rebuild.loader import load_module

    _, py, weights = write_generated(str(require_fixture("mobilenet_v2_int8")), str(tmp_path))
    model = load_module(py).build_model(str(weights))
    layers = {layer.name for layer in model.layers}
    rows = json.loads((tmp_path / "mobilenet_v2_int8_tensors.json").read_text(encoding="utf-8"))["tensors"]
    assert rows and all(r["layer"] in layers for r in rows)
    # The quantized value of a tensor is the FakeQuant step's output, named after the op's layer.
    assert any(r["layer"].endswith("_quant") for r in rows)


def test_generation_is_deterministic():
    assert source_of("mobilenet_v2_int8") == source_of("mobilenet_v2_int8")


# --- 5. the rebuild command -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "file_name",
    [
        "model.tflite",
        "my model.tflite",
        "it's $(x) `y`.tflite",
        "line\nbreak\u2028\u202e.tflite",
        "tab\there.tflite",
    ],
)
def test_rebuild_command_is_shell_quoted_on_one_line(file_name):
    words = ["tfl-rebuild", "keras", file_name, "-o", "DIR"]
    text = shell_command(words)
    assert text.splitlines() == [text] and text.isprintable()
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to read the command back")
    out = subprocess.run([bash, "-c", f"printf '%s\\0' {text}"], capture_output=True, check=True).stdout
    assert out.decode("utf-8").split("\0")[:-1] == words


def test_header_names_the_rebuild_options(tmp_path):
    path = tmp_path / "my net.tflite"
    path.write_bytes(require_fixture("mobilenet_v2_int8").read_bytes())
    source = generate(read_model(path), "other", fake_quant=False).source
    assert source.splitlines()[1:3] == [
        "# A starting point: edit it freely. Regenerate with:",
        "#   tfl-rebuild keras 'my net.tflite' -o DIR --name other --no-fake-quant",
    ]


# --- 6. file permissions --------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_generated(str(require_fixture("add_one")), str(tmp_path / "out"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in modes.items()}


def test_rewritten_file_keeps_its_mode(tmp_path):
    write_generated(str(require_fixture("add_one")), str(tmp_path))
    py = tmp_path / "add_one.py"
    py.chmod(0o640)
    write_generated(str(require_fixture("add_one")), str(tmp_path))
    assert stat.S_IMODE(py.stat().st_mode) == 0o640


# --- 8. integer inputs keep their dtype -----------------------------------------------------------


def _embedding_model(tmp_path: Path) -> Path:
    """Token ids (int32) -> ABS -> GATHER rows of a constant embedding table."""
    import tensorflow as tf

    table = tf.constant(np.random.default_rng(0).normal(size=(129, 8)).astype(np.float32))
    module = tf.Module()
    module.fn = tf.function(
        lambda ids: tf.gather(table, tf.abs(ids)), input_signature=[tf.TensorSpec([1, 6], tf.int32)]
    )
    blob = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.fn.get_concrete_function()], module
    ).convert()
    path = tmp_path / "embedding.tflite"
    path.write_bytes(blob)
    return path


def test_int_input_is_an_int_keras_input_and_verifies(tmp_path):
    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.verify.end_to_end import verify

    path = _embedding_model(tmp_path)
    model = read_model(path)
    assert model.main.tensors[model.main.inputs[0]].dtype == "int32"
    assert "GATHER" in [op.opcode for op in model.main.operators]
    _, py, weights = write_generated(str(path), str(tmp_path / "out"))
    source = py.read_text(encoding="utf-8")
    assert 'dtype="int32"' in source
    keras_model = load_module(py).build_model(str(weights))
    assert keras_model.inputs[0].dtype == "int32"
    report = verify(model, keras_model)
    assert report.ok, report
    assert all(o.input_sensitive for o in report.outputs)
    assert report.max_rel <= 1e-6


def test_quantized_and_float_inputs_state_no_dtype():
    for name in ("mobilenet_v2_int8", "mnist"):
        assert "dtype=" not in "\n".join(ln for ln in source_of(name).splitlines() if "keras.Input" in ln)


# --- outputs nothing reads ------------------------------------------------------------------------


def test_unread_outputs_of_a_multi_output_layer_unpack_into_underscore(tmp_path):
    """SPLIT into three where only the middle piece is used: `_, mid, _ = Split(...)`, lint-clean."""
    import sys

    import tensorflow as tf

    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.verify.end_to_end import verify

    module = tf.Module()
    module.fn = tf.function(
        lambda x: tf.nn.relu(tf.split(x, 3, axis=1)[1]), input_signature=[tf.TensorSpec([1, 6], tf.float32)]
    )
    blob = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.fn.get_concrete_function()], module
    ).convert()
    path = tmp_path / "split.tflite"
    path.write_bytes(blob)
    assert "SPLIT" in [op.opcode for op in read_model(path).main.operators]
    _, py, weights = write_generated(str(path), str(tmp_path / "out"))
    source = py.read_text(encoding="utf-8")
    assert re.search(r"^    _, \w+, _ = Split\(", source, re.M), source
    for config in (["--isolated"], ["--config", str(Path(__file__).resolve().parents[2] / "pyproject.toml")]):
        proc = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", *config, str(py)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout
    report = verify(read_model(path), load_module(py).build_model(str(weights)))
    assert report.ok and all(o.input_sensitive for o in report.outputs), report


def test_class_source_keeps_only_the_helper_code_the_module_calls():
    """A module's classes carry the helpers its calls use (issue: an unused BINARY_OPS table,
    Pad.symmetric in a module without a symmetric pad), registered under the module's name."""
    binary = class_source("BinaryOp", frozenset({"multiply", "add"}), "net")
    assert '"multiply": keras.ops.multiply' in binary and "subtract" not in binary
    assert '@keras.saving.register_keras_serializable(package="net")' in binary
    assert "BINARY_OPS" not in class_source("BinaryOp", frozenset({"add"}), "net")
    assert "self.symmetric" not in class_source("Pad", frozenset({"constant"}), "net")
    assert "def symmetric" in class_source("Pad", frozenset({"symmetric"}), "net")
