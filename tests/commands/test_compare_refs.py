"""`tfl-rebuild compare model.tflite refs.npz|DIR [--map ...]` end to end, on a PyTorch ViT exported
through ONNX and onnx2tf, with its PyTorch activations from forward hooks (fixtures/torch_refs/make_torch_refs.py:
the input, NCHW, then every leaf module's output in call order)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import require_fixture

from tfl_rebuild.cli import main

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}
REFS = Path(__file__).resolve().parents[2] / "fixtures" / "torch_refs" / "torch_vit_refs.npz"
MODEL = "torch_refs/torch_vit_float32"
# onnx2tf keeps no tensor for GELU: its 0.5 went into the next layer's weights (TFLite holds 2 x GELU).
GELU_X2 = "model_32/tf.math.multiply_28/Mul"


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def refs() -> list[tuple[str, np.ndarray]]:
    with np.load(REFS) as z:
        return [(k, z[k]) for k in z.files]


def run_json(refs_path, *extra) -> tuple[int, dict]:
    result = cli("compare", str(require_fixture(MODEL)), str(refs_path), "--json", "-", *extra)
    return result.exit_code, json.loads(result.stdout)


def layers(doc: dict) -> dict[str, dict]:
    """The paired PyTorch layers (the input aside): ref key -> row."""
    return {r["b_tensor"]: r for r in doc["rows"] if r["b_tensor"] != "input"}


def test_pytorch_layers_pair_automatically_and_match():
    code, doc = run_json(REFS)
    total = len(refs()) - 1  # 17 leaf modules
    paired = layers(doc)
    assert all(r["how"] == "order" for r in paired.values())  # no map, no shared names: automatic
    assert len(paired) / total >= 0.8, (len(paired), total, doc["pairing"])
    assert sorted(doc["pairing"]["unpaired_b"]) == ["blocks.0.mlp.1", "blocks.1.mlp.1"]  # GELU, see above
    # the values match: the same float network on another runtime (float32 rounding only)
    assert code == 0 and doc["verdict"].startswith("no divergence")
    assert min(r["sqnr_db"] for r in doc["rows"]) > 100.0
    rows = {r["b_tensor"]: r for r in doc["rows"]}
    assert (rows["input"]["op"], rows["input"]["layout"]) == ("INPUT", "NCHW->NHWC")
    assert (paired["patch"]["op"], paired["patch"]["layout"]) == ("CONV_2D", "NCHW->NHWC")
    assert paired["blocks.0.attn.qkv"]["op"] == paired["head"]["op"] == "FULLY_CONNECTED"
    assert doc["inputs"] == "refs: 'serving_default_input:0' from refs['input'] (NCHW->NHWC)"


def test_table_says_how_and_layout():
    result = cli("compare", str(require_fixture(MODEL)), str(REFS))
    lines = result.stdout.splitlines()
    assert result.exit_code == 0, result.output
    assert "paired 88.9% of the references (1 name, 15 order), 2 transposed" in lines[0]
    assert lines[1].split()[:8] == ["op", "type", "tensor", "shape", "pair", "reference", "layout", "SQNR"]
    patch = next(ln for ln in lines if " patch " in ln)
    assert patch.split()[:7] == [
        "0",
        "CONV_2D",
        "model_32/tf.math.add/Add",
        "1x4x4x64",
        "order",
        "patch",
        "NCHW->NHWC",
    ]
    assert "unpaired reference: blocks.0.mlp.1" in lines


def test_shuffled_refs_do_not_pair(tmp_path):
    rng = np.random.default_rng(0)
    shuffled = {k: v if k == "input" else rng.permutation(v.reshape(-1)).reshape(v.shape) for k, v in refs()}
    np.savez(tmp_path / "shuffled.npz", **shuffled)
    code, doc = run_json(tmp_path / "shuffled.npz")
    assert layers(doc) == {}
    reordered = dict(reversed(refs()))  # the right values in the wrong order: the alignment breaks
    np.savez(tmp_path / "reversed.npz", **reordered)
    code, doc = run_json(tmp_path / "reversed.npz")
    assert len(layers(doc)) <= 2


def test_folder_of_npy_and_map(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    for k, (key, value) in enumerate(refs()):
        np.save(folder / ("input.npy" if key == "input" else f"{k:02d}_{key}.npy"), value)
    code, doc = run_json(folder)
    assert code == 0 and len(layers(doc)) == 15
    table = tmp_path / "map.json"
    for wrong, says in (
        ({"14_blocks.1.mlp.1": "no/such/tensor"}, "no tensor"),
        ({"gelu": GELU_X2}, "no reference"),
    ):
        table.write_text(json.dumps(wrong))
        bad = cli("compare", str(require_fixture(MODEL)), str(folder), "--map", str(table))
        assert bad.exit_code == 2 and says in bad.output and len(bad.output.strip().splitlines()) == 1
    table.write_text(json.dumps({"07_blocks.0.mlp.1": GELU_X2}))
    code, doc = run_json(folder, "--map", str(table))
    gelu = layers(doc)["07_blocks.0.mlp.1"]
    assert gelu["how"] == "map" and gelu["op"] == "MUL"
    assert abs(gelu["sqnr_db"]) < 1.0  # 2 x GELU against GELU: the signal's own size in error
    assert code == 1 and doc["verdict"].startswith(f"first divergence at op {gelu['op_index']} MUL ")
    code, doc = run_json(folder, "--map", "s/^17_head$/StatefulPartitionedCall:0/")
    assert layers(doc)["17_head"]["how"] == "map"


def test_refs_errors(tmp_path):
    model = str(require_fixture(MODEL))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    np.save(tmp_path / "array.npy", np.ones(3))
    (tmp_path / "array.npy").rename(tmp_path / "npy.npz")  # an .npy under an .npz name
    for args in (
        [model, str(tmp_path / "npy.npz")],
        [model, str(tmp_path / "bad.npz")],
        [model, str(tmp_path / "none.npz")],
        [model, str(REFS), "--map", "not a map"],
        [model, str(tmp_path)],  # a folder without .npy files
    ):
        result = cli("compare", *args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_hostile_keys_are_escaped(tmp_path):
    evil = "\x1b]0;owned\x07\x1b[31mpatch"
    arrays = {(evil if k == "patch" else k): v for k, v in refs()}
    arrays["\x1b[2Jnothing"] = np.ones(3, np.float32)
    np.savez(tmp_path / "evil.npz", **arrays)
    result = cli("compare", str(require_fixture(MODEL)), str(tmp_path / "evil.npz"))
    assert result.exit_code == 0 and "\x1b" not in result.output and "\x07" not in result.output
    assert "unpaired reference: \\x1b[2Jnothing" in result.output


def test_given_input_overrides_the_refs(tmp_path):
    """--input feeds the model instead of refs['input']: other values, so the layers do not pair;
    only the 10 logits, which a new input moves little (their bias dominates), still correlate,
    and their SQNR flags them."""
    x = np.random.default_rng(5).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, doc = run_json(REFS, "--input", str(tmp_path / "x.npy"))
    assert doc["inputs"] == "given" and set(layers(doc)) <= {"head"}
    assert code == 1 and all(r["sqnr_db"] < 60 for r in layers(doc).values())


def test_a_drifting_layer_is_the_first_divergence(tmp_path):
    """A reference off by noise at ~30 dB (as a conversion that drifts there) still pairs, and
    the verdict names it: its FULLY_CONNECTED and its key."""
    rng = np.random.default_rng(7)
    arrays = dict(refs())
    qkv = arrays["blocks.1.attn.qkv"]
    arrays["blocks.1.attn.qkv"] = qkv + rng.normal(size=qkv.shape).astype(np.float32) * 0.03 * qkv.std()
    np.savez(tmp_path / "drift.npz", **arrays)
    code, doc = run_json(tmp_path / "drift.npz")
    row = layers(doc)["blocks.1.attn.qkv"]
    assert code == 1 and row["how"] == "order" and 25 < row["sqnr_db"] < 35
    assert doc["verdict"].startswith(f"first divergence at op {row['op_index']} FULLY_CONNECTED ")
    assert doc["verdict"].endswith(f"= ref 'blocks.1.attn.qkv' (SQNR {row['sqnr_db']:.1f} dB)")
    assert len(layers(doc)) == 15  # the others pair as before
