"""How TFLite's quantized kernels round an op's output, as FakeQuant options (`ties`, `shift`).

Most requantizing kernels round once, to nearest: FakeQuant's default. The exceptions, measured on
crafted and converted models against LiteRT's kernels (tests/rebuild/ops/test_quantize.py):

- Kernels that divide integer sums round exact halves their own way: average pooling away from
  zero (both kernel sets); bilinear resizing up in XNNPACK (which runs int8 / uint8, and which
  `verify` compares with end to end), away from zero in the built-in kernels (int16).
- The built-in kernels' 32-bit MultiplyByQuantizedMultiplier rounds twice when its shift is to the
  right by k: first to 2^-k of a step (the doubling high multiply), then that half away from zero,
  so values up to 2^-(k+1) of a step under a half round away too. That is where the int16 MEAN and
  a QUANTIZE from int16 (requantizing) land: k is 1-8 there for usual scales, and 2-25% of the
  values in that window (MEAN over 7x7 with in / out scale 5.9: 14% of the outputs one step off;
  a requantize by 0.3: 24%). Its other users (int16 MUL, ADD) shift by 13 or more: a window of
  2^-14 of a step, below float32's own rounding of int16 values (~1e-3 of a step), so left out.
- QUANTIZE of a float tensor multiplies by the float32 reciprocal of the scale and rounds to even
  (XNNPACK for int8 / uint8, the built-in kernel for int16; on float32 values at halves of a step,
  dividing instead put 0.2-16% of them one step off, depending on the scale).
- The int16 SUM scales in float and rounds halves away from zero (a sum by 5/16: 3% of the outputs
  are exact halves).
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.tflite.ir import Operator, Subgraph


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: (multiplier, shift) with real = multiplier * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    frac, shift = np.frexp(real)
    q = int(np.floor(abs(frac) * 2.0**31 + 0.5))  # TfLiteRound of a positive value
    if q == 1 << 31:
        q, shift = q // 2, shift + 1
    if shift < -31:
        return 0, 0
    return q, int(shift)


def mean_shift(in_scale: float, out_scale: float, count: int) -> int:
    """The shift of the int16 MEAN's multiplier: QuantizeMultiplier(in / out), then 1 / count folded
    in (reference_ops::QuantizedMeanOrSum): the multiplier is shifted up by floor(log2 count) (at
    most 32 and 31 + shift) before the integer division, and the shift down by as much."""
    _, shift = quantize_multiplier(float(np.float64(in_scale) / np.float64(out_scale)))
    up = min(max(int(count).bit_length() - 1, 0), 32, 31 + shift)
    return shift - up


def _scale(t) -> float:
    return float(np.float32(t.quantization.scale[0]))


def fake_quant_rounding(sg: Subgraph, op: Operator, count: int | None = None) -> dict:
    """FakeQuant kwargs beyond the grid for the tensor `op` writes: {} (to nearest), {"ties": ...},
    {"ties": "twice", "shift": k} or {"reciprocal": True}. count: the elements each MEAN output averages."""
    out = sg.tensors[op.outputs[0]]
    if op.opcode == "AVERAGE_POOL_2D":
        return {"ties": "away"}
    if op.opcode == "RESIZE_BILINEAR":
        return {"ties": "up" if out.dtype in ("int8", "uint8") else "away"}
    src = sg.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
    if op.opcode == "QUANTIZE" and src is not None and src.dtype == "float32":
        return {"reciprocal": True}
    if src is None or not (src.quantized and out.quantized) or "int16" not in (src.dtype, out.dtype):
        return {}
    if op.opcode == "SUM":  # in float: TfLiteRound(sum * (in / out)), halves away from zero
        return {"ties": "away"}
    if op.opcode == "QUANTIZE":  # requantize: Requantize -> MultiplyByQuantizedMultiplier(x, m, shift)
        shift = quantize_multiplier(_scale(src) / _scale(out))[1]
    elif op.opcode == "MEAN" and count:
        shift = mean_shift(_scale(src), _scale(out), count)
    else:
        return {}
    return {"ties": "twice", "shift": -shift} if shift < 0 else {}
