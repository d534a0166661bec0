"""`check` on hostile file names and signals: model names never reach outside --keep, rows tell
same-named models apart, and SIGTERM ends the workers and their temporary files as Ctrl-C does.

Only the command line is used here (no internals), so these tests run against any version."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, require_fixture

from tfl_rebuild.cli import main

HOSTILE = ("...tflite", "..tflite", "d2/a.tflite", "a_2.tflite", "a/model.tflite", "b/model.tflite")


def snapshot(root: Path, skip: set[Path]) -> dict[str, bytes]:
    """Every file below `root` (its bytes), leaving out the trees in `skip`."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(path == s or s in path.parents for s in skip):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def test_keep_folders_stay_inside_keep_and_rows_show_relative_paths(tmp_path):
    """`...tflite` (stem `..`) once wrote into KEEP's parent, `..tflite` into KEEP itself, and
    `a/model.tflite` / `b/model.tflite` showed as two `model.tflite` rows sharing one folder."""
    scan = tmp_path / "models"
    for rel in HOSTILE:
        (scan / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(require_fixture("add_one"), scan / rel)
    keep = tmp_path / "out" / "keep"
    keep.parent.mkdir()
    (keep.parent / "model.py").write_text("# the user's own file, beside KEEP\n")
    md = tmp_path / "report.md"
    before = snapshot(tmp_path, {keep, md})

    result = CliRunner().invoke(
        main,
        [
            "check",
            str(scan),
            "--no-verify",
            "--no-coreml",
            "--jobs",
            "2",
            "--keep",
            str(keep),
            "--json",
            "-",
            "--markdown",
            str(md),
        ],
    )
    assert snapshot(tmp_path, {keep, md}) == before  # nothing written or changed outside KEEP
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["models"]
    assert sorted(r["name"] for r in rows) == sorted(HOSTILE)
    folders = sorted(p.name for p in keep.iterdir())
    assert folders == sorted(["__", "_", "d2__a", "a_2", "a__model", "b__model"]), folders
    for folder in folders:  # each model's own rebuild, whole
        assert len(list((keep / folder).glob("*.py"))) == 1, folder
    text = md.read_text()
    assert "| a/model.tflite |" in text and "| b/model.tflite |" in text


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every live process (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        found[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return found


def _group_alive(pgid: int) -> bool:
    return any(group == pgid and state != "Z" for _, group, state in _processes().values())


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc")
def test_sigterm_ends_the_workers_and_their_temporary_files(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    check = subprocess.Popen(
        [sys.executable, "-m", "tfl_rebuild.cli", "check", str(require_fixture("add_one")), "--no-coreml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 120
        while worker is None and time.monotonic() < deadline and check.poll() is None:
            worker = next((pid for pid, (ppid, _, _) in _processes().items() if ppid == check.pid), None)
            time.sleep(0.05)
        assert worker is not None, "check never started its worker"
        time.sleep(0.5)  # the worker is importing TensorFlow now
        check.send_signal(signal.SIGTERM)
        code = check.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _group_alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(worker), "a worker outlived check's SIGTERM"
        assert code == 128 + signal.SIGTERM
        assert list(tmp.iterdir()) == [], "temporary files left behind"
    finally:
        if check.poll() is None:
            check.kill()
            check.wait()
        if worker is not None and _group_alive(worker):
            os.killpg(worker, signal.SIGKILL)  # only the group this test's check started
