"""Check a Core ML conversion's numbers against TFLite, on Linux too.

On macOS Core ML's MLModel.predict runs the model; elsewhere `mil_eval` (numpy) runs its MIL program.
Both get the seeded inputs Keras verification uses (random pixels 0..255 for an image input) and are
compared per output with TFLite (max abs, max rel = max |error| / max |TFLite|, cosine) over 3 inputs.

Tolerances (the report states the one applied):
- float32: rel <= 1e-4 or twice TFLite's own noise (XNNPACK vs reference kernels); arg-max must agree.
- float16: rel <= 1e-2, or twice TFLite's noise, or twice what rounding the weights to fp16 alone
  changes (measured on the Keras model); relative to max(max |TFLite|, 2^-14), float16's smallest
  normal, below which it keeps no relative precision. The arg-max is reported, not required.
- dynamic-range / int8 models: the Keras tolerance of that kind (5e-2; 2 LSB) when larger.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.coreml.convert import Converted, ImageInput
from tfl_rebuild.errors import RuntimeUnavailableError, TflRebuildError
from tfl_rebuild.tflite.ir import Model

FP32_REL_TOL = 1e-4
CHECK_BATCHES = 3
FP16_REL_TOL = 1e-2
# Seeded inputs the mixed search simulates on, after the check's: as many as the check has, so a set
# gets as strict a test as float16 (on 6, transformer_float found no set within half its ops in
# float32; on 3, a 21-op set that then passed the check)
SEARCH_INPUTS = CHECK_BATCHES
FP16_TINY = 2.0**-14  # the smallest normal float16


@dataclass
class NotChecked:
    reason: str


@dataclass
class CheckResult:
    report: object  # verify.Report
    weight_effect: list[float]  # per output: rel change from fp16 weights alone (Keras), 0 for float32
    overflow: list[str]  # MIL variables that overflowed float16
    # Outputs that pass only through the fp16-weights allowance: an error that large is what fp16
    # weights make, but it is no evidence the conversion is right (auto precision goes float32 then).
    weight_allowance_used: list[str] = field(default_factory=list)
    nan_origins: list[str] = field(default_factory=list)  # MIL ops that made the first NaNs ("<type> <name>")


def check(
    model: Model,
    conv: Converted,
    keras_model=None,
    batches: int = CHECK_BATCHES,
    use_coreml: bool | None = None,
):
    """Run the Core ML model (macOS) or its MIL program (numpy) and TFLite on seeded inputs.

    Returns a CheckResult, or NotChecked saying why the numbers could not be compared."""
    from tfl_rebuild.coreml.mil_eval import MilEvalError, unknown_ops

    if use_coreml is None:
        use_coreml = sys.platform == "darwin"
    if not use_coreml:
        if conv.program is None:
            return NotChecked("coremltools kept no MIL program for this model")
        missing = unknown_ops(conv.program)
        if missing:
            return NotChecked(f"unknown MIL ops {', '.join(missing)}")
    try:
        return _compare(model, conv, keras_model, batches, use_coreml)
    except RuntimeUnavailableError as exc:
        return NotChecked(str(exc))
    except MilEvalError as exc:
        return NotChecked(f"the MIL evaluator cannot run this program: {exc}")


@dataclass
class Checked:
    """What `convert_checked` settled on: the conversion kept, its check, and, where "auto" or
    "mixed" precision did not keep float16, the float16 check that made it (`float16_reason` says
    why) and the mixed-precision search (`mixed`: which ops stay float32, each try)."""

    conv: Converted
    result: CheckResult | NotChecked | None
    float16_failed: CheckResult | None = None
    mixed: object | None = None  # coreml.mixed.MixedSearch


def float16_reason(result: CheckResult) -> str:
    """Why auto precision did not keep float16, in one line."""
    if not result.report.ok:
        nan = f"; NaN first made by MIL op {result.nan_origins[0]}" if result.nan_origins else ""
        return result.report.mismatch() + nan
    outs = {o.name: (o, e) for o, e in zip(result.report.outputs, result.weight_effect)}
    worst, effect = max((outs[n] for n in result.weight_allowance_used), key=lambda oe: oe[0].max_rel)
    return (
        f"{worst.name!r} rel {worst.max_rel:.3g} is over rel {FP16_REL_TOL:g}, within only what fp16 weights "
        f"alone make (rel {effect:.3g})"
    )


def passes_float16_bar(result) -> bool:
    """Checked, within the float16 bar, and not only through the fp16-weights allowance."""
    return isinstance(result, CheckResult) and result.report.ok and not result.weight_allowance_used


def convert_checked(
    keras_model, model: Model | None, opts, do_check: bool = True, stage=lambda text: None
) -> Checked:
    """Convert, and check against TFLite when there is a model to check with. Precision "auto":
    float16 when its check passes without the fp16-weights allowance, else mixed precision (an ML
    program: float16 but for the fewest ops that must stay float32, coreml/mixed.py), else float32
    (float16 is Core ML's fast path, but a deep or saturating network can drift past the bar; the
    user gets a model shown to match, and is told why float16 was not kept). "mixed" does the same
    (float16 when it passes: mixed with no op in float32)."""
    from dataclasses import replace

    from tfl_rebuild.coreml.convert import CoreMLError, convert

    auto, mixed = opts.precision == "auto", opts.precision == "mixed"
    if mixed and opts.format != "mlprogram":
        raise CoreMLError(
            "--precision mixed needs --format mlprogram (a neural network has no per-op precision)"
        )
    if mixed and (not do_check or model is None):
        raise CoreMLError(
            "--precision mixed picks its float32 ops by checking against the .tflite: give it one"
        )
    first = replace(opts, precision="float16") if auto or mixed else opts
    conv = convert(keras_model, model, first)
    if not do_check:
        return Checked(conv, None)
    if model is None:
        return Checked(conv, NotChecked("no .tflite to compare with (give --tflite)"))
    result = check(model, conv, keras_model)
    if not (auto or mixed) or not isinstance(result, CheckResult) or passes_float16_bar(result):
        return Checked(conv, result)
    found = None
    if opts.format == "mlprogram":
        found = _search_mixed(keras_model, model, opts, stage)
        if found.conv is not None:
            return Checked(found.conv, found.result, float16_failed=result, mixed=found)
    conv32 = convert(keras_model, model, replace(opts, precision="float32"))
    return Checked(conv32, check(model, conv32, keras_model), float16_failed=result, mixed=found)


def _search_mixed(keras_model, model: Model, opts, stage=lambda text: None):
    """The mixed-precision search (coreml/mixed.py) on a float32 program made through coremltools'
    float16 pass (every op kept). Its risks and simulations use seeded inputs of its own (seeds
    3-5), never the check's (0-2): picked among dozens of sets on the check's inputs, a set can pass
    them by chance (selfie_segmentation_landscape's passed at rel 0.0097 and was 0.06 on seed 3);
    picked on other inputs, the check that decides is an independent test, as strict as float16's."""
    from dataclasses import replace

    from tfl_rebuild.coreml import mixed
    from tfl_rebuild.coreml.convert import convert
    from tfl_rebuild.coreml.mil_eval import MilEvalError
    from tfl_rebuild.coreml.precision import ALL_OPS

    stage("mixed precision: measuring each op's own float16 error")
    conv32 = convert(keras_model, model, replace(opts, precision="mixed", fp32_ops=frozenset({ALL_OPS})))
    if conv32.program is None:
        return mixed.MixedSearch(None, None)
    try:
        seeded = seeded_feeds(model, conv32, CHECK_BATCHES + SEARCH_INPUTS)[CHECK_BATCHES:]  # not the check's
        feeds = [program_inputs(conv32, f) for f in seeded]
        risks = mixed.op_risks(conv32.program, feeds)
        sim = mixed.Simulator(conv32.program, feeds)
        stage("mixed precision: measuring each op's effect on the outputs")
        mixed.add_output_effects(sim, risks)
    except (MilEvalError, RuntimeUnavailableError):
        return mixed.MixedSearch(None, None)  # the float32 check says why
    names = mixed.asked_names(conv32.program, conv32.asked)
    risks = [replace(r, name=names[r.name]) for r in risks if r.name in names]

    def passes(conv):
        result = check(model, conv, keras_model)
        return passes_float16_bar(result), result

    return mixed.search(
        risks,
        lambda keep: convert(keras_model, model, replace(opts, precision="mixed", fp32_ops=keep)),
        passes,
        error=lambda kept: sim.error(lambda name: name not in kept, stop_above=FP16_REL_TOL),
        target=FP16_REL_TOL,
        stage=stage,
    )


def _seeded(
    interp, seed: int, conv: Converted, limits: list[int | None]
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """TFLite inputs of the converted default shapes, seeded as runtime.random_inputs (token ids
    within `limits`); for an image input, random pixels (RGB, 0..255) and the TFLite value they stand for."""
    from tfl_rebuild.runtime.interpreter import random_input

    rng = np.random.default_rng(seed)
    values, pixels = [], []
    for detail, shape, port, limit in zip(interp.get_input_details(), conv.shapes, conv.inputs, limits):
        img = conv.image
        if img and img.name in (port.name, port.tflite_name):
            rgb = rng.integers(0, 256, shape).astype(np.float32)  # [1, H, W, C] in image (RGB) order
            seen = (
                rgb[..., ::-1] if img.color_layout == "BGR" and shape[-1] == 3 else rgb
            )  # what the model gets
            bias = np.asarray(img.bias if len(img.bias) == shape[-1] else img.bias * shape[-1], np.float32)
            values.append(_from_float(detail, seen * np.float32(img.scale) + bias))
            pixels.append(rgb)
        else:
            values.append(random_input({**detail, "shape": shape}, rng, limit))
            pixels.append(None)
    return values, pixels


def _from_float(detail: dict, x: np.ndarray) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail.get("quantization", (0.0, 0))
    q = np.round(x / scale) + zero if scale else np.round(x)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def _compare(model: Model, conv: Converted, keras_model, batches: int, use_coreml: bool) -> CheckResult:
    from tfl_rebuild.runtime.interpreter import index_limits, make_interpreter
    from tfl_rebuild.runtime.interpreter import run as run_tflite
    from tfl_rebuild.tflite.analysis import quantization_kind
    from tfl_rebuild.verify.end_to_end import OutputReport, Report
    from tfl_rebuild.verify.measure import (
        DYNAMIC_REL_TOL,
        INT8_LSB_TOL,
        NOISE_FACTOR,
        compare_arrays,
        to_float,
    )

    sg = model.main
    kind = quantization_kind(model)
    content = bytes(model._storage)
    interp = make_interpreter(model_content=content)
    try:  # MediaPipe's custom ops exist only in XNNPACK: then there is no noise floor (as verify)
        reference = make_interpreter(model_content=content, reference_kernels=True)
    except TflRebuildError:
        reference = None
    in_t = [sg.tensors[i] for i in sg.inputs]
    out_t = [sg.tensors[i] for i in sg.outputs]
    fp16 = conv.options.precision in ("float16", "mixed")  # mixed is held to the float16 bar
    refs: list[list[np.ndarray]] = [[] for _ in out_t]
    gots: list[list[np.ndarray]] = [[] for _ in out_t]
    noise = [0.0] * len(out_t)  # TFLite's XNNPACK vs reference kernels, max abs
    effect = [0.0] * len(out_t)  # Keras with fp16-rounded weights vs as is, max abs
    overflow: list[str] = []
    nan_origins: list[str] = []
    rounded = _fp16_weights_of(keras_model) if fp16 and keras_model is not None else None
    limits = index_limits(sg)
    for seed in range(batches):
        inputs, pixels = _seeded(interp, seed, conv, limits)
        ref = run_tflite(interp, inputs)
        for k, other in enumerate(run_tflite(reference, inputs) if reference is not None else ()):
            noise[k] = max(noise[k], compare_arrays(to_float(out_t[k], ref[k]), to_float(out_t[k], other))[0])
        as_float = [to_float(t, x) for t, x in zip(in_t, inputs)]
        if rounded is not None:
            try:
                for k, d in enumerate(_weight_effect(keras_model, rounded, as_float)):
                    effect[k] = max(effect[k], d)
            except Exception:  # e.g. a Keras model that cannot take a user's --input-shape: no allowance
                rounded = None
        feed = [p if p is not None else x for x, p in zip(as_float, pixels)]
        got = _predict(conv, feed) if use_coreml else _evaluate(conv, feed, overflow, nan_origins)
        for k, t in enumerate(out_t):
            refs[k].append(to_float(t, ref[k]))
            gots[k].append(got[k])
    base = FP16_REL_TOL if fp16 else FP32_REL_TOL
    if kind == "dynamic-range":
        base = max(base, DYNAMIC_REL_TOL)
    quant = kind in ("full-int8", "int16x8")
    tol = f"rel <= max({base:g}, {NOISE_FACTOR:g} x runtime noise" + (
        f", {NOISE_FACTOR:g} x the change fp16 weights alone make); rel to max(max |ref|, 2^-14)"
        if fp16
        else ")"
    )
    if quant:
        tol += f", or <= {INT8_LSB_TOL:g} LSB of the output scale" + (
            " + float16's half ulp of the output" if fp16 else ""
        )
    report = Report(f"Core ML {conv.precision_text()} {conv.options.format}", tol, layerwise=False)
    rel_effect, allowance_used = [], []
    for k, t in enumerate(out_t):
        ref = np.stack(refs[k])
        same = all(g.size == r.size for g, r in zip(gots[k], refs[k]))
        got = np.stack([g.reshape(r.shape) for g, r in zip(gots[k], refs[k])]) if same else np.zeros(0)
        max_abs, max_rel, cos = compare_arrays(ref, got)
        spread = max(compare_arrays(refs[k][0], r)[1] for r in refs[k][1:]) if batches > 1 else 1.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        if fp16 and scale < FP16_TINY and np.isfinite(max_abs):
            scale = FP16_TINY
            max_rel = max_abs / scale
        noise_rel = noise[k] / scale if scale > 0 else 0.0
        rel_effect.append(effect[k] / scale if scale > 0 else 0.0)
        lsb = max_abs / float(t.quantization.scale[0]) if quant and t.quantized else None
        top1 = None
        if (
            ref.ndim >= 2
            and ref.shape[-1] > 1
            and ref.size // ref.shape[-1] == batches
            and ref.size == got.size
        ):
            top1 = float(np.mean(ref.reshape(batches, -1).argmax(-1) == got.reshape(batches, -1).argmax(-1)))
        strict = max_rel <= max(base, NOISE_FACTOR * noise_rel)
        ok = strict or max_rel <= NOISE_FACTOR * rel_effect[-1]
        if lsb is not None:
            in_lsb = lsb <= quantized_lsb_bar(t, float(np.max(np.abs(ref))) if ref.size else 0.0, fp16)
            ok, strict = ok or in_lsb, strict or in_lsb
        if ok and not strict:
            allowance_used.append(t.name)
        if not fp16 and top1 is not None and top1 < 1.0:
            ok = False  # float32 must keep the arg-max; fp16 may flip near-ties
        report.outputs.append(
            OutputReport(
                t.name,
                max_abs,
                max_rel,
                cos,
                lsb,
                input_sensitive=spread > 0.01,
                noise=noise_rel,
                top1_agree=top1,
                ok=ok,
            )
        )
    return CheckResult(
        report, rel_effect, sorted(set(overflow)), allowance_used, list(dict.fromkeys(nan_origins))
    )


def quantized_lsb_bar(t, peak: float, fp16: bool) -> float:
    """The LSB bar of a quantized output: Keras' 2 LSB (with its float32 slack), and under float16
    also the half ulp to which float16 holds the output's own value (peak * 2^-11, in LSB of `t`):
    a float16 program ends in float16, so a large dequantized output is off by that before any op."""
    from tfl_rebuild.verify.measure import INT8_LSB_TOL, LSB_SLACK

    bar = INT8_LSB_TOL * (1 + LSB_SLACK)
    step = float(t.quantization.scale[0]) if t.quantized and t.quantization.scale.size else 0.0
    if fp16 and step > 0:
        bar += peak * 2.0**-11 / step
    return bar


def _fp16_weights_of(keras_model) -> list[np.ndarray]:
    with np.errstate(over="ignore"):  # a -1e9 mask constant is -inf in float16, as Core ML stores it
        return [
            w.astype(np.float16).astype(w.dtype) if w.dtype.kind == "f" else w
            for w in keras_model.get_weights()
        ]


def _weight_effect(keras_model, rounded: list[np.ndarray], inputs: list[np.ndarray]) -> list[float]:
    """Max abs change of each Keras output when its weights are rounded to fp16: how far float16
    precision must move the outputs before any activation is rounded."""
    from tfl_rebuild.rebuild.loader import run_keras

    original = keras_model.get_weights()
    before = run_keras(keras_model, inputs)
    keras_model.set_weights(rounded)
    try:
        after = run_keras(keras_model, inputs)
    finally:
        keras_model.set_weights(original)
    return [float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in zip(after, before)]


def _evaluate(
    conv: Converted, feed: list[np.ndarray], overflow: list[str], nan_origins: list[str] | None = None
) -> list[np.ndarray]:
    from tfl_rebuild.coreml.mil_eval import evaluate

    program_in = program_inputs(conv, feed)
    nn_fp16 = conv.options.format == "neuralnetwork" and conv.options.precision == "float16"
    with np.errstate(all="ignore"):  # float16's inf and NaN are measured (overflow, nan_origins)
        values = evaluate(
            conv.program,
            program_in,
            outputs=[p.trace_name for p in conv.outputs],
            round_consts_fp16=nn_fp16,
            overflow=overflow,
            nan_origins=nan_origins,
        )
    return [np.asarray(values[p.trace_name], np.float32) for p in conv.outputs]


def program_inputs(conv: Converted, feed: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The MIL program's inputs by name for `feed` (TFLite's float inputs, an image as RGB pixels)."""
    program_in = {}
    for p, x in zip(conv.inputs, feed):
        image = conv.image and conv.image.name in (p.name, p.tflite_name)
        program_in[p.trace_name] = _image_planes(x, conv.image) if image else x
    return program_in


def seeded_feeds(model: Model, conv: Converted, batches: int = CHECK_BATCHES) -> list[list[np.ndarray]]:
    """The float inputs `check` feeds the program, per seed (an image input as RGB pixels)."""
    from tfl_rebuild.runtime.interpreter import index_limits, make_interpreter
    from tfl_rebuild.verify.measure import to_float

    sg = model.main
    interp = make_interpreter(model_content=bytes(model._storage))
    in_t = [sg.tensors[i] for i in sg.inputs]
    feeds = []
    for seed in range(batches):
        inputs, pixels = _seeded(interp, seed, conv, index_limits(sg))
        feeds.append([p if p is not None else to_float(t, x) for t, x, p in zip(in_t, inputs, pixels)])
    return feeds


def _image_planes(rgb: np.ndarray, img: ImageInput) -> np.ndarray:
    """What Core ML hands the program for an image: channel planes [1, C, H, W] in the declared layout."""
    seen = rgb[..., ::-1] if img.color_layout == "BGR" and rgb.shape[-1] == 3 else rgb
    return np.ascontiguousarray(seen.transpose(0, 3, 1, 2))


def _predict(conv: Converted, feed: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover (macOS)
    from PIL import Image

    data = {}
    for p, x in zip(conv.inputs, feed):
        if conv.image and conv.image.name in (p.name, p.tflite_name):
            arr = x[0].astype(np.uint8)
            data[p.name] = Image.fromarray(
                arr[..., 0] if arr.shape[-1] == 1 else arr, "L" if arr.shape[-1] == 1 else "RGB"
            )
        else:
            data[p.name] = x
    result = conv.mlmodel.predict(data)
    outs = []
    for p in conv.outputs:
        if p.name in result:
            outs.append(np.asarray(result[p.name], np.float32))
        else:  # a classifier: the label -> probability dict stands for the first output
            probs = next(v for v in result.values() if isinstance(v, dict))
            outs.append(np.asarray([probs[label] for label in conv.options.class_labels], np.float32))
    return outs
