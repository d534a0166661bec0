"""`tfl-rebuild dump` against hostile output directories and hostile tensor names.

We delete only what our own earlier dump wrote, keep the directory's mode, refuse a directory with
other files unless --force, check output paths before running, and lose no tensor to a name clash.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main

ACT = {"fused_activation_function": "NONE"}


@pytest.fixture
def chain(tmp_path):
    """x[1,4] -> ADD w -> a -> TANH -> b: two dumped tensors."""
    tensors = [T("x", [1, 4]), T("w", [4], data=np.ones(4, np.float32)), T("a", [1, 4]), T("b", [1, 4])]
    ops = [Op("ADD", [0, 1], [2], options=ACT), Op("TANH", [2], [3])]
    path = tmp_path / "models" / "chain.tflite"
    path.parent.mkdir()
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[3]))
    return str(path)


def run(*args, cwd: Path | None = None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(main, ["dump", *map(str, args)])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(main, ["dump", *map(str, args)])
    finally:
        os.chdir(old)


def ok(*args, cwd=None):
    result = run(*args, cwd=cwd)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def one_line_error(*args, match: str, cwd=None):
    result = run(*args, cwd=cwd)
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output
    return lines[0]


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# -- defect 1: deleting what is not ours ------------------------------------------------------------


def test_redump_keeps_a_users_notes_and_needs_force(chain, tmp_path):
    out = tmp_path / "out"
    ok(chain, "-o", out, "--random", "0")
    (out / "notes.txt").write_text("my findings")
    one_line_error(chain, "-o", out, "--random", "1", match="--force")
    assert (out / "notes.txt").read_text() == "my findings"
    ok(chain, "-o", out, "--random", "1", "--force")
    assert (out / "notes.txt").read_text() == "my findings"
    assert listing(out) == [
        "0000_a.npy",
        "0001_b.npy",
        "index.json",
        "input_0_x.npy",
        "notes.txt",
        "summary.csv",
    ]


def test_redump_removes_only_the_files_its_earlier_index_lists(chain, tmp_path):
    out = tmp_path / "out"
    ok(chain, "-o", out, "--random", "0")
    (out / "keep.npy").write_bytes(b"user data")
    ok(chain, "-o", out, "--random", "0", "--ops", "TANH", "--force")  # 0000_a.npy was ours: gone
    assert listing(out) == ["0001_b.npy", "index.json", "input_0_x.npy", "keep.npy", "summary.csv"]
    assert (out / "keep.npy").read_bytes() == b"user data"


def test_a_copied_index_json_does_not_make_a_folder_ours(chain, tmp_path):
    out = tmp_path / "out"
    ok(chain, "-o", out, "--random", "0")
    papers = tmp_path / "papers"
    papers.mkdir()
    (papers / "thesis.tex").write_text("years of work")
    (papers / "0000_a.npy").write_bytes(b"not a dump's")
    index = json.loads((out / "index.json").read_text())
    index["tensors"].append({"file": "thesis.tex"})  # an index naming files that are not ours
    index["inputs"].append({"file": "../models/chain.tflite"})
    (papers / "index.json").write_text(json.dumps(index))
    one_line_error(chain, "-o", papers, "--random", "0", match="no earlier dump wrote")
    # --force writes beside them, but never replaces a file that is not ours (checked before the run).
    one_line_error(chain, "-o", papers, "--random", "0", "--force", match="not from an earlier dump")
    assert (papers / "thesis.tex").read_text() == "years of work"
    assert (papers / "0000_a.npy").read_bytes() == b"not a dump's"
    assert Path(chain).exists()


def test_forced_dump_never_deletes_files_a_crafted_index_lists(chain, tmp_path):
    out = tmp_path / "out"
    ok(chain, "-o", out, "--random", "0")
    (out / "thesis.tex").write_text("years of work")
    (out / "0099_old.npy").write_bytes(b"user")  # our naming, but not listed by the index
    index = json.loads((out / "index.json").read_text())
    index["tensors"].append({"file": "thesis.tex", "dequantized_file": "../chain.tflite"})
    (out / "index.json").write_text(json.dumps(index))
    ok(chain, "-o", out, "--random", "0", "--force")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert (out / "0099_old.npy").read_bytes() == b"user"


def test_redump_keeps_the_directory_mode(chain, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o755)
    ok(chain, "-o", out, "--random", "0")
    ok(chain, "-o", out, "--random", "1")
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert all(
        stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE((tmp_path / "models" / "chain.tflite").stat().st_mode)
        for p in out.iterdir()
    )


def test_new_directory_gets_the_usual_mode(chain, tmp_path):
    mask = os.umask(0o022)
    try:
        ok(chain, "-o", tmp_path / "fresh", "--random", "0")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o755


def test_dump_into_the_current_directory(chain, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    ok(chain, "-o", ".", "--random", "0", cwd=here)
    ok(chain, "-o", ".", "--random", "1", cwd=here)  # a re-dump in place: no EBUSY
    assert listing(here) == ["0000_a.npy", "0001_b.npy", "index.json", "input_0_x.npy", "summary.csv"]
    assert listing(tmp_path) == ["here", "models"]  # no ..*.old or .*.tmp leftovers beside it


def test_current_directory_with_other_files_is_refused_up_front(chain, tmp_path):
    (tmp_path / "models" / "README").write_text("x")
    one_line_error(chain, "-o", ".", "--random", "0", match="no earlier dump wrote", cwd=tmp_path / "models")
    assert listing(tmp_path / "models") == ["README", "chain.tflite"]


def test_unwritable_output_is_refused_before_the_run(chain, tmp_path, monkeypatch):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    from tfl_rebuild.runtime import outputter

    def no_run(*args, **kwargs):
        raise AssertionError("the model ran before the output path was checked")

    monkeypatch.setattr(outputter.Dumper, "__init__", no_run)
    one_line_error(chain, "-o", "/proc/tfl-rebuild-out", "--random", "0", match="/proc")
    one_line_error(chain, "-o", "/proc/self/no/such/dir", "--random", "0", match="/proc")


def test_save_patched_under_proc_is_refused_before_patching(chain):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    one_line_error(chain, "--save-patched", "/proc/p.tflite", match="/proc")


# -- defect 3: silent data loss -------------------------------------------------------------------


def test_colliding_names_lose_no_tensor(tmp_path):
    # Tensor 8 is named "x" like tensor 1; "x@8" (its old key) is tensor 2's own name.
    names = ["in", "x", "x@8", "t3", "t4", "t5", "t6", "t7", "x", "X"]
    tensors = [T(n, [1, 4]) for n in names]
    ops = [Op("TANH", [i], [i + 1]) for i in range(9)]
    path = tmp_path / "names.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[9]))
    out = tmp_path / "out"
    result = ok(path, "-o", out, "--random", "0")
    assert "dumped 9 tensors" in result.output
    index = json.loads((out / "index.json").read_text())
    assert [t["tensor_index"] for t in index["tensors"]] == list(range(1, 10))
    files = [t["file"] for t in index["tensors"]]
    assert len({f.lower() for f in files}) == 9
    assert len(list(out.glob("0*.npy"))) == 9
    for t in index["tensors"]:  # every file holds its own tensor: the chain of tanh values differs
        assert np.load(out / t["file"]).shape == (1, 4)
    values = [np.load(out / f).tobytes() for f in files]
    assert len(set(values)) == 9


# -- defect 4: formulas in summary.csv ------------------------------------------------------------


def test_summary_csv_cells_are_not_formulas(tmp_path):
    names = ["in", '=HYPERLINK("http://evil","x")', "+1", "-cmd", "@SUM(A1)", "\tx", "plain"]
    tensors = [T(n, [1, 2]) for n in names]
    ops = [Op("TANH", [i], [i + 1]) for i in range(len(names) - 1)]
    path = tmp_path / "csv.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[len(names) - 1]))
    ok(path, "-o", tmp_path / "out", "--random", "0")
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open(newline="")))
    assert [r["tensor_name"] for r in rows] == ["'" + n for n in names[1:6]] + ["plain"]
    for r in rows:
        assert r["op_type"] == "TANH" and float(r["min"]) <= float(r["max"])  # numbers stay numbers
    # index.json keeps the true names
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [t["name"] for t in index["tensors"]] == names[1:]
