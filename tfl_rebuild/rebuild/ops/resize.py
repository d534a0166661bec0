"""Spatial resampling: RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR, DEPTH_TO_SPACE, SPACE_TO_DEPTH."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.rebuild.ops.registry import ConvertContext, LayerSpec, Trait, converter
from tfl_rebuild.tflite.ir import Operator


def resize(op: Operator, ctx: ConvertContext) -> LayerSpec:
    x = op.inputs[0]
    method = "bilinear" if op.opcode == "RESIZE_BILINEAR" else "nearest"
    size = [int(v) for v in np.asarray(ctx.const(op.inputs[1])).reshape(-1)]
    align = bool(op.options.get("align_corners", False))
    half = bool(op.options.get("half_pixel_centers", False))
    in_h, in_w = ctx.shape(x)[1:3]
    factor = (size[0] // in_h, size[1] // in_w)
    integer_upscale = factor[0] * in_h == size[0] and factor[1] * in_w == size[1] and min(factor) >= 1
    # UpSampling2D is exact for whole-number factors: bilinear with half-pixel centers (what
    # tf.image.resize does), nearest without corner alignment (plain repetition).
    if integer_upscale and not align and (half or method == "nearest"):
        return LayerSpec("UpSampling2D", {"size": factor, "interpolation": method}, (x,), op.outputs)
    kwargs = {"size": size, "method": method}
    if align:
        kwargs["align_corners"] = True
    if half:
        kwargs["half_pixel_centers"] = True
    return LayerSpec("Resize", kwargs, (x,), op.outputs, custom=True)


converter("RESIZE_BILINEAR", range(1, 5), traits=[Trait.BATCH_PRESERVING])(resize)
converter("RESIZE_NEAREST_NEIGHBOR", range(1, 5), traits=[Trait.BATCH_PRESERVING])(resize)


@converter("DEPTH_TO_SPACE", range(1, 3), traits=[Trait.BATCH_PRESERVING])
def depth_to_space(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return LayerSpec(
        "DepthToSpace",
        {"block_size": int(op.options["block_size"])},
        (op.inputs[0],),
        op.outputs,
        custom=True,
    )


@converter("SPACE_TO_DEPTH", range(1, 3), traits=[Trait.BATCH_PRESERVING])
def space_to_depth(op: Operator, ctx: ConvertContext) -> LayerSpec:
    return LayerSpec(
        "SpaceToDepth",
        {"block_size": int(op.options["block_size"])},
        (op.inputs[0],),
        op.outputs,
        custom=True,
    )
