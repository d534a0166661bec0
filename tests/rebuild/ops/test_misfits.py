"""Mutated models whose op inputs do not fit what the op takes: `keras` says so in one line (exit 2),
naming the op, never with a converter's IndexError / ValueError traceback."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main

ACT = {"fused_activation_function": "NONE"}
ONES = lambda *shape: np.ones(shape, np.float32)  # noqa: E731

CASES = {
    # matmul.py: ctx.shape(w)[-1] on a scalar weight was an IndexError
    "fc-runtime-scalar-weights": (
        [T("x", [1, 4]), T("w", []), T("y", [1, 1])],
        [Op("FULLY_CONNECTED", [0, 1], [2], ACT)],
        [0, 1],
        "FULLY_CONNECTED op 0: weights 'w' of shape []",
    ),
    "fc-runtime-rank1-weights": (
        [T("x", [1, 4]), T("w", [4]), T("y", [1, 1])],
        [Op("FULLY_CONNECTED", [0, 1], [2], ACT)],
        [0, 1],
        "not a [units, n_in] matrix",
    ),
    "fc-constant-rank1-weights": (
        [T("x", [1, 4]), T("w", [4], data=ONES(4)), T("y", [1, 1])],
        [Op("FULLY_CONNECTED", [0, 1], [2], ACT)],
        [0],
        "FULLY_CONNECTED op 0: weights of shape [4]",
    ),
    # elementwise.py: `a, b = op.inputs[:2]` was a ValueError
    "add-one-operand": (
        [T("x", [1, 4]), T("y", [1, 4])],
        [Op("ADD", [0], [1], ACT)],
        [0],
        "ADD op 0: needs two operands",
    ),
    "add-mismatched-constant": (
        [T("x", [1, 4]), T("c", [3], data=ONES(3)), T("y", [1, 4])],
        [Op("ADD", [0, 1], [2], ACT)],
        [0],
        "ADD op 0: operands of shapes [1, 4] and [3] do not broadcast",
    ),
    # any converter: the registry turns a misfit into a ConversionError naming op, version, tensor
    "conv-rank2-kernel": (
        [
            T("x", [1, 4, 4, 1]),
            T("w", [2, 2], data=ONES(2, 2)),
            T("b", [1], data=ONES(1)),
            T("y", [1, 4, 4, 1]),
        ],
        [Op("CONV_2D", [0, 1, 2], [3], {"padding": "SAME", "stride_w": 1, "stride_h": 1})],
        [0],
        "CONV_2D v1 (op 0, output 'y'): its inputs do not fit what the op takes (ValueError",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_refuses_a_misfit_in_one_line(case, tmp_path):
    tensors, ops, inputs, match = CASES[case]
    outputs = [ops[-1].outputs[0]]
    path = tmp_path / "m.tflite"
    path.write_bytes(build_model(tensors, ops, inputs=inputs, outputs=outputs))
    result = CliRunner().invoke(main, ["keras", str(path), "-o", str(tmp_path / "out"), "--no-verify"])
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], result.output
    assert not (tmp_path / "out").exists()  # the folder it made for the refused model is gone again


def test_registry_wraps_misfits_from_any_converter():
    from tfl_rebuild.rebuild.ops import ConversionError, registry
    from tfl_rebuild.tflite.reader import read_model

    blob = build_model([T("x", [1, 4]), T("y", [1, 4])], [Op("TANH", [0], [1])], inputs=[0], outputs=[1])
    sg = read_model(blob).main
    op = sg.operators[0]

    def broken(op, ctx):
        return [][1]

    with pytest.raises(ConversionError, match=r"TANH v1 \(op 0, output 'y'\).*IndexError"):
        registry._guarded(broken, op, sg)(op, None)
