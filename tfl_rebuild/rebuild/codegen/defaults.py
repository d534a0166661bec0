"""Constructor defaults, so a generated call writes only the arguments that differ.

Keras layers: a table per class (checked against the installed Keras by tests/rebuild/test_keras_style.py;
codegen itself never imports Keras). Custom layer classes: read from the `__init__` signature in
their template, so the two cannot drift apart.
"""

from __future__ import annotations

import ast
import functools


class SameAs:
    """A default that is another argument's value: pooling strides default to pool_size."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SameAs({self.key!r})"


_CONV = {
    "strides": (1, 1),
    "padding": "valid",
    "data_format": None,
    "dilation_rate": (1, 1),
    "activation": None,
    "use_bias": True,
}
_POOL = {"strides": SameAs("pool_size"), "padding": "valid", "data_format": None}
_GLOBAL_POOL = {"data_format": None, "keepdims": False}

KERAS_DEFAULTS: dict[str, dict[str, object]] = {
    "Activation": {},
    "Add": {},
    "Subtract": {},
    "Multiply": {},
    "Maximum": {},
    "Minimum": {},
    "Average": {},
    "AveragePooling1D": _POOL,
    "AveragePooling2D": _POOL,
    "MaxPooling1D": _POOL,
    "MaxPooling2D": _POOL,
    "AveragePooling3D": _POOL,
    "MaxPooling3D": _POOL,
    "BatchNormalization": {"axis": -1, "momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True},
    "Concatenate": {"axis": -1},
    "Conv1D": {**_CONV, "strides": 1, "dilation_rate": 1, "groups": 1},
    "Conv2D": {**_CONV, "groups": 1},
    "Conv2DTranspose": {**_CONV, "output_padding": None},
    "Conv3D": {**_CONV, "strides": (1, 1, 1), "dilation_rate": (1, 1, 1), "groups": 1},
    "Conv3DTranspose": {**_CONV, "strides": (1, 1, 1), "dilation_rate": (1, 1, 1), "output_padding": None},
    "Cropping2D": {"cropping": ((0, 0), (0, 0)), "data_format": None},
    "Dense": {"activation": None, "use_bias": True},
    "DepthwiseConv2D": {**_CONV, "depth_multiplier": 1},
    "ELU": {"alpha": 1.0},
    "Flatten": {"data_format": None},
    "GlobalAveragePooling1D": _GLOBAL_POOL,
    "GlobalAveragePooling2D": _GLOBAL_POOL,
    "GlobalMaxPooling1D": _GLOBAL_POOL,
    "GlobalMaxPooling2D": _GLOBAL_POOL,
    "GroupNormalization": {"groups": 32, "axis": -1, "epsilon": 0.001, "center": True, "scale": True},
    "LayerNormalization": {"axis": -1, "epsilon": 0.001, "center": True, "scale": True},
    "LeakyReLU": {"negative_slope": 0.3},
    "MultiHeadAttention": {"value_dim": None, "dropout": 0.0, "use_bias": True, "output_shape": None},
    "Permute": {},
    "PReLU": {"shared_axes": None},
    "ReLU": {"max_value": None, "negative_slope": 0.0, "threshold": 0.0},
    "Reshape": {},
    "SeparableConv2D": {**_CONV, "depth_multiplier": 1},
    "Softmax": {"axis": -1},
    "UnitNormalization": {"axis": -1},
    "UpSampling2D": {"size": (2, 2), "data_format": None, "interpolation": "nearest"},
    "ZeroPadding2D": {"padding": (1, 1), "data_format": None},
}


def same_value(a, b) -> bool:
    """Equal as written source would be: lists and tuples alike, but True is not 1 and 1 is not 1.5."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b or (type(a) is type(b) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def is_default(defaults: dict[str, object], key: str, value, kwargs: dict) -> bool:
    if key not in defaults:
        return False
    default = defaults[key]
    if isinstance(default, SameAs):
        return default.key in kwargs and same_value(value, kwargs[default.key])
    return same_value(value, default)


@functools.cache
def signature_defaults(source: str, class_name: str) -> dict[str, object]:
    """The literal defaults of `class_name.__init__` in a template's (rendered) source."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    return _literal_defaults(item.args)
    return {}


def _literal_defaults(args: ast.arguments) -> dict[str, object]:
    out = {}
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    for arg, node in pairs:
        try:
            out[arg.arg] = ast.literal_eval(node)
        except ValueError:  # not a literal: always written
            continue
    return out
