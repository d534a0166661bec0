"""Recurrent-model fixtures (fixtures/make_sequence_models.py): Keras 3 LSTM / GRU / SimpleRNN /
bidirectional / stacked LSTM as TF 2.21 converts them — WHILE loops over cond/body subgraphs.

The float and fp16 ones rebuild to the Keras layers they were written with (passes.lift_rnn); the
dynamic-range ones keep the faithful form (the subgraphs as their own keras.Models, run by a
WhileLoop layer), as their hybrid int8 matmuls are not a float layer's. Each verifies against
TFLite, outputs and every mapped intermediate; then converts to a Core ML ML program whose numbers
(numpy MIL evaluator, while_loop included) match TFLite too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES_DIR, require_fixture

from tfl_rebuild.cli import main
from tfl_rebuild.commands.pipeline import write_generated
from tfl_rebuild.rebuild.loader import load_module
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.end_to_end import verify
from tfl_rebuild.verify.measure import FLOAT_REL_TOL

KINDS = ("lstm", "gru", "simple_rnn", "bilstm", "stacked_lstm")
# The "int8" files are dynamic-range: TF 2.21's full-int8 quantizer crashes on these loops.
VARIANTS = {"float": "float", "fp16": "fp16", "int8": "dynamic-range"}
NAMES = [f"{k}_{v}" for k in KINDS for v in VARIANTS]
LOOPS = {"lstm": 1, "gru": 1, "simple_rnn": 1, "bilstm": 2, "stacked_lstm": 2}
# The Keras classes the float and fp16 rebuilds hold (make_sequence_models.build wrote them).
LIFTED = {
    "lstm": ["LSTM"],
    "gru": ["GRU"],
    "simple_rnn": ["SimpleRNN"],
    "bilstm": ["Bidirectional"],
    "stacked_lstm": ["LSTM", "LSTM"],
}


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            path = require_fixture(name)
            model, py, weights = write_generated(str(path), str(tmp_path_factory.mktemp(name)))
            keras_model = load_module(py).build_model(str(weights))
            cache[name] = (
                model,
                keras_model,
                verify(model, keras_model),
                Path(py).read_text(encoding="utf-8"),
            )
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_converter_emits_while_loops(name):
    model = read_model(str(require_fixture(name)))
    kind, variant = name.rsplit("_", 1)
    loops = [op for op in model.main.operators if op.opcode == "WHILE"]
    assert len(loops) == LOOPS[kind]
    assert len(model.subgraphs) == 1 + 2 * LOOPS[kind]  # a cond and a body per loop
    from tfl_rebuild.tflite.analysis import quantization_kind

    assert quantization_kind(model) == VARIANTS[variant]


@pytest.mark.parametrize("name", NAMES)
def test_rebuild_verifies(rebuilt, name):
    model, keras_model, report, source = rebuilt(name)
    rows = {o.name: f"max rel {o.max_rel:.3g}" for o in report.outputs}
    assert report.ok, rows
    assert all(o.input_sensitive for o in report.outputs), rows
    if report.kind in ("float", "fp16"):
        assert report.max_rel <= FLOAT_REL_TOL, rows
    kind, variant = name.rsplit("_", 1)
    if variant != "int8":
        classes = [type(layer).__name__ for layer in keras_model.layers if layer.weights]
        assert classes == LIFTED[kind] and "WhileLoop(" not in source, source
        assert any(r.op in ("Recurrent", "Bidirectional") for r in report.layers), report.layers
        return
    # Each loop is one WhileLoop layer over keras.Models built by the subgraph functions.
    assert source.count("WhileLoop(") - source.count("class WhileLoop(") == LOOPS[kind]
    assert len(re.findall(r"\bbody=build_\w+_while_body\(\)", source)) == LOOPS[kind]
    assert len(re.findall(r"\bcond=build_\w+_while_cond\(\)", source)) == LOOPS[kind]


def test_cli_verifies_a_loop_model(tmp_path):
    result = CliRunner().invoke(
        main,
        ["keras", str(require_fixture("lstm_float")), "-o", str(tmp_path)],
        env={"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.exit_code == 0, result.output
    assert "match" in result.output and "differ" not in result.output


def test_every_sequence_fixture_is_listed():
    made = {p.stem for p in FIXTURES_DIR.glob("*.tflite") if p.stem.rsplit("_", 1)[0] in KINDS}
    assert made == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_core_ml_converts_and_checks(rebuilt, name):
    pytest.importorskip("coremltools")
    from tfl_rebuild.coreml import check as cc
    from tfl_rebuild.coreml import convert as cm

    model, keras_model, report, _ = rebuilt(name)
    conv = cm.convert(keras_model, model, cm.Options(precision="float16"))
    if name.endswith("_int8"):  # the faithful loop; the lifted layers are unrolled
        assert "while_loop" in {o.op_type for o in conv.program.functions["main"].operations}
    result = cc.check(model, conv, keras_model)
    assert not isinstance(result, cc.NotChecked), result
    rows = {o.name: f"max rel {o.max_rel:.3g}" for o in result.report.outputs}
    assert result.report.ok, rows
    assert all(o.input_sensitive for o in result.report.outputs), rows
