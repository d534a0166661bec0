"""Which subgraphs an op calls, and the call graph's one fatal fault: a cycle.

The runtime checks that these indices exist, not that the calls end: a WHILE body that runs itself
(directly or through other subgraphs) recurses until the process crashes. The reader refuses such
a model before anything runs it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tfl_rebuild.tflite.ir import Operator, Subgraph


def called_subgraphs(op: Operator) -> list[int]:
    """Subgraph indices an op's own options table names (`*_subgraph_index` fields, CALL's `subgraph`).

    Only the table that belongs to the op counts (WHILE's WhileOptions, STABLEHLO_COMPOSITE's
    StableHLOCompositeOptions ...: the op name without underscores + "Options"); the runtime reads
    no other, so a WhileOptions table on an ADD calls nothing."""
    if (op.options_type or "").lower() != op.opcode.replace("_", "").lower() + "options":
        return []
    out = []
    for key, v in op.options.items():
        if key.endswith("subgraph_index") or key == "subgraph" or key.endswith("subgraph_indices"):
            out.extend(x for x in (v if isinstance(v, list) else [v]) if type(x) is int)
    return out


def call_faults(subgraphs: Sequence[Subgraph]) -> Iterator[tuple[str, str]]:
    """(where, what) of the first call cycle; nothing if none. A call to a subgraph that does not
    exist is no cycle: the runtime refuses it when it prepares the op, and `inspect` shows it."""
    calls: dict[int, list[tuple[int, Operator]]] = {}
    for sg in subgraphs:
        out = calls.setdefault(sg.index, [])
        for op in sg.operators:
            out.extend((c, op) for c in called_subgraphs(op) if 0 <= c < len(subgraphs))
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
