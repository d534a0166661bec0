"""Run a generated Keras module and the .tflite on the same seeded inputs and measure the gap.

Three checks, one tolerance definition (`measure.tolerance`), shared with `compare`:

- End to end: each model output on 3 seeded batches, against the default runtime (XNNPACK).
  Errors accumulate through the network, so each output bar also admits twice the runtime's own
  noise: how far TFLite's two kernel sets (XNNPACK and the built-in reference kernels) disagree
  on the same input. Deep float decoders reach 1e-3 there (pose_landmark_full's heatmap); int8
  MobileNetV2 reaches 15 LSB (the built-in kernels round twice when they requantize).
- Any batch (`batch_check`): a model that takes any batch also runs the seeded rows at once.
- Layer-local (`layer_check`): every mapped layer fed TFLite's own input tensors from one run, so
  each op's error is its own, not accumulated. No noise allowance there: a wrong layer fails even
  where the outputs saturate or stay within noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.rebuild.loader import can_predict, run_keras
from tfl_rebuild.runtime.interpreter import index_limits, make_interpreter, random_inputs, run
from tfl_rebuild.runtime.views import has_variables
from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.ir import Model, Tensor
from tfl_rebuild.verify.batch_check import BatchReport, batch_check, takes_any_batch
from tfl_rebuild.verify.layer_check import (
    LayerReport,
    dumped_floats,
    hybrid_local_outputs,
    layer_reports,
    local_outputs,
    present,
    tensor_dumper,
)
from tfl_rebuild.verify.measure import NOISE_FACTOR, compare_arrays, kind_text, to_float, tolerance
from tfl_rebuild.verify.streaming import StreamReport, stream_check


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
    layers: list[LayerReport] = field(default_factory=list)
    layers_skipped: str | None = None  # why the layer-local check did not run
    layerwise: bool = True  # False: outputs only (a Core ML check has no layers to pair)
    notes: list[str] = field(default_factory=list)  # e.g. which runtime the outputs were checked against
    stream: StreamReport | None = None  # a model with resource variables: several runs on fed-back state
    batch: BatchReport | None = None  # a model that takes any batch: the seeded rows at once

    @property
    def ok(self) -> bool:
        return (
            all(o.ok for o in self.outputs)
            and all(r.ok for r in self.layers)
            and (self.stream is None or self.stream.ok)
            and (self.batch is None or self.batch.ok)
        )

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def worst_layer(self) -> LayerReport | None:
        return max(
            self.layers, key=lambda r: r.error / r.tolerance.bar if r.tolerance.bar else r.error, default=None
        )

    def mismatch(self) -> str:
        """One line: the worst output above tolerance and how many are, or the worst layer."""
        bad = [o for o in self.outputs if not o.ok]
        if not bad and self.stream is not None and not self.stream.ok and all(r.ok for r in self.layers):
            return self.stream.text()
        if not bad and self.batch is not None and not self.batch.ok and all(r.ok for r in self.layers):
            return self.batch.text()
        if not bad:
            worst_layer = self.worst_layer
            n = sum(not r.ok for r in self.layers)
            return f"{n} layer(s) off alone, worst {worst_layer.text()}" if worst_layer else "no outputs"
        worst = max(bad, key=lambda o: (o.lsb if o.lsb is not None else -1.0, o.max_rel))
        err = f"{worst.lsb:.2f} LSB" if worst.lsb is not None else f"rel {worst.max_rel:.3g}"
        top1 = "" if worst.top1_agree in (None, 1.0) else f", top-1 agrees {worst.top1_agree:.0%}"
        return f"{len(bad)}/{len(self.outputs)} output(s) off, worst {worst.name!r} {err}{top1} ({self.tolerance})"


def verify(
    model: Model,
    keras_model,
    batches: int = 3,
    tensors: list[dict] | None = None,
    original: Model | None = None,
) -> Report:
    """End-to-end and layer-local comparison with TFLite.

    tensors: the TFLite tensor -> Keras layer mapping (the `_tensors.json` sidecar); regenerated
    from the model when not given. original: the file `model` is a view of; when it keeps state
    in resource variables, the rebuild is also streamed against it (streaming.py).
    """
    sg = model.main
    kind = quantization_kind(model)
    interp = make_interpreter(model_content=bytes(model._storage))
    mapping = present(tensors if tensors is not None else _mapping(model), keras_model)
    dumper, skipped = _builtin_dumper(model)
    if not hasattr(keras_model, "_run_through_graph"):  # Keras 3's functional graph runner
        skipped = f"{type(keras_model).__name__} is not a Keras 3 functional model"
    in_tensors = [sg.tensors[i] for i in sg.inputs]
    out_tensors = [sg.tensors[i] for i in sg.outputs]
    refs: list[list[np.ndarray]] = [[] for _ in out_tensors]
    gots: list[list[np.ndarray]] = [[] for _ in out_tensors]
    noise = [0.0] * len(out_tensors)  # max abs gap between the two kernel sets
    top1_noise = [False] * len(out_tensors)  # the kernel sets disagree on the arg-max
    layers: list[LayerReport] = []
    rows: list[list[np.ndarray]] = []  # each seed's inputs: the rows of the batch check
    limits = index_limits(sg)  # token-id inputs stay inside their embedding table
    for seed in range(batches):
        inputs = random_inputs(interp, seed, limits)
        rows.append(inputs)
        ref = [to_float(t, x) for t, x in zip(out_tensors, run(interp, inputs))]
        feed = [to_float(t, x) for t, x in zip(in_tensors, inputs)]
        if dumper is not None:
            builtin = dumped_floats(model, dumper, inputs, only=None if seed == 0 else set(sg.outputs))
            for k, t in enumerate(sg.outputs):
                if t in builtin and builtin[t].size == ref[k].size:
                    other = builtin[t].reshape(ref[k].shape)
                    noise[k] = max(noise[k], compare_arrays(ref[k], other)[0])
                    top1_noise[k] |= ref[k].size > 1 and int(np.argmax(ref[k])) != int(np.argmax(other))
            if seed == 0 and skipped is None:
                local = local_outputs(keras_model, mapping, feed, builtin)
                layers = layer_reports(
                    model,
                    mapping,
                    builtin,
                    local,
                    hybrid_local_outputs(model, keras_model, mapping, feed, builtin),
                )
        got = run_keras(keras_model, feed, predict=seed == batches - 1)  # the last through predict()
        for k in range(len(out_tensors)):
            refs[k].append(ref[k])
            gots[k].append(got[k] if k < len(got) else np.zeros(0))
    report = Report(kind, _heading(kind), layers=layers, layers_skipped=skipped)
    if batches > 1 and not can_predict(feed):
        report.notes.append("model.predict() not run: the inputs share no batch axis (model(x) used)")
    if getattr(interp, "fallback_note", None):
        report.notes.append(interp.fallback_note)
    for k, t in enumerate(out_tensors):
        report.outputs.append(_output_report(kind, t, refs[k], gots[k], noise[k], top1_noise[k], batches))
    if takes_any_batch(keras_model) and batches > 1:  # last: it resizes `interp`
        noise_units = [o.noise for o in report.outputs]
        report.batch = batch_check(
            kind, interp, keras_model, in_tensors, out_tensors, rows, refs, noise_units
        )
    if original is not None and has_variables(original):
        report.stream = stream_check(original, model, keras_model)
    return report


def _mapping(model: Model) -> list[dict]:
    from tfl_rebuild.rebuild.codegen.emit import generate

    return generate(model, "model").tensors


def _builtin_dumper(model: Model):
    """(runner of every tensor on the built-in kernels, None) or (None, why not)."""
    try:
        return tensor_dumper(model), None
    except TflRebuildError:  # e.g. MediaPipe ops that only the XNNPACK delegate resolves
        pass
    try:  # no noise floor then, but the layers are still checked
        return tensor_dumper(model, xnnpack=True), None
    except TflRebuildError as exc:
        return None, str(exc)


def _heading(kind: str) -> str:
    return (
        f"outputs {kind_text(kind)} or {NOISE_FACTOR:g} x runtime noise; "
        f"each layer fed TFLite's inputs {kind_text(kind, local=True)}"
    )


def _output_report(
    kind: str,
    t: Tensor,
    refs: list[np.ndarray],
    gots: list[np.ndarray],
    noise: float,
    top1_noise: bool,
    batches: int,
) -> OutputReport:
    ref = np.stack(refs)
    got = np.stack([g.reshape(refs[0].shape) if g.size == refs[0].size else g for g in gots])
    max_abs, max_rel, cos = compare_arrays(ref, got)
    spread = max(compare_arrays(refs[0], r)[1] for r in refs[1:]) if batches > 1 else 1.0
    tol = tolerance(kind, t)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    noise_in_unit = noise / tol.lsb if tol.unit == "LSB" else (noise / scale if scale > 0 else 0.0)
    top1 = None
    if ref.ndim >= 2 and ref.shape[-1] > 1 and ref.size // ref.shape[-1] == batches and ref.size == got.size:
        top1 = float(np.mean(ref.reshape(batches, -1).argmax(-1) == got.reshape(batches, -1).argmax(-1)))
    # Arg-max agreement is required where TFLite's own kernel sets agree on it.
    top1_ok = top1 is None or top1 == 1.0 or top1_noise
    ok = tol.allows(tol.error(max_abs, max_rel), noise_in_unit) and top1_ok
    return OutputReport(
        t.name,
        max_abs,
        max_rel,
        cos,
        max_abs / tol.lsb if tol.unit == "LSB" else None,
        input_sensitive=spread > 0.01,
        noise=noise_in_unit,
        top1_agree=top1,
        ok=ok,
    )
