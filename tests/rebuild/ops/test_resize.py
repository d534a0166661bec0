"""Spatial resampling: RESIZE_BILINEAR, RESIZE_NEAREST_NEIGHBOR (corner conventions, whole and
fractional factors, downscaling), DEPTH_TO_SPACE, SPACE_TO_DEPTH."""

from __future__ import annotations

import pytest
import tensorflow as tf

X = [1, 4, 5, 2]
RESIZE = {
    "RESIZE_BILINEAR": tf.compat.v1.image.resize_bilinear,
    "RESIZE_NEAREST_NEIGHBOR": tf.compat.v1.image.resize_nearest_neighbor,
}
MODES = {"default": {}, "align_corners": {"align_corners": True}, "half_pixel": {"half_pixel_centers": True}}
SIZES = {"x2": [8, 10], "x3x2": [12, 10], "fractional": [7, 8], "down": [3, 2], "1x1": [1, 1]}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", RESIZE)
def test_resize(tfl, op, mode, size):
    tfl.check(tfl.function(lambda x: RESIZE[op](x, SIZES[size], **MODES[mode]), X), op)


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_resize_tf2(tfl, method):
    # tf.image.resize: half-pixel centers (the UpSampling2D path for whole factors).
    op = "RESIZE_BILINEAR" if method == "bilinear" else "RESIZE_NEAREST_NEIGHBOR"
    tfl.check(tfl.function(lambda x: tf.image.resize(x, [8, 15], method=method), X), op)


def test_upsampling2d_bilinear(tfl):
    # (Nearest UpSampling2D converts to RESHAPE + TILE, tested with TILE.)
    import keras

    x = keras.Input((3, 4, 2), batch_size=1)
    y = keras.layers.UpSampling2D((2, 3), interpolation="bilinear")(x)
    tfl.check(tfl.keras(keras.Model(x, y)), "RESIZE_BILINEAR")


@pytest.mark.parametrize("block", [2, 3])
def test_depth_to_space(tfl, block):
    tfl.check(
        tfl.function(lambda x: tf.nn.depth_to_space(x, block), [1, 2, 3, 2 * block * block]), "DEPTH_TO_SPACE"
    )


@pytest.mark.parametrize("block", [2, 3])
def test_space_to_depth(tfl, block):
    tfl.check(
        tfl.function(lambda x: tf.nn.space_to_depth(x, block), [1, 2 * block, 3 * block, 2]), "SPACE_TO_DEPTH"
    )
