"""What a model may ask of a rebuild (and of a run), checked before any work: one line, exit 2.

Past these the work would not end well: a dim of 2**31 - 1 asks for 8 GiB per tensor (the OOM
killer), a rank over numpy's 64 or an element count past int64 is a traceback deep in numpy, a
chain of ~1,000 ops exceeds Python's default recursion limit while Keras builds the functional
model (the loader raises it to RECURSION_LIMIT, enough for MAX_CHAIN), 900 nested WHILE calls
exceed it in the emitter, and 300,000 ops exhaust memory in `ast.parse` of the
generated module. Real models stay far inside (the corpus: at most 712 ops, chains of 152).
"""

from __future__ import annotations

import math

from tfl_rebuild.errors import InputError
from tfl_rebuild.tflite.ir import Model, Subgraph

MAX_RANK = 32
MAX_ELEMENTS = 2**31 - 1  # per computed tensor: what TFLite's kernels index with int
MAX_TENSOR_BYTES = 4 << 30  # per tensor that a run allocates (not constants, which are in the file)
MAX_OPS = 100_000  # in all subgraphs together
MAX_CHAIN = 10_000  # ops one after another in a subgraph (Keras walks the graph recursively)
# Python's recursion limit while a generated model is built and run: Keras recurses about once per
# layer along a chain (20,000 Dense / ReLU layers in a row built and ran at 200,000, on the main
# thread and in pure Python frames, which need no C stack in CPython 3.11).
RECURSION_LIMIT = 20 * MAX_CHAIN
MAX_CALL_DEPTH = 64  # control-flow calls nested in one another (WHILE in WHILE in ...)


class LimitError(InputError):
    """The model is past one of the limits above."""


def check_sizes(model: Model) -> None:
    """Every tensor's rank, element count and (for a computed tensor) bytes within the limits."""
    for k, sg in enumerate(model.subgraphs):
        for t in sg.tensors:
            where = f"tensor {t.name!r} (subgraph {k})"
            shape = [int(d) for d in t.shape]
            if len(shape) > MAX_RANK:
                raise LimitError(f"{where} has rank {len(shape)}; at most {MAX_RANK} is supported")
            n = math.prod(max(d, 1) for d in shape)
            if n > MAX_ELEMENTS and (t.data is None or n >= 2**63):  # a constant is in the file already
                raise LimitError(
                    f"{where} has shape {shape}: {n} elements, over the limit of {MAX_ELEMENTS} (2**31 - 1)"
                )
            size = n * _itemsize(t.dtype)
            if t.data is None and size > MAX_TENSOR_BYTES:
                raise LimitError(
                    f"{where} has shape {shape}: {size / 2**30:.1f} GiB of {t.dtype}, over the limit of "
                    f"{MAX_TENSOR_BYTES >> 30} GiB for a tensor computed at run time"
                )


def check_rebuildable(model: Model) -> None:
    """Sizes, op count, chain length and control-flow nesting within what the rebuild handles."""
    check_sizes(model)
    ops = sum(len(sg.operators) for sg in model.subgraphs)
    if ops > MAX_OPS:
        raise LimitError(f"the model has {ops} ops; the Keras rebuild takes at most {MAX_OPS}")
    for k, sg in enumerate(model.subgraphs):
        chain = _longest_chain(sg)
        if chain > MAX_CHAIN:
            raise LimitError(
                f"subgraph {k} has a chain of {chain} ops one after another; the Keras rebuild takes "
                f"at most {MAX_CHAIN}"
            )
    depth = _call_depth(model)
    if depth > MAX_CALL_DEPTH:
        raise LimitError(
            f"control flow nests subgraph calls more than {MAX_CALL_DEPTH} deep; the Keras rebuild takes at "
            f"most {MAX_CALL_DEPTH}"
        )


def _itemsize(dtype: str) -> int:
    import numpy as np

    try:
        return np.dtype(dtype).itemsize or 1
    except TypeError:
        return {"int4": 1, "bfloat16": 2}.get(dtype, 8)  # strings, resources, variants: a pointer at least


def _longest_chain(sg: Subgraph) -> int:
    """Ops on the longest producer -> consumer path (ops are stored in execution order)."""
    depth: dict[int, int] = {}
    best = 0
    for op in sg.operators:
        d = 1 + max((depth.get(i, 0) for i in op.inputs if i >= 0), default=0)
        for o in op.outputs:
            depth[o] = d
        best = max(best, d)
    return best


def _callees(model: Model, index: int) -> set[int]:
    found = set()
    for op in model.subgraphs[index].operators:
        for key, v in op.options.items():
            if (key.endswith("subgraph_index") or key == "subgraph") and isinstance(v, int):
                if 0 <= v < len(model.subgraphs):
                    found.add(v)
    return found


def _call_depth(model: Model) -> int:
    """The deepest nesting of control-flow calls from subgraph 0 (iteratively; a cycle counts once)."""
    if not model.subgraphs:
        return 0
    depth = {0: 0}
    todo = [0]
    deepest = 0
    while todo:
        i = todo.pop()
        for c in _callees(model, i):
            if depth.get(c, -1) < depth[i] + 1 and depth[i] + 1 <= MAX_CALL_DEPTH + 1 and c != 0:
                depth[c] = depth[i] + 1
                deepest = max(deepest, depth[c])
                todo.append(c)
    return deepest


def deep_recursion() -> None:
    """Raise Python's recursion limit (never lower it) so Keras can build and run MAX_CHAIN layers."""
    import sys

    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
