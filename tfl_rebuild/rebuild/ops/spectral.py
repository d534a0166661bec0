"""Audio and spectral ops: RFFT2D, COMPLEX_ABS, REAL, IMAG (and CAST of complex, in array.py).

Keras has no complex dtype, so a complex64 TFLite tensor is held as a float32 tensor with one more
axis of size 2 at the end (real, imaginary): the memory layout of complex64 itself. RFFT2D makes
such a tensor, COMPLEX_ABS / REAL / IMAG read it back to real values, and reshapes in between
(tf.signal.rfft and stft put some there) keep the pair axis last (see shape.reshape_to). Other ops
on complex tensors are refused by the registry.
"""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConversionError, ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


@converter(
    "RFFT2D", range(1, 2), note="as products with fixed DFT matrices; complex values as (re, im) pairs"
)
def rfft2d(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x, length = op.inputs[:2]
    fft_length = [int(n) for n in np.asarray(ctx.const(length)).reshape(-1)]
    if len(fft_length) != 2 or min(fft_length) < 1 or ctx.rank(x) < 2:
        raise ConversionError(f"RFFT2D op {op.index}: fft_length {fft_length} for input {list(ctx.shape(x))}")
    return LayerSpec("Rfft2d", {"fft_length": fft_length}, (x,), op.outputs, custom=True)


PARTS = {"COMPLEX_ABS": "abs", "REAL": "real", "IMAG": "imag"}


def complex_part(op: Operator, ctx: ConvertContext) -> LayerSpec:
    if ctx.tensor(op.inputs[0]).dtype != "complex64":
        raise ConversionError(
            f"{op.opcode} op {op.index}: input of type {ctx.tensor(op.inputs[0]).dtype} "
            "(only complex64 is supported)"
        )
    return LayerSpec("ComplexPart", {"part": PARTS[op.opcode]}, (op.inputs[0],), op.outputs, custom=True)


for _name in PARTS:
    converter(_name, range(1, 2), traits=[Trait.COMPLEX_OK])(complex_part)
