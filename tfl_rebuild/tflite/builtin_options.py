"""The builtin options of an operator (Conv2DOptions, ReshapeOptions ... ~200 tables), decoded
generically through the `tflite` package's generated classes into plain Python values, enum
values by name. Called by `reader.py` with a table position it has checked."""

from __future__ import annotations

import importlib
import re
from functools import cache

from flatbuffers.table import Table

# Options fields whose integer values are schema enums: decoded to their names for readability.
_ENUM_FIELDS = {
    "padding": "Padding",
    "fused_activation_function": "ActivationFunctionType",
    "mode": "MirrorPadMode",
    "weights_format": "FullyConnectedOptionsWeightsFormat",
    "kernel_type": "LSTMKernelType",
    "combiner": "CombinerType",
    "type": "LSHProjectionType",
    "in_data_type": "TensorType",
    "out_data_type": "TensorType",
    "output_type": "TensorType",
    "idx_out_type": "TensorType",
    "quantized_bias_type": "TensorType",
}


@cache
def enum_names(enum_class: str) -> dict[int, str]:
    cls = getattr(importlib.import_module(f"tflite.{enum_class}"), enum_class)
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_name(code: int) -> str:
    return enum_names("BuiltinOperator").get(code, f"BUILTIN_{code}")


def _snake(name: str) -> str:
    """FlatBuffers accessor name -> schema field name: DilationHFactor -> dilation_h_factor."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


@cache
def _options_fields(class_name: str):
    """(snake name, accessor, is_vector) for each field of a generated options table class."""
    try:
        cls = getattr(importlib.import_module(f"tflite.{class_name}"), class_name)
    except (ImportError, AttributeError):
        return None, ()
    methods = {k for k, v in vars(cls).items() if callable(v) and not k.startswith("_")}
    fields = []
    for m in sorted(methods):
        if m == "Init" or m.startswith("GetRootAs") or m.endswith("BufferHasIdentifier"):
            continue
        if any(
            m.endswith(suffix) and m.removesuffix(suffix) in methods
            for suffix in ("Length", "IsNone", "AsNumpy")
        ):
            continue  # helpers of a vector field, not fields
        fields.append((_snake(m), m, f"{m}Length" in methods))
    return cls, tuple(fields)


class _Table(Table):
    """flatbuffers' Table as the generated classes read it, with the vtable the reader has read
    and checked, and without flatbuffers' type checks on every read (3x the cost of the read;
    every position here is a sum of unsigned offsets, never negative)."""

    __slots__ = ("slots",)

    def __init__(self, buf, pos: int, slots: tuple[int, ...]):
        self.Bytes, self.Pos, self.slots = buf, pos, slots

    def Offset(self, vtableOffset: int) -> int:  # noqa: N802, N803 (flatbuffers' names)
        i = (vtableOffset - 4) >> 1
        return self.slots[i] if i < len(self.slots) else 0

    def Get(self, flags, off: int):  # noqa: N802
        return flags.py_type(flags.packer_type.unpack_from(self.Bytes, off)[0])


def decode_options(class_name: str, buf, pos: int, slots: tuple[int, ...], fail) -> dict:
    """{schema field name: plain value} of the options table `class_name` at `pos` of `buf`, whose
    vtable holds `slots`; {} for a table this `tflite` package does not know. `fail(what)` makes
    the error to raise."""
    cls, fields = _options_fields(class_name)
    if cls is None:
        return {}
    obj = cls()
    obj._tab = _Table(buf, pos, slots)
    out = {}
    for snake, method, is_vector in fields:
        if is_vector:
            n = getattr(obj, f"{method}Length")()
            if n < 0 or n * 4 > len(buf):
                raise fail(f"{snake} claims {n} elements, more than the {len(buf)}-byte file holds")
            value = [_plain(getattr(obj, method)(j)) for j in range(n)]
        else:
            try:
                value = _plain(getattr(obj, method)())
            except TypeError:  # nested table/union accessor needing arguments: not decoded
                continue
        if value is None:
            continue
        if snake in _ENUM_FIELDS and isinstance(value, int):
            value = enum_names(_ENUM_FIELDS[snake]).get(value, value)
        out[snake] = value
    return out


def _plain(value):
    """Option values as plain Python: bytes -> str, numpy scalars -> int/float/bool."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, int, float, str)):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # without importing numpy
        return value.item()
    return None
