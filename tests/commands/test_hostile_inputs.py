"""Hostile models, input files, output paths and weights files: one line on stderr, exit 2.

Each case crafts its files under tmp_path and runs the CLI as its own process. Before these were
refused up front they ended in a traceback (exit 1) or worse: RecursionError while Keras built a
chain of 5,000 ADDs or the emitter nested 900 WHILE calls, the OOM killer for a dim of 2**31 - 1,
MemoryError for an .npy header claiming 4 TiB, DecompressionBombError for a PNG bomb,
NotADirectoryError after a whole Core ML conversion, ValueError / KeyError loading a module's
weights file that holds object arrays or is a zip bomb.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from flatbuf import Graph, Op, T, build_model, simple_model

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200", "PYTHONPATH": str(ROOT)}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=600,
    )


# --- crafted models ----------------------------------------------------------------------------------


def relu_model(shape: list[int]) -> bytes:
    return build_model([T("x", shape), T("y", shape)], [Op("RELU", [0], [1])], inputs=[0], outputs=[1])


def add_chain(n: int, parallel: bool = False) -> bytes:
    """n ADDs one after another (or, `parallel`, all reading the input)."""
    tensors = [T("x", [4]), T("one", [], data=np.array(1.0, np.float32))]
    tensors += [T(f"t{i}", [4]) for i in range(n)]
    ops = [Op("ADD", [0 if parallel or i == 0 else i + 1, 1], [i + 2]) for i in range(n)]
    return build_model(tensors, ops, inputs=[0], outputs=[n + 1])


def nested_whiles(depth: int) -> bytes:
    """A WHILE whose body holds a WHILE whose body holds ... `depth` levels."""
    cond = Graph(
        [T("i", [], "int32"), T("x", [4]), T("n", [], "int32", np.array(1, np.int32)), T("go", [], "bool")],
        [Op("LESS", [0, 2], [3])],
        [0, 1],
        [3],
        "cond",
    )
    bodies = []
    for k in range(depth):
        tensors = [
            T("i", [], "int32"),
            T("x", [4]),
            T("one", [], "int32", np.array(1, np.int32)),
            T("i_next", [], "int32"),
            T("i_inner", [], "int32"),
            T("x_inner", [4]),
        ]
        ops = [Op("ADD", [0, 2], [3])]
        if k < depth - 1:
            inner = {"cond_subgraph_index": 1, "body_subgraph_index": 3 + k}
            ops.append(Op("WHILE", [0, 1], [4, 5], options=inner, options_type="WhileOptions"))
        bodies.append(Graph(tensors, ops, [0, 1], [3, 5 if k < depth - 1 else 1], f"body{k}"))
    tensors = [T("x", [4]), T("i0", [], "int32", np.array(0, np.int32)), T("i_out", [], "int32"), T("y", [4])]
    outer = {"cond_subgraph_index": 1, "body_subgraph_index": 2}
    ops = [Op("WHILE", [1, 0], [2, 3], options=outer, options_type="WhileOptions")]
    return build_model(tensors, ops, inputs=[0], outputs=[3], subgraphs=[cond, *bodies])


# --- crafted input files -----------------------------------------------------------------------------


def npy_claiming(nbytes: int) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (nbytes,)})
    return f.getvalue() + b"\0" * 64


def zip_bomb(path: Path, member: str, inflated: int, header: bool = True) -> None:
    """A small deflated zip whose `member` inflates to `inflated` bytes of zeros (an .npy if `header`)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open(member, "w", force_zip64=True) as m:
        if header:
            m.write(npy_claiming(inflated)[:-64])
        chunk = bytes(1 << 22)
        for _ in range(inflated // len(chunk)):
            m.write(chunk)


def png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height RGB pixels (a few bytes of data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


# --- the cases: tmp_path -> argv; the one line must contain the text ----------------------------------------


def keras_on(blob: bytes) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "m.tflite").write_bytes(blob() if callable(blob) else blob)
        return ["keras", "m.tflite", "-o", "out"]

    return make


def image_model(tmp: Path) -> None:
    (tmp / "m.tflite").write_bytes(relu_model([1, 8, 8, 3]))


def dump_with(name: str, write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        image_model(tmp)
        write(tmp / name)
        return ["dump", "m.tflite", "-o", "out", "-i", name]

    return make


def coreml_onto(make_target: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "m.tflite").write_bytes(simple_model())
        make_target(tmp)
        return ["coreml", "m.tflite", "-o", "out.mlpackage"]

    return make


def module_with_weights(command: str, spoil: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    """A generated module (keras --no-verify) whose weights file `spoil` then replaces."""

    def make(tmp: Path) -> list[str]:
        # 16 values: over what codegen writes as a literal at the call, so the weights file holds it
        (tmp / "m.tflite").write_bytes(simple_model(weights=np.linspace(-1, 1, 16, dtype=np.float32)))
        proc = run_cli("keras", "m.tflite", "-o", ".", "--no-verify", cwd=tmp)
        assert proc.returncode == 0, proc.stderr
        spoil(tmp / "m.weights.h5")
        if command == "compare":
            return ["compare", "m.tflite", "m.py"]
        return ["coreml", "m.py", "-o", "out.mlpackage"]

    return make


def _h5_datasets(path: Path) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def object_arrays(path: Path) -> None:
    """Every dataset replaced by strings, which h5py reads as Python objects."""
    import h5py

    names = _h5_datasets(path)
    with h5py.File(path, "a") as f:
        for name in names:
            del f[name]
            f[name] = np.array(["a"], dtype=h5py.string_dtype())


def weights_bomb(path: Path) -> None:
    """A dataset declaring 4 GiB, chunked and compressed, storing nothing."""
    import h5py

    (name,) = _h5_datasets(path)[:1]
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, shape=(1 << 30,), dtype="f4", chunks=(1 << 16,), compression="gzip")


def external_link(path: Path) -> None:
    """A dataset replaced by a link to another file."""
    import h5py

    (name,) = _h5_datasets(path)[:1]
    with h5py.File(path, "a") as f:
        del f[name]
        f[name] = h5py.ExternalLink("/etc/passwd", "/x")


def other_arrays(path: Path) -> None:
    """A valid weights file, but of another model."""
    import h5py

    path.unlink()
    with h5py.File(path, "w") as f:
        f["layers/dense/vars/0"] = np.zeros(4, np.float32)


def existing_file(tmp: Path) -> None:
    (tmp / "out.mlpackage").write_bytes(b"not a package")


def symlink_to_folder(tmp: Path) -> None:
    (tmp / "folder").mkdir()
    (tmp / "out.mlpackage").symlink_to("folder")


SLOW = pytest.mark.slow
CASES = [
    pytest.param(keras_on(relu_model([1, 2**31 - 1])), "over the limit of 4 GiB", id="keras-dim-2^31"),
    pytest.param(
        keras_on(relu_model([2**31 - 1] * 3)), "elements, over the limit", id="keras-int64-overflow"
    ),
    pytest.param(keras_on(relu_model([1] * 100)), "rank 100; at most 32", id="keras-rank-100"),
    pytest.param(keras_on(lambda: add_chain(10_001)), "chain of 10001 ops", id="keras-chain-10001-adds"),
    pytest.param(keras_on(lambda: nested_whiles(900)), "more than 64 deep", id="keras-900-nested-whiles"),
    pytest.param(
        keras_on(lambda: add_chain(100_001, parallel=True)), "100001 ops", id="keras-100001-ops", marks=SLOW
    ),
    pytest.param(
        dump_with("x.npy", lambda p: p.write_bytes(npy_claiming(4 << 40))),
        "header claims",
        id="dump-npy-4TiB",
    ),
    pytest.param(
        dump_with("x.npz", lambda p: zip_bomb(p, "x.npy", 64 << 20)), "inflates to", id="dump-npz-bomb"
    ),
    pytest.param(
        dump_with("x.png", lambda p: p.write_bytes(png(30000, 30000))), "pixels", id="dump-png-bomb"
    ),
    pytest.param(dump_with("x.png", lambda p: p.write_bytes(png(10000, 9000))), "pixels", id="dump-png-90MP"),
    pytest.param(coreml_onto(existing_file), "is a file", id="coreml-onto-file", marks=SLOW),
    pytest.param(coreml_onto(symlink_to_folder), "symbolic link", id="coreml-onto-symlink", marks=SLOW),
    pytest.param(module_with_weights("compare", object_arrays), "not numbers", id="compare-object-weights"),
    pytest.param(module_with_weights("coreml", object_arrays), "not numbers", id="coreml-object-weights"),
    pytest.param(module_with_weights("compare", weights_bomb), "bytes of data in", id="compare-weights-bomb"),
    pytest.param(module_with_weights("coreml", weights_bomb), "bytes of data in", id="coreml-weights-bomb"),
    pytest.param(
        module_with_weights("compare", external_link), "never followed", id="compare-weights-external-link"
    ),
    pytest.param(
        module_with_weights("compare", other_arrays),
        "does not hold the weights",
        id="compare-weights-missing",
    ),
]


@pytest.mark.parametrize(("make", "text"), CASES)
def test_one_line_exit_2(make, text, tmp_path):
    argv = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(*argv, cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) in (before, [*before, "out"]), "wrote outputs"


@SLOW
def test_a_chain_past_the_default_recursion_limit_rebuilds(tmp_path):
    """1,200 ADDs in a row: Keras recursed past Python's default limit of 1,000 (a RecursionError
    traceback); the loader raises the limit, so the chain builds and verifies."""
    (tmp_path / "chain.tflite").write_bytes(add_chain(1200))
    result = run_cli("keras", "chain.tflite", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "layers: 1200 checked on TFLite's own inputs, all match" in " ".join(result.stdout.split())
