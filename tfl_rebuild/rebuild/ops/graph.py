"""Ops no converter takes: the passes rewrite them, keep them for their effects, or refuse them.

QUANTIZE / DEQUANTIZE / DENSIFY become constants or aliases in `passes.pipeline.prepare`; CALL and
the StableHLO control flow act beyond their outputs; ops keeping state between runs are refused
here (resource variables of subgraph 0 are first made inputs and outputs by `runtime.views`).
"""

from __future__ import annotations

from tfl_rebuild.errors import UnsupportedOpError
from tfl_rebuild.rebuild.ops.registry import Trait, declare, has_trait, ops_text, refuse
from tfl_rebuild.tflite.ir import Operator, Subgraph

declare("QUANTIZE", Trait.ELEMENTWISE)
declare("DEQUANTIZE", Trait.ELEMENTWISE)
for _name in ("CALL", "STABLEHLO_WHILE", "STABLEHLO_CASE"):
    declare(_name, Trait.SIDE_EFFECTS)


def stateful_error(op: Operator, sg: Subgraph) -> UnsupportedOpError:
    """Every op of the subgraph keeping state, by kind (variables, hash tables, a run-once initializer)."""
    ops = [o for o in sg.operators if has_trait(o, Trait.STATEFUL)]
    kinds = [
        k
        for k, prefix in (
            ("resource variables", ("VAR_", "READ_", "ASSIGN_")),
            ("hash tables", ("HASHTABLE",)),
        )
        if any(o.opcode.startswith(prefix) for o in ops)
    ]
    # Resource variables of subgraph 0 become inputs and outputs (views.state_view); this is the rest:
    # hash tables, and variables the view cannot make explicit (in called subgraphs, read after assigned).
    return UnsupportedOpError(
        f"the model keeps state between runs ({' and '.join(kinds) or 'an initializer run once'}) that the "
        f"rebuild cannot turn into inputs and outputs: {ops_text(ops)}"
    )


_STATE = (
    "keeps state between runs, which a rebuild cannot hold; resource variables of the main subgraph "
    "become extra inputs and outputs instead (the state view)"
)
for _name in ("CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"):
    refuse(_name, _STATE, Trait.STATEFUL, Trait.SIDE_EFFECTS, error=stateful_error)
for _name in ("HASHTABLE", "HASHTABLE_FIND", "HASHTABLE_IMPORT", "HASHTABLE_SIZE"):
    refuse(
        _name,
        "keeps a hash table between runs, which a rebuild cannot hold",
        Trait.STATEFUL,
        error=stateful_error,
    )
