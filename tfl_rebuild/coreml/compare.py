"""TFLite vs Core ML, op by op: `compare model.tflite model.mlpackage`.

The saved ML program is read back into a MIL Program (coremltools' milproto loader: no macOS
needed) and run with the numpy evaluator (mil_eval) on the same seeded inputs as TFLite, which runs
once with every intermediate tensor exposed (the outputter). Pairing goes through the names: the
program keeps the TensorFlow names of the traced Keras model, "<model>_1/<layer>_1/<tf op>" with
'/' made '_' (and "_cast_fp16" added to an op cast to float16), and the rebuild's sidecar
(`<stem>_tensors.json`, layer -> TFLite tensor) names the layers. A layer's last MIL op pairs with
its TFLite tensor; a value in the program's NCHW layout is transposed back (the row says so).

Each pair is measured as `compare A.tflite B.tflite` measures (verify.cross, TFLite is A) and the
first pair under FP16_SQNR_DB is where float16 first breaks; the evaluator also names the MIL op
that made the first NaN, and the values that overflowed float16.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError
from tfl_rebuild.text import printable
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.verify.cross import CrossComparison, PairRow, compare_arrays, mean_error, sqnr_db

# float16 keeps 11 bits: its rounding alone is ~66 dB below the signal. 40 dB is an rms error of
# 1% of the signal's rms, the float16 bar's rel 1e-2 (coreml/check.py) in SQNR terms.
FP16_SQNR_DB = 40.0
FP32_SQNR_DB = 60.0  # as two float TFLite models (verify.cross.FLOAT_SQNR_DB)
CAST_SUFFIX = re.compile(r"_cast_fp(16|32)$")


@dataclass
class CoremlComparison(CrossComparison):
    """A CrossComparison whose B is a Core ML program, with the evaluator's NaN and overflow finds."""

    nan_origins: list[str] = field(default_factory=list)  # "<MIL op type> <name> (layer L)"
    overflow: list[str] = field(default_factory=list)  # MIL values beyond float16's range

    def verdict(self) -> str:
        text = super().verdict()
        if self.nan_origins:
            text += f"; NaN first made by MIL op {printable(self.nan_origins[0], 120)}"
        if self.overflow:
            text += f"; {len(self.overflow)} MIL value(s) overflow float16"
        return text

    def to_dict(self) -> dict:
        return {**super().to_dict(), "nan_origins": self.nan_origins, "float16_overflow": self.overflow}


def load_program(path: str):
    """(MIL Program, spec) of a saved .mlpackage / .mlmodel ML program; one line when it is not one."""
    from tfl_rebuild.coreml.convert import quiet_coremltools

    quiet_coremltools()
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    try:
        mlmodel = ct.models.MLModel(path, skip_model_load=True)
        spec = mlmodel.get_spec()
    except Exception as exc:
        raise InputError(f"{path}: not a Core ML model coremltools can read ({type(exc).__name__})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise InputError(
            f"{path}: a {spec.WhichOneof('Type')} model; op by op needs an ML program (.mlpackage)"
        )
    try:
        program = load(spec, spec.specificationVersion, mlmodel.weights_dir)
    except Exception as exc:
        raise InputError(f"{path}: cannot read its ML program ({type(exc).__name__}: {exc})") from None
    return program, spec


def layer_of(name: str, layers: list[str]) -> str | None:
    """The Keras layer a MIL op belongs to: the longest layer L with "_L_<n>_" in its name."""
    base = CAST_SUFFIX.sub("", name)
    best = None
    for layer in layers:
        if re.search(rf"(?:^|_){re.escape(layer)}_\d+_", base) and (best is None or len(layer) > len(best)):
            best = layer
    return best


def _oriented(got: np.ndarray, shape: tuple[int, ...], ref: np.ndarray) -> tuple[np.ndarray, str] | None:
    """`got` in TFLite's shape: the axis order (as is, NCHW -> NHWC, ...) that fits `ref` best.

    A shape alone cannot tell [1, 32, 32, 32] NCHW from NHWC, so every order that gives TFLite's
    shape is measured and the closest kept (as is on a tie); the row names the transposition."""
    got = np.asarray(got, np.float32)
    if got.size != int(np.prod(shape)):
        return None
    if got.ndim != len(shape):
        squeezed = [d for d in got.shape if d != 1]
        return (got.reshape(shape), "") if squeezed == [d for d in shape if d != 1] else None
    best = None
    for perm in itertools.permutations(range(got.ndim)):
        if tuple(got.shape[p] for p in perm) != tuple(shape):
            continue
        cand = np.transpose(got, perm)
        with np.errstate(invalid="ignore"):
            err = float(np.nansum(np.abs(cand.astype(np.float64) - ref))) if ref.size else 0.0
        if best is None or err < best[0]:
            best = (err, cand, perm)
    if best is None:
        return None
    perm = best[2]
    return best[1], "" if perm == tuple(range(got.ndim)) else "transposed " + "".join(map(str, perm))


def compare_coreml(
    model: Model,
    package: str,
    layers: dict[str, int],
    seed: int = 0,
    threshold_db: float | None = None,
    values: list[np.ndarray] | None = None,
) -> CoremlComparison:
    """Run the TFLite model (every tensor) and the package's MIL program (every op) on the same
    inputs (`values`, TFLite's, else seeded) and measure each paired layer; `layers`: Keras layer
    name -> TFLite tensor index."""
    from tfl_rebuild.coreml.mil_eval import MilEvalError, evaluate, unknown_ops
    from tfl_rebuild.runtime.interpreter import index_limits, random_input
    from tfl_rebuild.runtime.outputter import Dumper, prepare
    from tfl_rebuild.tflite.analysis import quantization_kind
    from tfl_rebuild.verify.cross import floats
    from tfl_rebuild.verify.measure import to_float

    program, spec = load_program(package)
    fn = program.functions["main"]
    missing = unknown_ops(program)
    if missing:
        raise InputError(f"{package}: the MIL evaluator cannot run op(s) {', '.join(missing)}")
    sg = model.main
    spec_inputs = [f.name for f in spec.description.input]
    if len(spec_inputs) != len(sg.inputs):
        raise InputError(f"{package} takes {len(spec_inputs)} input(s), the .tflite {len(sg.inputs)}")
    if any(f.type.WhichOneof("Type") == "imageType" for f in spec.description.input):
        raise InputError(
            f"{package}: an image input; op by op compares tensor inputs (convert without --image-input)"
        )
    dumper = Dumper(prepare(model))
    rng = np.random.default_rng(seed)
    limits = index_limits(sg)
    if values is None:
        values = [random_input(d, rng, limits[k]) for k, d in enumerate(dumper.input_details)]
        source = f"random(seed={seed})"
    else:
        source = "given"
    feed = {}
    for name, t, v in zip(spec_inputs, (sg.tensors[i] for i in sg.inputs), values):
        if name not in fn.inputs:
            raise InputError(f"{package}: its program has no input {name!r}")
        var = fn.inputs[name]
        fixed = all(isinstance(d, (int, np.integer)) for d in var.shape)
        if fixed and np.size(v) != int(np.prod(var.shape)):
            raise InputError(
                f"input {t.name!r} is {list(np.shape(v))}; {Path(package).name} takes {list(var.shape)}"
            )
        feed[name] = np.asarray(to_float(t, v)).reshape(var.shape) if fixed else to_float(t, v)
    tfl = floats(model, dumper, values)

    names = list(layers)
    last: dict[str, tuple[int, object]] = {}  # layer -> (position, its last non-cast MIL op)
    position = 0
    for operation in fn.operations:
        position += 1
        if operation.op_type in ("const", "cast"):
            continue
        layer = layer_of(operation.name, names)
        if layer is not None:
            last[layer] = (position, operation)
    wanted = {op.outputs[0].name for _, op in last.values()}
    got: dict[str, np.ndarray] = {}

    def observe(operation, env) -> None:
        for var in operation.outputs:
            if var.name in wanted and isinstance(env.get(var.name), np.ndarray):
                got[var.name] = np.array(env[var.name], np.float32)

    nan_origins: list[str] = []
    overflow: list[str] = []
    try:
        with np.errstate(all="ignore"):  # float16's inf and NaN are what is measured, not warned about
            evaluate(program, feed, overflow=overflow, nan_origins=nan_origins, observe=observe)
    except MilEvalError as exc:
        raise InputError(f"{package}: the MIL evaluator cannot run it: {exc}") from None

    rows, paired = [], set()
    ops = {i: o for i, o in enumerate(sg.operators)}
    producer = {out: k for k, o in ops.items() for out in o.outputs}
    for layer, tensor in sorted(layers.items(), key=lambda lt: (producer.get(lt[1], -1), lt[1])):
        if layer not in last or tensor not in tfl:
            continue
        pos, operation = last[layer]
        value = got.get(operation.outputs[0].name)
        ref = np.asarray(tfl[tensor], np.float32)
        fitted = None if value is None else _oriented(value, ref.shape, ref)
        if fitted is None:
            continue
        value, how = fitted
        dtype = (
            str(operation.outputs[0].dtype.__name__)
            if hasattr(operation.outputs[0].dtype, "__name__")
            else ""
        )
        max_abs, max_rel, cos = compare_arrays(ref, value)
        k = producer.get(tensor, -1)
        rows.append(
            PairRow(
                k,
                sg_op_name(model, k),
                sg.tensors[tensor].name,
                pos,
                operation.op_type,
                operation.name,
                "name" + (f", {how}" if how else ""),
                list(ref.shape),
                dtype,
                max_abs,
                max_rel,
                cos,
                sqnr_db(ref, value),
                mean_error(ref, value),
                None,
            )
        )
        paired.add(tensor)
    produced = sorted(set(layers.values()), key=lambda t: (producer.get(t, -1), t))  # what the rebuild names
    precision = _precision(fn)
    kind_a = quantization_kind(model)
    threshold = (
        threshold_db if threshold_db is not None else (FP16_SQNR_DB if precision != "fp32" else FP32_SQNR_DB)
    )
    by_name = {op.name: layer_of(op.name, names) for _, op in last.values()}
    return CoremlComparison(
        Path(model.path).name if model.path else "model.tflite",
        Path(package).name,
        kind_a,
        f"Core ML {precision}",
        rows,
        threshold,
        mode="accumulated",
        inputs=source,
        coverage=len(paired) / len(produced) if produced else 1.0,
        how={"name": len(rows)},
        unpaired_a=[sg.tensors[t].name for t in produced if t not in paired],
        unpaired_b=[],
        nan_origins=[_with_layer(n, names, by_name) for n in dict.fromkeys(nan_origins)],
        overflow=sorted(set(overflow)),
    )


def sg_op_name(model: Model, k: int) -> str:
    return "input" if k < 0 else model.main.operators[k].key


def _with_layer(origin: str, names: list[str], by_name: dict) -> str:
    layer = layer_of(origin.split(" ", 1)[-1], names)
    return f"{origin} (layer {layer})" if layer else origin


def _precision(fn) -> str:
    """fp16, fp32 or mixed: the dtypes of the program's non-const float ops."""
    from coremltools.converters.mil.mil import types

    kinds = set()
    for operation in fn.operations:
        if operation.op_type in ("const", "cast"):
            continue
        for var in operation.outputs:
            dtype = var.dtype
            if dtype in (types.fp16, types.fp32):
                kinds.add("fp16" if dtype == types.fp16 else "fp32")
    return "mixed" if len(kinds) == 2 else (kinds.pop() if kinds else "fp32")
