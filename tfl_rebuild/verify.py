"""Run a generated Keras module and the .tflite on the same seeded inputs and measure the gap."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TflRebuildError
from .inspect import quantization_kind
from .ir import Model, Tensor
from .runtime import index_limits, make_interpreter, random_inputs, run

# Documented tolerances, by quantization kind. full-int8: max abs error in output LSBs.
# Each bar also admits twice the runtime's own noise: how far TFLite's two kernel sets (XNNPACK
# and the built-in reference kernels) disagree on the same input. Deep float decoders reach 1e-3
# there (pose_landmark_full's heatmap); int8 MobileNetV2 reaches 15 LSB (requantization differs).
FLOAT_REL_TOL = 1e-4
NOISE_FACTOR = 2.0
DYNAMIC_REL_TOL = 5e-2
INT8_LSB_TOL = 2.0


class VerificationError(TflRebuildError):
    exit_code = 1


@dataclass
class OutputReport:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    lsb: float | None  # max abs error in units of the output scale (quantized outputs)
    input_sensitive: bool
    noise: float = 0.0  # gap between TFLite's XNNPACK and reference kernels (rel, or LSB if quantized)
    top1_agree: float | None = None
    ok: bool = False


@dataclass
class Report:
    kind: str
    tolerance: str
    outputs: list[OutputReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)


def load_module(path: str | Path):
    """Import a generated module from its file (each call gets a fresh module)."""
    path = Path(path).resolve()
    name = f"tfl_rebuild_generated_{abs(hash((str(path), path.stat().st_mtime_ns)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TflRebuildError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def to_float(t: Tensor, value: np.ndarray) -> np.ndarray:
    """What a quantized TFLite tensor value means in float; float values pass through."""
    if t.quantized and np.issubdtype(value.dtype, np.integer):
        q = t.quantization
        return ((value.astype(np.float64) - q.zero_point[0]) * q.scale[0]).astype(np.float32)
    return value.astype(np.float32) if value.dtype != np.float32 and value.dtype.kind == "f" else value


def compare_arrays(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, max abs error / max |ref|, cosine similarity)."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    if ref.shape != got.shape:
        return float("inf"), float("inf"), 0.0
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    na, nb = np.linalg.norm(ref), np.linalg.norm(got)
    cos = float(ref @ got / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    return diff, rel, cos


def run_keras(keras_model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in outs]


def verify(model: Model, keras_model, batches: int = 3) -> Report:
    sg = model.main
    kind = quantization_kind(model)
    content = bytes(model._storage)
    interp = make_interpreter(model_content=content)
    try:  # without XNNPACK some ops (MediaPipe's, resolved by the delegate) are missing: no noise floor then
        reference = make_interpreter(model_content=content, reference_kernels=True)
    except TflRebuildError:
        reference = None
    in_tensors = [sg.tensors[i] for i in sg.inputs]
    out_tensors = [sg.tensors[i] for i in sg.outputs]
    refs: list[list[np.ndarray]] = [[] for _ in out_tensors]
    gots: list[list[np.ndarray]] = [[] for _ in out_tensors]
    noise = [0.0] * len(out_tensors)  # max abs gap between the two kernel sets
    top1_noise = [False] * len(out_tensors)  # the kernel sets disagree on the arg-max
    limits = index_limits(sg)  # token-id inputs stay inside their embedding table
    for seed in range(batches):
        inputs = random_inputs(interp, seed, limits)
        ref = run(interp, inputs)
        for k, other in enumerate(run(reference, inputs) if reference is not None else []):
            a, b = to_float(out_tensors[k], ref[k]), to_float(out_tensors[k], other)
            noise[k] = max(noise[k], compare_arrays(a, b)[0])
            top1_noise[k] |= a.size > 1 and int(np.argmax(a)) != int(np.argmax(b))
        got = run_keras(keras_model, [to_float(t, x) for t, x in zip(in_tensors, inputs)])
        for k, t in enumerate(out_tensors):
            refs[k].append(to_float(t, ref[k]))
            gots[k].append(got[k] if k < len(got) else np.zeros(0))
    tol = {"float": f"rel <= max({FLOAT_REL_TOL:g}, {NOISE_FACTOR:g} x runtime noise)",
           "fp16": f"rel <= max({FLOAT_REL_TOL:g}, {NOISE_FACTOR:g} x runtime noise)",
           "dynamic-range": f"rel <= max({DYNAMIC_REL_TOL:g}, {NOISE_FACTOR:g} x runtime noise)"}.get(
        kind, f"<= max({INT8_LSB_TOL:g}, {NOISE_FACTOR:g} x runtime noise) LSB of the output scale")
    report = Report(kind, tol)
    for k, t in enumerate(out_tensors):
        ref, got = np.stack(refs[k]), np.stack([g.reshape(refs[k][0].shape) if g.size == refs[k][0].size else g
                                                for g in gots[k]])
        max_abs, max_rel, cos = compare_arrays(ref, got)
        spread = max(compare_arrays(refs[k][0], r)[1] for r in refs[k][1:]) if batches > 1 else 1.0
        lsb = noise_lsb = None
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        noise_rel = noise[k] / scale if scale > 0 else 0.0
        if t.quantized and kind in ("full-int8", "int16x8"):
            lsb = max_abs / float(t.quantization.scale[0])
            noise_lsb = noise[k] / float(t.quantization.scale[0])
        top1 = None
        if ref.ndim >= 2 and ref.shape[-1] > 1 and ref.size // ref.shape[-1] == batches and ref.size == got.size:
            top1 = float(np.mean(ref.reshape(batches, -1).argmax(-1) == got.reshape(batches, -1).argmax(-1)))
        # Arg-max agreement is required where TFLite's own kernel sets agree on it.
        top1_ok = top1 is None or top1 == 1.0 or top1_noise[k]
        if lsb is not None:
            ok = lsb <= max(INT8_LSB_TOL, NOISE_FACTOR * noise_lsb) and top1_ok
        else:
            base = DYNAMIC_REL_TOL if kind == "dynamic-range" else FLOAT_REL_TOL
            ok = max_rel <= max(base, NOISE_FACTOR * noise_rel) and top1_ok
        report.outputs.append(OutputReport(t.name, max_abs, max_rel, cos, lsb, input_sensitive=spread > 0.01,
                                           noise=noise_lsb if lsb is not None else noise_rel,
                                           top1_agree=top1, ok=ok))
    return report


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    table = Table("output", "max abs", "max rel", "runtime noise", "cosine", "LSB", "top-1", "status", box=None,
                  pad_edge=False)
    for o in report.outputs:
        status = "[green]match[/green]" if o.ok else "[red]MISMATCH[/red]"
        if not o.input_sensitive:
            status += " [yellow](output does not depend on the input: the match proves little)[/yellow]"
        table.add_row(escape(o.name), f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", f"{o.noise:.3g}", f"{o.cosine:.6f}",
                      "-" if o.lsb is None else f"{o.lsb:.2f}",
                      "-" if o.top1_agree is None else f"{o.top1_agree:.0%}", status)
    con.print(f"verification vs TFLite ({report.kind} model, tolerance {report.tolerance}):")
    con.print(table)
