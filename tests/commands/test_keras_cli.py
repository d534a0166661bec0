"""`tfl-rebuild keras`: verified rebuilds of every fixture, lint-clean deterministic output, options,
one-line errors with nothing written, and a verification that does fail when the weights are wrong.

Most cases run the command in-process (click's CliRunner), so TensorFlow is imported once per
worker; the determinism and bad-input cases run it as a separate process, where hash seeds, exit
codes and stderr are those a user sees.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, fixture_params, require_fixture
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main
from tfl_rebuild.tflite.reader import read_model

FIXTURES = fixture_params()
# Wide enough that rich never wraps a verification row (so each row is one line here).
ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


def keras_cli(model: Path | str, outdir: Path, *args: str):
    result = CliRunner().invoke(main, ["keras", str(model), "-o", str(outdir), *args], env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def keras_process(model: Path | str, outdir: Path, *args: str, env: dict | None = None):
    """The command as its own process (python -m tfl_rebuild.cli)."""
    return subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", "keras", str(model), "-o", str(outdir), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **ENV, **(env or {})},
        timeout=600,
    )


def written(outdir: Path) -> list[str]:
    return sorted(p.name for p in outdir.iterdir()) if outdir.exists() else []


def expected_files(stem: str) -> list[str]:
    return sorted([f"{stem}.py", f"{stem}.weights.h5", f"{stem}_tensors.json"])


def status_rows(output: str, names: list[str]) -> dict[str, str]:
    """Output tensor name -> its row in the verification table."""
    rows = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in names:
            rows[words[0]] = line
    return rows


# --- every fixture rebuilds and verifies ---------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURES)
def test_rebuild_verifies(path, tmp_path):
    result = keras_cli(path, tmp_path)
    out = result.output
    assert result.exit_code == 0, out
    assert f"wrote {tmp_path / path.stem}.py and {path.stem}.weights.h5" in out
    assert "verification vs TFLite" in out
    sg = read_model(path).main
    outputs = [sg.tensors[i].name for i in sg.outputs]
    status = {name: row.split()[-1] for name, row in status_rows(out, outputs).items()}
    assert status == dict.fromkeys(outputs, "match"), out
    assert "MISMATCH" not in out
    # The fixtures are built input-sensitive; a constant output would make "match" meaningless.
    assert "does not depend on the input" not in out
    # Atomic writes leave exactly the three files, no temporaries.
    assert written(tmp_path) == expected_files(path.stem)


# --- the written module ---------------------------------------------------------------------------


def generated(path: Path, outdir: Path, *args: str) -> Path:
    result = keras_cli(path, outdir, "--no-verify", *args)
    assert result.exit_code == 0, result.output
    return outdir / f"{path.stem}.py"


@pytest.mark.parametrize("config", ["isolated", "project"])
@pytest.mark.parametrize("path", FIXTURES)
def test_generated_module_passes_ruff(path, config, tmp_path):
    py = generated(path, tmp_path)
    # isolated: ruff's defaults; project: this repository's rule set (E, F, W, I, B, UP).
    conf = ["--isolated"] if config == "isolated" else ["--config", str(ROOT / "pyproject.toml")]
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *conf, str(py)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", FIXTURES)
def test_generated_module_parses_and_compiles(path, tmp_path):
    source = generated(path, tmp_path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    compile(tree, f"{path.stem}.py", "exec")
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    # build_model last; control flow (WHILE / IF) adds a build_<subgraph>() per called subgraph before it
    assert functions[-1] == "build_model" and all(f.startswith("build_") for f in functions), functions
    assert source.splitlines() == source.split("\n")[:-1]  # no line breaks but "\n"
    assert source.endswith("\n") and not source.endswith("\n\n")


def digests(outdir: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(outdir.iterdir())}


@pytest.mark.parametrize("path", FIXTURES)
def test_rebuild_is_byte_identical(path, tmp_path):
    """Same model -> same bytes, across processes with different hash seeds (set iteration order)."""
    first, second = tmp_path / "first", tmp_path / "second"
    generated(path, first)
    proc = keras_process(path, second, "--no-verify", env={"PYTHONHASHSEED": "4321"})
    assert proc.returncode == 0, proc.stderr
    assert digests(second) == digests(first)
    assert sorted(digests(first)) == expected_files(path.stem)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        pytest.param("my_net", "my_net", id="plain"),
        pytest.param("My Net!", "my_net", id="sanitized"),
        pytest.param("2fast", "model_2fast", id="leading-digit"),
        pytest.param("../../escape", "escape", id="path-traversal"),
        pytest.param("import", "import_", id="keyword"),
    ],
)
def test_name_option(name, stem, tmp_path):
    path = require_fixture("mnist")
    outdir = tmp_path / "out"
    result = keras_cli(path, outdir, "--no-verify", "--name", name)
    assert result.exit_code == 0, result.output
    assert written(outdir) == expected_files(stem)
    assert written(tmp_path) == ["out"]  # nothing lands outside -o
    source = (outdir / f"{stem}.py").read_text(encoding="utf-8")
    assert f'name="{stem}")' in source  # the keras.Model's name
    assert f"{stem}.weights.h5" in source  # the default weights path beside the module

    from tfl_rebuild.rebuild.loader import load_module

    model = load_module(outdir / f"{stem}.py").build_model()  # default WEIGHTS resolves
    assert model.name == stem


def test_no_verify_writes_without_verifying(tmp_path):
    result = keras_cli(require_fixture("ops_zoo"), tmp_path, "--no-verify")
    assert result.exit_code == 0, result.output
    assert "verification" not in result.output
    assert result.output.strip() == f"wrote {tmp_path / 'ops_zoo'}.py and ops_zoo.weights.h5"
    assert written(tmp_path) == expected_files("ops_zoo")


@pytest.mark.parametrize(
    ("fixture", "verify"),
    [
        pytest.param("ops_zoo", "--verify", id="ops_zoo-verified"),
        pytest.param("mobilenet_v2_int8", "--no-verify", id="mobilenet_v2_int8-unverified"),
    ],
)
def test_save_keras_reloads(fixture, verify, tmp_path):
    import keras

    from tfl_rebuild.rebuild.loader import load_module, run_keras

    path = require_fixture(fixture)
    saved = tmp_path / "saved" / "model.keras"
    saved.parent.mkdir()
    result = keras_cli(path, tmp_path / "out", verify, "--save-keras", str(saved))
    assert result.exit_code == 0, result.output
    assert f"saved {saved}" in result.output
    # Custom layer classes are registered when the generated module is imported.
    built = load_module(tmp_path / "out" / f"{fixture}.py").build_model()
    loaded = keras.saving.load_model(saved)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in built.layers
    ]
    x = np.random.default_rng(0).uniform(-1, 1, (1, *built.input_shape[1:])).astype(np.float32)
    for a, b in zip(run_keras(built, [x]), run_keras(loaded, [x]), strict=True):
        np.testing.assert_array_equal(a, b)


# --- bad input: exit 2, one line, nothing written --------------------------------------------------


def _custom_op_model() -> bytes:
    tensors = [T("x", [1, 4]), T("a", [1, 4]), T("y", [1, 4])]
    return build_model(
        tensors,
        [Op("RELU", [0], [1]), Op("CUSTOM", [1], [2], custom_code="NotARealOp")],
        inputs=[0],
        outputs=[2],
    )


BAD_INPUTS = {
    "text-file": (lambda: b"hello, I am not a model\n", "too short|not b'TFL3'"),
    "random-bytes": (lambda: np.random.default_rng(7).integers(0, 256, 4096, np.uint8).tobytes(), "TFL3"),
    "truncated-mnist": (
        lambda: require_fixture("mnist").read_bytes()[:3000],
        "malformed|truncated|past the end",
    ),
    "empty": (lambda: b"", "too short|empty"),
    "unsupported-custom-op": (_custom_op_model, "NotARealOp"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_model_exits_2_with_one_line(case, tmp_path):
    import re

    make, pattern = BAD_INPUTS[case]
    model = tmp_path / "bad.tflite"
    model.write_bytes(make())
    outdir = tmp_path / "out"
    proc = keras_process(model, outdir)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]
    assert proc.stdout == ""
    assert written(outdir) == []


def test_no_native_start_up_notices(tmp_path):
    """TensorFlow's oneDNN/CUDA notices and LiteRT's delegate notice stay off the user's terminal."""
    result = keras_process(require_fixture("add_one"), tmp_path / "out")
    assert result.returncode == 0, result.stderr
    text = result.stdout + result.stderr
    for notice in ("oneDNN", "cuda", "absl::InitializeLog", "XNNPACK delegate", "cpu_feature_guard"):
        assert notice not in text, text


def test_missing_model_exits_2(tmp_path):
    proc = keras_process(tmp_path / "nope.tflite", tmp_path / "out")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip() == f"error: {tmp_path / 'nope.tflite'}: cannot read (No such file or directory)"
    )
    assert written(tmp_path / "out") == []


def test_output_that_is_a_file_exits_2(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("keep me")
    proc = keras_process(require_fixture("add_one"), blocker, "--no-verify")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "is a file" in proc.stderr
    assert blocker.read_text() == "keep me"


# --- verification can fail ------------------------------------------------------------------------


def _kernels(weights: dict) -> list[str]:
    """Weight keys that scale the output (kernels, constant operands), in op order."""
    return [k for k in weights if k.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel", "constant")]


@pytest.mark.parametrize(
    ("fixture", "position"),
    [
        pytest.param("mnist", "first", id="mnist-first"),
        pytest.param("ops_zoo", "middle", id="ops_zoo-middle"),
        pytest.param("sparse_fc", "last", id="sparse_fc-last"),
        # (mul_w's 4-value constant is a literal at its call now, not in the weights file.)
        pytest.param("mobilenet_v2_float", "middle", id="mobilenet_v2_float-middle"),
        # The int8 output stays within TFLite's own kernel noise (~21 LSB moved, noise 15 LSB): the
        # layer-local check is what fails here.
        pytest.param("mobilenet_v2_int8", "first", id="mobilenet_v2_int8-first"),
        pytest.param("mobilenet_v2_int8", "middle", id="mobilenet_v2_int8-middle"),
        pytest.param("mobilenet_v2_dynamic", "middle", id="mobilenet_v2_dynamic-middle"),
        pytest.param("mobilenet_v2_fp16", "last", id="mobilenet_v2_fp16-last"),
    ],
)
def test_verification_reports_scaled_kernel(fixture, position, tmp_path, monkeypatch):
    """The rebuild is written with one kernel scaled by 1.1: verify must say MISMATCH, exit 1."""
    from tfl_rebuild.rebuild import weights_h5

    real_write = weights_h5.write_weights
    corrupted = []

    def write_scaled(module, arrays, path):
        keys = _kernels(arrays)
        key = keys[{"first": 0, "middle": len(keys) // 2, "last": -1}[position]]
        corrupted.append(key)
        return real_write(module, {**arrays, key: arrays[key] * np.float32(1.1)}, path)

    monkeypatch.setattr(weights_h5, "write_weights", write_scaled)
    result = keras_cli(require_fixture(fixture), tmp_path)
    assert corrupted, "the weights were never written"
    assert "MISMATCH" in result.output, f"{corrupted[0]} x 1.1 passed verification:\n{result.output}"
    assert result.exit_code == 1, result.output


def test_json_report_to_stdout_and_to_a_file(tmp_path):
    import json

    result = keras_cli(require_fixture("mnist"), tmp_path / "a", "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # stdout holds the JSON alone; the human report went to stderr
    assert doc["verification"]["ok"] is True and len(doc["verification"]["layers"]) == 4
    assert doc["paths"]["py"].endswith("mnist.py") and "verification vs TFLite" in result.stderr
    out = tmp_path / "report.json"
    result = keras_cli(require_fixture("mnist"), tmp_path / "b", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["verification"]["outputs"][0]["ok"] is True


def test_stages_show_on_a_terminal_only():
    import io

    from rich.console import Console

    from tfl_rebuild.commands.report import stages

    tty = Console(file=io.StringIO(), force_terminal=True)
    with stages(tty) as stage:
        stage("building the Keras model")
    assert "building the Keras model" in tty.file.getvalue()
    pipe = Console(file=io.StringIO(), force_terminal=False)
    with stages(pipe) as stage:
        stage("building the Keras model")
    assert pipe.file.getvalue() == ""
