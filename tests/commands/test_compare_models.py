"""`tfl-rebuild compare A.tflite B.tflite`: the table (plain when piped, rich on a terminal), the
verdict line, --json FILE|-, --plot, --sqnr, --local, and the exit codes."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import require_fixture

from tfl_rebuild.cli import main
from tfl_rebuild.tflite.reader import read_model

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
USER = "user_models/"


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def scaled_conv_copy(path: Path, op_index: int, factor: float, out: Path) -> Path:
    """A copy of a float model with conv `op_index`'s weights times `factor` (bytes patched in place)."""
    weights = read_model(path).main.tensors[read_model(path).main.operators[op_index].inputs[1]]
    blob = bytearray(path.read_bytes())
    raw = weights.data.tobytes()
    assert blob.count(raw) == 1
    start = blob.find(raw)
    blob[start : start + len(raw)] = (weights.data * np.float32(factor)).astype(np.float32).tobytes()
    out.write_bytes(bytes(blob))
    return out


def test_float_vs_int8_table_and_verdict():
    a, b = require_fixture("mobilenet_v2_float"), require_fixture("mobilenet_v2_int8")
    result = cli("compare", str(a), str(b))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "paired 100.0% of A's tensors (65 exact)" in lines[0]
    assert lines[1].split()[:6] == ["op", "type", "tensor", "shape", "pair", "SQNR"]
    rows = [ln for ln in lines[2:] if re.match(r"^[ >*] (in|\d+) ", ln)]
    assert len(rows) == 65  # the input and 64 op outputs
    assert lines[-1].startswith("no divergence: every pair's SQNR >= 20 dB (lowest ")


def test_scaled_conv_named_as_first_divergence(tmp_path):
    a = require_fixture("mobilenet_v2_float")
    b = scaled_conv_copy(a, 17, 1.05, tmp_path / "scaled.tflite")
    result = cli("compare", str(a), str(b))
    assert result.exit_code == 1, result.output
    verdict = result.stdout.splitlines()[-1]
    assert re.fullmatch(
        r"first divergence at op 17 CONV_2D 'mobilenetv2_0\.35_96_1/block_5_expand_relu_1/Relu6' "
        r"\(SQNR \d+\.\d dB\)",
        verdict,
    ), verdict
    marked = [ln for ln in result.stdout.splitlines() if ln.startswith(">")]
    assert len(marked) == 1 and marked[0].split()[1] == "17"
    local = cli("compare", str(a), str(b), "--local")
    assert local.exit_code == 1
    assert local.stdout.splitlines()[-1].startswith("largest jump at op 17 CONV_2D ")


def test_identical_models_no_divergence():
    a = require_fixture(USER + "unet_float")
    code, doc = json_of(cli("compare", str(a), str(a), "--json"))
    assert code == 0
    assert all(r["sqnr_db"] == float("inf") and r["max_abs"] == 0.0 for r in doc["rows"])
    assert doc["verdict"].startswith("no divergence") and doc["first_divergence"] is None


def json_of(result) -> tuple[int, dict]:
    return result.exit_code, json.loads(result.stdout)


def test_json_to_file_plot_and_sqnr(tmp_path):
    a, b = require_fixture("mobilenet_v2_float"), require_fixture("mobilenet_v2_int8")
    out, png = tmp_path / "cmp.json", tmp_path / "errors.png"
    result = cli("compare", str(a), str(b), "--json", str(out), "--plot", str(png), "--sqnr", "30")
    assert result.exit_code == 1, result.output  # int8 layers fall under 30 dB
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["sqnr_threshold_db"] == 30.0
    first = doc["rows"][doc["first_divergence"]]
    assert first["sqnr_db"] < 30.0
    assert all(r["sqnr_db"] >= 30.0 for r in doc["rows"][: doc["first_divergence"]])
    assert result.stdout.splitlines()[-1] == doc["verdict"]  # the table is still printed
    assert png.read_bytes()[:8] == PNG_SIGNATURE


def test_json_stdout_local(tmp_path):
    a, b = require_fixture(USER + "se_net_float"), require_fixture(USER + "se_net_int8")
    code, doc = json_of(cli("compare", str(a), str(b), "--local", "--json", "-"))
    assert doc["mode"] == "local" and doc["pairing"]["coverage"] == 1.0
    assert code == (1 if doc["jumps"] else 0)
    rows = doc["rows"]
    assert rows[0]["op"] == "INPUT" and rows[0]["drop_db"] is None
    assert all(r["drop_db"] is not None for r in rows[1:])


def test_rich_table_on_a_terminal():
    from rich.console import Console

    from tfl_rebuild.commands.compare_models import print_report
    from tfl_rebuild.verify.cross import compare_models

    a, b = require_fixture(USER + "se_net_float"), require_fixture(USER + "se_net_fp16")
    result = compare_models(str(a), str(b))
    buf = io.StringIO()
    print_report(result, Console(file=buf, force_terminal=True, width=250, highlight=False))
    text = buf.getvalue()
    assert "\x1b[" in text  # styled
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert "SQNR dB" in plain and "no divergence" in plain


@pytest.mark.parametrize(
    "args,message",
    [
        (("--sqnr", "nan"), "must be a finite number"),
        (("--map", "s/a/b/"), "--map is for `compare MODEL REFS.npz|DIR`"),
    ],
)
def test_refusals(args, message, tmp_path):
    a = require_fixture(USER + "se_net_float")
    result = cli("compare", str(a), str(a), *args)
    assert result.exit_code == 2 and message in result.output


def test_model_explorer_overlay(tmp_path):
    """Node data for A's graph: each paired tensor's SQNR (dB, clipped to 0..100), low = red; the
    scaled conv stands out from the exact layers before it."""
    a = require_fixture("mobilenet_v2_float")
    b = scaled_conv_copy(a, 17, 1.05, tmp_path / "scaled.tflite")
    out = tmp_path / "nodes.json"
    code, doc = json_of(cli("compare", str(a), str(b), "--json", "--model-explorer", str(out)))
    nodes = json.loads(out.read_text())
    assert code == 1 and nodes["gradient"][0]["bgColor"] == "#c62828"
    rows = {r["tensor"]: r for r in doc["rows"]}
    assert set(nodes["results"]) == set(rows)
    names = read_model(a).main.tensors
    conv17 = names[read_model(a).main.operators[17].outputs[0]].name
    assert nodes["results"][conv17]["value"] == pytest.approx(rows[conv17]["sqnr_db"])
    assert rows[conv17]["sqnr_db"] < 40
    before = [r["tensor"] for r in doc["rows"] if r["op_index"] < 17]
    assert before and all(nodes["results"][t]["value"] == 100.0 for t in before)  # inf: exact


def test_given_input(tmp_path):
    a, b = require_fixture(USER + "se_net_float"), require_fixture(USER + "se_net_int8")
    x = np.random.default_rng(3).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, doc = json_of(cli("compare", str(a), str(b), "--input", str(tmp_path / "x.npy"), "--json"))
    assert doc["inputs"] == "given" and code in (0, 1)
    assert doc["rows"][0]["lsb"] <= 0.5 + 1e-3


def test_unpaired_listed_before_the_verdict():
    """fp16 LSTM's WHILE has an extra output the float one lacks: listed, the verdict stays last."""
    a, b = require_fixture("lstm_float"), require_fixture("lstm_fp16")
    result = cli("compare", str(a), str(b))
    lines = result.stdout.splitlines()
    assert any(ln.startswith("unpaired in B: ") for ln in lines)
    assert "unpaired: 0 in A, 1 in B" in lines[0]
    assert lines[-1].startswith("no divergence")
