"""The op registry: one converter per (op, version) or custom code, each returning LayerSpecs.

Converters return data, never source text, and never pick names: `codegen/` does both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from tfl_rebuild.errors import TflRebuildError, UnsupportedOpError
from tfl_rebuild.tflite.ir import Operator, Subgraph, Tensor

Ref = Union[int, "LayerSpec"]  # a TFLite tensor id, or the output of an earlier spec of the same op


@dataclass(eq=False)
class LayerSpec:
    """One Keras layer call.

    layer: a keras.layers class name, or (custom=True) a class defined in the generated module.
    kwargs: constructor arguments, plain Python values only.
    inputs: what the layer is called on; `call_list` passes them as one list (Add, Concatenate).
    outputs: the TFLite tensors this call produces (empty for a helper step inside one op).
    weights: (name, array) pairs in `set_weights` order.
    """

    layer: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[Ref, ...] = ()
    outputs: tuple[int, ...] = ()
    weights: tuple[tuple[str, np.ndarray], ...] = ()
    custom: bool = False
    call_list: bool = False


@dataclass
class ConvertContext:
    """What a converter may ask about the subgraph (prepared by `passes.py`)."""

    subgraph: Subgraph
    constants: dict[int, np.ndarray]  # float/int values of constant tensors (folded, dequantized)
    alias: dict[int, int] = field(default_factory=dict)  # tensor -> tensor it equals (removed ops)
    # Shapes passes.py inferred where the file only holds a placeholder (dynamic-shape exports).
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)

    def tensor(self, i: int) -> Tensor:
        return self.subgraph.tensors[i]

    def resolve(self, i: int) -> int:
        while i in self.alias:
            i = self.alias[i]
        return i

    def is_const(self, i: int) -> bool:
        return i >= 0 and self.resolve(i) in self.constants

    def const(self, i: int) -> np.ndarray:
        i = self.resolve(i)
        if i not in self.constants:
            raise ConversionError(f"tensor {self.tensor(i).name!r} must be a constant here")
        return self.constants[i]

    def shape(self, i: int) -> tuple[int, ...]:
        i = self.resolve(i)
        return self.shapes[i] if i in self.shapes else tuple(self.tensor(i).shape)

    def rank(self, i: int) -> int:
        return len(self.shape(i))


class ConversionError(TflRebuildError):
    """A supported op whose particular attributes or inputs we cannot rebuild."""


Converter = Callable[[Operator, ConvertContext], "LayerSpec | list[LayerSpec]"]
REGISTRY: dict[tuple[str, int] | tuple[str, str], Converter] = {}
NOTES: dict[str, str] = {}


def converter(
    op_name: str, versions: Iterable[int] = range(1, 13), note: str = ""
) -> Callable[[Converter], Converter]:
    """Register a builtin op converter for the given versions; registering twice is a bug."""

    def register(fn: Converter) -> Converter:
        for v in versions:
            key = (op_name, v)
            if key in REGISTRY:
                raise RuntimeError(f"converter for {op_name} v{v} registered twice")
            REGISTRY[key] = fn
        if note:
            NOTES[op_name] = note
        return fn

    return register


def custom_converter(custom_code: str, note: str = "") -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        key = ("CUSTOM", custom_code)
        if key in REGISTRY:
            raise RuntimeError(f"converter for custom op {custom_code} registered twice")
        REGISTRY[key] = fn
        if note:
            NOTES[custom_code] = note
        return fn

    return register


# Ops that may read a complex64 tensor (held as a trailing (re, im) axis; see spectral.py).
COMPLEX_INPUTS_OK = frozenset(["COMPLEX_ABS", "REAL", "IMAG", "CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"])
DETECTION_POSTPROCESS = "TFLite_Detection_PostProcess"


def _tensor_text(sg: Subgraph, i: int) -> str:
    if not 0 <= i < len(sg.tensors):
        return "?"
    t = sg.tensors[i]
    return f"{t.name!r} {list(t.shape)}"


def detection_postprocess_error(op: Operator, sg: Subgraph, variant: str = "") -> UnsupportedOpError:
    """What the SSD post-processing op computes and where to cut the model instead."""
    shapes = [list(sg.tensors[o].shape) if 0 <= o < len(sg.tensors) else "?" for o in op.outputs]
    names = ("boxes", "classes", "scores", "num_detections")
    produced = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
    inputs = list(op.inputs) + [-1] * 3
    return UnsupportedOpError(
        f"custom op {DETECTION_POSTPROCESS} (op {op.index}) decodes SSD boxes against anchors and runs "
        f"non-max suppression{f' ({variant})' if variant else ''}, which is not rebuilt; it outputs {produced} (boxes as ymin, xmin, "
        f"ymax, xmax); rebuild the network up to its raw inputs instead: box encodings "
        f"{_tensor_text(sg, inputs[0])}, class scores {_tensor_text(sg, inputs[1])}, anchors "
        f"{_tensor_text(sg, inputs[2])}, and decode them outside the model"
    )


def _flex_error(sg: Subgraph) -> UnsupportedOpError:
    flex = [
        f"{o.custom_code!r} (op {o.index})"
        for o in sg.operators
        if o.opcode == "CUSTOM" and (o.custom_code or "").startswith("Flex")
    ]
    return UnsupportedOpError(
        f"the model uses select TensorFlow ops (Flex), which need TensorFlow's select-ops runtime and have "
        f"no TFLite builtin form to rebuild from: {', '.join(flex)}"
    )


# Ops that keep state between runs (resource variables, hash tables) or run an initializer once.
STATEFUL = (
    "CALL_ONCE",
    "VAR_HANDLE",
    "READ_VARIABLE",
    "ASSIGN_VARIABLE",
    "HASHTABLE",
    "HASHTABLE_FIND",
    "HASHTABLE_IMPORT",
    "HASHTABLE_SIZE",
)


def _ops_text(ops: list[Operator]) -> str:
    """'VAR_HANDLE (op 1), READ_VARIABLE (ops 2, 5)': each op type once, in order of appearance."""
    at: dict[str, list[int]] = {}
    for o in ops:
        at.setdefault(o.key, []).append(o.index)
    return ", ".join(f"{k} (op{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})" for k, v in at.items())


def _stateful_error(sg: Subgraph) -> UnsupportedOpError:
    ops = [o for o in sg.operators if o.opcode in STATEFUL]
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
        f"rebuild cannot turn into inputs and outputs: {_ops_text(ops)}"
    )


def _string_error(sg: Subgraph, op: Operator) -> UnsupportedOpError:
    touching = [
        o
        for o in sg.operators
        if any(0 <= i < len(sg.tensors) and sg.tensors[i].dtype == "string" for i in (*o.inputs, *o.outputs))
    ]
    names = [
        sg.tensors[i].name
        for i in (*op.inputs, *op.outputs)
        if 0 <= i < len(sg.tensors) and sg.tensors[i].dtype == "string"
    ]
    return UnsupportedOpError(
        f"string tensors (e.g. {names[0]!r}) have no Keras or Core ML form; ops on strings: {_ops_text(touching)}"
    )


def never_rebuilt(op: Operator, sg: Subgraph) -> UnsupportedOpError | None:
    """Why no rebuild of this op can exist (state, strings, select-TF ops), or None."""
    key = ("CUSTOM", op.custom_code) if op.opcode == "CUSTOM" else (op.opcode, op.version)
    if key in REGISTRY:
        return None
    if op.opcode == "CUSTOM" and (op.custom_code or "").startswith("Flex"):
        return _flex_error(sg)
    if op.opcode in STATEFUL:
        return _stateful_error(sg)
    if any(0 <= i < len(sg.tensors) and sg.tensors[i].dtype == "string" for i in (*op.inputs, *op.outputs)):
        return _string_error(sg, op)
    return None


def lookup(op: Operator, sg: Subgraph) -> Converter:
    key = ("CUSTOM", op.custom_code) if op.opcode == "CUSTOM" else (op.opcode, op.version)
    fn = REGISTRY.get(key)
    refusal = never_rebuilt(op, sg)
    if refusal is not None:
        raise refusal
    if fn is not None and any(
        0 <= i < len(sg.tensors) and sg.tensors[i].dtype == "string" for i in (*op.inputs, *op.outputs)
    ):
        raise _string_error(sg, op)
    if fn is None:
        if op.opcode == "CUSTOM" and op.custom_code == DETECTION_POSTPROCESS:
            raise detection_postprocess_error(op, sg)
        if op.opcode == "CUSTOM" and (op.custom_code or "").startswith("Flex"):
            raise _flex_error(sg)
        out = sg.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else "?"
        what = f"custom op {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
        raise UnsupportedOpError(f"no converter for {what} (op {op.index}, output {out!r})")
    if op.key not in COMPLEX_INPUTS_OK:
        complex_in = [
            sg.tensors[i].name
            for i in op.inputs
            if 0 <= i < len(sg.tensors) and sg.tensors[i].dtype.startswith("complex")
        ]
        if complex_in:
            raise UnsupportedOpError(
                f"{op.key} op {op.index} on complex tensor {complex_in[0]!r}: only "
                f"{', '.join(sorted(COMPLEX_INPUTS_OK))} are rebuilt on complex values"
            )
    return _guarded(fn, op, sg)


# What a converter raises when an op's inputs or attributes are not what the op's schema promises
# (a mutated model: a rank-1 weight, a missing input, a shape that cannot broadcast).
_MISFIT = (IndexError, ValueError, KeyError, TypeError)


def _guarded(fn: Converter, op: Operator, sg: Subgraph) -> Converter:
    """`fn`, with a misfit of the op's inputs to what the converter expects as a ConversionError that
    names the op, its version and its output tensor (one line, exit 2) instead of a traceback."""

    @functools.wraps(fn)
    def convert(op_: Operator, ctx: ConvertContext):
        try:
            return fn(op_, ctx)
        except _MISFIT as exc:
            what = f"custom op {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
            out = (
                sg.tensors[op.outputs[0]].name if op.outputs and 0 <= op.outputs[0] < len(sg.tensors) else "?"
            )
            detail = str(exc).splitlines()[0] if str(exc).strip() else ""
            raise ConversionError(
                f"{what} (op {op.index}, output {out!r}): its inputs do not fit what the op takes "
                f"({type(exc).__name__}{': ' + detail if detail else ''})"
            ) from exc

    return convert


def supported_ops() -> list[tuple[str, list[int], str]]:
    """(op, versions, note) rows for the README table, straight from the registry."""
    rows: dict[str, list] = {}
    for key in REGISTRY:
        name, v = key
        if name == "CUSTOM":
            rows.setdefault(str(v), [])
        else:
            rows.setdefault(name, []).append(v)
    return [(name, sorted(vs), NOTES.get(name, "")) for name, vs in sorted(rows.items())]
