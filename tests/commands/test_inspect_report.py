"""`inspect`'s report: whole names through a pipe, the options column, --ops / --select, big models."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ROOT, require_fixture
from flatbuf import Op, T, build_model
from rich.console import Console

from tfl_rebuild.cli import main
from tfl_rebuild.commands.inspect import HISTOGRAM_FIRST, OpFilter, op_options, print_report, report
from tfl_rebuild.tflite.reader import read_model


def _long(i: int) -> str:
    """A 150-character tensor name, unique in its first characters and its last."""
    head = f"model/MEL_SPEC{i}/"
    return head + "x" * (150 - len(head) - 8) + f"/out_{i:03d}"


def _conv_chain(n: int, names=None) -> bytes:
    """x -> CONV_2D (s2 same relu6) -> ADD ... : n ops, every tensor named by `names(i)`."""
    names = names or (lambda i: f"t{i}")
    w = np.ones((4, 3, 3, 4), np.float32)
    b = np.zeros(4, np.float32)
    tensors = [T(names(0), [1, 8, 8, 4]), T("kernel", [4, 3, 3, 4], data=w), T("bias", [4], data=b)]
    ops = [
        Op(
            "CONV_2D",
            [0, 1, 2],
            [3],
            options={"padding": "SAME", "stride_h": 2, "stride_w": 2, "fused_activation_function": "RELU6"},
        )
    ]
    tensors.append(T(names(1), [1, 4, 4, 4]))
    for i in range(2, n + 1):
        tensors.append(T(names(i), [1, 4, 4, 4]))
        ops.append(Op("ADD", [len(tensors) - 2, len(tensors) - 2], [len(tensors) - 1]))
    return build_model(tensors, ops, inputs=[0], outputs=[len(tensors) - 1])


@pytest.fixture
def long_names(tmp_path):
    path = tmp_path / "long.tflite"
    path.write_bytes(_conv_chain(6, _long))
    return path, [_long(i) for i in range(7)]


def test_piped_inspect_keeps_every_name_whole(long_names):
    """A real process with stdout a pipe (as in CI logs or `| less`): plain rows, nothing cut."""
    path, names = long_names
    proc = subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", "inspect", "--tensors", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "80", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "…" not in proc.stdout
    for name in names:
        assert name in proc.stdout
        # and each a whole word of a row: the tensors table's name column
        assert any(name in line.split() for line in proc.stdout.splitlines()), name
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("#") and "options" in line)
    assert header.split() == ["#", "op", "options", "shape", "inputs", "output"]
    conv = next(line for line in lines if " CONV_2D " in f" {line} " and line.startswith("0 "))
    assert "s2 same relu6" in conv and conv.endswith(names[1])


def test_cli_runner_output_is_plain_and_whole(long_names):
    path, names = long_names
    result = CliRunner().invoke(main, ["inspect", str(path)], env={"COLUMNS": "80"}, catch_exceptions=False)
    assert result.exit_code == 0
    for name in names[1:]:  # the op table names outputs
        assert name in result.stdout


def test_model_strings_are_escaped_in_plain_output(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(_conv_chain(2, lambda i: f"t{i}\x1b[31mred\nline"))
    out = CliRunner().invoke(main, ["inspect", "--tensors", str(path)]).stdout
    assert "\x1b" not in out and "t1\\x1b[31mred\\x0aline" in out


@pytest.mark.parametrize(
    "opcode, options, want",
    [
        ("CONV_2D", {"padding": "SAME", "stride_h": 2, "stride_w": 2, "fused_activation_function": "RELU6"}, "s2 same relu6"),
        ("CONV_2D", {"padding": "VALID", "stride_h": 1, "stride_w": 1, "dilation_h_factor": 2, "dilation_w_factor": 2, "fused_activation_function": "NONE"}, "d2 valid"),
        ("CONV_2D", {"padding": "VALID", "stride_h": 2, "stride_w": 1, "fused_activation_function": "RELU"}, "s2x1 valid relu"),
        ("DEPTHWISE_CONV_2D", {"padding": "SAME", "stride_h": 1, "stride_w": 1, "depth_multiplier": 2, "fused_activation_function": "NONE"}, "same m2"),
        ("MAX_POOL_2D", {"padding": "VALID", "stride_h": 2, "stride_w": 2, "filter_height": 3, "filter_width": 3, "fused_activation_function": "NONE"}, "s2 k3 valid"),
        ("CONCATENATION", {"axis": 0, "fused_activation_function": "NONE"}, "axis=0"),
        ("CONCATENATION", {"axis": -1, "fused_activation_function": "NONE"}, "axis=-1"),
        ("ADD", {"fused_activation_function": "NONE"}, ""),
        ("RESHAPE", {"new_shape": [1, -1, 16]}, "new_shape=[1,-1,16]"),
        ("WHILE", {"cond_subgraph_index": 1, "body_subgraph_index": 2}, "body=2 cond=1"),
    ],
    ids=["conv-s2", "conv-d2", "conv-s2x1", "dw-m2", "maxpool", "concat-axis0", "concat-axis-1", "add", "reshape", "while"],
)  # fmt: skip
def test_op_options_compact(opcode, options, want):
    blob = build_model(
        [T("x", [1, 8, 8, 4]), T("y", [1, 8, 8, 4])],
        [Op(opcode, [0], [1], options=options, options_type="WhileOptions" if opcode == "WHILE" else None)],
        [0],
        [1],
    )
    (op,) = read_model(blob).main.operators
    assert op_options(op) == want


def test_op_options_of_a_converted_model():
    model = read_model(require_fixture("mobilenet_v2_float"))
    shown = {op_options(op) for op in model.main.operators if op.opcode == "CONV_2D"}
    assert "s2 same relu6" in shown


def _rows(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and "options" in line)
    rows = []
    for line in lines[start + 1 :]:
        if not line or not line[0].isdigit():
            break
        rows.append(line)
    return rows


def test_ops_and_select_filter_the_op_table(tmp_path):
    path = tmp_path / "chain.tflite"
    path.write_bytes(_conv_chain(5))
    runner = CliRunner()
    every = _rows(runner.invoke(main, ["inspect", str(path)]).stdout)
    assert len(every) == 5
    conv = runner.invoke(main, ["inspect", "--ops", "conv_2d", str(path)]).stdout
    assert [r.split()[1] for r in _rows(conv)] == ["CONV_2D"]
    assert "ops shown: 1 of 5 (--ops CONV_2D)" in conv
    both = runner.invoke(main, ["inspect", "--ops", "CONV_2D,ADD", str(path)]).stdout
    assert len(_rows(both)) == 5
    sel = runner.invoke(main, ["inspect", "--select", r"^t[34]$", str(path)]).stdout
    assert [r.split()[-1] for r in _rows(sel)] == ["t3", "t4"]
    mixed = runner.invoke(main, ["inspect", "--ops", "ADD", "--select", "t[12]$", str(path)]).stdout
    assert [r.split()[-1] for r in _rows(mixed)] == ["t2"]


def test_bad_select_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["inspect", "--select", "(", str(require_fixture("add_one"))])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --select '(': not a regular expression")
    assert result.stderr.count("\n") == 1


def test_histogram_comes_first_for_big_models(tmp_path):
    big, small = tmp_path / "big.tflite", tmp_path / "small.tflite"
    big.write_bytes(_conv_chain(HISTOGRAM_FIRST + 10))
    small.write_bytes(_conv_chain(5))
    for path, first in ((big, "op"), (small, "#")):
        lines = CliRunner().invoke(main, ["inspect", str(path)]).stdout.splitlines()
        tables = [line.split()[0] for line in lines if line.startswith(("op ", "# "))]
        assert tables[0] == first, (path.name, tables)


def test_rich_on_a_terminal_small_and_big_tables(tmp_path):
    """On a terminal: rich for a small table, plain rows (each on a line of its own) for a big one."""
    model = read_model(_conv_chain(HISTOGRAM_FIRST + 30, lambda i: f"tensor_{i}"))
    buf = io.StringIO()
    print_report(model, console=Console(file=buf, width=100, force_terminal=False, highlight=False))
    out = buf.getvalue()
    assert out.startswith(model.name)
    for i in range(1, HISTOGRAM_FIRST + 31):
        assert any(line.rstrip().endswith(f"tensor_{i}") for line in out.splitlines()), i
    small = read_model(_conv_chain(3))
    buf = io.StringIO()
    print_report(small, console=Console(file=buf, width=100, highlight=False))
    assert "CONV_2D" in buf.getvalue() and "s2 same relu6" in buf.getvalue()


def test_report_is_data():
    blocks = report(read_model(_conv_chain(3)), keep=OpFilter.parse(["ADD"]))
    lines = ["".join(t for t, _ in b) for b in blocks if isinstance(b, list)]
    assert "ops shown: 2 of 3 (--ops ADD)" in lines


def test_sha256_hashed_alongside_the_parse_is_the_files(tmp_path):
    import hashlib

    from tfl_rebuild.commands.inspect import read_hashed

    path = require_fixture("mobilenet_v2_float")
    model = read_hashed(str(path))
    assert model.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_inspect_of_a_fifo_does_not_hang(tmp_path):
    import os
    import subprocess
    import sys

    fifo = tmp_path / "model.tflite"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "tfl_rebuild.cli", "inspect", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
