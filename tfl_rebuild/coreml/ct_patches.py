"""Patches to coremltools internals, each working around one upstream bug or limitation.

Every patch is registered in PATCHES with `@patch("<what coremltools gets wrong, and why we care>")`.
`apply()` installs each once per process; convert.py calls it before it looks up TF ops or converts.
A patch whose target coremltools has moved (ImportError, missing attribute) is skipped: the
conversion then reports what it cannot do, as without the patch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Patch:
    name: str
    works_around: str  # the upstream bug or limitation, one line
    install: Callable[[], None]


PATCHES: list[Patch] = []
_applied: set[str] = set()


def patch(works_around: str):
    """Register the decorated function as the installer of one patch."""

    def register(install: Callable[[], None]) -> Callable[[], None]:
        if any(p.name == install.__name__ for p in PATCHES):
            raise ValueError(f"coremltools patch {install.__name__} registered twice")
        PATCHES.append(Patch(install.__name__, works_around, install))
        return install

    return register


def apply() -> None:
    """Install every patch in PATCHES that is not installed yet (in list order)."""
    for p in PATCHES:
        if p.name in _applied:
            continue
        try:
            p.install()
        except ImportError:  # a coremltools that moved what the patch changes: nothing to patch
            pass
        _applied.add(p.name)


def _tf_registry():
    """coremltools' TF op registry, after its TF and TF2 converters registered (ours override them)."""
    importlib.import_module("coremltools.converters.mil.frontend.tensorflow2.ops")
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY, register_tf_op

    return _TF_OPS_REGISTRY, register_tf_op


# --- TF op converters ---------------------------------------------------------------------------


@patch("the TF frontend has no Erfc, which Keras' exact GELU emits (x * erfc(-x / sqrt 2) / 2)")
def tf_erfc() -> None:
    from coremltools.converters.mil import Builder as mb

    registry, register_tf_op = _tf_registry()
    if "Erfc" in registry:
        return

    @register_tf_op
    def Erfc(context, node):  # noqa: N802 (the TF op's name)
        x = context[node.inputs[0]]
        context.add(node.name, mb.sub(x=1.0, y=mb.erf(x=x), name=node.name))


@patch(
    "TF Reciprocal (Grappler's fold of 1 / x) becomes inverse(x, epsilon=1e-4) = 1 / (x + 1e-4): "
    "off by 1e-4 / x; we emit an exact real_div"
)
def tf_reciprocal_exact() -> None:
    from coremltools.converters.mil import Builder as mb

    _, register_tf_op = _tf_registry()

    @register_tf_op(override=True)
    def Reciprocal(context, node):  # noqa: N802
        x = context[node.inputs[0]]
        context.add(node.name, mb.real_div(x=np.float32(1.0), y=x, name=node.name))  # the TF graph is fp32


@patch(
    "TF Cast refuses bool and narrow integer destinations ('Provided destination type uint8 not "
    "supported') though MIL's cast takes bool (BERT's attention mask) and int32 holds every narrow "
    "integer (a uint8 mask output); a narrow one is cast to int32, then saturated from a float and "
    "wrapped from an int, as TFLite's CAST does"
)
def tf_cast_to_bool_and_narrow_ints() -> None:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.tensorflow.ops import Cast as cast_numeric
    from coremltools.converters.mil.mil import types

    _, register_tf_op = _tf_registry()
    narrow = {types.int8: np.int8, types.uint8: np.uint8, types.int16: np.int16, types.uint16: np.uint16}

    @register_tf_op(override=True)
    def Cast(context, node):  # noqa: N802
        to, x = node.attr["DstT"], context[node.inputs[0]]
        if to == types.bool:
            context.add(node.name, mb.cast(x=x, dtype="bool", name=node.name))
            return
        if to not in narrow:
            return cast_numeric(context, node)
        info, name = np.iinfo(narrow[to]), node.name
        wide = mb.cast(x=x, dtype="int32", name=f"{name}_int32")
        if types.is_float(x.dtype):  # saturate (in int32: float16 would round the bounds)
            low = mb.maximum(x=wide, y=np.int32(info.min), name=f"{name}_low")
            context.add(name, mb.minimum(x=low, y=np.int32(info.max), name=name))
        else:  # wrap: ((v - min) mod 2^bits) + min
            span = np.int32(int(info.max) - int(info.min) + 1)
            shifted = mb.sub(x=wide, y=np.int32(info.min), name=f"{name}_shifted")
            wrapped = mb.mod(x=shifted, y=span, name=f"{name}_wrapped")
            context.add(name, mb.add(x=wrapped, y=np.int32(info.min), name=name))


@patch(
    "MIL's gather and gather_nd take no bool data: a Masking layer's mask, read step by step inside "
    "an LSTM's loop, does not convert; we gather it as int32 and cast back"
)
def tf_gather_bool() -> None:
    import copy

    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    registry, register_tf_op = _tf_registry()

    def on_int32(original):
        def convert(context, node):
            x = context[node.inputs[0]]
            if x.dtype != types.bool:
                return original(context, node)
            alias = copy.copy(node)
            alias.name = f"{node.name}_int32"
            alias.inputs = [f"{node.name}_int32_in", *node.inputs[1:]]
            context.add(alias.inputs[0], mb.cast(x=x, dtype="int32", name=alias.inputs[0]))
            original(context, alias)
            context.add(node.name, mb.cast(x=context[alias.name], dtype="bool", name=node.name))

        return convert

    for name in ("GatherV2", "GatherNd"):
        if name in registry:
            convert = on_int32(registry[name])
            convert.__name__ = name  # register_tf_op registers a converter by its function's name
            register_tf_op(convert, override=True)


# --- graph passes and op definitions ------------------------------------------------------------


def _control_flow_rewrite():
    """coremltools' TF2 control-flow rewrite pass, the module (its package re-exports a function of
    the same name)."""
    return importlib.import_module(
        "coremltools.converters.mil.frontend.tensorflow2.tf_graph_pass.rewrite_control_flow_functions"
    )


@patch(
    "TF2 rewrite_control_flow_functions names every get_tuple of a While / If output after the output, "
    "so a second consumer replaces the first: 'Graph is not a DAG!'; we number repeated names"
)
def control_flow_unique_get_tuple() -> None:
    rewrite = _control_flow_rewrite()
    original = getattr(rewrite, "_insert_get_tuple", None)
    if original is None:
        return

    def insert_get_tuple(fn, name, idx):
        unique, k = name, 1
        while unique in fn.graph:
            unique, k = f"{name}_{k}", k + 1
        return original(fn, unique, idx)

    rewrite._insert_get_tuple = insert_get_tuple


@patch(
    "TF2 rewrite_control_flow_functions finds which output of a While a consumer reads from that "
    "consumer's first input naming the While, and rewires every edge to it at once: a While "
    "reading two outputs of another (an LSTM started from another's h and c) gets one of them "
    "twice, or fails ('NoneType' has no attribute 'input'); we give each such edge an Identity "
    "of its own, and rewrite producers first"
)
def control_flow_while_outputs() -> None:
    import graphlib
    from types import SimpleNamespace

    rewrite = _control_flow_rewrite()
    from coremltools.converters.mil.frontend.tensorflow.parsed_tf_node import ParsedTFNode

    original = getattr(rewrite, "_rewrite_while_loop_functions", None)
    if original is None:
        return

    def split_edges(graph: dict) -> None:
        for name, node in list(graph.items()):
            if node.op not in ("StatelessWhile", "While"):
                continue
            for reader in sorted({o for o in node.outputs if node.outputs.count(o) > 1}):
                tf_reader = graph[reader].original_node
                if tf_reader is None:
                    continue
                ports = [i for i in tf_reader.input if i.split(":")[0] == name]
                slots = [k for k, i in enumerate(graph[reader].inputs) if i == name]
                if len(ports) != len(slots):
                    continue
                for port, slot in zip(ports, slots):
                    edge = ParsedTFNode()
                    edge.name = f"{name}/output_{port.split(':')[-1]}_to_{reader}"
                    edge.op, edge.inputs, edge.outputs = "Identity", [name], [reader]
                    edge.original_node = SimpleNamespace(name=edge.name, op="Identity", input=[port])
                    graph[edge.name] = edge
                    graph[reader].inputs[slot] = edge.name
                node.outputs = [o for o in node.outputs if o != reader] + [
                    f"{name}/output_{p.split(':')[-1]}_to_{reader}" for p in ports
                ]

    def rewrite_while_loops(tf_ssa, fn):
        split_edges(fn.graph)
        graph = fn.graph
        deps = {
            n: [i for i in (*node.inputs, *node.control_inputs) if i in graph] for n, node in graph.items()
        }
        try:
            order = list(graphlib.TopologicalSorter(deps).static_order())
        except graphlib.CycleError:  # not a DAG: the original order, and whatever it makes of it
            order = list(graph)
        fn.graph = {n: graph[n] for n in order}
        return original(tf_ssa, fn)

    rewrite._rewrite_while_loop_functions = rewrite_while_loops


@patch(
    "reduce_transposes, moving transpose(v) down to an op that also reads v itself (concat(v, "
    "transpose(v))), transposes every edge of that op from v: it read transpose(v) twice (a wrong "
    "result, no error); each such direct edge reads an identity of v while the pass runs"
)
def reduce_transposes_shared_input() -> None:
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.defs.optimize_repeat_ops import reduce_transposes

    from tfl_rebuild.coreml.mil_eval.core import input_vars

    original = reduce_transposes._reduce_transposes_block

    def split_edges(block) -> list:
        added = []
        for op in list(block.operations):
            if op.op_type != "transpose":
                continue
            v = op.inputs["x"]
            readers = dict.fromkeys(r for r in op.outputs[0].child_ops if v in input_vars(r))
            for reader in readers:  # in program order, once each
                with block:
                    edge = mb.identity(x=v, before_op=reader, name=f"{reader.name}_reads_{v.name}")
                block.replace_uses_of_var_after_op(
                    anchor_op=edge.op, end_op=reader, old_var=v, new_var=edge, no_check_var_types=True
                )
                added.append(edge.op)
        return added

    def reduce_transposes_block(block):
        added = split_edges(block)
        try:
            original(block)
        finally:
            for op in added:  # the pass is done: the identities go, as if never there
                if op.enclosing_block is None or op.outputs[0] in block.outputs:
                    continue
                block.replace_uses_of_var_after_op(
                    anchor_op=op, old_var=op.outputs[0], new_var=op.inputs["x"], no_check_var_types=True
                )
                block.remove_ops([op])

    reduce_transposes._reduce_transposes_block = staticmethod(reduce_transposes_block)


@patch(
    "slice_by_size's constant folding takes size 0 as 'to the end' (MIL reserves -1 for that), so "
    "x[b:b + 0] folds to the rest of x; we fold an empty slice"
)
def slice_by_size_empty() -> None:
    # Seen in a while_loop body, first built with the loop variables' initial values (counter 0): a
    # TensorList write rebuilt as concat(list[:i], item, list[i + 1:]) folded list[:0] to the whole list.
    from coremltools.converters.mil.mil.ops.defs.iOS15.tensor_transformation import slice_by_size
    from coremltools.converters.mil.mil.types.symbolic import any_symbolic, is_symbolic

    def value_inference(self):
        if any_symbolic(self.begin.sym_val) or any_symbolic(self.size.sym_val) or self.x.val is None:
            return None
        slices = []
        for i in range(self.x.rank):
            begin, size = int(self.begin.val[i]), int(self.size.val[i])
            if begin < 0:
                if is_symbolic(self.x.shape[i]):
                    return None
                begin += self.x.shape[i]
            slices.append(slice(begin, None if size == -1 else begin + size))
        return self.x.val[tuple(slices)]

    slice_by_size.value_inference = value_inference
