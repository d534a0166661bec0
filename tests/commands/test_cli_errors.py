"""Output paths and input paths the commands cannot use: one line on stderr, exit 2, nothing written.

Each case runs the CLI as its own process (what a user sees: exit code, stderr, no traceback). The
paths are refused before any work: under an existing file, an existing directory where a file
belongs, a file where a directory belongs, a directory where a model or module belongs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, require_fixture

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**ENV, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# {model} is the add_one fixture; "afile" is a regular file, "adir" an empty directory.
CASES = {
    "keras-out-under-file": (
        ["keras", "{model}", "-o", "afile/out", "--no-verify"],
        "afile/out: cannot create",
    ),
    "keras-out-is-file": (
        ["keras", "{model}", "-o", "afile", "--no-verify"],
        "afile: is a file, not a directory",
    ),
    "keras-model-is-dir": (["keras", "adir", "-o", "out", "--no-verify"], "adir: is a directory"),
    "keras-save-keras-under-file": (
        ["keras", "{model}", "-o", "out", "--no-verify", "--save-keras", "afile/m.keras"],
        "afile: is a file, not a directory",
    ),
    "keras-save-keras-wrong-suffix": (
        ["keras", "{model}", "-o", "out", "--no-verify", "--save-keras", "m.h5"],
        ".keras",
    ),
    "keras-py-target-is-dir": (
        ["keras", "{model}", "-o", "adir2", "--no-verify"],
        "add_one.py: is a directory",
    ),
    "inspect-model-is-dir": (["inspect", "adir"], "adir: is a directory"),
    "inspect-graph-under-file": (["inspect", "{model}", "--graph", "afile/g.json"], "afile: is a file"),
    "weights-out-under-file": (["weights", "{model}", "-o", "afile/w.npz"], "afile: is a file"),
    "weights-out-is-dir": (["weights", "{model}", "-o", "adir"], "adir: is a directory"),
    "dump-out-under-file": (["dump", "{model}", "-o", "afile/d"], "afile: is a file"),
    "dump-out-is-file": (["dump", "{model}", "-o", "afile"], "afile: exists and is not a directory"),
    "dump-save-patched-under-file": (
        ["dump", "{model}", "--save-patched", "afile/p.tflite"],
        "afile: is a file",
    ),
    "compare-refs-dir-empty": (
        ["compare", "{model}", "adir"],
        "adir: a folder of references holds no .npy file",
    ),
    "compare-module-missing": (["compare", "{model}", "nope.py"], "nope.py: cannot read"),
    "coreml-source-is-dir": (["coreml", "adir"], "adir: is a directory"),
    "coreml-out-under-file": (["coreml", "{model}", "-o", "afile/m.mlpackage"], "afile: is a file"),
    "coreml-keras-dir-under-file": (
        ["coreml", "{model}", "--keras-dir", "afile/k"],
        "afile/k: cannot create",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_path_is_one_line_exit_2(case, tmp_path):
    args, expected = CASES[case]
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir2" / "add_one.py").mkdir(parents=True)  # a directory where the module goes
    before = tree(tmp_path)
    model = str(require_fixture("add_one"))
    proc = run_cli(*[a.replace("{model}", model) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert tree(tmp_path) == before  # nothing created, nothing half-written
    assert (tmp_path / "afile").read_text() == "keep me"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root ignores directory permissions, so a read-only directory is writable",
)
def test_permission_denied_is_one_line_exit_2(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        proc = run_cli(
            "keras", str(require_fixture("add_one")), "-o", "locked/out", "--no-verify", cwd=tmp_path
        )
    finally:
        locked.chmod(0o700)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Permission denied" in lines[0], proc.stderr
    assert list(locked.iterdir()) == []


def test_a_failing_weights_write_leaves_no_module(tmp_path, monkeypatch):
    """The module is renamed into place only after its weights are written."""
    import tfl_rebuild.commands.pipeline as pipeline
    from tfl_rebuild.errors import OutputError
    from tfl_rebuild.rebuild import weights_h5

    def fail(module, arrays, path):
        raise OutputError(f"{path}: cannot write (disk full)")

    monkeypatch.setattr(weights_h5, "write_weights", fail)
    with pytest.raises(OutputError):
        pipeline.write_generated(str(require_fixture("add_one")), str(tmp_path / "out"))
    assert tree(tmp_path / "out") == []
