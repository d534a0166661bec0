"""Shared helpers of the per-op tests: make a tiny .tflite, rebuild it with tfl-rebuild, compare.

Each test builds a tiny Keras model or tf.function, converts it with tf.lite.TFLiteConverter and
hands the file to the `tfl` fixture:

    def test_relu(tfl):
        path = tfl.function(tf.nn.relu, [1, 4])
        tfl.check(path, "RELU")

`check` asserts that the op under test really is in the converted model (the converter likes to
fuse and rewrite), then runs the commands' one pipeline (`commands.pipeline.rebuild_and_verify`:
the generated module written into tmp_path, built, verified on seeded inputs): float models must
match within rel 1e-4 (verify's bar, without its allowance for TFLite's own kernel-to-kernel noise); quantized tests pass
`max_lsb=2` for a flat 2 LSB. Either way every layer must also pass verify's layer-local check
(fed TFLite's own input tensors: rel 1e-4, or 1 LSB of each int8 tensor). It also asserts that
every output depends on the input, so a rebuild that ignores its input cannot pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class OpCheck:
    """Convert, rebuild and verify, with every file under one test's tmp_path."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path

    def _write(self, blob: bytes) -> Path:
        path = self.tmp_path / "model.tflite"
        path.write_bytes(blob)
        return path

    def keras(self, model, int8_inputs: list | None = None) -> Path:
        """A Keras model -> .tflite; `int8_inputs` (representative batches) makes it full int8."""
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8_inputs is not None:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([x] for x in int8_inputs)
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return self._write(conv.convert())

    def function(self, fn, *specs) -> Path:
        """A tf.function -> .tflite. Each spec is a shape (float32) or a (shape, dtype) pair;
        None dims stay dynamic in the signature (the converter keeps e.g. SQUEEZE then)."""
        import tensorflow as tf

        tensor_specs = [
            tf.TensorSpec(s[0], s[1]) if isinstance(s, tuple) else tf.TensorSpec(s, tf.float32) for s in specs
        ]
        module = tf.Module()
        module.fn = tf.function(fn, input_signature=tensor_specs)
        concrete = module.fn.get_concrete_function()
        return self._write(tf.lite.TFLiteConverter.from_concrete_functions([concrete], module).convert())

    def crafted(self, blob: bytes) -> Path:
        """A model built byte by byte (tests/flatbuf.py), for attributes no converter emits."""
        return self._write(blob)

    def check(self, path: Path, op: str, *, input_sensitive: bool = True, max_lsb: float | None = None):
        """Assert `op` is in the model and the rebuild matches the TFLite runtime; returns the Report.

        max_lsb: for quantized models, the allowed error in LSBs of each quantized output, or of
        the quantized tensor its DEQUANTIZE reads when the model outputs float (verify would
        judge those by the float tolerance).
        """
        from tfl_rebuild.commands.pipeline import rebuild_and_verify
        from tfl_rebuild.tflite.reader import read_model
        from tfl_rebuild.verify.measure import FLOAT_REL_TOL

        model = read_model(str(path))
        ops = [o.key for o in model.main.operators]
        assert op in ops, f"the converter did not emit {op}; the model has {ops}"
        rebuilt = rebuild_and_verify(str(path), str(self.tmp_path / "gen"))
        if rebuilt.verify_error is not None:
            raise rebuilt.verify_error
        report = rebuilt.report
        detail = [
            (o.name, f"max_abs={o.max_abs:.3g}", f"max_rel={o.max_rel:.3g}", f"lsb={o.lsb}")
            for o in report.outputs
        ]
        if max_lsb is None:
            assert report.ok, f"rebuild differs from TFLite ({report.tolerance}): {detail}"
            if report.kind in ("float", "fp16"):  # a flat 1e-4, whatever the runtime noise
                assert report.max_rel <= FLOAT_REL_TOL, (
                    f"rebuild differs from TFLite by more than rel 1e-4: {detail}"
                )
        else:
            for o, scale in zip(report.outputs, _dequantized_scales(model)):
                assert o.max_abs <= max_lsb * scale, (
                    f"{o.name}: {o.max_abs / scale:.2f} LSB > {max_lsb}: {detail}"
                )
            wrong = [r.text() for r in report.layers if not r.ok]  # each layer on TFLite's own inputs
            assert not wrong, f"layers differ from TFLite: {wrong}"
        if input_sensitive:
            fixed = [o.name for o in report.outputs if not o.input_sensitive]
            assert not fixed, f"outputs {fixed} do not depend on the input: the test proves nothing"
        return report

    def core_ml(self, path: Path, op: str, precision: str = "float32"):
        """`check`, then convert the rebuild with coremltools and run the MIL check (numpy evaluator)
        against TFLite on the same inputs; returns the Core ML Report."""
        pytest.importorskip("coremltools")
        from tfl_rebuild.commands.pipeline import rebuild_and_verify
        from tfl_rebuild.coreml import check as cc
        from tfl_rebuild.coreml import convert as cm

        self.check(path, op)
        rebuilt = rebuild_and_verify(str(path), str(self.tmp_path / "coreml"), verify=False)
        model, keras_model = rebuilt.model, rebuilt.keras_model
        result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision=precision)), keras_model)
        assert not isinstance(result, cc.NotChecked), result
        assert result.report.ok, {o.name: o.max_rel for o in result.report.outputs}
        assert all(o.input_sensitive for o in result.report.outputs), "a Core ML output ignores the input"
        return result.report


def _dequantized_scales(model) -> list[float]:
    """Per output: the scale of the quantized tensor its DEQUANTIZE reads (or of the output itself)."""
    sg = model.main
    producer = {o: op for op in sg.operators for o in op.outputs}
    scales = []
    for t in sg.outputs:
        op = producer.get(t)
        src = sg.tensors[op.inputs[0]] if op is not None and op.opcode == "DEQUANTIZE" else sg.tensors[t]
        assert src.quantized, f"output {sg.tensors[t].name!r} is not quantized"
        scales.append(float(src.quantization.scale[0]))
    return scales


@pytest.fixture
def tfl(tmp_path) -> OpCheck:
    return OpCheck(tmp_path)


@pytest.fixture(autouse=True)
def _seeded():
    """Seeded Keras weights (and numpy), so every case is reproducible."""
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
