"""inspect.py and the `inspect` / `weights` commands: what they print and write, and how they fail."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CORPUS_DIR, ROOT, interpreter, model_params, read_cached, require_fixture, require_model
from flatbuf import BAD_MODELS, Op, T, build_model, model_metadata, simple_model

from tfl_rebuild.cli import main
from tfl_rebuild.tflite.analysis import quantization_kind, summarize, to_json
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.tflite.weights import dequantize, unique_keys

MODELS = model_params()
WIDE = {"COLUMNS": "2000"}  # rich wraps tables to the terminal width; keep long names on one line


def run(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env or WIDE, catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# Library: summarize / to_json / quantization_kind


@pytest.mark.parametrize(
    "name, kind",
    [
        ("mnist", "float"),
        ("add_one", "float"),
        ("mobilenet_v2_float", "float"),
        ("mobilenet_v2_dynamic", "dynamic-range"),
        ("mobilenet_v2_int8", "full-int8"),
        ("mobilenet_v2_fp16", "fp16"),
        ("ops_zoo", "float"),
        ("sparse_fc", "float"),
    ],
)
def test_quantization_kind_of_fixtures(name, kind):
    assert quantization_kind(read_model(require_fixture(name))) == kind


@pytest.mark.parametrize(
    "path, kind",
    [
        pytest.param(CORPUS_DIR / f"{n}.tflite", kind, id=n, marks=pytest.mark.corpus)
        for n, kind in [
            ("face_detection_short_range", "fp16"),
            ("pose_detection", "fp16"),
            ("selfie_segmentation", "fp16"),
            ("hand_recrop", "float"),
            ("iris_landmark", "float"),
        ]
    ],
)
def test_quantization_kind_of_corpus(path, kind):
    assert quantization_kind(read_model(require_model(path))) == kind


@pytest.mark.parametrize("path", MODELS)
def test_summary_describes_the_model(path):
    model = read_cached(require_model(path))
    doc = json.loads(to_json(model))
    assert doc == json.loads(json.dumps(summarize(model)))
    raw = path.read_bytes()
    assert (doc["file"], doc["size"], doc["sha256"]) == (str(path), len(raw), hashlib.sha256(raw).hexdigest())
    assert doc["schema_version"] == 3 and doc["quantization"] == quantization_kind(model)
    assert doc["min_runtime_version"] == model.min_runtime_version
    assert doc["metadata"] == {k: len(v) for k, v in model.metadata.items()}
    assert (doc["model_info"] is None) == (model.info is None)
    assert len(doc["subgraphs"]) == len(model.subgraphs)  # control flow calls the others (WHILE, IF)
    sg = doc["subgraphs"][0]
    ops = model.main.operators
    assert [o["op"] for o in sg["operators"]] == [op.key for op in ops]
    assert sum(sg["op_histogram"].values()) == len(ops)
    assert [t["name"] for t in sg["tensors"]] == [t.name for t in model.main.tensors]
    assert sum(doc["params_by_dtype"].values()) == sum(
        int(np.prod(t.shape)) for s in model.subgraphs for t in s.tensors if t.data is not None
    )
    details = interpreter(path, allocate=False).get_input_details()
    assert [i["shape"] for i in sg["inputs"]] == [list(d["shape"]) for d in details]
    assert [i["dtype"] for i in sg["inputs"]] == [np.dtype(d["dtype"]).name for d in details]


def test_summary_optional_inputs_and_model_info():
    meta = model_metadata(name="Crafted", description="d", inputs=[("x", "in")], outputs=[("y", "out")])
    doc = json.loads(to_json(read_model(simple_model(metadata={"TFLITE_METADATA": meta}))))
    assert doc["model_info"]["name"] == "Crafted"
    assert doc["model_info"]["inputs"] == [{"name": "x", "description": "in"}]
    (op,) = doc["subgraphs"][0]["operators"]
    assert [i["name"] for i in op["inputs"]] == ["x", "w"] and op["options"] == {
        "fused_activation_function": "NONE"
    }
    blob = build_model(
        [T("x", [1, 3]), T("w", [2, 3], data=np.ones((2, 3), np.float32)), T("y", [1, 2])],
        [Op("FULLY_CONNECTED", [0, 1, -1], [2])],
        inputs=[0],
        outputs=[2],
    )
    (fc,) = json.loads(to_json(read_model(blob)))["subgraphs"][0]["operators"]
    assert fc["inputs"][2] is None  # the omitted optional bias


# ---------------------------------------------------------------------------------------------
# `tfl-rebuild inspect`


@pytest.mark.parametrize("path", MODELS)
def test_inspect_text(path):
    model = read_cached(require_model(path))
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(model.name)
    assert f"quantization: {quantization_kind(model)}" in out
    for key in {op.key for op in model.main.operators}:
        assert key in out
    for i in model.main.inputs:
        assert model.main.tensors[i].name in out


@pytest.mark.parametrize("path", MODELS[:4])
def test_inspect_tensors_lists_every_tensor(path):
    model = read_cached(require_model(path))
    plain = run("inspect", path).stdout
    out = run("inspect", "--tensors", path).stdout
    assert len(out.splitlines()) >= len(plain.splitlines()) + len(model.main.tensors)
    for t in model.main.tensors:
        assert t.name in out


@pytest.mark.parametrize("path", MODELS)
def test_inspect_json(path):
    model = read_cached(require_model(path))
    result = run("inspect", "--json", path)
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert doc["quantization"] == quantization_kind(model)
    sg = doc["subgraphs"][0]
    assert len(sg["operators"]) == len(model.main.operators) and len(sg["tensors"]) == len(model.main.tensors)
    assert [o["name"] for o in sg["outputs"]] == [model.main.tensors[i].name for i in model.main.outputs]


@pytest.mark.parametrize("ext", ["graphml", "json", "dot"])
def test_inspect_graph(ext, tmp_path):
    path = require_fixture("ops_zoo")
    n_ops = len(read_model(path).main.operators)
    out = tmp_path / f"ops_zoo.{ext}"
    result = run("inspect", "--graph", out, path)
    assert result.exit_code == 0, result.output
    if ext == "graphml":
        g = nx.read_graphml(out)
    elif ext == "json":
        g = nx.node_link_graph(json.loads(out.read_text()), edges="edges")
    else:
        text = out.read_text()
        assert text.startswith("digraph") and text.count('[label="') >= n_ops
        return
    assert sum(1 for _, k in g.nodes(data="kind") if k == "op") == n_ops


def test_inspect_graph_bad_extension_is_a_clean_error(tmp_path):
    result = run("inspect", "--graph", tmp_path / "g.svg", require_fixture("add_one"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "graph format must be" in result.stderr


# ---------------------------------------------------------------------------------------------
# `tfl-rebuild weights`


def _load(path):
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


@pytest.mark.parametrize(
    "name", ["mnist", "mobilenet_v2_float", "mobilenet_v2_int8", "mobilenet_v2_fp16", "ops_zoo", "sparse_fc"]
)
def test_weights_raw(name, tmp_path):
    path = require_fixture(name)
    model = read_model(path)
    out = tmp_path / "w.npz"
    result = run("weights", path, "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote ")
    arrays = _load(out)
    consts = [t for t in model.main.tensors if t.data is not None]
    assert list(arrays) == unique_keys([t.name for t in consts])
    for key, t in zip(arrays, consts):
        assert arrays[key].shape == t.shape  # sparse constants come out dense
        assert arrays[key].dtype == t.data.dtype


@pytest.mark.parametrize("name", ["mobilenet_v2_float", "mobilenet_v2_int8", "ops_zoo"])
def test_weights_keras_layout(name, tmp_path):
    path = require_fixture(name)
    sg = read_model(path).main
    out = tmp_path / "w.npz"
    assert run("weights", path, "-o", out, "--layout", "keras").exit_code == 0
    arrays = _load(out)
    seen = set()
    for op in sg.operators:
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED"):
            continue
        k = sg.tensors[op.inputs[1]]
        if k.data is None:
            continue
        got = arrays[k.name]
        assert got.dtype == np.float32  # kernels are dequantized for Keras
        if op.opcode == "CONV_2D":
            o, h, w, i = k.shape
            assert got.shape == (h, w, i, o)
        elif op.opcode == "DEPTHWISE_CONV_2D":
            _, h, w, im = k.shape
            i = sg.tensors[op.inputs[0]].shape[-1]
            assert got.shape == (h, w, i, im // i)
        elif op.opcode == "TRANSPOSE_CONV":
            o, h, w, i = k.shape
            assert got.shape == (h, w, o, i)
        else:
            assert got.shape == (k.shape[1], k.shape[0])
        seen.add(op.opcode)
    assert "CONV_2D" in seen


def test_weights_dequantize(tmp_path):
    path = require_fixture("mobilenet_v2_int8")
    model = read_model(path)
    out = tmp_path / "w.npz"
    assert run("weights", path, "-o", out, "--dequantize").exit_code == 0
    arrays = _load(out)
    for t in model.main.tensors:
        if t.data is not None and t.quantized:
            assert arrays[t.name].dtype == np.float32
            np.testing.assert_array_equal(arrays[t.name], dequantize(t))


def test_weights_duplicate_names_get_unique_keys(tmp_path):
    blob = simple_model(x_name="same", w_name="w", y_name="same")
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    out = tmp_path / "w.npz"
    assert run("weights", path, "-o", out).exit_code == 0
    assert list(_load(out)) == ["w"]


def test_weights_requires_output(tmp_path):
    result = run("weights", require_fixture("add_one"))
    assert result.exit_code == 2 and "--output" in result.stderr


# ---------------------------------------------------------------------------------------------
# Errors: exit code 2, one line on stderr, no traceback


@pytest.mark.parametrize("name", sorted(BAD_MODELS))
@pytest.mark.parametrize("command", ["inspect", "inspect --json", "weights"])
def test_bad_model_is_one_line_exit_2(name, command, tmp_path):
    path = tmp_path / "bad.tflite"
    path.write_bytes(BAD_MODELS[name]())
    args = command.split() + [path] + (["-o", tmp_path / "w.npz"] if command == "weights" else [])
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: bad.tflite: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("command", ["inspect", "weights"])
def test_missing_file_and_directory(command, tmp_path):
    extra = ["-o", tmp_path / "w.npz"] if command == "weights" else []
    missing = run(command, tmp_path / "nope.tflite", *extra)
    assert missing.exit_code == 2
    assert missing.stderr == f"error: {tmp_path / 'nope.tflite'}: cannot read (No such file or directory)\n"
    directory = run(command, tmp_path, *extra)  # refused by click's argument check (a usage error)
    assert directory.exit_code == 2
    assert "is a directory" in directory.stderr and "Traceback" not in directory.stderr


def test_bad_model_in_a_real_process(tmp_path):
    """The console entry point, as a user runs it: one line, exit 2, no traceback."""
    path = tmp_path / "bad.tflite"
    path.write_bytes(BAD_MODELS["opcode-index"]())
    proc = subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", "inspect", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: bad.tflite: subgraph 0 operator 0: opcode index 5 is out of range (0..0)"
    ]
    assert proc.stdout == ""


# ---------------------------------------------------------------------------------------------
# `inspect` stays light: no TensorFlow, Keras or coremltools


HEAVY = ("tensorflow", "keras", "coremltools", "ai_edge_litert", "torch", "jax")


@pytest.mark.parametrize(
    "args",
    [
        ["inspect"],
        ["inspect", "--json"],
        ["inspect", "--tensors"],
        ["inspect", "--graph", "{tmp}/g.graphml"],
        ["weights", "-o", "{tmp}/w.npz", "--layout", "keras", "--dequantize"],
    ],
    ids=["text", "json", "tensors", "graph", "weights"],
)
def test_inspect_does_not_import_heavy_modules(args, tmp_path):
    path = require_fixture("mobilenet_v2_int8")
    argv = [a.format(tmp=tmp_path) for a in args] + [str(path)]
    code = (
        "import sys, contextlib, io\n"
        "from tfl_rebuild.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r}, standalone_mode=False)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# numpy loads only when something reads an array: a float model's report never does

NUMPY_STATE = (
    "import sys, contextlib, io\n"
    "from tfl_rebuild.cli import main\n"
    "out = io.StringIO()\n"
    "with contextlib.redirect_stdout(out):\n"
    "    main({argv!r}, standalone_mode=False)\n"
    "print('loaded' if 'numpy._core' in sys.modules or 'numpy.core' in sys.modules else 'deferred')\n"
    "print(len(out.getvalue().splitlines()))\n"
)


@pytest.mark.parametrize(
    "name, args, state",
    [
        ("mnist", ["inspect"], "deferred"),
        ("mnist", ["inspect", "--json"], "deferred"),
        ("mnist", ["inspect", "--tensors"], "deferred"),
        ("mobilenet_v2_int8", ["inspect"], "loaded"),  # scales and zero points are arrays
    ],
    ids=["float-text", "float-json", "float-tensors", "int8-text"],
)
def test_inspect_loads_numpy_only_when_needed(name, args, state):
    argv = [*args, str(require_fixture(name))]
    code = NUMPY_STATE.format(argv=argv)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got, lines = proc.stdout.split()
    assert got == state and int(lines) > 10


def test_deferred_numpy_is_the_real_numpy_once_used():
    """After defer_numpy, `import numpy` is free; the first attribute (or submodule) loads it, and
    it is the one numpy module: arrays, submodules and `from numpy import ...` all work."""
    code = (
        "import sys\n"
        "from tfl_rebuild.tflite.lazy import defer_numpy\n"
        "defer_numpy()\n"
        "import numpy as np\n"
        "import flatbuffers, tflite.Model\n"
        "before = 'numpy._core' in sys.modules\n"
        "import numpy.linalg\n"
        "from numpy import float32\n"
        "a = np.arange(6, dtype=float32).reshape(2, 3)\n"
        "print(before, 'numpy._core' in sys.modules, sys.modules['numpy'] is np, type(np).__name__,\n"
        "      round(float(numpy.linalg.norm(a) ** 2), 3), np.__version__ == np.version.version)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "module", "55.0", "True"]
