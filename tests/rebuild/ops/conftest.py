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

Other Keras backends: the same module is then verified on JAX (when jax is installed) and, for the
modules in TORCH_SUBSET, on PyTorch (when torch is installed), each by one worker process per test
session (commands/backends.py), held to the same bars. TFL_REBUILD_TEST_BACKENDS overrides that:
"none", or a comma list ("jax,torch" runs the whole matrix on both: `make test-torch`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The op families torch runs by default: convolutions, pooling, activations, matmul, resize,
# normalization and MediaPipe's custom ops (`make test-torch` runs every family).
TORCH_SUBSET = {
    "test_conv",
    "test_pooling",
    "test_activation",
    "test_matmul",
    "test_resize",
    "test_mediapipe",
}

# Cases a Keras backend gets wrong upstream (not the rebuild): the test still verifies them there
# and ends as xfail while they fail; one that starts passing fails the test, so this list stays true.
_AVG_SAME = (
    "Keras' torch backend pads an asymmetric SAME pooling window by replicating the edge values "
    "(keras/src/backend/torch/nn.py _apply_same_padding, mode='replicate'), which is right for max "
    "pooling and wrong for average pooling: TFLite averages over the valid cells only"
)
KNOWN_BACKEND_BUGS = {
    ("jax", "test_multi_head_attention[cross-value-dim]"): (
        "Keras 3.15's MultiHeadAttention on JAX cannot take value_dim != key_dim (a reshape of the "
        "attention output fails, with flash_attention=False too)"
    ),
    ("torch", "test_pool_3d[avg-3-stride2-same]"): _AVG_SAME,
    ("torch", "test_core_ml[avg-pool3d]"): _AVG_SAME,
    ("torch", "test_1d_stack[conv-avgpool-same-flatten]"): _AVG_SAME,
    ("torch", "test_pool[AVERAGE_POOL_2D-3x2-s2x1-SAME]"): _AVG_SAME,
}


def extra_backends(module_name: str) -> tuple[str, ...]:
    """The Keras backends besides this process's that a test of `module_name` verifies on."""
    from tfl_rebuild.commands.extras import installed

    asked = os.environ.get("TFL_REBUILD_TEST_BACKENDS")
    if asked is not None:
        return tuple(b for b in asked.split(",") if b.strip() and b.strip() != "none")
    auto = ["jax"] if installed("jax") else []
    if installed("torch") and module_name in TORCH_SUBSET:
        auto.append("torch")
    return tuple(auto)


class OpCheck:
    """Convert, rebuild and verify, with every file under one test's tmp_path."""

    def __init__(self, tmp_path: Path, workers=None, backends: tuple[str, ...] = (), test_name: str = ""):
        self.tmp_path = tmp_path
        self.workers, self.backends, self.test_name = workers, backends, test_name

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

        model = read_model(str(path))
        ops = [o.key for o in model.main.operators]
        assert op in ops, f"the converter did not emit {op}; the model has {ops}"
        rebuilt = rebuild_and_verify(str(path), str(self.tmp_path / "gen"))
        if rebuilt.verify_error is not None:
            raise rebuilt.verify_error
        import keras

        _assert_matches(_Verdict.of(rebuilt.report), model, max_lsb, input_sensitive, keras.backend.backend())
        known = []
        for backend in self.backends:  # the same module and bars on each other backend, in its worker
            result = self.workers.verify(backend, rebuilt)
            bug = KNOWN_BACKEND_BUGS.get((backend, self.test_name))
            try:
                assert not result.error, f"on {backend}: {result.error}"
                _assert_matches(_Verdict.of_doc(result.report), model, max_lsb, input_sensitive, backend)
            except AssertionError:
                if bug is None:
                    raise
                known.append(f"on {backend}: {bug}")
                continue
            assert bug is None, f"on {backend}: passes now; drop it from KNOWN_BACKEND_BUGS ({bug})"
        if known:
            pytest.xfail("; ".join(known))
        return rebuilt.report

    def core_ml(self, path: Path, op: str, precision: str = "float32"):
        """`check`, then convert the rebuild with coremltools and run the MIL check (numpy evaluator)
        against TFLite on the same inputs; returns the Core ML Report."""
        pytest.importorskip("coremltools")
        from tfl_rebuild.commands.pipeline import rebuild_and_verify
        from tfl_rebuild.coreml import check as cc
        from tfl_rebuild.coreml import convert as cm

        try:
            self.check(path, op)
            known = None
        except pytest.xfail.Exception as exc:  # a backend's known bug: Core ML is still checked first
            known = exc
        rebuilt = rebuild_and_verify(str(path), str(self.tmp_path / "coreml"), verify=False)
        model, keras_model = rebuilt.model, rebuilt.keras_model
        result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision=precision)), keras_model)
        assert not isinstance(result, cc.NotChecked), result
        assert result.report.ok, {o.name: o.max_rel for o in result.report.outputs}
        assert all(o.input_sensitive for o in result.report.outputs), "a Core ML output ignores the input"
        if known is not None:
            raise known
        return result.report


class _Verdict:
    """What the assertions read from a verification, from a Report or its report_doc data."""

    def __init__(self, ok, kind, tolerance, outputs, bad_layers):
        self.ok, self.kind, self.tolerance = ok, kind, tolerance
        self.outputs = outputs  # (name, max_abs, max_rel, lsb, input_sensitive)
        self.bad_layers = bad_layers

    @classmethod
    def of(cls, report):
        outs = [(o.name, o.max_abs, o.max_rel, o.lsb, o.input_sensitive) for o in report.outputs]
        return cls(
            report.ok, report.kind, report.tolerance, outs, [r.text() for r in report.layers if not r.ok]
        )

    @classmethod
    def of_doc(cls, doc):
        outs = [
            (o["name"], float(o["max_abs"]), float(o["max_rel"]), o["lsb"], o["input_sensitive"])
            for o in doc["outputs"]
        ]
        bad = [
            f"op {r['op_index']} {r['op']} {r['tensor']!r} (rel {r['max_rel']})"
            for r in doc["layers"]
            if not r["ok"]
        ]
        return cls(doc["ok"], doc["kind"], doc["tolerance"], outs, bad)


def _assert_matches(v: _Verdict, model, max_lsb, input_sensitive: bool, backend: str) -> None:
    from tfl_rebuild.verify.measure import FLOAT_REL_TOL

    detail = [
        (name, f"max_abs={a:.3g}", f"max_rel={r:.3g}", f"lsb={lsb}") for name, a, r, lsb, _ in v.outputs
    ]
    max_rel = max((r for _, _, r, _, _ in v.outputs), default=0.0)
    if max_lsb is None:
        assert v.ok, f"on {backend}: rebuild differs from TFLite ({v.tolerance}): {detail} {v.bad_layers[:3]}"
        if v.kind in ("float", "fp16"):  # a flat 1e-4, whatever the runtime noise
            assert max_rel <= FLOAT_REL_TOL, (
                f"on {backend}: rebuild differs from TFLite by more than rel 1e-4: {detail}"
            )
    else:
        for (name, max_abs, *_), scale in zip(v.outputs, _dequantized_scales(model)):
            assert max_abs <= max_lsb * scale, (
                f"on {backend}: {name}: {max_abs / scale:.2f} LSB > {max_lsb}: {detail}"
            )
        assert not v.bad_layers, (
            f"on {backend}: layers differ from TFLite: {v.bad_layers}"
        )  # each on TFLite's inputs
    if input_sensitive:
        fixed = [name for name, *_, sensitive in v.outputs if not sensitive]
        assert not fixed, f"on {backend}: outputs {fixed} do not depend on the input: the test proves nothing"


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


@pytest.fixture(scope="session")
def backend_workers():
    """One worker per other Keras backend for the whole session (each import paid once)."""
    from tfl_rebuild.commands.backends import Workers

    with Workers() as workers:
        yield workers


@pytest.fixture
def tfl(tmp_path, request, backend_workers) -> OpCheck:
    backends = extra_backends(request.module.__name__.rsplit(".", 1)[-1])
    return OpCheck(tmp_path, backend_workers, backends, request.node.name)


@pytest.fixture(autouse=True)
def _seeded():
    """Seeded Keras weights (and numpy), so every case is reproducible."""
    import keras

    keras.utils.set_random_seed(0)
    np.random.seed(0)
