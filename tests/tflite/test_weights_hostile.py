"""`weights -o x.npz` with hostile tensor names: safe, unique member names; a manifest keeps the names."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.tflite.weights import NAMES_MEMBER, export_weights, names_of

HOSTILE = [
    "../../x",
    "/etc/passwd",
    "a/../../b",
    "C:\\windows\\evil",
    "x\x1b[2J",
    "file",  # np.savez took keys as keyword arguments: these broke it
    "allow_pickle",
    "dup",
    "dup",
    "Dup",
    "__names__",
    "model/conv2d/Conv2D",
    "..",
    "",
]


def hostile_model() -> bytes:
    n = len(HOSTILE)
    consts = [T(name, [2], data=np.array([i, -i], np.float32)) for i, name in enumerate(HOSTILE)]
    tensors = [T("in", [2]), *consts, *(T(f"s{i}", [2]) for i in range(n))]
    # a chain in -> +c0 -> s0 -> +c1 -> s1 ...: every constant is used
    ops = [
        Op("ADD", [0 if i == 0 else n + i, 1 + i], [n + 1 + i], {"fused_activation_function": "NONE"})
        for i in range(n)
    ]
    return build_model(tensors, ops, inputs=[0], outputs=[2 * n])


def member_is_safe(member: str) -> bool:
    parts = member.split("/")
    return (
        not member.startswith("/")
        and "\\" not in member
        and ":" not in member
        and all(p not in ("", ".", "..") for p in parts)
        and all(c.isprintable() for c in member)
    )


@pytest.fixture
def npz(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(hostile_model())
    out = tmp_path / "w.npz"
    result = CliRunner().invoke(main, ["weights", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def test_member_names_are_safe_and_unique(npz):
    members = zipfile.ZipFile(npz).namelist()
    assert all(member_is_safe(m) for m in members), members
    assert len({m.lower() for m in members}) == len(members) == len(HOSTILE) + 1  # + the manifest
    assert f"{NAMES_MEMBER}.npy" in members


def test_manifest_keeps_the_original_names(npz):
    with np.load(npz, allow_pickle=False) as arrays:
        names = names_of(arrays)
        assert sorted(names.values()) == sorted(HOSTILE)
        for key, name in names.items():
            i = HOSTILE.index(name) if HOSTILE.count(name) == 1 else None
            if i is not None:
                np.testing.assert_array_equal(arrays[key], np.array([i, -i], np.float32))
        assert names["model/conv2d/Conv2D"] == "model/conv2d/Conv2D"  # usual names stay keys
        assert arrays[NAMES_MEMBER].dtype.kind == "U"


def test_nothing_is_written_outside_the_archive_when_extracted(npz, tmp_path):
    dest = tmp_path / "x" / "y"
    dest.mkdir(parents=True)
    zipfile.ZipFile(npz).extractall(dest)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and dest not in p.parents]
    assert sorted(p.name for p in outside) == ["m.tflite", "w.npz"]


def test_plain_names_get_no_manifest(tmp_path):
    blob = build_model(
        [T("x", [2]), T("w", [2], data=np.ones(2, np.float32)), T("y", [2])],
        [Op("ADD", [0, 1], [2], {"fused_activation_function": "NONE"})],
        inputs=[0],
        outputs=[2],
    )
    export_weights(read_model(blob), str(tmp_path / "w.npz"))
    with np.load(tmp_path / "w.npz", allow_pickle=False) as arrays:
        assert arrays.files == ["w"] and names_of(arrays) == {"w": "w"}


# --- kernels of the wrong rank (found by scripts/fuzz_cli.py, seed 20261206 case 20) ---------


@pytest.mark.parametrize(
    ("opcode", "shape", "options_type"),
    [
        pytest.param("CONV_2D", [3, 4], "Conv2DOptions", id="conv-rank2"),
        pytest.param("DEPTHWISE_CONV_2D", [4], "DepthwiseConv2DOptions", id="depthwise-rank1"),
        pytest.param("TRANSPOSE_CONV", [2, 2, 2], "TransposeConvOptions", id="transpose-rank3-no-input"),
        pytest.param("FULLY_CONNECTED", [], "FullyConnectedOptions", id="dense-scalar"),
    ],
)
def test_keras_layout_of_a_kernel_with_the_wrong_rank_is_one_error_line(
    opcode, shape, options_type, tmp_path
):
    """`weights --layout keras` transposed whatever the kernel slot held: numpy's ValueError (axes
    don't match array) escaped as a traceback; so did the IndexError of a TRANSPOSE_CONV without
    its third input (the data input, whose channels the layout asked for)."""
    w = np.ones(shape, np.float32)
    blob = build_model(
        tensors=[T("x", [1, 4, 4, 1]), T("w", shape, data=w), T("y", [1, 4, 4, 1])],
        ops=[Op(opcode, [0, 1], [2], options_type=options_type)],
        inputs=[0],
        outputs=[2],
    )
    path = tmp_path / "m.tflite"
    path.write_bytes(blob)
    out = tmp_path / "w.npz"
    result = CliRunner().invoke(main, ["weights", str(path), "-o", str(out), "--layout", "keras"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "'w'" in result.stderr and "kernel" in result.stderr
    assert not out.exists()


def test_keras_layout_of_empty_kernels():
    from tfl_rebuild.errors import ModelFormatError
    from tfl_rebuild.tflite.weights import to_keras_layout

    assert to_keras_layout(np.ones((0, 3), np.float32), "FULLY_CONNECTED").shape == (3, 0)
    with pytest.raises(ModelFormatError, match="input channels"):  # was ZeroDivisionError
        to_keras_layout(np.ones((1, 1, 1, 0), np.float32), "DEPTHWISE_CONV_2D")
