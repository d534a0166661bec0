"""Constants where a person would put them.

A custom layer's constant operand (`constant_shape` + one "constant" weight, see the OpLayer
template) of at most SMALL finite values is written into the call (`BinaryOp(op="add",
constant=1.0)`) instead of hiding in the weights file; larger ones stay there. A long integer
list argument that is a grid (`a[:, None] * s + arange(k)`) becomes the short exact expression
that makes it instead of thousands of numbers in the source.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.codegen.literals import Code, lit
from tfl_rebuild.rebuild.ops import LayerSpec

SMALL = 8


def inline_small_constant(spec: LayerSpec) -> None:
    """Turn `spec`'s stored constant into a `constant=` literal when it is small (in place: other
    specs of the op refer to this one by identity)."""
    if not spec.custom or "constant_shape" not in spec.kwargs or len(spec.weights) != 1:
        return
    name, value = spec.weights[0]
    arr = np.asarray(value)
    if name != "constant" or arr.size > SMALL or arr.dtype.kind not in "biuf":
        return
    as_f32 = arr.astype(np.float32)  # what the layer's float32 weight held
    if not np.all(np.isfinite(as_f32)) or list(arr.shape) != list(spec.kwargs["constant_shape"]):
        return
    kwargs = {k: v for k, v in spec.kwargs.items() if k != "constant_shape"}
    spec.kwargs = {**kwargs, "constant": as_f32.tolist()}
    spec.weights = ()


# A list kwarg with more values than this is looked at for a short exact expression (an index grid).
LONG = 64


def index_grid(value) -> Code | None:
    """A Python expression equal to `value` when it is an integer grid, else None: a 1-D
    `start + i * step` is `list(range(...))`, a 2-D `start + i * s + j * t` (the frame indices of
    an audio model slicing overlapping windows) a comprehension over two ranges. Leading axes of
    size 1 are kept as brackets. Every number in it is written by lit()."""
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged
        return None
    if arr.dtype.kind not in "iu" or arr.size <= LONG:
        return None
    arr = arr.astype(np.int64)
    lead = 0
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr, lead = arr[0], lead + 1
    if arr.ndim == 1:
        expr = _range(arr)
        if expr is None:
            return None
        text = f"list({expr})"
    elif arr.ndim == 2 and arr.shape[1] >= 2:
        rows, first = _range(arr[:, 0]), _range(arr[0])
        if rows is None or first is None or not np.array_equal(arr, arr[:, :1] + (arr[0] - arr[0, 0])):
            return None
        step = int(arr[0, 1] - arr[0, 0])
        inner = _range_text(Code("r"), arr.shape[1], step, offset=True)
        text = f"[list({inner}) for r in {rows}]"
    else:
        return None
    return Code("[" * lead + text + "]" * lead)


def _range(arr: np.ndarray) -> Code | None:
    """`range(start, stop[, step])` equal to the 1-D int array, or None."""
    if arr.size < 2:
        return None
    step = int(arr[1] - arr[0])
    if step == 0 or not np.array_equal(arr, arr[0] + step * np.arange(arr.size, dtype=np.int64)):
        return None
    return _range_text(lit(int(arr[0])), arr.size, step)


def _range_text(start: Code, n: int, step: int, offset: bool = False) -> Code:
    """range() of n values from `start` (a literal, or the name of a loop variable if offset)."""
    stop = f"{start} + {lit(n * step)}" if offset else lit(int(start) + n * step)
    return Code(f"range({start}, {stop})" if step == 1 else f"range({start}, {stop}, {lit(step)})")


def short_kwargs(spec: LayerSpec) -> None:
    """Long integer-grid list kwargs (Gather's frame indices) as the expression making them."""
    for key, value in spec.kwargs.items():
        if isinstance(value, list):
            expr = index_grid(value)
            if expr is not None:
                spec.kwargs[key] = expr
