"""`tfl-rebuild dump`: files written, inputs read, and one-line errors with nothing half-written."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, model_params, require_corpus, require_model
from flatbuf import Op, T, build_model
from hypothesis import given
from hypothesis import strategies as st

from tfl_rebuild.cli import main
from tfl_rebuild.commands import dump as dump_cmd
from tfl_rebuild.errors import RuntimeUnavailableError
from tfl_rebuild.runtime import outputter
from tfl_rebuild.tflite.reader import read_model

W = np.array([0.5, -1.0, 2.0, 3.25], np.float32)
ACT = {"fused_activation_function": "NONE"}


def write(tmp_path: Path, name: str, blob: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(blob)
    return str(path)


@pytest.fixture
def chain(tmp_path):
    """x[1,4] -> ADD w -> a -> TANH -> b -> MUL z -> y, with a second input z."""
    tensors = [
        T("x", [1, 4]),
        T("w", [4], data=W),
        T("a", [1, 4]),
        T("b", [1, 4]),
        T("y", [1, 4]),
        T("z", [1, 4]),
    ]
    ops = [Op("ADD", [0, 1], [2], options=ACT), Op("TANH", [2], [3]), Op("MUL", [3, 5], [4], options=ACT)]
    return write(tmp_path, "chain.tflite", build_model(tensors, ops, inputs=[0, 5], outputs=[4]))


@pytest.fixture
def image_model(tmp_path):
    """img[1,6,8,3] float -> ADD 0 -> out: the dump shows exactly what was fed."""
    tensors = [T("img", [1, 6, 8, 3]), T("zero", [3], data=np.zeros(3, np.float32)), T("out", [1, 6, 8, 3])]
    return write(
        tmp_path,
        "img.tflite",
        build_model(tensors, [Op("ADD", [0, 1], [2], options=ACT)], inputs=[0], outputs=[2]),
    )


@pytest.fixture
def uint8_model(tmp_path):
    tensors = [T("img", [1, 6, 8, 3], dtype="uint8"), T("f", [1, 6, 8, 3])]
    return write(tmp_path, "u8.tflite", build_model(tensors, [Op("CAST", [0], [1])], inputs=[0], outputs=[1]))


@pytest.fixture
def png(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def run(*args):
    result = CliRunner().invoke(main, ["dump", *map(str, args)])
    return result


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def fail(*args, match: str):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr if hasattr(result, "stderr") else result.output
    lines = [ln for ln in err.splitlines() if ln.startswith("error:") or "Error" in ln]
    assert len(lines) == 1 and match in lines[0], err
    return result


def no_leftovers(parent: Path, name: str) -> bool:
    return not any(p.name.startswith(f".{name}.") for p in parent.iterdir())


# -- what is written ------------------------------------------------------------------------------


def test_dump_writes_npy_index_and_summary(chain, tmp_path):
    out = tmp_path / "out"
    x, z = np.full((1, 4), 0.25, np.float32), np.full((1, 4), -2.0, np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "z.npy", z)
    ok(chain, "-o", out, "--input", f"x={tmp_path / 'x.npy'}", "-i", f"z={tmp_path / 'z.npy'}")
    index = json.loads((out / "index.json").read_text())
    assert [t["name"] for t in index["tensors"]] == ["a", "b", "y"]
    assert [t["file"] for t in index["tensors"]] == ["0000_a.npy", "0001_b.npy", "0002_y.npy"]
    assert [t["op_type"] for t in index["tensors"]] == ["ADD", "TANH", "MUL"]
    assert index["runtime"] and index["kernels"] == "builtin" and index["sha256"] == read_model(chain).sha256
    api = outputter.dump(chain, {"x": x, "z": z})
    for t in index["tensors"]:
        np.testing.assert_array_equal(np.load(out / t["file"]), api[t["name"]])
        assert t["stats"]["max"] == pytest.approx(float(api[t["name"]].max()))
    np.testing.assert_array_equal(np.load(out / index["inputs"][1]["file"]), z)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["tensor_name"] for r in rows] == ["a", "b", "y"]
    assert rows[1]["op_type"] == "TANH" and rows[1]["shape"] == "1x4" and rows[1]["dtype"] == "float32"
    assert float(rows[2]["mean"]) == pytest.approx(float(api["y"].mean()))
    assert no_leftovers(tmp_path, "out")


def test_npz_input_and_select(chain, tmp_path):
    out = tmp_path / "out"
    np.savez(tmp_path / "in.npz", x=np.ones((1, 4), np.float32), z=np.ones((1, 4), np.float32))
    ok(chain, "-o", out, "-i", tmp_path / "in.npz", "--select", "^[ab]$")
    assert sorted(p.name for p in out.glob("0*.npy")) == ["0000_a.npy", "0001_b.npy"]


def test_random_fills_missing_inputs_and_redump_replaces(chain, tmp_path):
    out = tmp_path / "out"
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    ok(chain, "-o", out, "-i", f"x={tmp_path / 'x.npy'}", "--random", "7", "--ops", "tanh")
    assert [p.name for p in out.glob("0*.npy")] == ["0001_b.npy"]
    ok(chain, "-o", out, "--random", "7", "--ops", "ADD,MUL")  # an earlier dump is replaced
    assert sorted(p.name for p in out.glob("0*.npy")) == ["0000_a.npy", "0002_y.npy"]
    assert no_leftovers(tmp_path, "out")


def test_save_patched_alone_needs_no_run(chain, tmp_path):
    ok(chain, "--save-patched", tmp_path / "p.tflite")
    assert read_model(tmp_path / "p.tflite").main.outputs == (4, 2, 3)


@pytest.mark.parametrize("path", model_params())
def test_dump_every_model_matches_api(path, tmp_path):
    require_model(path)
    out = tmp_path / "out"
    result = run(path, "-o", out, "--random", "5", "--save-patched", tmp_path / "p.tflite")
    if result.exit_code == 2 and "custom op" in result.output:
        pytest.skip(result.output.strip().splitlines()[-1])
    assert result.exit_code == 0, result.output
    index = json.loads((out / "index.json").read_text())
    try:
        api = outputter.dump(path, seed=5)
    except RuntimeUnavailableError as exc:
        pytest.skip(str(exc))
    assert len(index["tensors"]) == len(api)
    for t in index["tensors"]:
        np.testing.assert_array_equal(np.load(out / t["file"]), api[t["key"]])
        if "dequantized_file" in t:
            np.testing.assert_array_equal(
                np.load(out / t["dequantized_file"]), api.entries[t["key"]].dequantize(api[t["key"]])
            )
    assert len(read_model(tmp_path / "p.tflite").main.outputs) >= len(api)


# -- image inputs ---------------------------------------------------------------------------------


def fed(out: Path) -> np.ndarray:
    index = json.loads((out / "index.json").read_text())
    return np.load(out / index["inputs"][0]["file"])


def resized(pixels: np.ndarray, w: int = 8, h: int = 6) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR))[None]


def test_image_default_normalization(image_model, png, tmp_path):
    path, pixels = png
    ok(image_model, "-o", tmp_path / "o", "-i", path)
    np.testing.assert_allclose(fed(tmp_path / "o"), (resized(pixels) - 127.5) / 127.5, rtol=1e-6)


def test_image_mean_std_per_channel_and_bgr(image_model, png, tmp_path):
    path, pixels = png
    ok(image_model, "-o", tmp_path / "o", "-i", path, "--mean", "10,20,30", "--std", "2", "--bgr")
    want = (resized(pixels)[..., ::-1] - np.array([10, 20, 30], np.float32)) / 2
    np.testing.assert_allclose(fed(tmp_path / "o"), want, rtol=1e-6)


def test_image_scale(image_model, png, tmp_path):
    path, pixels = png
    ok(image_model, "-o", tmp_path / "o", "-i", path, "--scale", str(1 / 255))
    np.testing.assert_allclose(fed(tmp_path / "o"), resized(pixels) * np.float32(1 / 255), rtol=1e-6)


def test_image_uint8_input_gets_raw_pixels(uint8_model, png, tmp_path):
    path, pixels = png
    ok(uint8_model, "-o", tmp_path / "o", "-i", path)
    np.testing.assert_array_equal(fed(tmp_path / "o"), resized(pixels))


# -- errors: one line, exit 2, nothing written ----------------------------------------------------


def test_errors_are_one_line_and_write_nothing(chain, image_model, tmp_path):
    out = tmp_path / "out"
    np.save(tmp_path / "bad_shape.npy", np.ones((1, 5), np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    (tmp_path / "garbage.png").write_bytes(b"not an image")
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    x = tmp_path / "x.npy"
    fail(chain, "-o", out, "-i", f"x={tmp_path / 'missing.npy'}", "--random", "1", match="no such file")
    fail(
        chain, "-o", out, "-i", f"x={tmp_path / 'garbage.npy'}", "--random", "1", match="not a readable .npy"
    )
    fail(
        chain,
        "-o",
        out,
        "-i",
        f"x={tmp_path / 'bad_shape.npy'}",
        "--random",
        "1",
        match="expects shape [1, 4]",
    )
    fail(chain, "-o", out, "-i", f"q={x}", match="no input named 'q'")
    fail(chain, "-o", out, "-i", x, match="name each one")
    fail(chain, "-o", out, "-i", f"x={x}", match="no value for input(s) z")
    fail(chain, "-o", out, "-i", f"x={x}", "-i", f"x={x}", "--random", "1", match="given twice")
    fail(chain, "-o", out, "--select", "(", match="regular expression")
    fail(chain, "-o", out, "--ops", "CONV_2D", match="no operator output matches")
    fail(image_model, "-o", out, "-i", tmp_path / "garbage.png", match="not a readable image")
    fail(image_model, "-o", out, "-i", tmp_path / "garbage.png", "--mean", "x", match="--mean")
    fail(tmp_path / "nope.tflite", "-o", out, match="cannot read")
    fail(x, "-o", out, match="not")  # an .npy is not a model
    assert not out.exists() and no_leftovers(tmp_path, "out")


def test_refuses_a_foreign_output_directory(chain, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    fail(chain, "-o", out, "--random", "0", match="no earlier dump wrote")
    assert (out / "precious.txt").read_text() == "keep"


def test_needs_an_output():
    result = run("model.tflite")
    assert result.exit_code == 2 and "-o DIR" in result.output


def test_interrupted_write_leaves_nothing(chain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_save, calls = np.save, []

    def flaky_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", flaky_save)
    result = run(chain, "-o", out, "--random", "0")
    assert result.exit_code == 130
    assert not out.exists() and no_leftovers(tmp_path, "out")


def test_interrupted_redump_keeps_the_earlier_one(chain, tmp_path, monkeypatch):
    out = tmp_path / "out"
    ok(chain, "-o", out, "--random", "0")
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(np, "save", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    assert run(chain, "-o", out, "--random", "1").exit_code == 130
    assert sorted(p.name for p in out.iterdir()) == before and no_leftovers(tmp_path, "out")


def test_custom_op_message_names_the_op(tmp_path):
    blob = build_model(
        [T("x", [2]), T("y", [2])], [Op("CUSTOM", [0], [1], custom_code="NoSuchOp")], inputs=[0], outputs=[1]
    )
    fail(write(tmp_path, "custom.tflite", blob), "-o", tmp_path / "o", match="NoSuchOp")


@pytest.mark.corpus
def test_mediapipe_ops_the_runtime_lacks_run_in_segments(tmp_path):
    """LiteRT has no Landmarks2TransformMatrix & co.: their numpy references run them (segmented.py)."""
    path = require_corpus("face_landmark_with_attention")
    ok(path, "-o", tmp_path / "o")
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert len(index["tensors"]) == len(read_model(path).main.operators)
    assert {"Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"} <= {
        t["op_type"] for t in index["tensors"]
    }


@pytest.mark.corpus
def test_xnnpack_runs_mediapipe_custom_op(tmp_path):
    path = require_corpus("selfie_segmentation")
    ok(path, "-o", tmp_path / "b")  # built-in kernels lack it: its numpy reference runs it
    ok(path, "-o", tmp_path / "o", "--xnnpack")
    index = json.loads((tmp_path / "o" / "index.json").read_text())
    assert index["kernels"] == "xnnpack" and index["skipped"]
    assert "Convolution2DTransposeBias" in {t["op_type"] for t in index["tensors"]}


def test_console_script_one_line_error(tmp_path):
    exe = Path(sys.executable).parent / "tfl-rebuild"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tfl_rebuild.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [*cmd, "dump", str(tmp_path / "missing.tflite"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error:") and "Traceback" not in res.stderr


# -- inputs.conform -------------------------------------------------------------------------------


def detail(dtype, shape, sig=None, quant=(0.0, 0)):
    return {
        "name": "x",
        "dtype": np.dtype(dtype),
        "shape": np.array(shape),
        "shape_signature": np.array(sig if sig is not None else shape),
        "quantization": quant,
    }


def test_conform_quantizes_floats_for_quantized_inputs():
    from tfl_rebuild.runtime.inputs import conform

    out = conform(np.array([[1.0, -100.0, 0.2]], np.float32), detail(np.int8, [1, 3], quant=(0.5, -1)), "t")
    assert out.dtype == np.int8 and out.tolist() == [[1, -128, -1]]


def test_conform_dtype_and_shape_rules():
    from tfl_rebuild.errors import InputError
    from tfl_rebuild.runtime.inputs import conform

    assert conform(np.ones((3, 4)), detail(np.float32, [1, 4], sig=[-1, 4]), "t").shape == (3, 4)
    assert conform(np.arange(4), detail(np.uint8, [1, 4]), "t").dtype == np.uint8
    with pytest.raises(InputError, match="outside"):
        conform(np.array([300, 0, 0, 0]), detail(np.uint8, [1, 4]), "t")
    with pytest.raises(InputError, match="not quantized"):
        conform(np.ones(4, np.float32), detail(np.int8, [1, 4]), "t")
    with pytest.raises(InputError, match=r"expects shape \[1, 4\]"):
        conform(np.ones((2, 2)), detail(np.float32, [1, 4]), "t")


# -- runtimes -------------------------------------------------------------------------------------


def hide(monkeypatch, *modules):
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)  # makes `import m` raise ImportError


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_falls_back_to_tf_lite_without_litert(chain, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    litert = outputter.dump(chain, seed=4)
    hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter")
    tflite = outputter.dump(chain, seed=4)
    assert type(outputter.Dumper(outputter.prepare(chain)).interpreter).__module__.startswith("tensorflow")
    assert all(np.array_equal(litert[k], tflite[k]) for k in litert)
    ok(chain, "-o", tmp_path / "o", "--random", "4")
    assert json.loads((tmp_path / "o" / "index.json").read_text())["runtime"].startswith("tensorflow")


def test_clear_error_without_any_runtime(chain, tmp_path, monkeypatch):
    hide(monkeypatch, "ai_edge_litert", "ai_edge_litert.interpreter", "tensorflow")
    fail(chain, "-o", tmp_path / "o", "--random", "0", match="needs ai-edge-litert or tensorflow")
    ok(chain, "--save-patched", tmp_path / "p.tflite")  # patching alone needs no runtime


# -- file names -------------------------------------------------------------------------------


@given(st.text(max_size=300))
def test_sanitized_names_are_safe(name):
    s = dump_cmd.sanitize(name)
    assert 0 < len(s) <= 80
    assert all(c.isascii() and (c.isalnum() or c in "_.-") for c in s)
    assert not s.startswith(".")


def test_file_names_unique_on_case_blind_disks():
    E = outputter.DumpEntry
    entries = [
        E("A", 1, "A", 3, "X", "float32"),
        E("a", 2, "a", 3, "X", "float32"),
        E("../../etc/passwd", 3, "../../etc/passwd", 12, "X", "float32"),
        E("conv;fused;names", 4, "conv;fused;names", 12, "X", "float32"),
    ]
    names = dump_cmd.file_names(entries, 20)
    assert names == {
        "A": "0003_A",
        "a": "0003_a_t2",
        "../../etc/passwd": "0012_etc_passwd",
        "conv;fused;names": "0012_conv",
    }


def test_complex_tensors_are_summarised_by_magnitude(tmp_path):
    """RFFT2D's complex64 output: magnitude statistics, said so, and no ComplexWarning."""
    from flatbuf import Op, T, build_model

    tensors = [
        T("x", [1, 4, 8]),
        T("fft_length", [2], "int32", np.array([4, 8], np.int32)),
        T("spectrum", [1, 4, 5], "complex64"),
    ]
    path = tmp_path / "rfft.tflite"
    path.write_bytes(build_model(tensors, [Op("RFFT2D", [0, 1], [2])], inputs=[0], outputs=[2]))
    result = CliRunner().invoke(main, ["dump", str(path), "-o", str(tmp_path / "d"), "--random", "1"])
    assert result.exit_code == 0, result.output
    assert "ComplexWarning" not in result.output
    index = json.loads((tmp_path / "d" / "index.json").read_text())
    entry = next(e for e in index["tensors"] if e["name"] == "spectrum")
    spectrum = np.load(tmp_path / "d" / entry["file"])
    assert spectrum.dtype == np.complex64
    assert entry["stats"]["of"] == "magnitude"
    assert entry["stats"]["max"] == pytest.approx(float(np.abs(spectrum).max()), rel=1e-6)
    assert entry["stats"]["min"] >= 0


def test_image_preprocessing_is_said_and_recorded(image_model, png, tmp_path):
    path, _ = png
    result = ok(image_model, "-o", tmp_path / "o", "-i", path)
    said = [line for line in result.stderr.splitlines() if line.startswith("input ")]
    assert len(said) == 1 and "resized 16x12 -> 8x6" in said[0] and "127.5" in said[0], result.stderr
    notes = json.loads((tmp_path / "o" / "index.json").read_text())["input_notes"]
    assert list(notes.values()) == [said[0].split(": ", 1)[1]]


def test_integer_array_for_a_float_input_needs_cast(image_model, tmp_path):
    arr = tmp_path / "u8.npy"
    np.save(arr, np.full((1, 6, 8, 3), 200, np.uint8))
    result = run(image_model, "-o", tmp_path / "o", "-i", arr)
    assert result.exit_code == 2 and "--cast" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    ok(image_model, "-o", tmp_path / "o", "-i", arr, "--cast")
    np.testing.assert_array_equal(fed(tmp_path / "o"), np.full((1, 6, 8, 3), 200.0, np.float32))


def test_compare_takes_the_same_input_options(image_model, png, tmp_path):
    """compare shares dump's input options (one decorator): an image with --mean/--std/--bgr."""
    path, _ = png
    result = CliRunner().invoke(
        main, ["compare", image_model, image_model, "-i", path, "--mean", "1", "--std", "2", "--bgr"]
    )
    assert result.exit_code == 0, result.output
