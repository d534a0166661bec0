"""The rebuild at batch 3, for models that take any batch (passes.batch_axis left `batch_size` out).

The three seeded rows of the batch-1 check, stacked, go through the Keras model at once. The
reference is TFLite resized to batch 3 (`resize_tensor_input`, then allocate) when it runs and
returns 3 rows; a file whose graph hard-codes batch 1 (a reshape to [1, ...]) cannot be resized,
and then the reference is each row run alone: the rows' batch-1 outputs, stacked. Each output
must meet the batch-1 bar (the same tolerance and runtime-noise allowance).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.rebuild.loader import run_keras
from tfl_rebuild.runtime.interpreter import run
from tfl_rebuild.tflite.ir import Tensor
from tfl_rebuild.verify.measure import compare_arrays, to_float, tolerance

RESIZED = "TFLite resized to the batch"
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
        return f"{head}: {verdict}, worst {worst.name!r} {err}"


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
    per_row = [np.concatenate(r) for r in refs]
    reference, expected = PER_ROW, per_row
    try:
        resized = [to_float(t, x) for t, x in zip(out_tensors, run(interp, stacked))]
        if all(r.shape == e.shape for r, e in zip(resized, per_row)):
            reference, expected = RESIZED, resized
    except Exception:  # noqa: BLE001 - a graph that hard-codes batch 1: each row alone instead
        pass
    report = BatchReport(size, reference)
    try:
        got = run_keras(keras_model, [to_float(t, x) for t, x in zip(in_tensors, stacked)])
    except Exception as exc:  # noqa: BLE001 - reported, and the verification fails
        report.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return report
    for k, t in enumerate(out_tensors):
        tol = tolerance(kind, t)
        g = got[k] if k < len(got) else np.zeros(0)
        if g.shape != expected[k].shape:
            report.outputs.append(BatchOutput(t.name, float("inf"), tol.unit, False))
            continue
        max_abs, max_rel, _ = compare_arrays(expected[k], g)
        err = tol.error(max_abs, max_rel)
        report.outputs.append(BatchOutput(t.name, err, tol.unit, tol.allows(err, noise[k])))
    return report
