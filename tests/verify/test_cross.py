"""verify.cross: two encodings of one network run on the same inputs and measured pair by pair.

A float model against itself agrees exactly; against a copy with one conv's weights x1.05 the
first divergence is that conv, nothing before it moves, and in the local view it is the op whose
own error jumps from an exact input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import require_fixture

from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.cross import (
    DEFAULT_SQNR_DB,
    FLOAT_SQNR_DB,
    compare_models,
    shared_inputs,
    sqnr_db,
)

USER = "user_models/"


def scaled_conv_copy(path: Path, op_index: int, factor: float, out: Path) -> Path:
    """A copy of a float model with the weights of conv `op_index` multiplied by `factor`, patched
    in the file's bytes (the weight buffer is found by its contents, which occur once)."""
    model = read_model(path)
    op = model.main.operators[op_index]
    assert op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"), op.opcode
    weights = model.main.tensors[op.inputs[1]]
    assert weights.dtype == "float32"
    blob = bytearray(path.read_bytes())
    raw = weights.data.tobytes()
    assert blob.count(raw) == 1
    start = blob.find(raw)
    blob[start : start + len(raw)] = (weights.data * np.float32(factor)).astype(np.float32).tobytes()
    out.write_bytes(bytes(blob))
    return out


def test_sqnr_db():
    ref = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
    assert sqnr_db(ref, ref) == math.inf
    noisy = ref + np.array([0.1, -0.1, 0.1, -0.1], np.float32)
    expected = 10 * math.log10(float(np.sum(ref.astype(np.float64) ** 2)) / 0.04)
    assert sqnr_db(ref, noisy) == pytest.approx(expected, abs=1e-3)
    assert sqnr_db(ref, ref * 1.1) == pytest.approx(20.0, abs=1e-3)  # error 10% of the signal: 20 dB
    assert sqnr_db(ref, np.array([np.nan, -2, 3, 0.5])) == -math.inf


@pytest.mark.parametrize("name", ["mobilenet_v2_float", "mobilenet_v2_int8", USER + "transformer_float"])
def test_identical_models_agree_exactly(name):
    path = require_fixture(name)
    result = compare_models(str(path), str(path))
    assert result.rows and result.coverage == 1.0
    assert all(r.sqnr_db == math.inf and r.max_abs == 0.0 for r in result.rows)
    assert all(r.cosine == pytest.approx(1.0) for r in result.rows if r.max_abs == 0.0 and any(r.shape))
    assert result.first_divergence is None and result.flagged is None
    assert result.verdict().startswith("no divergence")


@pytest.mark.parametrize("op_index", [3, 17, 61])
def test_scaled_conv_is_the_first_divergence(op_index, tmp_path):
    path = require_fixture("mobilenet_v2_float")
    scaled = scaled_conv_copy(path, op_index, 1.05, tmp_path / "scaled.tflite")
    result = compare_models(str(path), str(scaled))
    assert result.threshold_db == FLOAT_SQNR_DB  # both float
    first = result.first_divergence
    print(result.verdict())
    assert first is not None and first.op_index == op_index, result.verdict()
    before = [r for r in result.rows if r.op_index < op_index]
    assert before and all(r.sqnr_db == math.inf for r in before)
    assert result.verdict().startswith(f"first divergence at op {op_index} CONV_2D ")

    local = compare_models(str(path), str(scaled), local=True)
    jump = local.flagged
    assert jump is not None and jump.op_index == op_index, local.verdict()
    assert jump.input_sqnr_db == math.inf and jump.drop_db == math.inf


def test_int8_against_float():
    """Every layer of int8 MobileNetV2 stays above the default 20 dB; LSB errors are reported."""
    result = compare_models(
        str(require_fixture("mobilenet_v2_float")), str(require_fixture("mobilenet_v2_int8"))
    )
    assert result.threshold_db == DEFAULT_SQNR_DB
    lowest = min(r.sqnr_db for r in result.rows)
    print(f"int8 MobileNetV2: lowest SQNR {lowest:.1f} dB")
    assert 20.0 < lowest < 60.0
    assert result.first_divergence is None
    assert all(r.lsb is not None for r in result.rows if r.op_index >= 0)
    # the input is the float input quantized with B's scale: half an LSB at most
    first = result.rows[0]
    assert first.op == "INPUT" and first.lsb <= 0.5 + 1e-3


def test_inputs_quantized_with_b_params():
    a = [{"name": "x", "dtype": np.float32, "shape": np.array([1, 4]), "quantization": (0.0, 0)}]
    b = [{"name": "x", "dtype": np.int8, "shape": np.array([1, 4]), "quantization": (0.5, 3)}]
    va, vb = shared_inputs(a, b, [np.array([[0.0, 1.0, -1.2, 10.0]], np.float32)])
    assert va[0].dtype == np.float32 and vb[0].dtype == np.int8
    assert vb[0].tolist() == [[3, 5, 1, 23]]
    va, vb = shared_inputs(b, a, None, seed=1)  # random: drawn in float, quantized for the int8 side
    assert va[0].dtype == np.int8 and vb[0].dtype == np.float32
    assert np.allclose((va[0].astype(np.float32) - 3) * 0.5, vb[0], atol=0.25 + 1e-6)


def test_json_round_trip(tmp_path):
    import json

    path = require_fixture(USER + "se_net_float")
    result = compare_models(str(path), str(require_fixture(USER + "se_net_int8")), local=True)
    doc = json.loads(result.to_json())
    assert doc["mode"] == "local" and len(doc["rows"]) == len(result.rows)
    assert doc["pairing"]["coverage"] == 1.0
    assert {"sqnr_db", "max_abs", "max_rel", "cosine", "mean_error", "lsb", "drop_db"} <= set(doc["rows"][0])
