"""The op registry: one converter per (op, version) or custom code, each returning LayerSpecs.

Converters return data, never source text, and never pick names: `codegen/` does both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

from ..errors import TflRebuildError, UnsupportedOpError
from ..ir import Operator, Subgraph, Tensor

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
        return tuple(self.tensor(self.resolve(i)).shape)

    def rank(self, i: int) -> int:
        return len(self.shape(i))


class ConversionError(TflRebuildError):
    """A supported op whose particular attributes or inputs we cannot rebuild."""


Converter = Callable[[Operator, ConvertContext], "LayerSpec | list[LayerSpec]"]
REGISTRY: dict[tuple[str, int] | tuple[str, str], Converter] = {}
NOTES: dict[str, str] = {}


def converter(op_name: str, versions: Iterable[int] = range(1, 13), note: str = "") -> Callable[[Converter], Converter]:
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


def lookup(op: Operator, sg: Subgraph) -> Converter:
    key = ("CUSTOM", op.custom_code) if op.opcode == "CUSTOM" else (op.opcode, op.version)
    fn = REGISTRY.get(key)
    if fn is None:
        out = sg.tensors[op.outputs[0]].name if op.outputs and op.outputs[0] >= 0 else "?"
        what = f"custom op {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
        raise UnsupportedOpError(f"no converter for {what} (op {op.index}, output {out!r})")
    return fn


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
