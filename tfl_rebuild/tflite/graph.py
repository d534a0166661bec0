"""A subgraph as a networkx DiGraph: operators are nodes, edges carry tensors.

Node ids are strings (so the graph writes to GraphML/JSON as is): "op:<index>" for operators,
"input:<tensor>", "output:<tensor>" and "const:<tensor>" for the graph's boundary and constants.
An edge between two nodes carries the first tensor that joins them; `tensors` lists all of them
(an op may read two outputs of one producer, or one tensor twice).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import networkx as nx

from tfl_rebuild.fileio import atomic_output
from tfl_rebuild.tflite.ir import Model, Subgraph, Tensor


def tensor_attrs(t: Tensor) -> dict:
    return {
        "tensor": t.index,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "quantization": t.quantization.to_dict() if t.quantized else None,
    }


def build_graph(sg: Subgraph) -> nx.DiGraph:
    g = nx.DiGraph(name=sg.name, subgraph=sg.index)
    producer: dict[int, str] = {}
    for t in sg.inputs:
        node = f"input:{t}"
        g.add_node(node, kind="input", **tensor_attrs(sg.tensors[t]))
        producer[t] = node
    for op in sg.operators:
        node = f"op:{op.index}"
        g.add_node(node, kind="op", index=op.index, op=op.key, version=op.version, options=op.options)
        for t in op.outputs:
            if t >= 0:
                producer[t] = node

    def connect(src: str, dst: str, t: int) -> None:
        if g.has_edge(src, dst):
            g.edges[src, dst]["tensors"].append(t)
        else:
            g.add_edge(src, dst, tensors=[t], **tensor_attrs(sg.tensors[t]))

    for op in sg.operators:
        for t in op.inputs:
            if t < 0:
                continue
            if t not in producer:
                tensor = sg.tensors[t]
                node = f"const:{t}" if tensor.is_constant else f"input:{t}"
                kind = "const" if tensor.is_constant else ("variable" if tensor.is_variable else "input")
                g.add_node(node, kind=kind, **tensor_attrs(tensor))
                producer[t] = node
            connect(producer[t], f"op:{op.index}", t)
    for t in sg.outputs:
        node = f"output:{t}"
        g.add_node(node, kind="output", **tensor_attrs(sg.tensors[t]))
        if t in producer:
            connect(producer[t], node, t)
    return g


def op_order(g: nx.DiGraph) -> list[int]:
    """Operator indices in a topological order (ties broken by the file's execution order)."""
    try:
        order = list(nx.lexicographical_topological_sort(g, key=lambda n: (n.split(":")[0] != "op", _num(n))))
    except nx.NetworkXUnfeasible:  # an op needs, through others, its own output: a corrupt file
        from tfl_rebuild.errors import ModelFormatError

        cycle = " -> ".join(u for u, _ in nx.find_cycle(g)[:8])
        raise ModelFormatError(
            f"subgraph {g.graph.get('subgraph', 0)}: operators form a cycle ({cycle})"
        ) from None
    return [g.nodes[n]["index"] for n in order if g.nodes[n]["kind"] == "op"]


def _num(node: str) -> int:
    return int(node.split(":", 1)[1])


# Control characters XML 1.0 cannot hold (and \r, which XML parsers turn into \n; DOT tools balk too).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")


def _text(s: str) -> str:
    """A model's string with control characters written as visible \\xNN escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _flat(attrs: dict) -> dict:
    """GraphML/DOT take scalars only: lists and dicts become JSON text."""
    return {
        k: _text(v) if isinstance(v, str) else v if isinstance(v, (int, float, bool)) else json.dumps(v)
        for k, v in attrs.items()
    }


def _dot(g: nx.DiGraph) -> str:
    def q(s: str) -> str:
        return '"' + _text(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [f"digraph {q(g.graph.get('name') or 'model')} {{", "  node [shape=box, fontname=Helvetica];"]
    for n, a in g.nodes(data=True):
        label = a["op"] if a["kind"] == "op" else f"{a['kind']}: {a['name']}\n{a['shape']}"
        style = "" if a["kind"] == "op" else ", style=rounded"
        lines.append(f"  {q(n)} [label={q(label)}{style}];")
    for u, v, a in g.edges(data=True):
        lines.append(f"  {q(u)} -> {q(v)} [label={q(str(a['shape']))}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(model: Model, path: str | os.PathLike, subgraph: int = 0) -> None:
    """Write one subgraph as .graphml, .json (node-link) or .dot, chosen by extension."""
    from tfl_rebuild.errors import InputError

    target = Path(path)
    ext = target.suffix.lower()
    if ext not in (".graphml", ".json", ".dot"):
        raise InputError(f"{target}: graph format must be .graphml, .json or .dot")
    g = build_graph(model.subgraphs[subgraph])
    if ext == ".json":
        text = json.dumps(nx.node_link_data(g, edges="edges"), indent=1)
    elif ext == ".dot":
        text = _dot(g)
    else:
        flat = nx.DiGraph(**_flat(g.graph))
        flat.add_nodes_from((n, _flat(a)) for n, a in g.nodes(data=True))
        flat.add_edges_from((u, v, _flat(a)) for u, v, a in g.edges(data=True))
        text = "\n".join(nx.generate_graphml(flat)) + "\n"
    with atomic_output(target, "w") as f:
        f.write(text)
