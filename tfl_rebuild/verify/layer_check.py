"""The layer-local check: every rebuilt layer fed TFLite's own input tensors.

One run of the model patched to expose every tensor (the outputter, built-in kernels) gives TFLite's
value of each intermediate; the Keras graph is then run once with every mapped layer fed those
values, so each op's error is its own, not accumulated. No noise allowance here: a wrong layer fails
even where the outputs saturate or stay within the runtime's noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfl_rebuild.rebuild.loader import to_numpy
from tfl_rebuild.rebuild.ops.registry import hybrid_input
from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.verify.measure import Tolerance, is_hybrid, max_errors, to_float, tolerance


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
        return (
            f"op {self.op_index} {self.op} {self.tensor!r} ({prefix}{self.error:.3g}{unit}, "
            f"bar {self.tolerance.text()})"
        )


def tensor_dumper(model: Model, xnnpack: bool = False):
    """A runner of the model patched to output every op's tensor (see outputter.py)."""
    from tfl_rebuild.runtime.outputter import Dumper, prepare

    return Dumper(prepare(model, xnnpack=xnnpack))


def dumped_floats(model: Model, dumper, inputs: list[np.ndarray], only=None) -> dict[int, np.ndarray]:
    """One run: tensor index -> its float value (quantized tensors dequantized); `only`: these
    tensor indices, not every dumped one."""
    sg = model.main
    result = dumper.run(inputs, copy=False)
    floats = {
        e.tensor_index: np.array(to_float(sg.tensors[e.tensor_index], np.asarray(result[k])))
        for k, e in result.entries.items()
        if only is None or e.tensor_index in only
    }
    del result  # views into the interpreter: the next run needs them gone
    return floats


def present(mapping: list[dict], keras_model) -> list[dict]:
    """Mapping rows whose layer the Keras model has (a hand-edited module may lack some)."""
    names = {layer.name for layer in keras_model.layers}
    return [m for m in mapping if m["layer"] in names]


def local_outputs(
    keras_model, mapping: list[dict], feed: list[np.ndarray], reference: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
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
            local[t] = to_numpy(flat[k], keras)
            ref = reference.get(t)
            if ref is not None and ref.size == local[t].size:
                dtype = keras.backend.standardize_dtype(flat[k].dtype)
                flat[k] = keras.ops.convert_to_tensor(ref.reshape(local[t].shape), dtype=dtype)
        return flat if isinstance(result, (list, tuple)) else flat[0]

    keras_model._run_through_graph(feed if len(feed) > 1 else feed[0], call_fn=call)
    return local


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
    """Activation tensor -> how many rows its hybrid consumer quantizes it in (main subgraph). The
    registry names the ops and the input slot (`hybrid_input`); conv kernels quantize per batch,
    fully connected and batch matmul per row."""
    found: dict[int, int] = {}
    for k, op in enumerate(sg.operators):
        slot = hybrid_input(op)
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


def hybrid_local_outputs(
    model: Model, keras_model, mapping: list[dict], feed: list[np.ndarray], reference: dict[int, np.ndarray]
) -> list[dict[int, np.ndarray]]:
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


FLOAT32_UNIT = 2.0**-24  # float32's unit roundoff


def float32_rounding_rel(
    model: Model, op_index: int, reference: dict[int, np.ndarray], out: np.ndarray
) -> float:
    """How far float32 itself may take a FULLY_CONNECTED / BATCH_MATMUL output, relative to its
    largest value: sqrt(n) u S / max |out| (the probabilistic bound on a dot product of n terms,
    u = 2^-24, S the largest sum of |terms| incl. |bias|); 0 for other ops or unknown inputs.

    It exceeds the float bar only where the sum cancels: a classifier head whose logits are a
    small difference of large terms (ConvNeXt-Tiny's at 64x64: sum |x w| + |b| = 1.3e4 for
    logits up to 4.8). There the runtime's own kernels are 6e-5 (built-in) and 1e-4 (XNNPACK) from
    the float64 result, and a float32 rebuild lands 1.3e-4 from the built-in kernels."""
    from tfl_rebuild.tflite.weights import value

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


def closest_local(
    model: Model,
    op_index: int,
    t: int,
    reference: dict[int, np.ndarray],
    local: dict[int, np.ndarray],
    hybrid_local: list[dict[int, np.ndarray]] | None,
) -> np.ndarray:
    """local[t]; for a hybrid op's output, whichever of its runs (float input, or quantized as
    `hybrid_local_outputs` does) is closest to TFLite's value."""
    best = local[t]
    if not hybrid_local or hybrid_input(model.main.operators[op_index]) is None:
        return best
    err = max_errors(reference[t], best)[1]
    for values in hybrid_local:
        if t in values and (e := max_errors(reference[t], values[t])[1]) < err:
            best, err = values[t], e
    return best


def layer_reports(
    model: Model,
    mapping: list[dict],
    reference: dict[int, np.ndarray],
    local: dict[int, np.ndarray],
    hybrid_local: list[dict[int, np.ndarray]] | None = None,
) -> list[LayerReport]:
    """hybrid_local: `hybrid_local_outputs`; a hybrid layer is judged by the closest of its runs."""
    sg = model.main
    kind = quantization_kind(model)
    reports = []
    for m in sorted(mapping, key=lambda m: (m["op_index"], m["output"])):
        t = m["tensor"]
        if t not in reference or t not in local:
            continue
        tol = tolerance(
            kind,
            sg.tensors[t],
            local=True,
            hybrid=kind == "dynamic-range" and is_hybrid(model, m["op_index"]),
        )
        max_abs, max_rel = max_errors(
            reference[t], closest_local(model, m["op_index"], t, reference, local, hybrid_local)
        )
        if tol.unit == "rel":
            rounding = float32_rounding_rel(model, m["op_index"], reference, reference[t])
            if rounding > tol.bar:
                tol = Tolerance("rel", rounding)
        err = tol.error(max_abs, max_rel)
        reports.append(
            LayerReport(
                m["op_index"], m["op"], sg.tensors[t].name, err, tol, max_abs, max_rel, tol.allows(err)
            )
        )
    return reports


# -- verify ------------------------------------------------------------------------------------------
