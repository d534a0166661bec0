"""Quantized tensors in a float rebuild: which QUANTIZE ops round, and the fake-quant grid."""

from __future__ import annotations

from tfl_rebuild.tflite.ir import Operator, Tensor

QUANTIZED_ACTIVATIONS = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def fake_quant_params(t: Tensor) -> tuple[float, int, int, int] | None:
    """(scale, zero point, qmin, qmax) for a per-tensor quantized activation, else None."""
    if t.data is not None or not t.quantized or t.dtype not in QUANTIZED_ACTIVATIONS:
        return None
    q = t.quantization
    if q.per_channel:
        return None
    return (float(q.scale[0]), int(q.zero_point[0]), *QUANTIZED_ACTIVATIONS[t.dtype])


def rounds(sg, op: Operator) -> bool:
    """A QUANTIZE that puts a computed tensor onto a new integer grid (float -> int16 around an op
    without a 16x8 kernel, or a requantize to another scale): TFLite rounds there."""
    if op.opcode != "QUANTIZE" or sg.tensors[op.inputs[0]].data is not None:
        return False
    out = fake_quant_params(sg.tensors[op.outputs[0]])
    return out is not None and fake_quant_params(sg.tensors[op.inputs[0]]) != out
