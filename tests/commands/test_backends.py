"""keras --backend / check --backends: the rebuild verified on other Keras backends, in workers.

Each backend runs in its own process (Keras picks its backend at import). These tests need the
fixtures and the backend packages they name; a test for a backend that is not installed skips.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_fixture

from tfl_rebuild.commands.backends import Workers, parse_backends
from tfl_rebuild.commands.extras import installed
from tfl_rebuild.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
needs_jax = pytest.mark.skipif(
    not installed("jax"), reason="jax not installed (pip install 'tfl-rebuild[jax]')"
)
needs_torch = pytest.mark.skipif(not installed("torch"), reason="torch not installed (make test-torch)")


def cli(*args, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", *args], capture_output=True, text=True, env=env, **kwargs
    )


def test_parse_backends():
    assert parse_backends(["all"]) == ("tensorflow", "jax", "torch")
    assert parse_backends(["torch", "jax,tensorflow", "jax"]) == ("tensorflow", "jax", "torch")
    assert parse_backends("jax") == ("jax",)
    with pytest.raises(InputError, match="--backend 'cuda'"):
        parse_backends(["cuda"])


def test_missing_backend_is_one_line_before_any_work(tmp_path, monkeypatch):
    """The extra is named, exit 2, and no output folder is made."""
    from click.testing import CliRunner

    from tfl_rebuild import cli as cli_module
    from tfl_rebuild.commands import extras

    monkeypatch.setattr(extras, "installed", lambda module: module != "torch")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_module.main, ["keras", str(require_fixture("mnist")), "-o", str(out), "--backend", "torch"]
    )
    assert result.exit_code == 2, result.output
    assert "pip install 'tfl-rebuild[torch]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@needs_jax
def test_keras_backend_jax_verifies_and_stamps_the_header(tmp_path):
    result = cli(
        "keras", str(require_fixture("ops_zoo")), "-o", str(tmp_path), "--backend", "jax", "--json", "-"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    jax = doc["backends"]["jax"]
    assert jax["ok"] and jax["verification"]["layers"], jax
    assert all(o["input_sensitive"] for o in jax["verification"]["outputs"])
    header = (tmp_path / "ops_zoo.py").read_text(encoding="utf-8").splitlines()[:4]
    assert any(line.endswith("Keras backends: jax.") for line in header), header
    assert "on the jax backend:" in result.stderr


@needs_jax
def test_api_with_backends_reports_each_backend(tmp_path):
    """`tr.rebuild(..., backends=[...])` verifies in one worker per backend and reports each (the
    caller's process imports Keras on its own backend only to write the .weights.h5)."""
    code = (
        "import sys, tfl_rebuild as tr\n"
        f"r = tr.rebuild({str(require_fixture('mnist'))!r}, {str(tmp_path)!r}, backends=['jax'])\n"
        "assert [(b.backend, b.ok) for b in r.backends] == [('jax', True)], r.backends\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]


@needs_jax
def test_a_wrong_weight_fails_on_the_backend(tmp_path):
    """The worker's verdict can be "mismatch": one kernel scaled by 1.5 after writing."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify

    rebuilt = rebuild_and_verify(str(require_fixture("mnist")), str(tmp_path), build=False, verify=False)
    import h5py

    with h5py.File(rebuilt.weights, "r+") as f:  # the first 2-D float array: a Dense kernel
        found = []
        f.visititems(lambda n, o: found.append(n) if getattr(o, "ndim", 0) == 2 else None)
        f[found[0]][...] = f[found[0]][...] * 1.5
    with Workers() as workers:
        result = workers.verify("jax", rebuilt)
    assert not result.error, result.error
    assert not result.ok and result.max_rel > 1e-3, result


@needs_jax
def test_sigterm_stops_the_workers(tmp_path):
    """SIGTERM to `keras --backend jax` ends it with "terminated" and kills its worker."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["keras", str(require_fixture("mobilenet_v2_float")), "-o", str(tmp_path), "--backend", "jax"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfl_rebuild.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        worker = None
        deadline = time.monotonic() + 600
        while worker is None and time.monotonic() < deadline and proc.poll() is None:
            worker = _child_running(proc.pid, "tfl_rebuild.commands.backend_worker")
            time.sleep(0.2)
        assert worker is not None, "the worker never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and b"terminated" in err, (proc.returncode, err[-2000:])
    for _ in range(50):
        if not Path(f"/proc/{worker}").exists() or _zombie(worker):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{worker}").exists() or _zombie(worker), "the worker outlived its parent"


def _child_running(parent: int, module: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and module in cmdline:
            return int(entry.name)
    return None


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@needs_torch
def test_gradients_reach_every_weighted_layer_under_torch(tmp_path):
    """A rebuilt float model under KERAS_BACKEND=torch: one backward pass gives every trainable
    weight of every weighted layer a non-zero gradient."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify

    rebuilt = rebuild_and_verify(
        require_fixture("mobilenet_v2_float"), str(tmp_path), build=False, verify=False
    )
    code = f"""
import sys
import torch
sys.path.insert(0, {str(rebuilt.py.parent)!r})
from {rebuilt.py.stem} import build_model
model = build_model()
assert isinstance(model, torch.nn.Module)
torch.manual_seed(0)
x = torch.rand(1, *model.inputs[0].shape[1:])
outputs = model(x)
outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
sum(o.square().mean() for o in outputs).backward()
weighted = [layer for layer in model.layers if layer.trainable_weights]
missing = [
    f"{{layer.name}}/{{w.path}}" for layer in weighted for w in layer.trainable_weights
    if w.value.grad is None or not bool(w.value.grad.abs().sum() > 0)
]
print(len(weighted), "weighted layers")
assert len(weighted) > 50, len(weighted)
assert not missing, missing
"""
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_check_backend_columns_and_pass_bar():
    """--backends: a column per backend in both reports, and a backend that fails fails the row."""
    from io import StringIO

    from rich.console import Console

    from tfl_rebuild.commands.check import report as check_report
    from tfl_rebuild.commands.check.rows import Options, Row, Stage, passes

    opts = Options(coreml=False, backends=("jax", "torch"))
    good = Row(path="a.tflite", name="a.tflite", keras=Stage(status="verified", max_rel=1e-7))
    good.coreml.status = "skipped"
    good.backends = {
        "jax": Stage(status="verified", max_rel=2e-7),
        "torch": Stage(status="verified", max_rel=3e-7),
    }
    bad = Row.from_dict(
        {
            **good.__dict__,
            "name": "b.tflite",
            "keras": good.keras.__dict__,
            "coreml": good.coreml.__dict__,
            "backends": {
                "jax": good.backends["jax"].__dict__,
                "torch": {"status": "mismatch", "max_rel": 0.5, "reason": "on torch: differs"},
            },
        }
    )
    assert passes(good, opts) and not passes(bad, opts)
    assert not passes(Row(path="c", name="c", keras=Stage(status="verified")), opts)  # backends not run
    md = check_report.to_markdown([good, bad], opts)
    assert "| jax | jax error | torch | torch error |" in md
    assert "| verified | 2e-07 | verified | 3e-07 |" in md and "| verified | 2e-07 | mismatch | 0.5 |" in md
    assert "on jax 2/2, on torch 1/2" in md
    console = Console(file=StringIO(), width=200)
    check_report.print_table([good, bad], opts, console)
    assert "torch" in console.file.getvalue() and "mismatch" in console.file.getvalue()


def test_stamp_names_the_backends_in_one_header_line():
    from tfl_rebuild.rebuild.codegen.emit import VERIFIED, generate, stamp_verified
    from tfl_rebuild.tflite.reader import read_model

    source = generate(read_model(str(require_fixture("add_one"))), "add_one").source
    assert VERIFIED not in source  # generated, not yet verified: no claim
    once = stamp_verified(source, ["torch", "tensorflow"])
    assert once.splitlines()[3] == f"{VERIFIED}tensorflow, torch."  # under the 3-line header
    again = stamp_verified(once, ["jax"])
    assert again.splitlines()[3] == f"{VERIFIED}jax." and again.count(VERIFIED) == 1
    assert stamp_verified(again, []) == source
    with pytest.raises(ValueError):
        stamp_verified(source, ["cuda"])
