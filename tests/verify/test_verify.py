"""verify: end-to-end outputs and the layer-local check (each Keras layer fed TFLite's own input
tensors), one tolerance definition, constant outputs called out, wrong weights caught even when
the outputs stay within the runtime's noise or saturate."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import fixture_params, require_fixture
from flatbuf import Op, T, build_model
from keras_weights import scale_weight

from tfl_rebuild.commands.pipeline import rebuild_and_verify, write_generated
from tfl_rebuild.commands.report import CONSTANT_NOTE, print_report
from tfl_rebuild.rebuild.loader import load_module, read_sidecar
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.end_to_end import verify
from tfl_rebuild.verify.measure import (
    DYNAMIC_REL_TOL,
    FLOAT_REL_TOL,
    HYBRID_LOCAL_REL_TOL,
    INT8_LSB_TOL,
    LOCAL_LSB_TOL,
    tolerance,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def rebuild(path, outdir, scale_key: str | None = None):
    """(model, keras model, mapping, report); `scale_key` picks a weight to multiply by 1.1 in
    the written .weights.h5 first ("middle": the middle kernel)."""

    def pick(keys: list[str]) -> str:
        kernels = [k for k in keys if k.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel", "constant")]
        return kernels[len(kernels) // 2] if scale_key == "middle" else scale_key

    def scale(r) -> None:
        if scale_key is not None:
            scale_weight(r.py, pick)

    rebuilt = rebuild_and_verify(str(path), str(outdir), stream=False, written=scale)
    if rebuilt.verify_error is not None:
        raise rebuilt.verify_error
    return rebuilt.model, rebuilt.keras_model, read_sidecar(rebuilt.py), rebuilt.report


def report_text(report) -> str:
    from rich.console import Console

    con = Console(record=True, width=250, highlight=False)
    print_report(report, con)
    return con.export_text()


@pytest.mark.parametrize("path", fixture_params())
def test_fixture_verifies_layer_by_layer(path, tmp_path):
    model, _, mapping, report = rebuild(path, tmp_path)
    assert report.ok, report_text(report)
    assert report.layers_skipped is None
    # Every tensor the rebuild maps (and the runtime computes) is checked, in op order.
    assert len(report.layers) == len({m["tensor"] for m in mapping})
    assert [r.op_index for r in report.layers] == sorted(r.op_index for r in report.layers)
    for r in report.layers:
        assert r.ok and r.error <= r.tolerance.bar * 1.001, r.text()
    worst = report.worst_layer
    text = report_text(report)
    assert (
        f"layers: {len(report.layers)} checked on TFLite's own inputs, all match; worst op {worst.op_index}"
        in " ".join(text.split())
    )


def test_int8_layers_are_within_one_lsb_and_outputs_within_noise(tmp_path):
    _, _, _, report = rebuild(require_fixture("mobilenet_v2_int8"), tmp_path)
    assert report.kind == "full-int8"
    assert all(r.tolerance.unit == "LSB" and r.error <= LOCAL_LSB_TOL * 1.001 for r in report.layers)
    (out,) = report.outputs
    assert out.ok and out.lsb is not None and out.lsb <= max(INT8_LSB_TOL, 2 * out.noise)


@pytest.mark.parametrize(
    "name",
    ["mobilenet_v2_int8", "mobilenet_v2_float", "mobilenet_v2_dynamic", "mobilenet_v2_fp16", "ops_zoo"],
)
def test_wrong_kernel_fails_at_its_own_layer(name, tmp_path):
    """One kernel x 1.1 in the weights file: exactly that op fails the layer-local check; the
    layers before and after it, fed TFLite's inputs, still match."""
    model, keras_model, mapping, report = rebuild(require_fixture(name), tmp_path, scale_key="middle")
    assert not report.ok
    bad = [r for r in report.layers if not r.ok]
    assert len(bad) == 1, [r.text() for r in bad]
    assert report.worst_layer is bad[0]
    # The op whose Keras layers read the corrupted weights.
    ops = {m["op_index"] for m in mapping}
    assert bad[0].op_index in ops
    text = " ".join(report_text(report).split())
    assert "layers: MISMATCH in 1 of" in text and f"op {bad[0].op_index} {bad[0].op}" in text


def test_int8_wrong_kernel_hides_in_output_noise_but_not_in_layers(tmp_path):
    """The case that once passed: the int8 output moves less than 2 x TFLite's own kernel noise."""
    _, _, _, report = rebuild(require_fixture("mobilenet_v2_int8"), tmp_path, scale_key="middle")
    assert all(o.ok for o in report.outputs), "the output alone now fails: this test no longer shows the gap"
    assert not report.ok


def _saturated_model() -> bytes:
    """y = relu6(x * w + 100): 6 for every input in [-1, 1), so the output cannot tell w apart;
    z = relu(x) keeps the model input-sensitive on its other output."""
    tensors = [
        T("x", [1, 4]),
        T("w", [4], data=np.array([0.5, -1.0, 2.0, 0.25], np.float32)),
        T("xw", [1, 4]),
        T("c", [4], data=np.full(4, 100.0, np.float32)),
        T("y", [1, 4]),
        T("z", [1, 4]),
    ]
    ops = [
        Op("MUL", [0, 1], [2], options={"fused_activation_function": "NONE"}),
        Op("ADD", [2, 3], [4], options={"fused_activation_function": "RELU6"}),
        Op("RELU", [0], [5]),
    ]
    return build_model(tensors, ops, inputs=[0], outputs=[4, 5])


def test_constant_output_is_not_called_a_match(tmp_path):
    path = tmp_path / "saturated.tflite"
    path.write_bytes(_saturated_model())
    _, _, _, report = rebuild(path, tmp_path / "out")
    y, z = report.outputs
    assert not y.input_sensitive and z.input_sensitive
    text = report_text(report)
    row_y = next(ln for ln in text.splitlines() if ln.startswith("y "))
    row_z = next(ln for ln in text.splitlines() if ln.startswith("z "))
    assert row_y.rstrip().endswith(CONSTANT_NOTE) and "match" not in row_y.replace(CONSTANT_NOTE, "")
    assert row_z.rstrip().endswith("match")


def test_saturated_output_hides_a_wrong_weight_the_layers_do_not(tmp_path):
    path = tmp_path / "saturated.tflite"
    path.write_bytes(_saturated_model())
    model, py, weights = write_generated(str(path), str(tmp_path / "out"))
    # w is small: a literal at the MUL's call (codegen/constants.py), edited there by 1.1
    source = py.read_text(encoding="utf-8")
    assert source.count("0.5, -1.0, 2.0, 0.25") == 1
    py.write_text(source.replace("0.5, -1.0, 2.0, 0.25", "0.55, -1.1, 2.2, 0.275"), encoding="utf-8")
    report = verify(model, load_module(py).build_model(str(weights)), tensors=read_sidecar(py))
    assert all(o.ok for o in report.outputs)  # y is 6 either way, z does not read w
    assert [(r.op_index, r.op) for r in report.layers if not r.ok] == [(0, "MUL")]
    assert not report.ok


def test_one_tolerance_definition():
    """The bars verify and compare both use, per kind and check."""
    int8 = read_model(require_fixture("mobilenet_v2_int8")).main
    act = int8.tensors[int8.operators[0].outputs[0]]
    scale = float(act.quantization.scale[0])
    assert tolerance("full-int8", act) == tolerance("full-int8", act, local=False)
    assert (tolerance("full-int8", act).unit, tolerance("full-int8", act).bar) == ("LSB", INT8_LSB_TOL)
    assert tolerance("full-int8", act, local=True).bar == LOCAL_LSB_TOL
    assert tolerance("full-int8", act).lsb == scale
    dyn = read_model(require_fixture("mobilenet_v2_dynamic")).main
    out = dyn.tensors[dyn.operators[0].outputs[0]]
    assert tolerance("dynamic-range", out).bar == 5e-2
    assert tolerance("dynamic-range", out, local=True, hybrid=True).bar == HYBRID_LOCAL_REL_TOL
    assert tolerance("dynamic-range", out, local=True).bar == FLOAT_REL_TOL
    assert tolerance("float", out).bar == tolerance("float", out, local=True).bar == FLOAT_REL_TOL
    t = tolerance("full-int8", act)
    assert t.allows(2.0) and not t.allows(2.1) and t.allows(9.0, noise=4.5) and not t.allows(9.1, noise=4.5)


def test_lsb_slack_is_float32_rounding_of_the_grid_only():
    """1 LSB read as 1.0017 on an int16 tensor near full scale is float32 rounding of two grid values
    (up to 2 x 32768 x 2^-24 = 0.004 LSB), not a second step; on int8 the same reading is a real miss."""
    from tfl_rebuild.tflite.ir import Quantization, Tensor

    def tensor(dtype):
        q = Quantization(scale=np.array([0.01], np.float32), zero_point=np.array([0]), quantized_dimension=0)
        return Tensor(index=0, name="t", shape=(1, 4), dtype=dtype, buffer=0, quantization=q)

    int16, int8 = (
        tolerance("int16x8", tensor("int16"), local=True),
        tolerance("full-int8", tensor("int8"), local=True),
    )
    assert int16.allows(1.003) and not int16.allows(1.01)
    assert int8.allows(1.0005) and not int8.allows(1.003)


def test_errors_of_non_finite_values():
    """Equal infinities (a max pooling's -inf padding), -inf and -FLT_MAX, and NaNs at the same place
    agree; any other
    non-finite difference is an infinite error; the scale is the finite values' (a NaN used to
    make the error NaN, which no bar rejected)."""
    from tfl_rebuild.verify.measure import compare_arrays, max_errors

    ref = np.array([-np.inf, 1.0, 2.0, np.nan], np.float32)
    assert max_errors(ref, ref.copy()) == (0.0, 0.0)
    assert compare_arrays(ref, ref.copy())[:2] == (0.0, 0.0)
    # TFLite's ADD of a -inf mask holds -FLT_MAX (its kernels clamp to the float32 range).
    saturated = np.array([-np.finfo(np.float32).max, 1.0, 2.0, np.nan], np.float32)
    assert max_errors(saturated, ref) == (0.0, 0.0) and compare_arrays(ref, saturated)[:2] == (0.0, 0.0)
    near = np.array([-np.inf, 1.0, 2.5, np.nan], np.float32)
    assert max_errors(ref, near) == (0.5, 0.25)
    for wrong in (
        [0.0, 1.0, 2.0, np.nan],
        [-np.inf, 1.0, 2.0, 0.0],
        [np.inf, 1.0, 2.0, np.nan],
        [-3e38, 1.0, 2.0, np.nan],
    ):
        got = np.array(wrong, np.float32)
        assert max_errors(ref, got) == (np.inf, np.inf), wrong
        assert compare_arrays(ref, got)[:2] == (np.inf, np.inf), wrong


def weight_only_model() -> bytes:
    """ai-edge-quantizer's weight-only recipe: an int8 per-channel weight behind DEQUANTIZE, then a
    float FULLY_CONNECTED (every kernel computes in float)."""
    rng = np.random.default_rng(5)
    q = rng.integers(-127, 128, size=(6, 8)).astype(np.int8)
    scale = rng.uniform(0.002, 0.01, size=6).astype(np.float32)
    return build_model(
        [
            T("x", [1, 8]),
            T("w_q", [6, 8], "int8", q, scale=scale, zero_point=[0] * 6),
            T("w", [6, 8]),
            T("b", [6], data=rng.uniform(-0.1, 0.1, 6).astype(np.float32)),
            T("y", [1, 6]),
        ],
        [
            Op("DEQUANTIZE", [1], [2]),
            Op("FULLY_CONNECTED", [0, 2, 3], [4], options={"fused_activation_function": "NONE"}),
        ],
        inputs=[0],
        outputs=[4],
    )


def test_weight_only_int8_is_judged_as_float(tmp_path):
    """int8 weights read only by DEQUANTIZE (ai-edge-quantizer's weight-only recipe) compute in
    float: the model kind is weight-only, its outputs judged by the float bar. It was taken for
    dynamic-range, whose output bar (rel 5e-2) passed a 3% error in the weights (only the
    layer-local check caught it)."""
    from tfl_rebuild.tflite.analysis import quantization_kind

    path = tmp_path / "weight_only.tflite"
    path.write_bytes(weight_only_model())
    model = read_model(str(path))
    assert quantization_kind(model) == "weight-only"
    _, py, weights = write_generated(str(path), str(tmp_path / "gen"))
    report = verify(model, load_module(py).build_model(str(weights)))
    assert report.ok and report.kind == "weight-only" and report.outputs[0].max_rel < FLOAT_REL_TOL
    scale_weight(py, lambda keys: next(k for k in keys if k.endswith("/kernel")), factor=1.03)
    wrong = verify(model, load_module(py).build_model(str(weights)))
    assert 1e-3 < wrong.outputs[0].max_rel < DYNAMIC_REL_TOL and not wrong.outputs[0].ok
