"""Model encodings beyond the fixtures': legacy uint8 models, int8 with integer / bool inputs,
dynamic shapes, several signatures, and models that cannot be rebuilt at all (state, strings, Flex).

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

    return convert_function(step, [tf.TensorSpec([1, 4], tf.float32)],
                            tmp_path_factory.mktemp("variables") / "variables.tflite", module, resource_variables=True)


@pytest.fixture(scope="module")
def hashtable_model(tmp_path_factory):
    import tensorflow as tf

    module = tf.Module()
    module.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64)), 0)
    return convert_function(lambda k: module.table.lookup(k), [tf.TensorSpec([3], tf.string)],
                            tmp_path_factory.mktemp("hashtable") / "hashtable.tflite", module)


def test_resource_variables_refused_in_one_line(variables_model, tmp_path):
    line = one_line_refusal(cli("keras", variables_model, "-o", tmp_path / "out"))
    assert "keeps state between runs (resource variables)" in line, line
    for part in ("CALL_ONCE (op 0)", "VAR_HANDLE (op 1)", "READ_VARIABLE (ops 2, 5)", "ASSIGN_VARIABLE (op 4)"):
        assert part in line, line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_hash_table_refused_in_one_line(hashtable_model, tmp_path):
    line = one_line_refusal(cli("keras", hashtable_model, "-o", tmp_path / "out"))
    assert "keeps state between runs (hash tables)" in line and "HASHTABLE_FIND (op 2)" in line, line


@pytest.mark.parametrize("which", ["variables_model", "hashtable_model"])
def test_check_lists_every_stateful_op(which, request, tmp_path):
    path = request.getfixturevalue(which)
    result = cli("check", path, "--json", tmp_path / "rows.json")
    assert result.exit_code == 1, result.output
    row = json.loads((tmp_path / "rows.json").read_text())["models"][0]
    assert row["keras"]["status"] == "unsupported", row
    assert "keeps state between runs" in row["reason"] and "CALL_ONCE" in row["reason"], row["reason"]


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


def test_string_keys_from_a_file(hashtable_model, tmp_path):
    np.save(tmp_path / "keys.npy", np.array(["a", "b", "zz"]))
    result = cli("dump", hashtable_model, "-o", tmp_path / "dump", "--input", tmp_path / "keys.npy")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "dump" / "index.json").read_text())
    found = np.load(tmp_path / "dump" / index["tensors"][-1]["file"])
    assert found.tolist() == [1, 2, 0]  # the table's values for a, b and the default for zz


def test_string_tensor_refused(tmp_path):
    # A stateless op on strings (RESHAPE runs on string tensors in TFLite).
    tensors = [T("text", [2], "string"), T("shape", [2], "int32", data=np.array([1, 2], np.int32)),
               T("reshaped", [1, 2], "string")]
    blob = build_model(tensors, [Op("RESHAPE", [0, 1], [2])], inputs=[0], outputs=[2])
    (tmp_path / "strings.tflite").write_bytes(blob)
    line = one_line_refusal(cli("keras", tmp_path / "strings.tflite", "-o", tmp_path / "out"))
    assert "string tensors (e.g. 'text') have no Keras or Core ML form" in line and "RESHAPE (op 0)" in line, line


@pytest.fixture(scope="module")
def flex_model(tmp_path_factory):
    import tensorflow as tf

    return convert_function(lambda x: tf.linalg.det(x) + 1.0, [tf.TensorSpec([1, 3, 3], tf.float32)],
                            tmp_path_factory.mktemp("flex") / "flex.tflite", flex=True)


def test_flex_model_keras_and_dump(flex_model, tmp_path):
    line = one_line_refusal(cli("keras", flex_model, "-o", tmp_path / "out"))
    assert "'FlexMatrixDeterminant' (op 0)" in line, line
    line = one_line_refusal(cli("dump", flex_model, "-o", tmp_path / "dump"))
    assert "cannot run select TensorFlow (Flex) ops: FlexMatrixDeterminant" in line, line
    assert "Android" not in line, line
    assert cli("inspect", flex_model).exit_code == 0
