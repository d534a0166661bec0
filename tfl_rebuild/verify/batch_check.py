"""The rebuild at batch 3, for models that take any batch (passes.batch_axis left `batch_size` out).

The three seeded rows of the batch-1 check, stacked, go through the Keras model at once, against
TFLite run on each row alone (the rows' batch-1 outputs, stacked): a model that takes any batch
computes each row as the file does at the batch it was made for. TFLite resized to batch 3
(`resize_tensor_input`, then allocate) runs too: where it returns the same rows (within the bar)
the report says so; where it fails or differs the report says that instead (hand_recrop's file
computes rows 2 and 3 8% off its own batch-1 results). Each output must meet the batch-1 bar
(the same tolerance and runtime-noise allowance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.rebuild.loader import run_keras
from tfl_rebuild.runtime.interpreter import run
from tfl_rebuild.tflite.ir import Tensor
from tfl_rebuild.verify.measure import compare_arrays, to_float, tolerance

RESIZED = "TFLite resized to the batch (the same as each row alone)"
PER_ROW = "TFLite on each row alone"


@dataclass
class BatchOutput:
    name: str
    error: float  # in the tolerance's unit (rel, or LSB for quantized outputs)
    unit: str
    ok: bool


@dataclass
class BatchReport:
    size: int
    reference: str  # RESIZED or PER_ROW
    outputs: list[BatchOutput] = field(default_factory=list)
    error: str | None = None  # the Keras model failed on the batch (one line)
    resized: str | None = None  # why TFLite resized to the batch is not the reference (one line)

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs)

    def text(self) -> str:
        """'batch 3 vs TFLite resized to the batch: ok, worst rel 1.2e-06' (or what failed)."""
        head = f"batch {self.size} vs {self.reference}"
        if self.error is not None:
            return f"{head}: the Keras model failed ({self.error})"
        worst = max(self.outputs, key=lambda o: o.error, default=None)
        if worst is None:
            return f"{head}: no outputs"
        verdict = "ok" if self.ok else f"{sum(not o.ok for o in self.outputs)} output(s) off"
        err = f"{worst.error:.3g} LSB" if worst.unit == "LSB" else f"rel {worst.error:.3g}"
        return f"{head}: {verdict}, worst {worst.name!r} {err}" + (
            f" ({self.resized})" if self.resized else ""
        )


def takes_any_batch(keras_model) -> bool:
    """Whether every input of the built model leaves its batch axis open (shape[0] is None)."""
    inputs = getattr(keras_model, "inputs", None) or []
    return bool(inputs) and all(len(x.shape) > 0 and x.shape[0] is None for x in inputs)


def batch_check(
    kind: str,
    interp,
    keras_model,
    in_tensors: list[Tensor],
    out_tensors: list[Tensor],
    rows: list[list[np.ndarray]],
    refs: list[list[np.ndarray]],
    noise: list[float],
) -> BatchReport:
    """rows: per row, the raw TFLite inputs (batch 1); refs: per output, each row's TFLite output;
    noise: per output, the batch-1 runtime noise in the tolerance's unit. `interp` is resized."""
    size = len(rows)
    stacked = [np.concatenate([r[k] for r in rows]) for k in range(len(in_tensors))]
    expected = [np.concatenate(r) for r in refs]
    tols = [tolerance(kind, t) for t in out_tensors]
    report = BatchReport(size, PER_ROW)
    try:
        resized = [to_float(t, x) for t, x in zip(out_tensors, run(interp, stacked))]
    except Exception as exc:  # noqa: BLE001 - a graph that hard-codes batch 1
        report.resized = f"TFLite cannot run {size} rows at once: {type(exc).__name__}"
    else:
        gaps = [_error(tol, e, r) for tol, e, r in zip(tols, expected, resized)]
        if all(tol.allows(g, n) for tol, g, n in zip(tols, gaps, noise)):
            report.reference = RESIZED
        elif any(r.shape != e.shape for r, e in zip(resized, expected)):
            report.resized = f"TFLite resized to {size} rows returns outputs of other shapes"
        else:
            worst = max(range(len(gaps)), key=lambda k: gaps[k] / (tols[k].bar or 1.0))
            err = f"{gaps[worst]:.3g} LSB" if tols[worst].unit == "LSB" else f"rel {gaps[worst]:.3g}"
            report.resized = f"TFLite resized to {size} rows differs from its rows alone: {err}"
    try:
        got = run_keras(keras_model, [to_float(t, x) for t, x in zip(in_tensors, stacked)])
    except Exception as exc:  # noqa: BLE001 - reported, and the verification fails
        report.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return report
    for k, t in enumerate(out_tensors):
        err = _error(tols[k], expected[k], got[k] if k < len(got) else np.zeros(0))
        report.outputs.append(BatchOutput(t.name, err, tols[k].unit, tols[k].allows(err, noise[k])))
    return report


def _error(tol, expected: np.ndarray, got: np.ndarray) -> float:
    """The gap in the tolerance's unit; inf when the shapes differ."""
    if got.shape != expected.shape:
        return float("inf")
    max_abs, max_rel, _ = compare_arrays(expected, got)
    return tol.error(max_abs, max_rel)
