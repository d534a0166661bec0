"""The MediaPipe corpus (.corpus/, git-ignored; `make corpus` or ../shared/corpus/fetch.sh): every model
parses, and `tfl-rebuild keras` rebuilds and verifies it, except where a custom op is not supported.

Known limitations are strict xfails with the precise reason, raised only after the test has checked
that the error names the op: when support lands the case XPASSes, fails, and the table below must
shrink. Each model is its own test case (xdist spreads them); run only these with `-m corpus`.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CORPUS_DIR, FETCH_HINT

from tfl_rebuild.cli import main
from tfl_rebuild.errors import UnsupportedOpError
from tfl_rebuild.rebuild.ops.registry import lookup
from tfl_rebuild.rebuild.passes.pipeline import prepare
from tfl_rebuild.tflite.reader import read_model

pytestmark = pytest.mark.corpus

# Custom ops without a converter: generating the module fails, naming the first one met. (Empty: the
# MediaPipe transform ops of face_landmark_with_attention convert, and verify runs them with their numpy
# references where LiteRT lacks them: segmented.py.)
UNSUPPORTED: dict[str, tuple[str, ...]] = {}
# Custom ops the stock TFLite runtime lacks: the module is generated, but there is no reference to verify it by.
# (Empty: LiteRT's default XNNPACK path runs the selfie models' Convolution2DTransposeBias, and verify
# falls back to that runtime alone when the reference kernels cannot load a model.)
RUNTIME_LACKS: dict[str, str] = {}
ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


class KnownLimitation(Exception):
    """Raised, after checking the error names the op, for a case the tables above expect to fail."""


def _limitation(stem: str):
    if stem in UNSUPPORTED:
        return pytest.mark.xfail(
            strict=True,
            raises=KnownLimitation,
            reason=f"no converter for custom ops {', '.join(UNSUPPORTED[stem])}",
        )
    if stem in RUNTIME_LACKS:
        return pytest.mark.xfail(
            strict=True,
            raises=KnownLimitation,
            reason=f"the stock TFLite runtime cannot run custom op {RUNTIME_LACKS[stem]}, "
            "so there is nothing to verify against",
        )
    return ()


def corpus_cases(limitations: bool = True) -> list:
    files = sorted(CORPUS_DIR.glob("*.tflite"))
    if not files:
        return [
            pytest.param(
                None,
                id="no-corpus",
                marks=pytest.mark.skip(reason=f"no models in {CORPUS_DIR}: {FETCH_HINT} or `make corpus`"),
            )
        ]
    return [pytest.param(p, id=p.stem, marks=_limitation(p.stem) if limitations else ()) for p in files]


@pytest.mark.parametrize("path", corpus_cases(limitations=False))
def test_parses(path):
    model = read_model(path)
    sg = model.main
    assert sg.operators and sg.inputs and sg.outputs
    assert all(0 <= t < len(sg.tensors) for op in sg.operators for t in op.inputs if t >= 0)


@pytest.mark.parametrize("path", corpus_cases(limitations=False))
def test_unconverted_ops_are_the_known_ones(path):
    """The inventory behind the xfails: exactly these custom ops lack a converter (all of them, not the first)."""
    ctx, ops = prepare(read_model(path))  # as the emitter sees them: constant DEQUANTIZE/DENSIFY folded
    missing = set()
    for op in ops:
        try:
            lookup(op, ctx.subgraph)
        except UnsupportedOpError:
            missing.add(op.custom_code if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}")
    assert sorted(missing) == sorted(UNSUPPORTED.get(path.stem, ()))


@pytest.mark.parametrize("path", corpus_cases())
def test_rebuild_verifies(path, tmp_path):
    sg = read_model(path).main
    result = CliRunner().invoke(main, ["keras", str(path), "-o", str(tmp_path)], env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    out = result.output
    if path.stem in UNSUPPORTED:
        assert result.exit_code == 2, out
        assert out.startswith("error: no converter for custom op ") and "Traceback" not in out, out
        assert out.split()[6] in UNSUPPORTED[path.stem], out
        raise KnownLimitation(out.strip())
    if path.stem in RUNTIME_LACKS:
        assert result.exit_code == 2, out
        assert f"custom op(s) {RUNTIME_LACKS[path.stem]} are not built in" in out, out
        raise KnownLimitation(out.strip())
    assert result.exit_code == 0, out
    outputs = [sg.tensors[i].name for i in sg.outputs]
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in outputs}
    assert sorted(rows) == sorted(outputs), out
    assert all(row.rstrip().endswith("match") for row in rows.values()), out
    assert "does not depend on the input" not in out, out


@pytest.mark.parametrize(
    "path", [pytest.param(CORPUS_DIR / f"{stem}.tflite", id=stem) for stem in RUNTIME_LACKS]
)
def test_unverifiable_rebuild_builds_and_runs(path, tmp_path):
    """Where TFLite cannot run the model, the rebuild still builds, runs and gives the model's shapes."""
    if not path.exists():
        pytest.skip(f"{path.name} is not in .corpus/: {FETCH_HINT}")
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module, run_keras

    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    sg = model.main
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, sg.tensors[i].shape).astype(np.float32) for i in sg.inputs]
    outputs = run_keras(keras_model, inputs)
    assert [o.shape for o in outputs] == [tuple(sg.tensors[i].shape) for i in sg.outputs]
    assert all(np.isfinite(o).all() and np.ptp(o) > 0 for o in outputs)


PREDICT = """
import sys
import os

import numpy as np
from tfl_rebuild.rebuild.loader import build, load_module
model = build(load_module(sys.argv[1]))
x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype("float32")
called, predicted = np.asarray(model(x)[0]), model.predict(x, verbose=0)[0]
print(float(np.abs(called - predicted).max()))
"""


def test_predict_runs_where_tensorflow_crashed(tmp_path):
    """`build_model().predict(x)` segfaulted inside TensorFlow 2.21's oneDNN on this model (a channel
    tf.pad feeding the Add fused into a Conv2D); `model(x)` did not. The Pad layer now concatenates
    constant blocks for a channel padding. Run in a child process: a crash is a failure, not the end
    of the test run."""
    path = CORPUS_DIR / "face_detection_short_range.tflite"
    if not path.exists():
        pytest.skip(f"{path.name} is not in .corpus/: {FETCH_HINT}")
    result = CliRunner().invoke(main, ["keras", str(path), "-o", str(tmp_path), "--no-verify"], env=ENV)
    assert result.exit_code == 0, result.output
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT, str(tmp_path / f"{path.stem}.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **ENV},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) < 1e-4  # predict computes what the call does
