"""How far a rebuild is from TFLite: tensor values as floats, the error measures, and the bars.

One definition of "matches TFLite" (`tolerance`), shared by `verify`, `layer_check`, `compare` and
the Core ML check. Quantized tensors are judged in LSBs of their own scale, the rest by max abs
error / max |reference| ("rel").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfl_rebuild.tflite.analysis import weight_tensors
from tfl_rebuild.tflite.ir import Model, Tensor

# Bars, by quantization kind.
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
        return Tolerance(
            "LSB", LOCAL_LSB_TOL if local else INT8_LSB_TOL, scale, slack=2 * full_scale * 2.0**-24
        )
    if kind == "dynamic-range" and not local:
        return Tolerance("rel", DYNAMIC_REL_TOL)
    return Tolerance("rel", HYBRID_LOCAL_REL_TOL if hybrid else FLOAT_REL_TOL)


def kind_text(kind: str, local: bool = False) -> str:
    """The bars of a model kind in words, e.g. for a report heading."""
    if kind in QUANTIZED_KINDS:
        return (
            f"<= {LOCAL_LSB_TOL:g} LSB of each quantized tensor, float ones rel <= {FLOAT_REL_TOL:g}"
            if local
            else f"<= {INT8_LSB_TOL:g} LSB of the tensor's scale (float tensors rel {FLOAT_REL_TOL:g})"
        )
    if kind == "dynamic-range":
        return (
            f"rel <= {FLOAT_REL_TOL:g}, hybrid ops rel <= {HYBRID_LOCAL_REL_TOL:g}"
            if local
            else f"rel <= {DYNAMIC_REL_TOL:g}"
        )
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
            if any(
                i >= 0
                and i in weights
                and sg.tensors[i].quantized
                and sg.tensors[i].dtype in WEIGHT_QUANTIZED
                for i in op.inputs
            ):
                return True
            called = [
                v
                for k, v in (op.options or {}).items()
                if k.endswith("subgraph_index") and isinstance(v, int)
            ]
            for c in called:
                if 0 <= c < len(model.subgraphs) and c not in seen:
                    seen.add(c)
                    if hybrid(c, model.subgraphs[c].operators):
                        return True
        return False

    return hybrid(subgraph, [model.subgraphs[subgraph].operators[op_index]])


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


F32_MAX = float(np.finfo(np.float32).max)


def _diff_and_scale(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """max |ref - got| and max |ref| of two flat arrays. Values at or past float32's largest
    magnitude agree with any other such value of the same sign: TFLite's float kernels clamp their
    output to [lowest, max] (the range of activation NONE), so where the math gives -inf (a causal
    mask of -inf added to the scores, a max pooling's -inf padding) TFLite holds -3.4028235e38.
    NaNs at the same place agree too. Any other pair with a non-finite or saturated value differs
    by inf, and the scale is that of the other reference values."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(ref - got)
        big_ref, big_got = np.abs(ref) >= F32_MAX, np.abs(got) >= F32_MAX
        if np.isfinite(diff).all() and not big_ref.any() and not big_got.any():
            return float(np.max(diff)), float(np.max(np.abs(ref)))
        nan_ref, nan_got = np.isnan(ref), np.isnan(got)
        agree = (big_ref & big_got & (np.sign(ref) == np.sign(got))) | (nan_ref & nan_got)
        special = big_ref | big_got | nan_ref | nan_got
        diff = np.where(agree, 0.0, np.where(special, np.inf, diff))
    plain = np.abs(ref[~(big_ref | nan_ref)])
    return float(np.max(diff)), float(np.max(plain)) if plain.size else 0.0


def compare_arrays(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, max abs error / max |ref|, cosine similarity)."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    if ref.shape != got.shape:
        return float("inf"), float("inf"), 0.0
    diff, scale = _diff_and_scale(ref, got) if ref.size else (0.0, 0.0)
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    if not (np.abs(ref) < F32_MAX).all() or not (np.abs(got) < F32_MAX).all():  # inf / NaN / saturated
        keep = (np.abs(ref) < F32_MAX) & (np.abs(got) < F32_MAX)
        ref, got = ref[keep], got[keep]
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
    diff, scale = _diff_and_scale(ref, got)
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
