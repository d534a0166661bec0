"""Hostile models the reader refuses in one line: subgraph call cycles and calls to missing subgraphs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from flatbuf import Graph, Op, T, build_model

from tfl_rebuild.cli import main
from tfl_rebuild.errors import ModelFormatError
from tfl_rebuild.tflite.reader import read_model

ACT = {"fused_activation_function": "NONE"}


def while_op(cond: int, body: int) -> Op:
    return Op(
        "WHILE",
        [0],
        [1],
        options={"cond_subgraph_index": cond, "body_subgraph_index": body},
        options_type="WhileOptions",
    )


def cond_graph() -> Graph:
    """x -> LESS(x, 10) -> keep going."""
    import numpy as np

    return Graph(
        [T("x", [1]), T("ten", [1], data=np.array([10], np.float32)), T("c", [1], dtype="bool")],
        [Op("LESS", [0, 1], [2])],
        inputs=[0],
        outputs=[2],
        name="cond",
    )


def body_graph(calls: Op | None = None) -> Graph:
    """x -> ADD x -> y, and optionally a WHILE (or other call) of its own before it."""
    ops = [Op("ADD", [0, 0], [1], options=ACT)]
    tensors = [T("x", [1]), T("y", [1])]
    if calls is not None:
        tensors.append(T("z", [1]))
        calls.inputs, calls.outputs = [1], [2]
        ops.append(calls)
        return Graph(tensors, ops, inputs=[0], outputs=[2], name="body")
    return Graph(tensors, ops, inputs=[0], outputs=[1], name="body")


def model_with(subgraphs: list[Graph], top: Op | None = None) -> bytes:
    return build_model(
        [T("x", [1]), T("y", [1])], [top or while_op(1, 2)], inputs=[0], outputs=[1], subgraphs=subgraphs
    )


# subgraph 1 = cond, 2 = body (, 3 = a second body)
SELF_CYCLE = lambda: model_with([cond_graph(), body_graph(while_op(1, 2))])  # noqa: E731
TWO_CYCLE = lambda: model_with(  # noqa: E731
    [cond_graph(), body_graph(while_op(1, 3)), body_graph(while_op(1, 2))]
)
IF_SELF = lambda: model_with(  # noqa: E731
    [
        cond_graph(),
        body_graph(Op("IF", [], [], {"then_subgraph_index": 2, "else_subgraph_index": 2}, "IfOptions")),
    ]
)
CALL_ONCE_SELF = lambda: model_with(  # noqa: E731
    [cond_graph(), body_graph(Op("CALL_ONCE", [], [], {"init_subgraph_index": 2}, "CallOnceOptions"))]
)
COMPOSITE_CYCLE = lambda: model_with(  # noqa: E731
    [
        cond_graph(),
        body_graph(
            Op(
                "STABLEHLO_COMPOSITE",
                [],
                [],
                {"name": "c", "decomposition_subgraph_index": 2},
                "StableHLOCompositeOptions",
            )
        ),
    ]
)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(SELF_CYCLE, id="while-body-calls-itself"),
        pytest.param(TWO_CYCLE, id="two-bodies-call-each-other"),
        pytest.param(IF_SELF, id="if-branch-calls-itself"),
        pytest.param(CALL_ONCE_SELF, id="call-once-init-calls-itself"),
        pytest.param(COMPOSITE_CYCLE, id="composite-decomposition-calls-itself"),
    ],
)
def test_call_cycles_are_refused(make):
    with pytest.raises(ModelFormatError, match="call cycle"):
        read_model(make())


def test_cycle_through_main_subgraph_is_refused():
    blob = model_with([cond_graph(), body_graph(while_op(1, 0))])
    with pytest.raises(ModelFormatError, match=r"subgraph calls .*-> 0"):
        read_model(blob)


def test_call_to_a_missing_subgraph_is_no_cycle():
    """The runtime refuses it when preparing the op; `inspect` may still show the model."""
    m = read_model(model_with([cond_graph(), body_graph()], top=while_op(1, 7)))
    assert m.main.operators[0].options["body_subgraph_index"] == 7


def test_options_table_of_another_op_calls_nothing():
    """A WhileOptions table on an ADD is not read by the runtime: no call, no cycle."""
    blob = model_with(
        [cond_graph(), body_graph()],
        top=Op("ADD", [0, 0], [1], {"cond_subgraph_index": 0, "body_subgraph_index": 0}, "WhileOptions"),
    )
    assert read_model(blob).main.operators[0].options_type == "WhileOptions"


def test_acyclic_calls_still_read():
    m = read_model(model_with([cond_graph(), body_graph()]))
    assert m.main.operators[0].options["body_subgraph_index"] == 2
    # A subgraph called from two places is not a cycle.
    m = read_model(model_with([cond_graph(), body_graph(while_op(1, 3)), body_graph()]))
    assert len(m.subgraphs) == 4


@pytest.mark.parametrize("command", ["dump", "keras", "weights", "inspect"])
@pytest.mark.parametrize("make", [SELF_CYCLE, TWO_CYCLE], ids=["self", "two"])
def test_commands_refuse_a_cycle_in_one_line(command, make, tmp_path):
    path = tmp_path / "cycle.tflite"
    path.write_bytes(make())
    args = {
        "dump": ["-o", str(tmp_path / "out"), "--random", "0"],
        "keras": ["-o", str(tmp_path / "k"), "--input-shape", "2"],
        "weights": ["-o", str(tmp_path / "w.npz")],
        "inspect": [],
    }[command]
    result = CliRunner().invoke(main, [command, str(path), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "call cycle" in lines[0], result.output
    assert not any(p.name not in ("cycle.tflite",) for p in tmp_path.iterdir())
