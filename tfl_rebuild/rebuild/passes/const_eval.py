"""Numpy evaluation of ops whose inputs are all known: what `passes.fold_constants` folds.

The evaluators are facts about ops and live with them (`ops/folding.py`, registered by `folds`);
here they are applied: shape-only ops and CAST, which need the output's shape or type, are
evaluated directly, and results are cast to the output's type.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import Trait, folder, has_trait
from tfl_rebuild.tflite.ir import Operator

CASTABLE = ("float32", "int32", "int64", "bool")  # output types a folded value is cast to


def _reshape(op: Operator, v: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray | None:
    if len(v) > 1 and v[1].size and v[1].dtype.kind in "iu":
        return v[0].reshape([int(d) for d in v[1].reshape(-1)])
    return v[0].reshape(out_shape) if all(d >= 0 for d in out_shape) else None


def evaluate(
    op: Operator, values: list[np.ndarray], out_shape: tuple[int, ...], out_dtype: str
) -> np.ndarray | None:
    """The op's single output from known input values (None: not handled here)."""
    if has_trait(op, Trait.SHAPE_ONLY):
        return _reshape(op, values, out_shape)
    if op.opcode == "CAST":
        return values[0].astype(out_dtype) if out_dtype in CASTABLE else None
    f = folder(op)
    out = f.fn(op, values) if f is not None and not f.multi else None
    if out is None:
        return None
    out = np.asarray(out)
    if out_dtype in CASTABLE and out.dtype != out_dtype:
        out = out.astype(out_dtype)
    return out


def evaluate_multi(op: Operator, values: list[np.ndarray], out_dtypes: list[str]) -> list[np.ndarray] | None:
    """The outputs of a multi-output op (SPLIT, SPLIT_V, UNPACK) from known input values (None: not
    handled here)."""
    f = folder(op)
    if f is None or not f.multi:
        return None
    outs = f.fn(op, values)
    if len(outs) != len(out_dtypes):
        return None
    return [np.asarray(o).astype(d) if d in CASTABLE else np.asarray(o) for o, d in zip(outs, out_dtypes)]


def shape_of(in_shape: tuple[int, ...], out_dtype: str) -> np.ndarray:
    """SHAPE of a tensor with a known static shape."""
    return np.asarray(in_shape, out_dtype)
