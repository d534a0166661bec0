"""Model encodings beyond the fixtures': legacy uint8 models, int8 with integer / bool inputs,
dynamic shapes, several signatures, resource variables (state made inputs and outputs), and models
that cannot be rebuilt at all (hash tables, strings, Flex).

Every model is built here (TensorFlow's converter, or tests/flatbuf.py), small, and checked
against the TFLite runtime through the CLI, as a user would run it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], env=ENV)


def one_line_refusal(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def convert_function(fn, specs, path, module=None, *, flex=False, resource_variables=False):
    import tensorflow as tf

    module = module or tf.Module()
    concrete = tf.function(fn, input_signature=specs).get_concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    if flex:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    conv.experimental_enable_resource_variables = resource_variables
    path.write_bytes(conv.convert())
    return path


# -- models that cannot be rebuilt: one line, exit 2 -------------------------------------------------


@pytest.fixture(scope="module")
def variables_model(tmp_path_factory):
    import tensorflow as tf

    module = tf.Module()
    module.acc = tf.Variable(tf.zeros([1, 4]))

    def step(x):
        module.acc.assign_add(x)
        return module.acc.read_value() * 2.0

    return convert_function(
        step,
        [tf.TensorSpec([1, 4], tf.float32)],
        tmp_path_factory.mktemp("variables") / "variables.tflite",
        module,
        resource_variables=True,
    )


@pytest.fixture(scope="module")
def hashtable_model(tmp_path_factory):
    import tensorflow as tf

    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64)), 0
    )
    return convert_function(
        lambda k: module.table.lookup(k),
        [tf.TensorSpec([3], tf.string)],
        tmp_path_factory.mktemp("hashtable") / "hashtable.tflite",
        module,
    )


def test_resource_variables_become_state_inputs_and_outputs(variables_model, tmp_path):
    """acc += x; return acc * 2: the read after the assign reads the sum. The rebuild takes acc as a
    second input and returns its new value as a second output (verified on random states), and
    fed back step by step it streams as the stateful model does in the runtime."""
    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.runtime.interpreter import make_interpreter

    result = cli("keras", variables_model, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "keeps 1 state tensor(s) between runs" in result.output and "all zeros" in result.output
    assert (
        "streamed 8 runs from the initial state" in result.output
        and "match" in result.output.split("streamed")[1]
    )
    keras_model = load_module(tmp_path / "out" / "variables.py").build_model()
    # Any batch (passes.batch_axis): B independent streams, each with its own state row.
    assert [tuple(t.shape) for t in keras_model.inputs] == [(None, 4), (None, 4)] and len(
        keras_model.outputs
    ) == 2
    interp = make_interpreter(model_path=str(variables_model))
    interp.allocate_tensors()
    state = np.zeros([1, 4], np.float32)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.uniform(-1, 1, [1, 4]).astype(np.float32)
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
        want = interp.get_tensor(interp.get_output_details()[0]["index"])
        got, state = (np.asarray(y) for y in keras_model([x, state]))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.abs(want).max() > 1.0  # the state accumulated: five steps of the same model differ


@pytest.fixture(scope="module")
def int8_stream_model(tmp_path_factory):
    """microWakeWord's pattern, small: a ring buffer of the last 4 frames in a resource variable
    (concat the new frame, keep the last 4), a dense layer over the 5; full int8, state int8."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(0, 0.3, [40, 6]).astype(np.float32))

    class Stream(tf.Module):
        def __init__(self):
            super().__init__()
            self.buf = tf.Variable(tf.zeros([1, 4, 8]), trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([1, 1, 8], tf.float32)])
        def step(self, x):
            full = tf.concat([self.buf, x], axis=1)
            self.buf.assign(full[:, 1:])
            return tf.nn.relu(tf.matmul(tf.reshape(full, [1, 40]), kernel))

    module = Stream()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([module.step.get_concrete_function()], module)
    conv.experimental_enable_resource_variables = True
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [rng.uniform(-1, 1, [1, 1, 8]).astype(np.float32)] for _ in range(50)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    conv._experimental_variable_quantization = True  # int8 state, as microWakeWord's models have
    path = tmp_path_factory.mktemp("stream") / "stream_int8.tflite"
    path.write_bytes(conv.convert())
    return path


def test_int8_streaming_model(int8_stream_model, tmp_path):
    from tfl_rebuild.tflite.reader import read_model

    ops = [o.opcode for o in read_model(str(int8_stream_model)).main.operators]
    assert {"READ_VARIABLE", "ASSIGN_VARIABLE"} <= set(ops)
    result = cli("keras", int8_stream_model, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "TFLite input 'Variable' is int8" in (tmp_path / "out" / "stream_int8.py").read_text()
    streamed = result.output.split("streamed 8 runs from the initial state")[1].split("\n")[:3]
    assert "LSB" in " ".join(streamed) and "match" in " ".join(streamed), result.output


def test_compare_pairs_the_state_view(int8_stream_model, tmp_path):
    """compare rebuilds the same stateless view the module was made from (its state is an input)."""
    assert cli("keras", int8_stream_model, "-o", tmp_path / "out", "--no-verify").exit_code == 0
    result = cli("compare", int8_stream_model, tmp_path / "out" / "stream_int8.py")
    assert result.exit_code == 0, result.output
    assert "within tolerance" in result.output and "STRIDED_SLICE" in result.output, result.output


def test_streaming_check_fails_a_state_that_drifts(variables_model, tmp_path, monkeypatch):
    """A rebuild whose state output is 1e-3 off: each single run is checked on its own state, the
    stream feeds the drift back, and the streaming check must say so."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify
    from tfl_rebuild.rebuild import loader
    from tfl_rebuild.verify import end_to_end as verify

    rebuilt = rebuild_and_verify(str(variables_model), str(tmp_path / "out"))  # streamed: it has variables
    assert rebuilt.verify_error is None and rebuilt.report.stream.ok
    real = verify.run_keras

    def drifting(m, xs, **kw):
        return [y + (1e-3 if k else 0) for k, y in enumerate(real(m, xs, **kw))]

    monkeypatch.setattr(verify, "run_keras", drifting)
    monkeypatch.setattr(loader, "run_keras", drifting)  # streaming imports it when it runs
    report = verify.verify(rebuilt.model, rebuilt.keras_model, original=rebuilt.original)
    assert report.stream is not None and not report.stream.ok and not report.ok
    assert report.stream.error > report.stream.bar


def test_variables_in_a_way_the_view_cannot_take_are_refused(tmp_path):
    """A READ_VARIABLE of a resource no VAR_HANDLE makes (crafted): one line, exit 2."""
    tensors = [T("x", [1, 4]), T("handle", [], "resource"), T("value", [1, 4]), T("y", [1, 4])]
    ops = [
        Op("READ_VARIABLE", [1], [2]),
        Op("ADD", [0, 2], [3], options={"fused_activation_function": "NONE"}),
    ]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0, 1], outputs=[3]))
    line = one_line_refusal(cli("keras", path, "-o", tmp_path / "out"))
    assert "READ_VARIABLE op 0 uses a resource no VAR_HANDLE of subgraph 0 makes" in line, line


def test_hash_table_refused_in_one_line(hashtable_model, tmp_path):
    line = one_line_refusal(cli("keras", hashtable_model, "-o", tmp_path / "out"))
    assert "keeps state between runs (hash tables)" in line and "HASHTABLE_FIND (op 2)" in line, line


def test_check_lists_every_stateful_op(hashtable_model, tmp_path):
    result = cli("check", hashtable_model, "--json", tmp_path / "rows.json")
    assert result.exit_code == 1, result.output
    row = json.loads((tmp_path / "rows.json").read_text())["models"][0]
    assert row["keras"]["status"] == "unsupported", row
    assert "keeps state between runs (hash tables)" in row["reason"] and "HASHTABLE_FIND" in row["reason"], (
        row["reason"]
    )


def test_check_passes_a_model_with_variables(variables_model, tmp_path):
    result = cli("check", variables_model, "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "rows.json").read_text())["models"][0]
    assert (row["keras"]["status"], row["coreml"]["status"]) == ("verified", "checked"), row
    assert "state tensor(s)" in row["keras"]["note"]


@pytest.mark.parametrize("which", ["variables_model", "hashtable_model"])
def test_inspect_and_dump_still_work(which, request, tmp_path):
    path = request.getfixturevalue(which)
    result = cli("inspect", path)
    assert result.exit_code == 0 and "CALL_ONCE" in result.output, result.output
    # The hash table model takes strings: random inputs are random words (it used to crash).
    result = cli("dump", path, "-o", tmp_path / "dump")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "dump" / "index.json").read_text())
    assert index["tensors"], index


def test_inspect_names_the_state(variables_model):
    result = cli("inspect", variables_model)
    assert "state: 1 resource variable(s) kept between runs" in result.output, result.output
    doc = json.loads(cli("inspect", variables_model, "--json").output)
    assert len(doc["state_variables"]) == 1


def test_string_keys_from_a_file(hashtable_model, tmp_path):
    np.save(tmp_path / "keys.npy", np.array(["a", "b", "zz"]))
    result = cli("dump", hashtable_model, "-o", tmp_path / "dump", "--input", tmp_path / "keys.npy")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "dump" / "index.json").read_text())
    found = np.load(tmp_path / "dump" / index["tensors"][-1]["file"])
    assert found.tolist() == [1, 2, 0]  # the table's values for a, b and the default for zz


def test_string_tensor_refused(tmp_path):
    # A stateless op on strings (RESHAPE runs on string tensors in TFLite).
    tensors = [
        T("text", [2], "string"),
        T("shape", [2], "int32", data=np.array([1, 2], np.int32)),
        T("reshaped", [1, 2], "string"),
    ]
    blob = build_model(tensors, [Op("RESHAPE", [0, 1], [2])], inputs=[0], outputs=[2])
    (tmp_path / "strings.tflite").write_bytes(blob)
    line = one_line_refusal(cli("keras", tmp_path / "strings.tflite", "-o", tmp_path / "out"))
    assert (
        "string tensors (e.g. 'text') have no Keras or Core ML form" in line and "RESHAPE (op 0)" in line
    ), line


@pytest.fixture(scope="module")
def flex_model(tmp_path_factory):
    import tensorflow as tf

    return convert_function(
        lambda x: tf.linalg.det(x) + 1.0,
        [tf.TensorSpec([1, 3, 3], tf.float32)],
        tmp_path_factory.mktemp("flex") / "flex.tflite",
        flex=True,
    )


def test_flex_model_keras_and_dump(flex_model, tmp_path):
    line = one_line_refusal(cli("keras", flex_model, "-o", tmp_path / "out"))
    assert "'FlexMatrixDeterminant' (op 0)" in line, line
    line = one_line_refusal(cli("dump", flex_model, "-o", tmp_path / "dump"))
    assert "cannot run select TensorFlow (Flex) ops: FlexMatrixDeterminant" in line, line
    assert "Android" not in line, line
    assert cli("inspect", flex_model).exit_code == 0


# -- several signatures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_signatures(tmp_path_factory):
    """A tf.Module with two tf.functions as saved_model signatures: 'decode' lands in subgraph 0."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Codec(tf.Module):
        def __init__(self):
            self.w = tf.Variable(rng.normal(0, 0.5, (4, 3)).astype(np.float32))
            self.v = tf.Variable(rng.normal(0, 0.5, (4, 2)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
        def encode(self, x):
            return {"code": tf.nn.relu(x @ self.w)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([1, 4], tf.float32, name="x"),
                tf.TensorSpec([1, 2], tf.float32, name="bias"),
            ]
        )
        def decode(self, x, bias):
            return {"logits": tf.tanh(x @ self.v) + bias, "sq": x * x}

    codec = Codec()
    d = tmp_path_factory.mktemp("signatures")
    tf.saved_model.save(
        codec,
        str(d / "saved"),
        signatures={
            "encode": codec.encode.get_concrete_function(),
            "decode": codec.decode.get_concrete_function(),
        },
    )
    path = d / "codec.tflite"
    path.write_bytes(
        tf.lite.TFLiteConverter.from_saved_model(
            str(d / "saved"), signature_keys=["encode", "decode"]
        ).convert()
    )
    return path


def _module_source(out, stem):
    return (out / f"{stem}.py").read_text()


def test_keras_says_which_signature_it_rebuilds(two_signatures, tmp_path):
    result = cli("keras", two_signatures, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "note: the model has 2 signatures; this rebuilds signature 'decode' (subgraph 0); "
        "keras --signature encode rebuilds the other"
    ) in text, text
    assert "Note: the model has 2 signatures" in _module_source(tmp_path / "out", "codec")


def test_check_notes_the_signature_it_checked(two_signatures, tmp_path):
    result = cli("check", two_signatures, "--no-coreml", "--json", tmp_path / "rows.json")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "rows.json").read_text())["models"][0]
    assert "this rebuilds signature 'decode' (subgraph 0)" in row["keras"]["note"], row
    assert "signature 'encode' verified too (rel " in row["keras"]["note"], row  # every signature is checked


def test_check_fails_on_a_wrong_second_signature(two_signatures, tmp_path, monkeypatch):
    """The other signature is verified as keras --signature does: a wrong rebuild of it fails the row."""
    from tfl_rebuild.commands.check import rows, stages
    from tfl_rebuild.verify import end_to_end as verify

    real = verify.run_keras
    monkeypatch.setattr(
        verify,
        "run_keras",  # encode is the one-input signature
        lambda m, xs, **kw: [y + (0.5 if len(m.inputs) == 1 else 0) for y in real(m, xs, **kw)],
    )
    row = stages.check_model(str(two_signatures), rows.Options(coreml=False))
    assert (row.outcome, row.keras.status) == ("fail", "mismatch"), row
    assert row.keras.reason.startswith("signature 'encode': 1/1 output(s) off"), row.keras.reason


def test_keras_rebuilds_the_chosen_signature(two_signatures, tmp_path):
    out = tmp_path / "out"
    result = cli("keras", two_signatures, "-o", out, "--signature", "encode")
    assert result.exit_code == 0, result.output  # verified against the runtime, on the encode subgraph
    assert "match" in result.output and "MISMATCH" not in result.output, result.output
    source = _module_source(out, "codec")
    assert "--signature encode" in source.splitlines()[2]
    from tfl_rebuild.rebuild.loader import load_module

    keras_model = load_module(out / "codec.py").build_model()
    assert len(keras_model.inputs) == 1 and tuple(keras_model.outputs[0].shape) == (None, 3)  # any batch
    # compare and dump pick the same subgraph (compare from the module's _tensors.json)
    result = cli("compare", two_signatures, out / "codec.py")
    assert result.exit_code == 0 and "all 1 tensors within tolerance" in " ".join(result.output.split()), (
        result.output
    )
    result = cli("dump", two_signatures, "-o", tmp_path / "dump", "--signature", "encode")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "dump" / "index.json").read_text())
    assert [t["shape"] for t in index["tensors"]] == [[1, 3]], index["tensors"]


def test_unknown_signature_is_one_line(two_signatures, tmp_path):
    line = one_line_refusal(cli("keras", two_signatures, "-o", tmp_path / "out", "--signature", "nope"))
    assert "no such signature (signatures: 'decode', 'encode')" in line, line


# -- dynamic shapes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fully_convolutional(tmp_path_factory):
    """Input [None, None, None, 3]: TensorFlow stores 1x1x1x3, at which the pooled conv is empty."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.normal(0, 0.4, (3, 3, 3, 4)).astype(np.float32))
    w2 = tf.constant(rng.normal(0, 0.4, (1, 1, 4, 2)).astype(np.float32))

    def fcn(x):
        y = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME")), 2, 2, "VALID")
        y = tf.nn.conv2d(y, w2, 1, "SAME")
        return tf.image.resize(y, tf.shape(y)[1:3] * 2, method="bilinear")

    return convert_function(
        fcn,
        [tf.TensorSpec([None, None, None, 3], tf.float32, name="x")],
        tmp_path_factory.mktemp("fcn") / "fcn.tflite",
    )


@pytest.fixture(scope="module")
def dynamic_batch(tmp_path_factory):
    import keras
    from conftest import convert_keras

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(y)))
    path = tmp_path_factory.mktemp("batch") / "batch.tflite"
    path.write_bytes(convert_keras(model))
    return path


def test_inspect_shows_dynamic_dims(fully_convolutional, dynamic_batch):
    text = " ".join(cli("inspect", fully_convolutional).output.split())
    assert "?x?x?x3 float32 (dynamic; stored as 1x1x1x3)" in text, text
    assert "? = dynamic dim (-1 in shape_signature)" in text, text
    text = " ".join(cli("inspect", dynamic_batch).output.split())
    assert "?x8x8x3 float32 (dynamic; stored as 1x8x8x3)" in text, text
    doc = json.loads(cli("inspect", "--json", dynamic_batch).output)
    assert doc["subgraphs"][0]["inputs"][0]["shape_signature"] == [-1, 8, 8, 3]


def test_dynamic_batch_rebuilt_at_the_stored_shape(dynamic_batch, tmp_path):
    result = cli("keras", dynamic_batch, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "has dynamic dims ?x8x8x3: rebuilt at 1x8x8x3, its stored shape" in text, text


def test_fully_convolutional_needs_a_shape(fully_convolutional, tmp_path):
    line = one_line_refusal(cli("keras", fully_convolutional, "-o", tmp_path / "out"))
    assert (
        "has dynamic dims ?x?x?x3 and the TFLite runtime cannot run the model at its stored shape 1x1x1x3"
        in line
    )
    assert "--input-shape x=N,N,N,3" in line, line
    line = one_line_refusal(cli("dump", fully_convolutional, "-o", tmp_path / "dump"))
    assert "--input-shape x=N,N,N,3" in line, line


def test_fully_convolutional_at_a_given_shape(fully_convolutional, tmp_path):
    out = tmp_path / "out"
    result = cli("keras", fully_convolutional, "-o", out, "--input-shape", "x=1,16,12,3")
    assert result.exit_code == 0, result.output  # verified against the runtime at 16x12
    assert "rebuilt at 1x16x12x3, as asked" in " ".join(result.output.split()), result.output
    source = _module_source(out, "fcn")
    assert "--input-shape serving_default_x:0=1,16,12,3" in source.splitlines()[2]
    assert "shape=(16, 12, 3)" in source and "UpSampling2D" in source  # the run-time size folded
    result = cli("compare", fully_convolutional, out / "fcn.py")
    assert result.exit_code == 0, result.output
    result = cli("dump", fully_convolutional, "-o", tmp_path / "dump", "--input-shape", "1,8,8,3")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "dump" / "index.json").read_text())
    assert index["tensors"][-1]["shape"] == [1, 8, 8, 2], index["tensors"][-1]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("x=1,16,3", "has dims ?x?x?x3 (? = dynamic); give 4 positive sizes that keep the fixed ones"),
        ("x=1,16,16,4", "give 4 positive sizes that keep the fixed ones"),
        ("y=1,16,16,3", "the model has no input named 'y'"),
        ("x=1,a,16,3", "is not a comma-separated list of sizes"),
    ],
    ids=["rank", "fixed-dim", "name", "not-a-number"],
)
def test_bad_input_shape_is_one_line(fully_convolutional, tmp_path, spec, words):
    line = one_line_refusal(cli("keras", fully_convolutional, "-o", tmp_path / "out", "--input-shape", spec))
    assert words in line, line


# -- packed constants: int4 (two a byte) and bfloat16 ---------------------------------------------------


def test_weights_unpack_int4_and_bfloat16(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (3, 5)).astype(np.int8)  # 15 values: the last byte holds one
    nibbles = np.append(q.reshape(-1).astype(np.uint8) & 0x0F, np.uint8(0))
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    bf = np.array([[1.5, -2.0], [0.15625, 2.0**18]], np.float32)
    bits = (bf.view(np.uint32) >> 16).astype(np.uint16)  # exact in bfloat16
    tensors = [
        T("x", [1, 5]),
        T("w", [3, 5], "int4", data=packed, scale=[0.5, 0.25, 0.125], zero_point=[0, 0, 0]),
        T("y", [1, 3]),
        T("table", [2, 2], "bfloat16", data=bits.tobytes()),
    ]
    blob = build_model(tensors, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], inputs=[0], outputs=[2])
    (tmp_path / "packed.tflite").write_bytes(blob)
    assert cli("weights", tmp_path / "packed.tflite", "-o", tmp_path / "raw.npz").exit_code == 0
    raw = np.load(tmp_path / "raw.npz")
    assert raw["w"].dtype == np.int8 and raw["w"].tolist() == q.tolist()
    assert raw["table"].dtype == np.uint16 and raw["table"].tolist() == bits.tolist()
    result = cli("weights", tmp_path / "packed.tflite", "-o", tmp_path / "float.npz", "--dequantize")
    assert result.exit_code == 0, result.output
    floats = np.load(tmp_path / "float.npz")
    assert np.array_equal(floats["w"], q * np.array([[0.5], [0.25], [0.125]], np.float32))
    assert np.array_equal(floats["table"], bf)


def test_int4_with_the_wrong_byte_count_is_one_line(tmp_path):
    tensors = [
        T("x", [1, 5]),
        T("w", [3, 5], "int4", data=b"\x11" * 7, scale=[0.5], zero_point=[0]),
        T("y", [1, 3]),
    ]
    (tmp_path / "short.tflite").write_bytes(
        build_model(tensors, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], inputs=[0], outputs=[2])
    )
    line = one_line_refusal(cli("weights", tmp_path / "short.tflite", "-o", tmp_path / "w.npz"))
    assert "7 bytes do not hold shape [3, 5] int4" in line, line


# -- legacy uint8 models, integer / bool inputs: rebuilt and verified against the runtime ---------------


def rebuild_and_verify(path, tmp_path):
    """Generate, build, verify; every output within a flat 2 LSB of its scale (of the tensor its
    DEQUANTIZE reads, for float outputs of quantized models) or rel 1e-4, every layer within
    verify's layer-local bar, every output input-sensitive. Returns the report."""
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.verify.end_to_end import verify
    from tfl_rebuild.verify.measure import FLOAT_REL_TOL

    model, py, weights = write_generated(str(path), str(tmp_path / "gen"))
    report = verify(model, load_module(py).build_model(str(weights)))
    sg = model.main
    producer = {o: op for op in sg.operators for o in op.outputs}
    for o, t in zip(report.outputs, sg.outputs):
        op = producer.get(t)
        src = sg.tensors[op.inputs[0]] if op is not None and op.opcode == "DEQUANTIZE" else sg.tensors[t]
        if src.quantized:
            lsb = o.max_abs / float(src.quantization.scale[0])
            assert lsb <= 2.0 * (1 + 1e-3), f"{o.name}: {lsb:.2f} LSB"
        else:
            assert o.max_rel <= FLOAT_REL_TOL, f"{o.name}: rel {o.max_rel:.3g}"
        assert o.input_sensitive, f"{o.name} does not depend on the input: the test proves nothing"
    wrong = [r.text() for r in report.layers if not r.ok]
    assert report.layers and not wrong, wrong
    return report, py


def legacy_uint8_model(path, float_io: bool):
    """The mobilenet_v1_*_quant.tflite recipe: fake-quant nodes in a TF1 graph, converted with
    inference_type uint8 (uint8 weights, asymmetric per-tensor, int32 biases)."""
    import tensorflow as tf

    tf1 = tf.compat.v1
    fq = tf.quantization.fake_quant_with_min_max_vars
    rng = np.random.default_rng(0)

    def weight(shape, std):
        w = rng.normal(0, std, shape).astype(np.float32)
        return fq(tf.constant(w), float(w.min()), float(w.max()))

    def conv(x, cin, cout, k=1, stride=1, relu6=True, out_range=(0.0, 6.0)):
        y = tf.nn.conv2d(
            x, weight((k, k, cin, cout), 1 / np.sqrt(k * k * cin)), [1, stride, stride, 1], "SAME"
        )
        y = tf.nn.bias_add(y, tf.constant(rng.normal(0, 0.1, cout).astype(np.float32)))
        return fq(tf.nn.relu6(y) if relu6 else y, *out_range)

    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [1, 16, 16, 3], name="input")
        h = conv(fq(x, -1.0, 1.0), 3, 8, 3, 2)
        e = tf.nn.depthwise_conv2d(conv(h, 8, 16), weight((3, 3, 16, 1), 0.3), [1, 1, 1, 1], "SAME")
        e = fq(tf.nn.relu6(e), 0.0, 6.0)
        h = fq(h + conv(e, 16, 8, relu6=False, out_range=(-4.0, 4.0)), -6.0, 8.0)  # residual ADD
        h = fq(tf.concat([conv(h, 8, 4), conv(h, 8, 4, relu6=False, out_range=(-3.0, 3.0))], 3), -3.0, 6.0)
        h = fq(tf.nn.avg_pool2d(h, 8, 8, "VALID"), -3.0, 6.0)
        logits = tf.reshape(conv(h, 8, 5, relu6=False, out_range=(-8.0, 8.0)), [1, 5])
        out = tf.identity(fq(tf.nn.softmax(logits), 0.0, 1.0), name="Predictions")
        with tf1.Session(graph=graph) as sess:
            conv_ = tf1.lite.TFLiteConverter.from_session(sess, [x], [out])
            conv_.inference_type = tf.uint8
            conv_.quantized_input_stats = {"input": (128.0, 127.0)}
            if float_io:
                conv_.inference_input_type = conv_.inference_output_type = tf.float32
            path.write_bytes(conv_.convert())
    return path


@pytest.mark.parametrize("float_io", [False, True], ids=["uint8-io", "float-io"])
def test_legacy_uint8_model(tmp_path, float_io):
    path = legacy_uint8_model(tmp_path / "legacy.tflite", float_io)
    from tfl_rebuild.tflite.analysis import activation_dtypes
    from tfl_rebuild.tflite.reader import read_model

    model = read_model(str(path))
    assert activation_dtypes(model) == ["uint8"]
    ops = {op.opcode for op in model.main.operators}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "AVERAGE_POOL_2D", "SOFTMAX"} <= ops, ops
    assert ("DEQUANTIZE" in ops) == float_io
    _, py = rebuild_and_verify(path, tmp_path)
    header = py.read_text().split('"""')[0]
    if not float_io:
        scale = f"{float(model.main.tensors[model.main.inputs[0]].quantization.scale[0]):.6g}"
        assert (
            f"TFLite input 'input' is uint8 (scale {scale}, zero point 128); this model takes its float "
            f"value (q - 128) * {scale}" in " ".join(header.replace("#", " ").split())
        ), header
    text = " ".join(cli("inspect", path).output.split())
    assert "quantization: full-int8 (activations uint8)" in text, text


def test_uint8_io_around_int8(tmp_path):
    # TF2's converter: int8 inside, uint8 input and output, QUANTIZE uint8 <-> int8 at the edges.
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    x = keras.Input((8, 8, 3), batch_size=1)
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init)(x)
    b = keras.layers.DepthwiseConv2D(3, padding="same", depthwise_initializer=init)(a)
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([a, b * 3.0]))
    conv = tf.lite.TFLiteConverter.from_keras_model(
        keras.Model(x, keras.layers.Dense(3, kernel_initializer=init)(y))
    )
    rng = np.random.default_rng(11)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: (
        [rng.uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)] for _ in range(16)
    )
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    path = tmp_path / "uint8io.tflite"
    path.write_bytes(conv.convert())
    from tfl_rebuild.tflite.reader import read_model

    sg = read_model(str(path)).main
    edges = [
        (sg.tensors[op.inputs[0]].dtype, sg.tensors[op.outputs[0]].dtype)
        for op in sg.operators
        if op.opcode == "QUANTIZE"
    ]
    assert edges == [("uint8", "int8"), ("int8", "uint8")], edges
    rebuild_and_verify(path, tmp_path)


def test_int8_model_with_token_ids(tmp_path):
    import keras
    from conftest import convert_keras

    keras.utils.set_random_seed(0)
    import tensorflow as tf

    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    t = keras.Input((7,), batch_size=1, dtype="int32")
    h = keras.layers.Dense(6, activation="relu", kernel_initializer=init)(
        keras.layers.Embedding(50, 8, embeddings_initializer=init)(t)
    )
    model = keras.Model(
        t, keras.layers.Dense(3, kernel_initializer=init)(keras.layers.GlobalAveragePooling1D()(h))
    )
    rng = np.random.default_rng(2)
    path = tmp_path / "tokens.tflite"
    path.write_bytes(
        convert_keras(
            model,
            optimizations=[tf.lite.Optimize.DEFAULT],
            representative_dataset=lambda: (
                [rng.integers(0, 50, (1, 7)).astype(np.int32)] for _ in range(16)
            ),
            target_spec=_int8_target(),
        )
    )
    rebuild_and_verify(path, tmp_path)


def _int8_target():
    import tensorflow as tf

    spec = tf.lite.TargetSpec()
    spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return spec


def test_int64_ids_and_bool_mask(tmp_path):
    import tensorflow as tf

    table = tf.constant(np.random.default_rng(0).normal(0, 1, (20, 4)).astype(np.float32))

    def fn(ids, mask, x):
        return tf.reduce_sum(tf.where(mask[..., None], tf.gather(table, ids) * x, -x), axis=1)

    path = convert_function(
        fn,
        [
            tf.TensorSpec([1, 5], tf.int64),
            tf.TensorSpec([1, 5], tf.bool),
            tf.TensorSpec([1, 5, 4], tf.float32),
        ],
        tmp_path / "ids.tflite",
    )
    _, py = rebuild_and_verify(path, tmp_path)
    source = py.read_text()
    assert 'dtype="int64"' in source and 'dtype="bool"' in source


def test_unrebuildable_op_with_dynamic_dims_is_named_first(tmp_path):
    # Fixing a dynamic batch runs the model, which the runtime cannot (Flex); the op is named
    # instead of a shape error.
    import tensorflow as tf

    path = convert_function(
        lambda x: tf.linalg.det(x) + 1.0,
        [tf.TensorSpec([None, 3, 3], tf.float32)],
        tmp_path / "flex.tflite",
        flex=True,
    )
    line = one_line_refusal(cli("keras", path, "-o", tmp_path / "out"))
    assert "'FlexMatrixDeterminant' (op 0)" in line and "dynamic" not in line, line


def test_coreml_of_a_legacy_uint8_model_says_how_to_feed_pixels(tmp_path):
    path = legacy_uint8_model(tmp_path / "legacy.tflite", float_io=False)
    result = cli("coreml", path, "-o", tmp_path / "legacy.mlpackage")
    assert result.exit_code == 0, result.output  # the converted program checked against TFLite
    text = " ".join(result.output.split())
    assert "(Core ML raw pixels: --image-input input --scale" in text, text
    assert "--bias -1.00" in text, text  # -zero point x scale = -128 / 127.5


# -- sparse weights (DENSIFY) with int8 quantization -----------------------------------------------------


@pytest.mark.parametrize("int8", [False, True], ids=["dynamic-range", "full-int8"])
def test_sparse_quantized_weights(tmp_path, int8):
    """TF's EXPERIMENTAL_SPARSITY: int8 weights behind DENSIFY. LiteRT's XNNPACK delegate takes the
    FULLY_CONNECTED and then cannot prepare it, so verification runs the built-in kernels and says
    so; the DENSIFY output is a weight (the model is dynamic-range, not full-int8)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = keras.Input((64,), batch_size=1)
    dense = keras.layers.Dense(32, activation="relu")
    model = keras.Model(x, keras.layers.Dense(4)(dense(x)))
    w, b = dense.get_weights()
    dense.set_weights([w * (rng.uniform(size=w.shape) < 0.2), b])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if int8:
        conv.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, 64)).astype(np.float32)] for _ in range(16)
        )
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    path = tmp_path / "sparse.tflite"
    path.write_bytes(conv.convert())
    from tfl_rebuild.tflite.analysis import quantization_kind
    from tfl_rebuild.tflite.reader import read_model

    model_ir = read_model(str(path))
    assert "DENSIFY" in [op.opcode for op in model_ir.main.operators]
    assert quantization_kind(model_ir) == ("full-int8" if int8 else "dynamic-range")
    result = cli("keras", path, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "XNNPACK cannot run this model" in text and "ran the built-in kernels" in text, text
    if int8:  # and within a flat 2 LSB, every layer within 1 LSB
        rebuild_and_verify(path, tmp_path)
