"""The op registry: one converter per (op, version) or custom code, each returning LayerSpecs,
and the facts about ops that passes, constant folding and verification ask for instead of keeping
op lists of their own: traits (`has_trait`), refusals with their reason (`refuse`), numpy
evaluators for folding (`folds`) and hybrid kernels' quantized input slot (`hybrid_input`).

Converters return data, never source text, and never pick names: `codegen/` does both.
"""

from __future__ import annotations

import enum
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
    inputs: what the layer is called on; `call_list` passes them as one list (Add, Concatenate);
    `call_kwargs` are keywords of the call (MultiHeadAttention's use_causal_mask=True).
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
    name_tensor: int | None = None  # the tensor whose name names a layer with no outputs (a stack's)
    call_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the call itself


@dataclass(frozen=True)
class InnerLayer:
    """A constructor argument that is a keras.layers layer (Bidirectional's), plain kwargs only."""

    layer: str
    kwargs: dict[str, Any]


@dataclass
class ConvertContext:
    """What a converter may ask about the subgraph (prepared by `passes.pipeline.prepare`)."""

    subgraph: Subgraph
    constants: dict[int, np.ndarray]  # float/int values of constant tensors (folded, dequantized)
    alias: dict[int, int] = field(default_factory=dict)  # tensor -> tensor it equals (removed ops)
    # Shapes passes.fold inferred where the file only holds a placeholder (dynamic-shape exports).
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    # Every subgraph of the model, for passes that read what a WHILE calls (passes.lift_rnn).
    subgraphs: tuple[Subgraph, ...] = ()

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


class Trait(enum.StrEnum):
    """Facts about an op that passes, constant folding and verification ask for (`has_trait`)."""

    ELEMENTWISE = "elementwise"  # each output element from the inputs' elements at its (broadcast) position
    LAST_AXIS = "last-axis"  # computes along the last axis alone; the output is shaped as the input
    SHAPE_ONLY = "shape-only"  # the same values in the same order under a new shape
    MOVES_VALUES = "moves-values"  # each output element is an input element (transpose, gather, slice)
    BATCH_PRESERVING = "batch-preserving"  # the output keeps the batch axis of the first data input
    COMPLEX_OK = "complex-ok"  # may read a complex64 tensor (held as a trailing (re, im) axis)
    SIDE_EFFECTS = "side-effects"  # may act beyond its outputs (state, calls): never dropped as unused
    STATEFUL = "stateful"  # keeps state between runs (resource variables, hash tables, run-once init)
    KERAS_ACTIVATION = "keras-activation"  # its layer takes any Keras activation (activation=)


OpKey = str | tuple[str, str]  # a builtin op's name, or ("CUSTOM", custom code)
TRAITS: dict[OpKey, frozenset[Trait]] = {}
HYBRID_INPUT: dict[OpKey, int] = {}  # op -> the input slot a hybrid kernel quantizes to int8 at run time
BIAS_INPUT: dict[OpKey, int] = {}  # op -> the input slot of its layer's bias (passes.lift moves an ADD there)


@dataclass(frozen=True)
class Refusal:
    """Why no rebuild of an op can exist. `reason` is one line for the README and `check`; in the
    error, {output} and {input} stand for the op's first output and input tensor names."""

    reason: str
    error: Callable[[Operator, Subgraph], UnsupportedOpError] | None = None  # a fuller error than `reason`


REFUSED: dict[str, Refusal] = {}

Fold = Callable[[Operator, list[np.ndarray]], Any]


@dataclass(frozen=True)
class Folder:
    """A numpy evaluation of an op from known input values (None: not this case); `multi`: it
    returns the list of all outputs (SPLIT, UNPACK) rather than the single output."""

    fn: Fold
    multi: bool = False


FOLDERS: dict[str, Folder] = {}

# Lifted ops: what `passes.lift` makes of a converter's decomposition of one Keras layer. Their opcode
# is the Keras class name ("LayerNormalization"), never a TFLite op; they are not TFLite's supported ops.
LIFTED: dict[str, Converter] = {}


def _add_traits(
    name: OpKey, traits: Iterable[Trait], hybrid_input: int | None = None, bias_input: int | None = None
) -> None:
    TRAITS[name] = TRAITS.get(name, frozenset()) | frozenset(Trait(t) for t in traits)
    if hybrid_input is not None:
        HYBRID_INPUT[name] = hybrid_input
    if bias_input is not None:
        BIAS_INPUT[name] = bias_input


def converter(
    op_name: str,
    versions: Iterable[int] = range(1, 13),
    note: str = "",
    traits: Iterable[Trait] = (),
    hybrid_input: int | None = None,
    bias_input: int | None = None,
) -> Callable[[Converter], Converter]:
    """Register a builtin op converter for the given versions; registering twice is a bug.

    traits: what passes may assume about the op; hybrid_input: the input slot a hybrid (dynamic-range)
    kernel quantizes on the fly, which layer-local verification reproduces; bias_input: the slot of
    the layer's bias (a separate ADD of a constant may move there)."""

    def register(fn: Converter) -> Converter:
        if op_name in REFUSED:
            raise RuntimeError(f"{op_name} is refused; it cannot also have a converter")
        for v in versions:
            key = (op_name, v)
            if key in REGISTRY:
                raise RuntimeError(f"converter for {op_name} v{v} registered twice")
            REGISTRY[key] = fn
        if note:
            NOTES[op_name] = note
        _add_traits(op_name, traits, hybrid_input, bias_input)
        return fn

    return register


def custom_converter(
    custom_code: str, note: str = "", traits: Iterable[Trait] = ()
) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        key = ("CUSTOM", custom_code)
        if key in REGISTRY:
            raise RuntimeError(f"converter for custom op {custom_code} registered twice")
        REGISTRY[key] = fn
        if note:
            NOTES[custom_code] = note
        _add_traits(key, traits)
        return fn

    return register


def lifted(
    layer: str, traits: Iterable[Trait] = (), bias_input: int | None = None
) -> Callable[[Converter], Converter]:
    """Register the converter of a lifted op (opcode `layer`, a Keras class name; see passes.lift)."""

    def register(fn: Converter) -> Converter:
        if layer in LIFTED or not layer[:1].isupper() or layer.isupper():
            raise RuntimeError(f"lifted op {layer!r} registered twice, or not a Keras class name")
        LIFTED[layer] = fn
        if traits or bias_input is not None:
            _add_traits(layer, traits, bias_input=bias_input)
        return fn

    return register


def declare(op_name: str, *traits: Trait) -> None:
    """The traits of an op no converter takes (the passes rewrite it, or keep it for its effects)."""
    _add_traits(op_name, traits)


def refuse(
    op_name: str,
    reason: str,
    *traits: Trait,
    error: Callable[[Operator, Subgraph], UnsupportedOpError] | None = None,
) -> None:
    """Register an op no rebuild can exist for, with the reason `lookup`, `never_rebuilt`, `check`
    and the README give. An op with a folder is refused only when folding left it in the graph."""
    if op_name in REFUSED or any(k[0] == op_name for k in REGISTRY):
        raise RuntimeError(f"{op_name} already has a converter or a refusal")
    REFUSED[op_name] = Refusal(reason, error)
    _add_traits(op_name, traits)


def folds(*op_names: str, multi: bool = False) -> Callable[[Fold], Fold]:
    """Register the numpy evaluation constant folding uses for these ops (`passes.fold`)."""

    def register(fn: Fold) -> Fold:
        for name in op_names:
            if name in FOLDERS:
                raise RuntimeError(f"folder for {name} registered twice")
            FOLDERS[name] = Folder(fn, multi)
        return fn

    return register


def _name(op: Operator | str) -> OpKey:
    """Builtin ops by name; custom ops apart, so that a custom code never passes for a builtin."""
    if isinstance(op, str):
        return op
    return ("CUSTOM", op.custom_code or "") if op.opcode == "CUSTOM" else op.opcode


def traits(op: Operator | str) -> frozenset[Trait]:
    """The traits registered for an op (an Operator, or a builtin op's name)."""
    return TRAITS.get(_name(op), frozenset())


def has_trait(op: Operator | str, trait: Trait) -> bool:
    return trait in traits(op)


def ops_with(trait: Trait) -> frozenset[str]:
    """Every op registered with `trait`, by name or custom code (for messages and tests)."""
    return frozenset(name if isinstance(name, str) else name[1] for name, ts in TRAITS.items() if trait in ts)


def hybrid_input(op: Operator | str) -> int | None:
    """The input slot a hybrid kernel of this op quantizes to int8 at run time, or None."""
    return HYBRID_INPUT.get(_name(op))


def bias_input(op: Operator | str) -> int | None:
    """The input slot of the op's layer's bias, or None (it takes none)."""
    return BIAS_INPUT.get(_name(op))


def folder(op: Operator | str) -> Folder | None:
    return FOLDERS.get(_name(op))


def refusal(op: Operator | str) -> Refusal | None:
    return REFUSED.get(_name(op))


def refused_ops() -> list[tuple[str, str]]:
    """(op, reason) rows for the README, straight from the registry."""
    return sorted(
        (name, r.reason.format(output="the output", input="the input")) for name, r in REFUSED.items()
    )


def _refusal_error(op: Operator, sg: Subgraph, r: Refusal) -> UnsupportedOpError:
    if r.error is not None:
        return r.error(op, sg)

    def name(i: int) -> str:
        return repr(sg.tensors[i].name) if 0 <= i < len(sg.tensors) else "?"

    output = name(op.outputs[0]) if op.outputs else "?"
    input_ = name(op.inputs[0]) if op.inputs else "?"
    return UnsupportedOpError(f"{op.key} op {op.index}: {r.reason.format(output=output, input=input_)}")


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


def ops_text(ops: list[Operator]) -> str:
    """'VAR_HANDLE (op 1), READ_VARIABLE (ops 2, 5)': each op type once, in order of appearance."""
    at: dict[str, list[int]] = {}
    for o in ops:
        at.setdefault(o.key, []).append(o.index)
    return ", ".join(f"{k} (op{'s' if len(v) > 1 else ''} {', '.join(map(str, v))})" for k, v in at.items())


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
        f"string tensors (e.g. {names[0]!r}) have no Keras or Core ML form; ops on strings: {ops_text(touching)}"
    )


def _flex(op: Operator) -> bool:
    return op.opcode == "CUSTOM" and (op.custom_code or "").startswith("Flex")


def _on_strings(op: Operator, sg: Subgraph) -> bool:
    return any(
        0 <= i < len(sg.tensors) and sg.tensors[i].dtype == "string" for i in (*op.inputs, *op.outputs)
    )


def never_rebuilt(op: Operator, sg: Subgraph) -> UnsupportedOpError | None:
    """Why no rebuild of this op can exist (refused ops, select-TF ops, strings), or None. A refused
    op with a folder (WHERE, RANGE) is left to `lookup`: folding may still remove it."""
    key = ("CUSTOM", op.custom_code) if op.opcode == "CUSTOM" else (op.opcode, op.version)
    if key in REGISTRY:
        return None
    if _flex(op):
        return _flex_error(sg)
    r = refusal(op)
    if r is not None and folder(op) is None:
        return _refusal_error(op, sg, r)
    if _on_strings(op, sg):
        return _string_error(sg, op)
    return None


def lookup(op: Operator, sg: Subgraph) -> Converter:
    """The converter for this op, or the UnsupportedOpError that says why there is none."""
    if op.opcode in LIFTED:
        return LIFTED[op.opcode]
    key = ("CUSTOM", op.custom_code) if op.opcode == "CUSTOM" else (op.opcode, op.version)
    fn = REGISTRY.get(key)
    refused = never_rebuilt(op, sg)
    if refused is not None:
        raise refused
    r = refusal(op)
    if r is not None:  # an op folding could have removed, left in the graph
        raise _refusal_error(op, sg, r)
    if fn is not None and _on_strings(op, sg):
        raise _string_error(sg, op)
    if fn is None:
        if op.opcode == "CUSTOM" and op.custom_code == DETECTION_POSTPROCESS:
            raise detection_postprocess_error(op, sg)
        out = sg.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else "?"
        what = f"custom op {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
        raise UnsupportedOpError(f"no converter for {what} (op {op.index}, output {out!r})")
    if not has_trait(op, Trait.COMPLEX_OK):
        complex_in = [
            sg.tensors[i].name
            for i in op.inputs
            if 0 <= i < len(sg.tensors) and sg.tensors[i].dtype.startswith("complex")
        ]
        if complex_in:
            raise UnsupportedOpError(
                f"{op.key} op {op.index} on complex tensor {complex_in[0]!r}: only "
                f"{', '.join(sorted(ops_with(Trait.COMPLEX_OK)))} are rebuilt on complex values"
            )
    return _guarded(fn, op, sg)


# What a converter raises when an op's inputs or attributes are not what the op's schema promises
# (a mutated model: a rank-1 weight, a missing input, a shape that cannot broadcast).
MISFIT = (IndexError, ValueError, KeyError, TypeError)
_MISFIT = MISFIT


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
