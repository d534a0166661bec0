"""`tfl-rebuild compare model.tflite outdir/model.py`: the per-tensor table and verdict, --json,
--plot, --model-explorer, --local, and a corrupted layer that compare must name as the first
divergence (and, with --local, as the only wrong layer)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import fixture_params, require_fixture
from keras_weights import scale_weight

from tfl_rebuild.cli import main
from tfl_rebuild.commands.pipeline import write_generated

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


def compare_json(model: Path, py: Path, *args: str) -> tuple[int, dict]:
    result = cli("compare", str(model), str(py), "--json", *args)
    return result.exit_code, json.loads(result.stdout)


# --- a faithful rebuild -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "ops_zoo", "mobilenet_v2_float", "sparse_fc"])
def test_table_and_verdict(name, tmp_path):
    model, py = rebuilt(name, tmp_path)
    n = len(mapping(py))
    result = cli("compare", str(model), str(py))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "op",
        "type",
        "tensor",
        "shape",
        "max",
        "abs",
        "max",
        "rel",
        "LSB",
        "noise",
        "cosine",
    ]
    rows = [ln for ln in lines[1:] if re.match(r"\d+\s", ln)]
    assert len(rows) == n
    assert lines[-1] == f"all {n} tensors within tolerance (rel <= 0.0001, or 2 x runtime noise)"


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


def test_unknown_plot_format_is_refused_before_the_run(tmp_path):
    model, py = rebuilt("mnist", tmp_path)
    result = cli("compare", str(model), str(py), "--plot", str(tmp_path / "x.bmpx"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --plot") and "unknown image format 'bmpx'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_plot_is_in_units_of_each_bar(tmp_path):
    model, py = rebuilt("mobilenet_v2_int8", tmp_path)
    _, doc = compare_json(model, py)
    assert all(r["of_bar"] >= 0 for r in doc["rows"])
    assert all((r["of_bar"] <= 1.0) == r["ok"] for r in doc["rows"] if r["of_bar"] not in (0.0,))
    out = tmp_path / "int8.png"
    assert cli("compare", str(model), str(py), "--plot", str(out)).exit_code == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE


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
    assert (
        result.stderr.strip() == f"error: {tmp_path / 'mnist_tensors.json'}: missing; it is written by "
        "`tfl-rebuild keras` beside the module"
    )


def test_module_of_another_model_is_refused_in_one_line(tmp_path):
    _, py = rebuilt("mnist", tmp_path)
    result = cli("compare", str(require_fixture("add_one")), str(py))
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and "mnist.py was generated from" in lines[0]
        and "not from add_one.tflite" in lines[0]
    )


def test_json_file_holds_the_rows(tmp_path):
    model, py = rebuilt("mnist", tmp_path)
    out = tmp_path / "rows.json"
    result = cli("compare", str(model), str(py), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["rows"]


# --- compare agrees with `keras` verification ----------------------------------------------------


@pytest.mark.parametrize("local", [False, True], ids=["accumulated", "local"])
@pytest.mark.parametrize("path", fixture_params())
def test_every_verified_fixture_compares_clean(path, local, tmp_path):
    """Every fixture passes `keras` verification (test_keras_cli); compare, judged by the same
    tolerance definition, agrees in both modes."""
    model, py = rebuilt(path.stem, tmp_path)
    code, doc = compare_json(model, py, *(["--local"] if local else []))
    bad = [(r["op_index"], r["op"], r["tensor"], r["max_rel"], r["lsb"]) for r in doc["rows"] if not r["ok"]]
    assert bad == [] and code == 0, doc["verdict"]
    assert doc["mode"] == ("local" if local else "accumulated")
    assert len(doc["rows"]) == len({m["tensor"] for m in mapping(py)})


def test_quantized_rows_carry_lsb(tmp_path):
    model, py = rebuilt("mobilenet_v2_int8", tmp_path)
    _, doc = compare_json(model, py, "--local")
    assert doc["kind"] == "full-int8"
    assert all(r["lsb"] is not None and r["lsb"] <= 1.001 for r in doc["rows"])  # int8 ops, each within 1 LSB
    _, acc = compare_json(model, py)
    assert all(r["lsb"] is not None for r in acc["rows"])
    assert max(r["noise"] for r in acc["rows"]) > 2  # TFLite's own kernel sets disagree by several LSB


# --- a corrupted layer is found -------------------------------------------------------------------


def corrupt_middle_kernel(py: Path) -> dict:
    """Scale the kernel of a layer in the middle of the network by 1.1; returns the mapping row of
    the TFLite tensor that layer computes (in int8 rebuilds, through the FakeQuant after it)."""
    from tfl_rebuild.rebuild.loader import load_module

    def middle_kernel(keys: list[str]) -> str:  # in the model's layer order
        kernels = [k for k in keys if k.rsplit("/", 1)[-1] in ("kernel", "depthwise_kernel")]
        return kernels[len(kernels) // 2]

    layer = scale_weight(py, middle_kernel).rsplit("/", 1)[0]

    side = mapping(py)
    target = next((m for m in side if m["layer"] == layer), None)
    if target is None:  # the layer feeds the one named after the tensor (a FakeQuant)
        built = load_module(py).build_model()
        out = built.get_layer(layer).output
        readers = [m for m in side if any(x is out for x in _as_list(built.get_layer(m["layer"]).input))]
        assert len(readers) == 1, (layer, readers)
        target = readers[0]
    return target


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


@pytest.mark.parametrize("name", ["ops_zoo", "mobilenet_v2_float", "mnist"])
def test_first_divergence_names_the_corrupted_layer(name, tmp_path):
    model, py = rebuilt(name, tmp_path)
    target = corrupt_middle_kernel(py)

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


@pytest.mark.parametrize(
    "name", ["ops_zoo", "mobilenet_v2_float", "mobilenet_v2_int8", "mobilenet_v2_dynamic"]
)
def test_local_mode_flags_only_the_corrupted_layer(name, tmp_path):
    """Fed TFLite's own inputs, every other layer is still right: only the corrupted one fails,
    while the accumulated table also flags layers after it (or, int8, may hide it in noise)."""
    model, py = rebuilt(name, tmp_path)
    target = corrupt_middle_kernel(py)
    code, doc = compare_json(model, py, "--local")
    assert code == 1
    bad = [(r["op_index"], r["tensor"]) for r in doc["rows"] if not r["ok"]]
    assert bad == [(target["op_index"], target["name"])], doc["verdict"]
    unit = " LSB)" if doc["kind"] == "full-int8" else ")"
    assert doc["verdict"].startswith(
        f"first divergence at op {target['op_index']} {target['op']} {target['name']!r}"
    )
    assert doc["verdict"].endswith(unit)


def test_local_table(tmp_path):
    model, py = rebuilt("mobilenet_v2_int8", tmp_path)
    result = cli("compare", str(model), str(py), "--local")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["op", "type", "tensor", "shape", "max", "abs", "max", "rel", "LSB", "cosine"]
    n = len(mapping(py))
    assert squash(lines[-1]) == squash(
        f"all {n} tensors within tolerance (layer-local, <= 1 LSB of each quantized "
        "tensor, float ones rel <= 0.0001)"
    )


def test_piped_table_holds_every_tensor_name_whole(tmp_path):
    """CliRunner's stdout is not a terminal: plain rows, names whole (rich cut them at 80 columns)."""
    model, py = rebuilt("mnist", tmp_path)
    result = cli("compare", str(model), str(py))
    assert result.exit_code == 0, result.output
    for name in (m["name"] for m in mapping(py) if "name" in m):
        assert name in result.stdout
    assert (
        "sequential_1/dense_1/MatMul;sequential_1/dense_1/Relu;sequential_1/dense_1/BiasAdd" in result.stdout
    )
    assert "…" not in result.stdout
