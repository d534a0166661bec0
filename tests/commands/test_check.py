"""`tfl-rebuild check`: every model end to end, one row each, a crash in one never stops the others.

One CLI run (--jobs 2) over a directory mixing models that pass (add_one, mnist: verified against
TFLite and converted to Core ML), a model with several unsupported ops, a corrupt file and two
models whose worker process crashes (a segfault and an uncaught exception, simulated by swapping the
worker command); the rest are unit tests of the pieces that need no TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FIXTURES_DIR, require_fixture
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main
from tfl_rebuild.commands.check import pool
from tfl_rebuild.commands.check.discover import collect_models
from tfl_rebuild.commands.check.pool import run_all, run_one
from tfl_rebuild.commands.check.rows import Options
from tfl_rebuild.commands.check.stages import check_model
from tfl_rebuild.errors import InputError

CRASHES = {  # model stem -> what its worker does instead of checking it
    "segfault": "import ctypes; ctypes.string_at(0)",
    "exception": "raise MemoryError('simulated out of memory')",
    "hang": "import time; time.sleep(60)",
    "hang_2": "import time; time.sleep(60)",
}


def unsupported_model() -> bytes:
    """x -> ADD v99 -> custom MyCustomOp -> SKIP_GRAM -> custom MyCustomOp -> CONV_2D with run-time weights."""
    w = np.ones([1, 4], np.float32)
    tensors = [
        T("x", [1, 4]),
        T("w", [1, 4], data=w),
        T("a", [1, 4]),
        T("b", [1, 4]),
        T("c", [1, 4]),
        T("d", [1, 4]),
        T("img", [1, 2, 2, 1]),
        T("kernel", [1, 1, 1, 1]),
        T("y", [1, 2, 2, 1]),
    ]
    ops = [
        Op("ADD", [0, 1], [2], options={"fused_activation_function": "NONE"}, version=99),
        Op("CUSTOM", [2], [3], custom_code="MyCustomOp"),
        Op("SKIP_GRAM", [3], [4], options_type="SkipGramOptions"),
        Op("CUSTOM", [4], [5], custom_code="MyCustomOp"),
        Op("CONV_2D", [6, 7, -1], [8], options={"padding": "VALID", "stride_w": 1, "stride_h": 1}),
    ]
    return build_model(tensors, ops, inputs=[0, 6, 7], outputs=[5, 8])


@pytest.fixture
def fake_crashes(monkeypatch):
    """Models named after CRASHES run that code instead of the real worker."""
    real = pool.worker_command

    def command(model, result, opts, keep):
        if model.stem in CRASHES:
            return [sys.executable, "-c", CRASHES[model.stem]]
        return real(model, result, opts, keep)

    monkeypatch.setattr(pool, "worker_command", command)


def test_collect_models(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.tflite", "a.tflite", "sub/c.tflite", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = collect_models([str(tmp_path), str(tmp_path / "a.tflite")])  # a repeat is checked once
    assert [f.path.relative_to(tmp_path).as_posix() for f in found] == [
        "a.tflite",
        "b.tflite",
        "sub/c.tflite",
    ]
    assert [f.name for f in found] == ["a.tflite", "b.tflite", "sub/c.tflite"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .tflite files"):
        collect_models([str(tmp_path / "empty")])
    with pytest.raises(InputError, match="no such file"):
        collect_models([str(tmp_path / "missing.tflite")])


def test_same_named_models_show_their_paths(tmp_path):
    """Rows show the path relative to the PATH searched, qualified by it only where two would match."""
    for rel in ("d1/a/m.tflite", "d1/b/m.tflite", "d2/a/m.tflite", "x/m.tflite", "y/m.tflite"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = collect_models([str(tmp_path / "d1"), str(tmp_path / "d2"), str(tmp_path / "x/m.tflite")])
    root = tmp_path.as_posix()
    assert [f.name for f in found] == [
        f"{root}/d1/a/m.tflite",
        "b/m.tflite",
        f"{root}/d2/a/m.tflite",
        "m.tflite",
    ]
    found = collect_models([str(tmp_path / "x/m.tflite"), str(tmp_path / "y/m.tflite")])
    assert [f.name for f in found] == [f"{root}/x/m.tflite", f"{root}/y/m.tflite"]


def test_keep_names_are_safe_and_unique():
    from tfl_rebuild.commands.check.discover import Found, keep_names

    rels = [
        "...tflite",
        "..tflite",
        ".tflite",
        "a.tflite",
        "A.tflite",
        "a.tflite",
        "a_2.tflite",
        "d/a.tflite",
    ]
    rels += ["é\n/../x.TFLITE", "/abs/m.tflite", "x" * 300 + ".tflite"]
    names = keep_names([Found(Path(r), r) for r in rels])
    assert names[:8] == ["__", "_", "__2", "a", "A_3", "a_4", "a_2", "d__a"]
    assert names[8:10] == ["____x", "abs__m"]
    assert len(names[10]) == 100 and names[10].startswith("x" * 90)
    assert len({n.lower() for n in names}) == len(names)
    assert all(
        set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") for n in names
    )
    assert not any(n.startswith(".") for n in names)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing_dir"], "missing_dir: no such file or directory"),
        (["{tmp}"], "no .tflite files in this directory"),
        (["{tmp}/m.tflite", "--json", "-", "--markdown", "-"], "only one of them can go to stdout"),
        (
            ["{tmp}/m.tflite", "--markdown", "{tmp}/m.tflite/report.md"],
            "m.tflite: is a file, not a directory",
        ),
        (["{tmp}/m.tflite", "--keep", "{tmp}/m.tflite"], "m.tflite: is a file, not a directory"),
        (["{tmp}/m.tflite", "--json", "{tmp}"], "is a directory, expected a file path"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "{tmp}" else a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["check", *args])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_all_unsupported_ops_are_listed_at_once(tmp_path):
    path = tmp_path / "unsupported.tflite"
    path.write_bytes(unsupported_model())
    row = check_model(str(path), Options(coreml=False))
    assert row.outcome == "fail"
    assert [(u["op"], u["count"]) for u in row.unsupported] == [
        ("ADD v99", 1),
        ("custom MyCustomOp", 2),
        ("SKIP_GRAM v1", 1),
    ]
    assert len(row.conversion_errors) == 1 and "CONV_2D (op 4)" in row.conversion_errors[0]
    assert "weights computed at run time" in row.conversion_errors[0]
    assert row.keras.status == "unsupported" and row.coreml.status == "skipped"
    assert row.reason == "3 op type(s) not supported: ADD v99, custom MyCustomOp x2, SKIP_GRAM v1"
    assert (row.ops, row.params, row.quantization) == (5, 4, "float")


def test_refusals_keep_their_explanation(tmp_path):
    """Ops the registry refuses for a reason (Flex, SSD post-processing) say why in the row."""
    tensors = [T("x", [1, 4]), T("a", [1, 4]), T("b", [1, 4])]
    ops = [
        Op("CUSTOM", [0], [1], custom_code="FlexRaggedRange"),
        Op("CUSTOM", [1], [2], custom_code="FlexRaggedRange"),
    ]
    path = tmp_path / "flex.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[2]))
    row = check_model(str(path), Options(coreml=False))
    [entry] = row.unsupported
    assert (entry["op"], entry["count"]) == ("custom FlexRaggedRange", 2)
    assert "select TensorFlow ops (Flex)" in entry["detail"] and entry["detail"] in row.reason


def test_a_wrong_rebuild_is_a_mismatch_row(monkeypatch):
    """Keras outputs shifted by 0.5 after the build: verify (the real one) must flag them."""
    from tfl_rebuild.verify import end_to_end as verify

    real = verify.run_keras
    monkeypatch.setattr(verify, "run_keras", lambda m, xs, **kw: [y + 0.5 for y in real(m, xs, **kw)])
    row = check_model(str(require_fixture("add_one")), Options(coreml=False))
    assert (row.outcome, row.keras.status, row.coreml.status) == ("fail", "mismatch", "skipped")
    assert row.keras.max_rel > 0.1
    assert row.reason.startswith("Keras: 1/1 output(s) off, worst ") and " rel " in row.reason


def test_timeout_kills_the_worker(tmp_path, fake_crashes):
    path = tmp_path / "hang.tflite"
    path.write_bytes(b"x")
    row = run_one(path, Options(timeout=1))
    assert (row.outcome, row.reason) == ("timeout", "timed out after 1 s")
    assert row.seconds < 30


def test_interrupt_kills_the_running_workers(tmp_path, fake_crashes):
    models = []
    for stem in ("exception", "hang", "hang_2"):
        models.append(tmp_path / f"{stem}.tflite")
        models[-1].write_bytes(b"x")

    def interrupt(done, row):
        raise KeyboardInterrupt

    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_all(models, Options(timeout=120), jobs=2, progress=interrupt)
    assert time.perf_counter() - start < 30  # the hanging workers were killed, not waited for
    assert not pool._LIVE


def test_check_directory_jobs_2(tmp_path, fake_crashes):
    for name in ("add_one", "mnist"):
        shutil.copy(require_fixture(name), tmp_path / f"{name}.tflite")
    (tmp_path / "unsupported.tflite").write_bytes(unsupported_model())
    (tmp_path / "corrupt.tflite").write_bytes(FIXTURES_DIR.joinpath("mnist.tflite").read_bytes()[:4096])
    for stem in ("segfault", "exception"):
        (tmp_path / f"{stem}.tflite").write_bytes(b"never read")
    keep, report, md = tmp_path / "keep", tmp_path / "rows.json", tmp_path / "coverage.md"

    result = CliRunner().invoke(
        main,
        [
            "check",
            str(tmp_path),
            "--jobs",
            "2",
            "--json",
            str(report),
            "--markdown",
            str(md),
            "--keep",
            str(keep),
        ],
    )
    assert result.exit_code == 1, result.output  # some models fail
    doc = json.loads(report.read_text())
    rows = {r["name"].removesuffix(".tflite"): r for r in doc["models"]}
    assert list(rows) == sorted(rows)  # sorted, every model has its row
    assert set(rows) == {"add_one", "mnist", "unsupported", "corrupt", "segfault", "exception"}

    for name in ("add_one", "mnist"):  # really verified against TFLite, then converted and checked
        r = rows[name]
        assert r["outcome"] == "pass" and r["reason"] == "", r
        assert r["keras"]["status"] == "verified" and r["keras"]["max_rel"] <= 1e-4
        assert r["coreml"]["status"] == "checked" and r["coreml"]["max_rel"] <= 1e-2
        assert r["coreml"]["precision"] == "float16" and r["coreml"]["note"] == ""  # auto kept float16
        assert r["quantization"] == "float" and r["ops"] >= 1
        assert (keep / name / f"{name}.py").is_file() and (keep / name / f"{name}.mlpackage").is_dir()
    assert rows["mnist"]["params"] > 100_000

    assert rows["unsupported"]["reason"].startswith(
        "3 op type(s) not supported: ADD v99, custom MyCustomOp x2"
    )
    assert rows["corrupt"]["outcome"] == "error" and rows["corrupt"]["ops"] is None
    assert rows["segfault"]["outcome"] == "crash" and "SIGSEGV" in rows["segfault"]["reason"]
    assert rows["exception"]["outcome"] == "crash"
    assert "MemoryError: simulated out of memory" in rows["exception"]["reason"]
    for r in rows.values():
        assert r["reason"] == r["reason"].strip() and "\n" not in r["reason"]
        assert (r["reason"] == "") == (r["outcome"] == "pass")
    assert doc["summary"] == {
        "models": 6,
        "passed": 2,
        "keras_ok": 2,
        "coreml_ok": 2,
        "error": 1,
        "crash": 2,
        "timeout": 0,
    }

    text = md.read_text()
    assert "2/6 passed, Keras verified 2/6, Core ML checked 2/6, 1 error, 2 crash" in text
    assert "| custom MyCustomOp | unsupported.tflite (x2) |  |" in text
    assert "**segfault.tflite** (crash)" in text
    assert "unsupported.tflite" in result.output and "SIGSEGV" in result.output  # the table


def test_exit_0_when_every_model_passes(tmp_path):
    model = require_fixture("add_one")
    result = CliRunner().invoke(main, ["check", str(model), "--no-coreml", "--json", "-"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["models"][0]
    assert row["keras"]["status"] == "verified" and row["coreml"] == {
        "status": "skipped",
        "max_rel": None,
        "lsb": None,
        "seconds": 0.0,
        "reason": "--no-coreml",
        "precision": None,
        "note": "",
    }


def test_report_shows_the_precision_and_why_float16_was_not_kept():
    from rich.console import Console

    from tfl_rebuild.commands.check import report as check_report
    from tfl_rebuild.commands.check.rows import Row, Stage

    rows = [
        Row(
            "a.tflite",
            "a.tflite",
            "pass",
            3,
            10,
            "float",
            keras=Stage("verified", 1e-6),
            coreml=Stage(
                "checked",
                2e-5,
                precision="float32",
                note="float16 drifts: 1/1 output(s) off, worst 'y' rel 0.3",
            ),
        ),
        Row(
            "b.tflite",
            "b.tflite",
            "pass",
            3,
            10,
            "float",
            keras=Stage("verified", 1e-6),
            coreml=Stage("checked", 2e-3, precision="float16"),
        ),
        Row(
            "c.tflite",
            "c.tflite",
            "pass",
            3,
            10,
            "float",
            keras=Stage("verified", 1e-6),
            coreml=Stage("checked", 4e-3, precision="mixed 92% fp16", note="mixed precision: 2 of 25 ops"),
        ),
    ]
    md = check_report.to_markdown(rows, Options())
    assert "| checked fp32 |" in md and "| checked fp16 |" in md and "| checked mixed 92% fp16 |" in md
    assert "## Notes\n\n- a.tflite: float16 drifts: 1/1 output(s) off, worst 'y' rel 0.3" in md
    console = Console(width=200, record=True)
    check_report.print_table(rows, Options(), console)
    assert "checked fp32" in console.export_text()


def waveform_model(path) -> None:
    """A waveform of dynamic length -> STFT magnitude averaged over frames: the converter stores the
    length as 1, at which the STFT has no frame."""
    import tensorflow as tf

    module = tf.Module()
    module.fn = tf.function(
        lambda x: tf.reduce_mean(tf.abs(tf.signal.stft(x, 400, 160, 512)), axis=0),
        input_signature=[tf.TensorSpec([None], tf.float32)],
    )
    concrete = module.fn.get_concrete_function()
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], module).convert())


def test_input_shape_fixes_the_models_it_fits(tmp_path):
    """--input-shape reaches the worker and applies to the model whose input it names; the other
    model (add_one, static) is checked as it is. Without it the waveform model cannot rebuild."""
    waveform_model(tmp_path / "wave.tflite")
    shutil.copy(require_fixture("add_one"), tmp_path / "add_one.tflite")
    before = CliRunner().invoke(main, ["check", str(tmp_path), "--no-coreml", "--json", "-"])
    assert before.exit_code == 1
    rows = {r["name"]: r for r in json.loads(before.stdout)["models"]}
    assert (rows["add_one.tflite"]["outcome"], rows["wave.tflite"]["outcome"]) == ("pass", "fail")
    # at the stored length 1 the STFT has no frame: the row says which option to use
    assert (
        "is empty" in rows["wave.tflite"]["reason"] and "--input-shape x=N" in rows["wave.tflite"]["reason"]
    )
    result = CliRunner().invoke(
        main, ["check", str(tmp_path), "--no-coreml", "--json", "-", "--input-shape", "x=16000"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["models"]}
    assert rows["wave.tflite"]["keras"]["status"] == "verified"
    assert "rebuilt at 16000, as asked" in rows["wave.tflite"]["keras"]["note"]
    assert "rebuilt at" not in rows["add_one.tflite"]["keras"]["note"]  # (its note: the batch-3 check)


def test_input_shape_that_fits_no_model_is_exit_2(tmp_path):
    shutil.copy(require_fixture("add_one"), tmp_path / "add_one.tflite")
    result = CliRunner().invoke(main, ["check", str(tmp_path), "--input-shape", "nosuch=1,2"])
    assert result.exit_code == 2
    assert "--input-shape 'nosuch=1,2' fits none of the 1 model(s)" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_an_op_that_folds_once_dynamic_dims_are_fixed_is_not_called_unsupported(tmp_path):
    """x - min(x) [?, 8] -> SHAPE -> SPLIT_V -> its 8 -> RANGE(0, 8, 1), as BirdNET's STFT: at the
    dynamic batch RANGE's length looks data-dependent, but the rebuild fixes the batch to the
    stored 1 and the RANGE folds (check called BirdNET unsupported while `keras` verified it)."""
    scalar = {"shape": [], "dtype": "int32"}
    tensors = [
        T("x", [1, 8], shape_signature=[-1, 8]),
        T("shape", [2], "int32"),
        T("sizes", [2], "int32", data=np.array([1, 1], np.int32)),
        T("axis", **scalar, data=np.array(0, np.int32)),
        T("batch", [1], "int32"),
        T("width", [1], "int32"),
        T("no_dims", [0], "int32", data=np.zeros(0, np.int32)),
        T("n", **scalar),
        T("zero", **scalar, data=np.array(0, np.int32)),
        T("one", **scalar, data=np.array(1, np.int32)),
        T("r", [8], "int32", shape_signature=[-1]),
        T("rf", [8], shape_signature=[-1]),
        T("y", [1, 8], shape_signature=[-1, 8]),
        T("reduce_axis", [1], "int32", data=np.array([1], np.int32)),
        T("low", [1, 1], shape_signature=[-1, 1]),
        T("centred", [1, 8], shape_signature=[-1, 8]),
    ]
    ops = [
        Op("REDUCE_MIN", [0, 13], [14], options={"keep_dims": True}, options_type="ReducerOptions"),
        Op("SUB", [0, 14], [15], options={"fused_activation_function": "NONE"}),
        Op("SHAPE", [15], [1], options={"out_type": 2}, options_type="ShapeOptions"),
        Op("SPLIT_V", [1, 2, 3], [4, 5], options={"num_splits": 2}, options_type="SplitVOptions"),
        Op("RESHAPE", [5, 6], [7]),
        Op("RANGE", [8, 7, 9], [10]),
        Op("CAST", [10], [11]),
        Op("ADD", [0, 11], [12], options={"fused_activation_function": "NONE"}),
    ]
    path = tmp_path / "frames.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=[0], outputs=[12]))
    row = check_model(str(path), Options(coreml=False))
    assert not row.unsupported and row.keras.status == "verified", (row.unsupported, row.keras)
    assert row.outcome == "pass", row.reason
