"""Which subgraphs an op calls, and the call graph's faults: a missing subgraph, or a cycle.

The runtime follows these indices without checks of its own: a WHILE body that runs itself
(directly or through other subgraphs) recurses until the process crashes. The reader refuses such
a model before anything runs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tfl_rebuild.tflite.ir import Operator, Subgraph

# Ops whose options name subgraphs the runtime runs; other ops ignore such fields.
CALLING_OPS = frozenset(
    [
        "WHILE",
        "IF",
        "CALL",
        "CALL_ONCE",
        "STABLEHLO_COMPOSITE",
        "STABLEHLO_WHILE",
        "STABLEHLO_REDUCE",
        "STABLEHLO_REDUCE_WINDOW",
        "STABLEHLO_SCATTER",
        "STABLEHLO_SORT",
    ]
)


def called_subgraphs(op: Operator) -> list[int]:
    """Subgraph indices a calling op's options name (`*_subgraph_index` fields, CALL's `subgraph`)."""
    if op.opcode not in CALLING_OPS:
        return []
    out = []
    for key, v in op.options.items():
        if key.endswith("subgraph_index") or key == "subgraph" or key.endswith("subgraph_indices"):
            out.extend(x for x in (v if isinstance(v, list) else [v]) if type(x) is int)
    return out


def call_faults(subgraphs: Sequence[Subgraph]) -> Iterator[tuple[str, str]]:
    """(where, what) of the first call to a missing subgraph or the first call cycle; nothing if none."""
    calls: dict[int, list[tuple[int, Operator]]] = {}
    for sg in subgraphs:
        out = calls.setdefault(sg.index, [])
        for op in sg.operators:
            for callee in called_subgraphs(op):
                if not 0 <= callee < len(subgraphs):
                    yield (
                        f"subgraph {sg.index} operator {op.index}",
                        f"{op.opcode} calls subgraph {callee}, which does not exist "
                        f"(the model has {len(subgraphs)})",
                    )
                    return
                out.append((callee, op))
    # Depth-first, without recursion: 0 not seen, 1 on the current path, 2 done.
    state = dict.fromkeys(calls, 0)
    for root in calls:
        if state[root]:
            continue
        state[root] = 1
        path = [[root, 0]]  # (subgraph, next of its calls to follow)
        while path:
            s, k = path[-1]
            if k == len(calls[s]):
                state[s] = 2
                path.pop()
                continue
            path[-1][1] += 1
            callee, op = calls[s][k]
            if state[callee] == 1:
                on_path = [p for p, _ in path]
                route = " -> ".join(map(str, [*on_path[on_path.index(callee) :], callee]))
                yield (
                    f"subgraph {s} operator {op.index}",
                    f"{op.opcode} calls subgraph {callee}, which leads back to itself "
                    f"(subgraph calls {route}): a call cycle never ends",
                )
                return
            if state[callee] == 0:
                state[callee] = 1
                path.append([callee, 0])
