"""Run a generated Keras module and the .tflite on the same seeded inputs and measure the gap.

Two checks, one tolerance definition (`tolerance`), shared with `compare`:

- End to end: each model output on 3 seeded batches, against the default runtime (XNNPACK).
  Errors accumulate through the network, so each output bar also admits twice the runtime's own
  noise: how far TFLite's two kernel sets (XNNPACK and the built-in reference kernels) disagree
  on the same input. Deep float decoders reach 1e-3 there (pose_landmark_full's heatmap); int8
  MobileNetV2 reaches 15 LSB (the built-in kernels round twice when they requantize).
- Layer-local: one run of the model patched to expose every tensor (the outputter, built-in
  kernels) gives TFLite's value of each intermediate; the Keras graph is then run once with every
  mapped layer fed TFLite's own inputs, so each op's error is its own, not accumulated. No noise
  allowance here: a wrong layer fails even where the outputs saturate or stay within noise.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TflRebuildError
from .inspect import quantization_kind, weight_tensors
from .ir import Model, Tensor
from .runtime import index_limits, make_interpreter, random_inputs, run

# Bars, by quantization kind. Quantized tensors are judged in LSBs of their own scale, the rest by
# max abs error / max |reference| ("rel").
FLOAT_REL_TOL = 1e-4
DYNAMIC_REL_TOL = 5e-2
INT8_LSB_TOL = 2.0
LSB_SLACK = 1e-3  # dequantized values carry float32 rounding: 1.0000001 LSB is 1 LSB
NOISE_FACTOR = 2.0  # end to end (and compare's accumulated errors): max(bar, 2 x runtime noise)
# Layer-local bars, from measurements: float ops fed TFLite's inputs are within rel 1e-6 on
# MobileNetV2 (8.6e-6 worst on pose_landmark_full); an int8 op is off by at most 1 LSB (the
# built-in kernels round twice, at 2^-shift then to the integer, so values within ~0.008 below a
# .5 round up; Keras rounds once); hybrid ops (float in, int8 weights) quantize their input on the
# fly: rel <= 8.4e-3 on dynamic-range MobileNetV2. A kernel scaled by 1.1 moves its layer by far
# more: each of int8 MobileNetV2's 53 kernels x 1.1 puts its own layer >= 8 LSB off.
LOCAL_LSB_TOL = 1.0
HYBRID_LOCAL_REL_TOL = 2e-2
QUANTIZED_KINDS = ("full-int8", "int16x8")
WEIGHT_QUANTIZED = ("int8", "uint8", "int4")


class VerificationError(TflRebuildError):
    exit_code = 1


@dataclass(frozen=True)
class Tolerance:
    """How far a rebuilt tensor may be from TFLite's: `bar` in `unit`, "LSB" (of `lsb`, the
    tensor's quantization scale) or "rel" (max abs error / max |reference|)."""

    unit: str
    bar: float
    lsb: float | None = None
    # LSB unit: what float32 rounding of two dequantized grid values can add, in LSB. A value q * scale
    # carries up to |q| * 2^-24 of it: 4e-3 LSB near int16's full scale, 1e-5 for int8.
    slack: float = 0.0

    def error(self, max_abs: float, max_rel: float) -> float:
        return max_abs / self.lsb if self.unit == "LSB" else max_rel

    def allows(self, error: float, noise: float = 0.0) -> bool:
        bar = max(self.bar, NOISE_FACTOR * noise)
        return error <= (bar * (1 + LSB_SLACK) + self.slack if self.unit == "LSB" else bar)

    def text(self, noise: bool = False) -> str:
        bar = f"{self.bar:g} LSB" if self.unit == "LSB" else f"rel {self.bar:g}"
        return f"max({bar}, {NOISE_FACTOR:g} x runtime noise)" if noise else bar


def tolerance(kind: str, tensor: Tensor, *, local: bool = False, hybrid: bool = False) -> Tolerance:
    """The one definition of "matches TFLite", for `verify` and `compare`.

    kind: the model's quantization kind; local: the error of one op fed TFLite's own inputs (else
    accumulated from the model inputs); hybrid: a dynamic-range op (float input, quantized weights).
    """
    scale = lsb_of(tensor) if kind in QUANTIZED_KINDS else None
    if scale is not None:
        full_scale = float(np.iinfo(np.dtype(tensor.dtype)).max + 1)
        return Tolerance("LSB", LOCAL_LSB_TOL if local else INT8_LSB_TOL, scale, slack=2 * full_scale * 2.0 ** -24)
    if kind == "dynamic-range" and not local:
        return Tolerance("rel", DYNAMIC_REL_TOL)
    return Tolerance("rel", HYBRID_LOCAL_REL_TOL if hybrid else FLOAT_REL_TOL)


def kind_text(kind: str, local: bool = False) -> str:
    """The bars of a model kind in words, e.g. for a report heading."""
    if kind in QUANTIZED_KINDS:
        return (f"<= {LOCAL_LSB_TOL:g} LSB of each quantized tensor, float ones rel <= {FLOAT_REL_TOL:g}" if local
                else f"<= {INT8_LSB_TOL:g} LSB of the tensor's scale (float tensors rel {FLOAT_REL_TOL:g})")
    if kind == "dynamic-range":
        return (f"rel <= {FLOAT_REL_TOL:g}, hybrid ops rel <= {HYBRID_LOCAL_REL_TOL:g}" if local
                else f"rel <= {DYNAMIC_REL_TOL:g}")
    return f"rel <= {FLOAT_REL_TOL:g}"


def lsb_of(t: Tensor) -> float | None:
    """The quantization step of a per-tensor quantized activation (None otherwise)."""
    if not t.quantized or t.dtype not in ("int8", "uint8", "int16") or t.quantization.scale.size != 1:
        return None
    return float(t.quantization.scale[0])


def is_hybrid(model: Model, op_index: int, subgraph: int = 0) -> bool:
    """TFLite runs this op (or an op of a subgraph it calls, e.g. a WHILE body) on quantized
    weights, with its float input quantized on the fly."""
    seen: set[int] = set()

    def hybrid(sg_index: int, ops) -> bool:
        sg = model.subgraphs[sg_index]
        weights = weight_tensors(sg)  # constants, also behind DENSIFY (sparse weights)
        for op in ops:
            if any(i >= 0 and i in weights and sg.tensors[i].quantized
                   and sg.tensors[i].dtype in WEIGHT_QUANTIZED for i in op.inputs):
                return True
            called = [v for k, v in (op.options or {}).items() if k.endswith("subgraph_index") and isinstance(v, int)]
            for c in called:
                if 0 <= c < len(model.subgraphs) and c not in seen:
                    seen.add(c)
                    if hybrid(c, model.subgraphs[c].operators):
                        return True
        return False

    return hybrid(subgraph, [model.subgraphs[subgraph].operators[op_index]])


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
class LayerReport:
    """One TFLite op's output, rebuilt by its Keras layer(s) from TFLite's own input tensors."""

    op_index: int
    op: str
    tensor: str
    error: float  # in the tolerance's unit
    tolerance: Tolerance
    max_abs: float
    max_rel: float
    ok: bool

    def text(self) -> str:
        unit = " LSB" if self.tolerance.unit == "LSB" else ""
        prefix = "" if unit else "rel "
        return (f"op {self.op_index} {self.op} {self.tensor!r} ({prefix}{self.error:.3g}{unit}, "
                f"bar {self.tolerance.text()})")


@dataclass
class Report:
    kind: str
    tolerance: str
    outputs: list[OutputReport] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)
    layers_skipped: str | None = None  # why the layer-local check did not run
    layerwise: bool = True  # False: outputs only (a Core ML check has no layers to pair)
    notes: list[str] = field(default_factory=list)  # e.g. which runtime the outputs were checked against

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs) and all(r.ok for r in self.layers)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def worst_layer(self) -> LayerReport | None:
        return max(self.layers, key=lambda r: r.error / r.tolerance.bar if r.tolerance.bar else r.error,
                   default=None)

    def mismatch(self) -> str:
        """One line: the worst output above tolerance and how many are, or the worst layer."""
        bad = [o for o in self.outputs if not o.ok]
        if not bad:
            worst_layer = self.worst_layer
            n = sum(not r.ok for r in self.layers)
            return f"{n} layer(s) off alone, worst {worst_layer.text()}" if worst_layer else "no outputs"
        worst = max(bad, key=lambda o: (o.lsb if o.lsb is not None else -1.0, o.max_rel))
        err = f"{worst.lsb:.2f} LSB" if worst.lsb is not None else f"rel {worst.max_rel:.3g}"
        top1 = "" if worst.top1_agree in (None, 1.0) else f", top-1 agrees {worst.top1_agree:.0%}"
        return f"{len(bad)}/{len(self.outputs)} output(s) off, worst {worst.name!r} {err}{top1} ({self.tolerance})"


def load_module(path: str | Path):
    """Import a generated module from its file (each call gets a fresh module)."""
    from .native_logs import preload_tensorflow

    preload_tensorflow()  # the module imports keras, and so TensorFlow: without its C++ start-up notices
    path = Path(path).resolve()
    name = f"tfl_rebuild_generated_{abs(hash((str(path), path.stat().st_mtime_ns)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TflRebuildError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sidecar_for(py_path: str | Path) -> Path:
    py_path = Path(py_path)
    return py_path.with_name(f"{py_path.stem}_tensors.json")


def read_sidecar(py_path: str | Path) -> list[dict] | None:
    """The TFLite tensor -> Keras layer mapping `keras` writes beside the module (None if absent)."""
    side = sidecar_for(py_path)
    if not side.is_file():
        return None
    return json.loads(side.read_text(encoding="utf-8"))["tensors"]


def to_float(t: Tensor, value: np.ndarray) -> np.ndarray:
    """What a quantized TFLite tensor value means in float; float values pass through."""
    if t.quantized and np.issubdtype(value.dtype, np.integer):
        q = t.quantization
        if q.scale.size > 1 and value.ndim > q.quantized_dimension:  # per-channel
            shape = [1] * value.ndim
            shape[q.quantized_dimension] = -1
            scale, zp = q.scale.reshape(shape), q.zero_point.reshape(shape)
        else:
            scale, zp = q.scale[0], q.zero_point[0]
        return ((value.astype(np.float64) - zp) * scale).astype(np.float32)
    if value.dtype.kind == "c":  # the rebuild holds complex values as (real, imaginary) pairs last
        return np.stack([value.real, value.imag], axis=-1).astype(np.float32)
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


def max_errors(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |ref|): `compare_arrays` without the cosine, in float32
    where both are (the layer-local check reads every tensor of the model)."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.size != got.size:
        return float("inf"), float("inf")
    if ref.size == 0:
        return 0.0, 0.0
    dtype = np.float32 if ref.dtype == got.dtype == np.float32 else np.float64
    ref, got = ref.reshape(-1).astype(dtype, copy=False), got.reshape(-1).astype(dtype, copy=False)
    diff, scale = float(np.max(np.abs(ref - got))), float(np.max(np.abs(ref)))
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def run_keras(keras_model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in outs]


# -- TFLite's intermediate tensors and the layer-local run -------------------------------------------


def tensor_dumper(model: Model, xnnpack: bool = False):
    """A runner of the model patched to output every op's tensor (see outputter.py)."""
    from .outputter import Dumper, prepare

    return Dumper(prepare(model, xnnpack=xnnpack))


def dumped_floats(model: Model, dumper, inputs: list[np.ndarray], only=None) -> dict[int, np.ndarray]:
    """One run: tensor index -> its float value (quantized tensors dequantized); `only`: these
    tensor indices, not every dumped one."""
    sg = model.main
    result = dumper.run(inputs, copy=False)
    floats = {e.tensor_index: np.array(to_float(sg.tensors[e.tensor_index], np.asarray(result[k])))
              for k, e in result.entries.items() if only is None or e.tensor_index in only}
    del result  # views into the interpreter: the next run needs them gone
    return floats


def present(mapping: list[dict], keras_model) -> list[dict]:
    """Mapping rows whose layer the Keras model has (a hand-edited module may lack some)."""
    names = {layer.name for layer in keras_model.layers}
    return [m for m in mapping if m["layer"] in names]


def local_outputs(keras_model, mapping: list[dict], feed: list[np.ndarray],
                  reference: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Tensor index -> what its Keras layer(s) compute from TFLite's own values of their inputs.

    One pass over the functional graph: after each layer that rebuilds a TFLite tensor, its value
    is recorded and TFLite's value flows on in its place. Layers of one op that do not end a
    TFLite tensor (e.g. the Conv2D before a FakeQuant) run on the substituted values as usual.
    """
    import keras
    from keras import tree

    by_layer: dict[str, dict[int, int]] = {}
    for m in mapping:
        by_layer.setdefault(m["layer"], {})[m["output"]] = m["tensor"]
    local: dict[int, np.ndarray] = {}

    def call(op, *args, **kwargs):
        result = op(*args, **kwargs)
        outs = by_layer.get(op.name)
        if not outs:
            return result
        flat = list(tree.flatten(result))
        for k, t in outs.items():
            if k >= len(flat):
                continue
            local[t] = np.asarray(flat[k])
            ref = reference.get(t)
            if ref is not None and ref.size == local[t].size:
                dtype = keras.backend.standardize_dtype(flat[k].dtype)
                flat[k] = keras.ops.convert_to_tensor(ref.reshape(local[t].shape), dtype=dtype)
        return flat if isinstance(result, (list, tuple)) else flat[0]

    keras_model._run_through_graph(feed if len(feed) > 1 else feed[0], call_fn=call)
    return local


# Hybrid ops whose kernels quantize their float activation to int8 on the fly, per batch (conv)
# or per row (fully connected, batch matmul): op -> the slot of that activation.
HYBRID_QUANTIZED_INPUT = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "FULLY_CONNECTED": 0, "BATCH_MATMUL": 0}


def quantize_on_the_fly(x: np.ndarray, rows: int, asymmetric: bool) -> np.ndarray:
    """`x` as a hybrid kernel sees it: int8 per row of `rows` equal parts, dequantized.

    Symmetric: scale max|x| / 127 (tensor_utils::SymmetricQuantizeFloats). Asymmetric: the row's
    [min, max] (widened to hold 0) over 255 steps with a zero point (AsymmetricQuantizeFloats)."""
    flat = np.asarray(x, np.float32).reshape(rows, -1)
    out = np.empty_like(flat)
    for r, row in enumerate(flat):
        if asymmetric:
            lo, hi = min(float(row.min()), 0.0), max(float(row.max()), 0.0)
            scale = (hi - lo) / 255.0
            if scale == 0.0:
                out[r] = 0.0
                continue
            zero = np.round(-128.0 - lo / scale)
            out[r] = (np.clip(np.round(row / scale) + zero, -128, 127) - zero) * scale
        else:
            peak = float(np.abs(row).max())
            if peak == 0.0:
                out[r] = 0.0
                continue
            scale = peak / 127.0
            out[r] = np.clip(np.round(row / scale), -127, 127) * scale
    return out.reshape(np.shape(x))


def _hybrid_inputs(model: Model, sg) -> dict[int, int]:
    """Activation tensor -> how many rows its hybrid consumer quantizes it in (main subgraph)."""
    found: dict[int, int] = {}
    for k, op in enumerate(sg.operators):
        slot = HYBRID_QUANTIZED_INPUT.get(op.opcode)
        if slot is None or len(op.inputs) <= slot or op.inputs[slot] < 0 or not is_hybrid(model, k):
            continue
        x = op.inputs[slot]
        shape = sg.tensors[x].shape
        if sg.tensors[x].dtype != "float32" or not len(shape):
            continue
        size = int(np.prod(shape))
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            rows = int(shape[0])
        elif op.opcode == "FULLY_CONNECTED":  # rows of n_in values, whatever the input's rank
            n_in = int(sg.tensors[op.inputs[1]].shape[-1])
            rows = size // n_in if n_in and size % n_in == 0 else 0
        else:
            rows = int(np.prod(shape[:-1]))
        if rows > 0:
            found[x] = rows
    return found


def hybrid_local_outputs(model: Model, keras_model, mapping: list[dict], feed: list[np.ndarray],
                         reference: dict[int, np.ndarray]) -> list[dict[int, np.ndarray]]:
    """The layer-local run again with each hybrid op's input quantized as its kernel does, once
    symmetric and once asymmetric: the rebuild keeps float activations, so a hybrid layer differs
    from the runtime by that quantization (4% on MobileNetV3's 1024-wide logits conv), which the
    runtime reproduces within float rounding when given the quantized input. [] for other kinds."""
    if quantization_kind(model) != "dynamic-range":
        return []
    sg = model.main
    hybrid_inputs = _hybrid_inputs(model, sg)
    if not hybrid_inputs:
        return []
    runs = []
    for asymmetric in (False, True):
        ref = dict(reference)
        fed = list(feed)
        for x, rows in hybrid_inputs.items():
            if x in ref:
                ref[x] = quantize_on_the_fly(ref[x], rows, asymmetric)
            if x in sg.inputs:
                k = sg.inputs.index(x)
                fed[k] = quantize_on_the_fly(fed[k], rows, asymmetric).reshape(np.shape(feed[k]))
        runs.append(local_outputs(keras_model, mapping, fed, ref))
    return runs


FLOAT32_UNIT = 2.0 ** -24  # float32's unit roundoff


def float32_rounding_rel(model: Model, op_index: int, reference: dict[int, np.ndarray], out: np.ndarray) -> float:
    """How far float32 itself may take a FULLY_CONNECTED / BATCH_MATMUL output, relative to its
    largest value: sqrt(n) u S / max |out| (the probabilistic bound on a dot product of n terms,
    u = 2^-24, S the largest sum of |terms| incl. |bias|); 0 for other ops or unknown inputs.

    It exceeds the float bar only where the sum cancels: a classifier head whose logits are a
    small difference of large terms (ConvNeXt-Tiny's at 64x64: sum |x w| + |b| = 1.3e4 for
    logits up to 4.8). There the runtime's own kernels are 6e-5 (built-in) and 1e-4 (XNNPACK) from
    the float64 result, and a float32 rebuild lands 1.3e-4 from the built-in kernels."""
    from .weights import value

    sg = model.main
    op = sg.operators[op_index]
    if op.opcode not in ("FULLY_CONNECTED", "BATCH_MATMUL") or len(op.inputs) < 2:
        return 0.0

    def operand(i: int) -> np.ndarray | None:
        if i < 0:
            return None
        t = sg.tensors[i]
        if t.data is not None:
            return np.abs(value(t).astype(np.float64))
        return np.abs(reference[i].astype(np.float64)) if i in reference else None

    a, b = operand(op.inputs[0]), operand(op.inputs[1])
    if a is None or b is None or not out.size:
        return 0.0
    if op.opcode == "FULLY_CONNECTED":
        n = int(b.shape[-1])
        if a.size % n:
            return 0.0
        terms = a.reshape(-1, n) @ b.reshape(-1, n).T
        bias = operand(op.inputs[2]) if len(op.inputs) > 2 else None
        if bias is not None:
            terms = terms + bias.reshape(-1)
    else:
        if op.options.get("adj_x"):
            a = np.swapaxes(a, -1, -2)
        if op.options.get("adj_y"):
            b = np.swapaxes(b, -1, -2)
        n = int(a.shape[-1])
        try:
            terms = np.matmul(a, b)
        except ValueError:
            return 0.0
    peak = float(np.max(np.abs(out)))
    return float(np.sqrt(n) * FLOAT32_UNIT * np.max(terms) / peak) if peak > 0 else 0.0


def closest_local(model: Model, op_index: int, t: int, reference: dict[int, np.ndarray],
                  local: dict[int, np.ndarray], hybrid_local: list[dict[int, np.ndarray]] | None) -> np.ndarray:
    """local[t]; for a hybrid op's output, whichever of its runs (float input, or quantized as
    `hybrid_local_outputs` does) is closest to TFLite's value."""
    best = local[t]
    if not hybrid_local or model.main.operators[op_index].opcode not in HYBRID_QUANTIZED_INPUT:
        return best
    err = max_errors(reference[t], best)[1]
    for values in hybrid_local:
        if t in values and (e := max_errors(reference[t], values[t])[1]) < err:
            best, err = values[t], e
    return best


def layer_reports(model: Model, mapping: list[dict], reference: dict[int, np.ndarray],
                  local: dict[int, np.ndarray],
                  hybrid_local: list[dict[int, np.ndarray]] | None = None) -> list[LayerReport]:
    """hybrid_local: `hybrid_local_outputs`; a hybrid layer is judged by the closest of its runs."""
    sg = model.main
    kind = quantization_kind(model)
    reports = []
    for m in sorted(mapping, key=lambda m: (m["op_index"], m["output"])):
        t = m["tensor"]
        if t not in reference or t not in local:
            continue
        tol = tolerance(kind, sg.tensors[t], local=True,
                        hybrid=kind == "dynamic-range" and is_hybrid(model, m["op_index"]))
        max_abs, max_rel = max_errors(reference[t], closest_local(model, m["op_index"], t, reference, local,
                                                                  hybrid_local))
        if tol.unit == "rel":
            rounding = float32_rounding_rel(model, m["op_index"], reference, reference[t])
            if rounding > tol.bar:
                tol = Tolerance("rel", rounding)
        err = tol.error(max_abs, max_rel)
        reports.append(LayerReport(m["op_index"], m["op"], sg.tensors[t].name, err, tol, max_abs, max_rel,
                                   tol.allows(err)))
    return reports


# -- verify ------------------------------------------------------------------------------------------


def verify(model: Model, keras_model, batches: int = 3, tensors: list[dict] | None = None) -> Report:
    """End-to-end and layer-local comparison with TFLite.

    tensors: the TFLite tensor -> Keras layer mapping (the `_tensors.json` sidecar); regenerated
    from the model when not given.
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
    limits = index_limits(sg)  # token-id inputs stay inside their embedding table
    for seed in range(batches):
        inputs = random_inputs(interp, seed, limits)
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
                layers = layer_reports(model, mapping, builtin, local,
                                       hybrid_local_outputs(model, keras_model, mapping, feed, builtin))
        got = run_keras(keras_model, feed)
        for k in range(len(out_tensors)):
            refs[k].append(ref[k])
            gots[k].append(got[k] if k < len(got) else np.zeros(0))
    report = Report(kind, _heading(kind), layers=layers, layers_skipped=skipped)
    if getattr(interp, "fallback_note", None):
        report.notes.append(interp.fallback_note)
    for k, t in enumerate(out_tensors):
        report.outputs.append(_output_report(kind, t, refs[k], gots[k], noise[k], top1_noise[k], batches))
    return report


def _mapping(model: Model) -> list[dict]:
    from .codegen.emit import generate

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
    return (f"outputs {kind_text(kind)} or {NOISE_FACTOR:g} x runtime noise; "
            f"each layer fed TFLite's inputs {kind_text(kind, local=True)}")


def _output_report(kind: str, t: Tensor, refs: list[np.ndarray], gots: list[np.ndarray], noise: float,
                   top1_noise: bool, batches: int) -> OutputReport:
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
    return OutputReport(t.name, max_abs, max_rel, cos, max_abs / tol.lsb if tol.unit == "LSB" else None,
                        input_sensitive=spread > 0.01, noise=noise_in_unit, top1_agree=top1, ok=ok)


CONSTANT_NOTE = "constant output; not evidence of a match"


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    table = Table("output", "max abs", "max rel", "runtime noise", "cosine", "LSB", "top-1", "status", box=None,
                  pad_edge=False)
    for o in report.outputs:
        if not o.ok:
            status = "[red]MISMATCH[/red]"
        else:
            status = "[green]match[/green]" if o.input_sensitive else f"[yellow]{CONSTANT_NOTE}[/yellow]"
        table.add_row(escape(o.name), f"{o.max_abs:.3g}", f"{o.max_rel:.3g}", f"{o.noise:.3g}", f"{o.cosine:.6f}",
                      "-" if o.lsb is None else f"{o.lsb:.2f}",
                      "-" if o.top1_agree is None else f"{o.top1_agree:.0%}", status)
    con.print(f"verification vs TFLite ({report.kind} model; {report.tolerance}):")
    con.print(table)
    for note in report.notes:
        con.print(f"[yellow]note: {escape(note)}[/yellow]")
    if not report.layerwise:
        return
    if report.layers_skipped:
        con.print(f"[yellow]layer-local check not run: {escape(report.layers_skipped)}[/yellow]")
        return
    bad = [r for r in report.layers if not r.ok]
    worst = report.worst_layer
    if worst is None:
        con.print("[yellow]layer-local check: no layer of the rebuild is mapped to a TFLite tensor[/yellow]")
        return
    if not bad:
        con.print(f"layers: {len(report.layers)} checked on TFLite's own inputs, all [green]match[/green]; "
                  f"worst {escape(worst.text())}")
        return
    con.print(f"layers: [red]MISMATCH[/red] in {len(bad)} of {len(report.layers)} (each fed TFLite's own inputs):")
    for r in bad[:5]:
        con.print(f"  {escape(r.text())}")
    if len(bad) > 5:
        con.print(f"  ... and {len(bad) - 5} more")
