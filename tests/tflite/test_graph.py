"""graph.py: the DiGraph mirrors the IR exactly; op_order is topological; writers round-trip."""

from __future__ import annotations

import json
import re
from collections import Counter

import networkx as nx
import numpy as np
import pytest
from conftest import model_params, read_cached, require_model
from flatbuf import Op, T, build_model, simple_model

from tfl_rebuild.errors import InputError, ModelFormatError
from tfl_rebuild.tflite.graph import build_graph, op_order, write_graph
from tfl_rebuild.tflite.reader import read_model

MODELS = model_params()


def _producers(sg) -> dict[int, int]:
    return {t: op.index for op in sg.operators for t in op.outputs if t >= 0}


def _check_graph(sg, g: nx.DiGraph) -> list[str]:
    """Every mismatch between the graph and the subgraph it was built from."""
    bad = []
    kinds = Counter(a["kind"] for _, a in g.nodes(data=True))
    ops = {n: a for n, a in g.nodes(data=True) if a["kind"] == "op"}
    if sorted(a["index"] for a in ops.values()) != list(range(len(sg.operators))):
        bad.append("op nodes do not match the operators")
    for op in sg.operators:
        a = g.nodes.get(f"op:{op.index}")
        if a is None or a["op"] != op.key or a["version"] != op.version or a["options"] != op.options:
            bad.append(f"op:{op.index} attributes")
    for t in sg.inputs:
        if g.nodes.get(f"input:{t}", {}).get("kind") != "input":
            bad.append(f"graph input {t} has no input node")
    for t in sg.outputs:
        node = f"output:{t}"
        if g.nodes.get(node, {}).get("kind") != "output" or (t in _producers(sg) and g.in_degree(node) != 1):
            bad.append(f"graph output {t} is not wired")
    consumed_consts = {t for op in sg.operators for t in op.inputs if t >= 0 and sg.tensors[t].is_constant}
    if {n for n, a in g.nodes(data=True) if a["kind"] == "const"} != {f"const:{t}" for t in consumed_consts}:
        bad.append("const nodes do not match the consumed constants")
    if kinds["op"] != len(sg.operators):
        bad.append("node ids collide")
    # Each op input (with multiplicity) is carried by exactly one in-edge of that op.
    want = Counter((f"op:{op.index}", t) for op in sg.operators for t in op.inputs if t >= 0)
    have = Counter((v, t) for _, v, a in g.edges(data=True) if v.startswith("op:") for t in a["tensors"])
    if want != have:
        bad.append(f"edge tensors differ from op inputs: {sorted((want - have) + (have - want))[:5]}")
    producers = _producers(sg)
    for u, v, a in g.edges(data=True):
        t = sg.tensors[a["tensor"]]
        if a["tensor"] != a["tensors"][0] or (a["name"], a["shape"], a["dtype"]) != (
            t.name,
            list(t.shape),
            t.dtype,
        ):
            bad.append(f"edge {u}->{v} attributes")
        if t.quantized != (a["quantization"] is not None):
            bad.append(f"edge {u}->{v} quantization")
        for tid in a["tensors"]:  # the edge starts where the tensor comes from
            src = f"op:{producers[tid]}" if tid in producers else None
            if src is not None and u != src:
                bad.append(f"edge {u}->{v} carries tensor {tid} made by {src}")
    if not nx.is_directed_acyclic_graph(g):
        bad.append("graph has a cycle")
    return bad


@pytest.mark.parametrize("path", MODELS)
def test_graph_mirrors_subgraph(path):
    sg = read_cached(require_model(path)).main
    g = build_graph(sg)
    assert isinstance(g, nx.DiGraph)
    assert _check_graph(sg, g) == []


@pytest.mark.parametrize("path", MODELS)
def test_op_order_is_topological(path):
    sg = read_cached(require_model(path)).main
    order = op_order(build_graph(sg))
    assert sorted(order) == list(range(len(sg.operators)))
    pos = {op: i for i, op in enumerate(order)}
    producers = _producers(sg)
    late = [
        (op.index, t)
        for op in sg.operators
        for t in op.inputs
        if t in producers and pos[producers[t]] >= pos[op.index]
    ]
    assert late == []


def _chain_out_of_order() -> bytes:
    """op 0 consumes what op 1 makes: file order is not execution order."""
    return build_model(
        [T("x", [4]), T("h", [4]), T("y", [4]), T("c", [4], data=np.ones(4, np.float32))],
        [Op("MUL", [1, 3], [2]), Op("ADD", [0, 3], [1])],
        inputs=[0],
        outputs=[2],
    )


def test_op_order_reorders_a_model_listed_out_of_order():
    sg = read_model(_chain_out_of_order()).main
    g = build_graph(sg)
    assert _check_graph(sg, g) == []
    assert op_order(g) == [1, 0]


def test_op_order_keeps_file_order_between_independent_ops():
    blob = build_model(
        [T("x", [4]), T("a", [4]), T("b", [4]), T("c", [4])],
        [Op("RELU", [0], [3]), Op("TANH", [0], [2]), Op("LOGISTIC", [0], [1])],
        inputs=[0],
        outputs=[1, 2, 3],
    )
    assert op_order(build_graph(read_model(blob).main)) == [0, 1, 2]


def test_same_tensor_twice_and_two_outputs_of_one_producer():
    blob = build_model(
        [T("x", [4]), T("s", [4]), T("y", [4]), T("z", [4])],
        [Op("MUL", [0, 0], [1]), Op("ADD", [1, 1], [2]), Op("SUB", [1, 2], [3])],
        inputs=[0],
        outputs=[3],
    )
    sg = read_model(blob).main
    g = build_graph(sg)
    assert _check_graph(sg, g) == []
    assert g.edges["input:0", "op:0"]["tensors"] == [0, 0]
    assert g.edges["op:0", "op:1"]["tensors"] == [1, 1]
    assert g.number_of_edges() == 5  # in->0, 0->1, 0->2, 1->2, 2->out


def test_optional_inputs_make_no_edges_and_variables_are_marked():
    blob = build_model(
        [
            T("x", [1, 3]),
            T("w", [2, 3], data=np.ones((2, 3), np.float32)),
            T("v", [1, 2], is_variable=True),
            T("y", [1, 2]),
            T("z", [1, 2]),
        ],
        [Op("FULLY_CONNECTED", [0, 1, -1], [3]), Op("ADD", [3, 2], [4])],
        inputs=[0],
        outputs=[4],
    )
    sg = read_model(blob).main
    g = build_graph(sg)
    assert _check_graph(sg, g) == []
    assert g.in_degree("op:0") == 2
    assert g.nodes["input:2"]["kind"] == "variable"


# ---------------------------------------------------------------------------------------------
# Writers

HOSTILE_NAMES = ['q"uote', "new\nline", "<tag attr='1'>&amp;", "back\\slash", "ünï名", "tab\there"]


def _hostile_model() -> bytes:
    names = HOSTILE_NAMES
    return build_model(
        [
            T(names[0], [4]),
            T(names[1], [4], data=np.ones(4, np.float32)),
            T(names[2], [4]),
            T(names[3], [4]),
            T(names[4], [4]),
            T(names[5], [4]),
        ],
        [Op("MUL", [0, 1], [2]), Op("ADD", [2, 1], [3]), Op("RELU", [3], [4]), Op("TANH", [4], [5])],
        inputs=[0],
        outputs=[5],
        subgraph_name='sub"graph\n',
    )


WRITER_MODELS = [
    pytest.param(_hostile_model(), id="hostile-names"),
    pytest.param(_chain_out_of_order(), id="out-of-order"),
] + MODELS[:3]


def _model_of(param):
    return read_model(param) if isinstance(param, bytes) else read_cached(require_model(param))


@pytest.mark.parametrize("source", WRITER_MODELS)
def test_graphml_round_trips(source, tmp_path):
    model = _model_of(source)
    g = build_graph(model.main)
    out = tmp_path / "g.graphml"
    write_graph(model, out)
    back = nx.read_graphml(out)
    assert isinstance(back, nx.DiGraph)
    assert set(back.nodes) == set(g.nodes) and set(back.edges) == set(g.edges)
    for n, a in g.nodes(data=True):
        b = back.nodes[n]
        assert b["kind"] == a["kind"]
        if a["kind"] == "op":
            assert (b["op"], b["index"], json.loads(b["options"])) == (a["op"], a["index"], a["options"])
        else:
            assert (b["name"], json.loads(b["shape"]), b["dtype"]) == (a["name"], a["shape"], a["dtype"])
    for u, v, a in g.edges(data=True):
        b = back.edges[u, v]
        assert (b["name"], json.loads(b["shape"]), json.loads(b["tensors"])) == (
            a["name"],
            a["shape"],
            a["tensors"],
        )


@pytest.mark.parametrize("source", WRITER_MODELS)
def test_json_round_trips(source, tmp_path):
    model = _model_of(source)
    g = build_graph(model.main)
    out = tmp_path / "g.json"
    write_graph(model, out)
    back = nx.node_link_graph(json.loads(out.read_text(encoding="utf-8")), edges="edges")
    assert back.is_directed()
    assert dict(back.nodes(data=True)) == dict(g.nodes(data=True))
    assert {(u, v): a for u, v, a in back.edges(data=True)} == {(u, v): a for u, v, a in g.edges(data=True)}


_DOT_STRING = r'"((?:[^"\\]|\\.)*)"'


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s)


@pytest.mark.parametrize("source", WRITER_MODELS)
def test_dot_is_well_formed(source, tmp_path):
    """Parse our DOT subset back: every node and edge statement, with escaped strings intact."""
    model = _model_of(source)
    g = build_graph(model.main)
    out = tmp_path / "g.dot"
    write_graph(model, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert re.fullmatch(rf"digraph {_DOT_STRING} \{{", lines[0]) and lines[-1] == "}"
    assert _unescape(re.fullmatch(rf"digraph {_DOT_STRING} \{{", lines[0]).group(1)) == (
        model.main.name or "model"
    )
    nodes, edges = {}, set()
    for line in lines[2:-1]:
        if m := re.fullmatch(rf"  {_DOT_STRING} -> {_DOT_STRING} \[label={_DOT_STRING}\];", line):
            edges.add((_unescape(m.group(1)), _unescape(m.group(2))))
        elif m := re.fullmatch(rf"  {_DOT_STRING} \[label={_DOT_STRING}(, style=rounded)?\];", line):
            nodes[_unescape(m.group(1))] = _unescape(m.group(2))
        else:
            pytest.fail(f"not a DOT statement: {line!r}")
    assert set(nodes) == set(g.nodes) and edges == set(g.edges)
    for n, a in g.nodes(data=True):
        assert (a["op"] if a["kind"] == "op" else a["name"]) in nodes[n]


def test_write_graph_refuses_unknown_extension(tmp_path):
    model = read_model(simple_model())
    with pytest.raises(InputError, match=r"\.graphml, \.json or \.dot"):
        write_graph(model, tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_control_characters_in_names_stay_readable(tmp_path):
    """XML 1.0 cannot hold most control characters: they are written as visible \\xNN escapes
    (GraphML and DOT), so the files still parse; JSON keeps them exactly."""
    model = read_model(simple_model(x_name="ctl\x01\x1b\r", w_name="nul\x00x", subgraph_name="g\x02"))
    write_graph(model, tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.nodes["input:0"]["name"] == "ctl\\x01\\x1b\\x0d"
    assert back.nodes["const:1"]["name"] == "nul\\x00x"
    write_graph(model, tmp_path / "g.dot")
    dot = (tmp_path / "g.dot").read_text(encoding="utf-8")
    assert not re.search("[\x00-\x08\x0b-\x1f]", dot)
    write_graph(model, tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert {n["id"]: n.get("name") for n in data["nodes"]}["input:0"] == "ctl\x01\x1b\r"


def test_op_order_refuses_a_cycle():
    """op 0 reads op 1's output and op 1 reads op 0's: no order exists (a corrupt file)."""
    blob = build_model(
        [T("x", [4]), T("a", [4]), T("b", [4])],
        [Op("ADD", [0, 2], [1]), Op("MUL", [1, 1], [2])],
        inputs=[0],
        outputs=[2],
    )
    with pytest.raises(ModelFormatError, match=r"^subgraph 0: operators form a cycle \(op:\d -> op:\d\)$"):
        op_order(build_graph(read_model(blob).main))
