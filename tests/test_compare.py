"""`tfl-rebuild compare model.tflite outdir/model.py`: the per-tensor table and verdict, --json,
--plot, --model-explorer, and a corrupted layer that compare must name as the first divergence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fixture_params, require_fixture

from tfl_rebuild.cli import main
from tfl_rebuild.keras_job import write_generated

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cli(*args: str):
    result = CliRunner().invoke(main, list(args), env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def rebuilt(name: str, outdir: Path) -> tuple[Path, Path]:
    """(model, generated module) for a fixture, the module written by the `keras` code path."""
    model = require_fixture(name)
    _, py, _ = write_generated(str(model), str(outdir))
    return model, py


def mapping(py: Path) -> list[dict]:
    return json.loads(py.with_name(f"{py.stem}_tensors.json").read_text(encoding="utf-8"))["tensors"]


def squash(text: str) -> str:
    """Without whitespace: rich may wrap a long verdict anywhere, even inside a tensor name."""
    return re.sub(r"\s+", "", text)


def compare_json(model: Path, py: Path) -> tuple[int, dict]:
    result = cli("compare", str(model), str(py), "--json")
    return result.exit_code, json.loads(result.stdout)


# --- a faithful rebuild -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "ops_zoo", "mobilenet_v2_float", "sparse_fc"])
def test_table_and_verdict(name, tmp_path):
    model, py = rebuilt(name, tmp_path)
    n = len(mapping(py))
    result = cli("compare", str(model), str(py))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["op", "type", "tensor", "shape", "max", "abs", "max", "rel", "cosine"]
    rows = [ln for ln in lines[1:] if re.match(r"\d+\s", ln)]
    assert len(rows) == n
    assert lines[-1] == f"all {n} tensors within tolerance (rel <= 0.0001)"


def test_json_rows_follow_op_order(tmp_path):
    model, py = rebuilt("ops_zoo", tmp_path)
    code, doc = compare_json(model, py)
    assert code == 0
    side = mapping(py)
    assert doc["model"] == "ops_zoo.tflite" and doc["kind"] == "float"
    assert doc["verdict"] == f"all {len(side)} tensors within tolerance ({doc['tolerance']})"
    got = [(r["op_index"], r["op"], r["tensor"]) for r in doc["rows"]]
    assert got == sorted(got, key=lambda r: r[0])  # op order
    assert got == sorted(((m["op_index"], m["op"], m["name"]) for m in side), key=lambda r: r[0])
    assert all(r["ok"] and r["max_rel"] <= 1e-4 and r["cosine"] > 0.9999 for r in doc["rows"])
    assert {tuple(r["shape"]) for r in doc["rows"]} >= {(1, 4), (1, 32)}  # the two outputs


def test_plot_writes_a_png(tmp_path):
    model, py = rebuilt("mnist", tmp_path / "out")
    png = tmp_path / "plots" / "errors.png"
    result = cli("compare", str(model), str(py), "--plot", str(png))
    assert result.exit_code == 0, result.output
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
    assert [p.name for p in png.parent.iterdir()] == ["errors.png"]  # no temporary left beside it


def test_model_explorer_node_data(tmp_path):
    model, py = rebuilt("ops_zoo", tmp_path / "out")
    path = tmp_path / "explorer.json"
    result = cli("compare", str(model), str(py), "--model-explorer", str(path))
    assert result.exit_code == 0, result.output
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert sorted(doc) == ["gradient", "results"]
    _, table = compare_json(model, py)
    assert doc["results"] == {r["tensor"]: {"value": r["max_rel"]} for r in table["rows"]}
    stops = [g["stop"] for g in doc["gradient"]]
    assert stops == sorted(stops) and stops[0] == 0 and stops[-1] == 1
    assert all(re.fullmatch(r"#[0-9a-f]{6}", g["bgColor"]) for g in doc["gradient"])


def test_missing_sidecar_is_one_line_exit_2(tmp_path):
    model, py = rebuilt("mnist", tmp_path)
    py.with_name("mnist_tensors.json").unlink()
    result = cli("compare", str(model), str(py))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path / 'mnist_tensors.json'}: missing; it is written by " \
                                    "`tfl-rebuild keras` beside the module"


# --- compare agrees with `keras` verification ----------------------------------------------------

# compare judges every tensor by verify's float/int8 bars but without verify's allowances.
STRICTER_THAN_VERIFY = {
    "mobilenet_v2_int8": pytest.mark.xfail(
        strict=True,
        reason="compare judges full-int8 tensors by a flat 2 LSB (no runtime-noise allowance, unlike verify): the "
               "int8 MobileNetV2 rebuild that `keras` verifies is 3 LSB off at op 3 (CONV_2D block_1_expand)"),
    "mobilenet_v2_dynamic": pytest.mark.xfail(
        strict=True,
        reason="compare judges dynamic-range models by the float bar rel 1e-4, not verify's 5e-2: TFLite's hybrid "
               "kernels quantize activations on the fly, so op 13 (CONV_2D block_4_expand) is rel 7e-3 off"),
}


@pytest.mark.parametrize(
    "path", [pytest.param(p.values[0], id=p.id, marks=STRICTER_THAN_VERIFY.get(p.id, ())) for p in fixture_params()])
def test_every_verified_fixture_compares_clean(path, tmp_path):
    model, py = rebuilt(path.stem, tmp_path)
    code, doc = compare_json(model, py)
    bad = [(r["op_index"], r["op"], r["tensor"], r["max_rel"], r["lsb"]) for r in doc["rows"] if not r["ok"]]
    assert bad == [] and code == 0, doc["verdict"]


# --- a corrupted layer is found -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ops_zoo", "mobilenet_v2_float", "mnist"])
def test_first_divergence_names_the_corrupted_layer(name, tmp_path):
    model, py = rebuilt(name, tmp_path)
    npz = py.with_name(f"{py.stem}_weights.npz")
    with np.load(npz, allow_pickle=False) as f:
        weights = {k: f[k] for k in f.files}
    side = sorted(mapping(py), key=lambda m: m["op_index"])
    weighted = [m for m in side if f"{m['layer']}/kernel" in weights or f"{m['layer']}/depthwise_kernel" in weights]
    target = weighted[len(weighted) // 2]  # a layer in the middle of the network
    key = next(k for k in (f"{target['layer']}/kernel", f"{target['layer']}/depthwise_kernel") if k in weights)
    weights[key] = weights[key] * np.float32(1.1)
    np.savez(npz, **weights)

    code, doc = compare_json(model, py)
    assert code == 1
    expected = f"first divergence at op {target['op_index']} {target['op']} {target['name']!r}"
    assert doc["verdict"].startswith(expected + " (rel "), doc["verdict"]
    by_op = [(r["op_index"], r["ok"]) for r in doc["rows"]]
    assert all(ok for k, ok in by_op if k < target["op_index"])
    assert (target["op_index"], False) in by_op

    table = cli("compare", str(model), str(py))
    assert table.exit_code == 1
    assert squash(expected) in squash(table.stdout)
