"""Build a probe set of the model kinds users bring, for `tfl-rebuild check` (not for CI).

    .venv/bin/python scripts/make_probe_models.py [--out .probe] [--only NAME ...] [--list]
    .venv/bin/tfl-rebuild check .probe --jobs 1 --markdown .probe/report.md

keras.applications architectures (weights=None, no download) at small input sizes, and small
hand-written Keras models (1-D audio, recurrent text, attention encoder, upsampling decoder), all
from fixed seeds. Every model is float32; the most common ones (MobileNetV3Small, EfficientNetB0,
ResNet50) are also written as fp16, dynamic-range and full-int8 (seeded representative inputs in
[-1, 1], the range `tfl-rebuild` checks with).

Random weights are kept meaningful as in fixtures/make_fixtures.py: no final softmax, BatchNorm
statistics from a training-mode pass over seeded inputs (beta offset so ReLU-like units are not
half dead), zero-initialised weights replaced by seeded values where a dropped bias would go
unnoticed, the classifier head rescaled so its logits vary by ~2 units between inputs. Each written
file is run with LiteRT on two seeded inputs; an output that moves by 1% or less of its magnitude
is reported (`CONSTANT?`), as such a model proves little.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fixtures"))
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from keras import layers  # noqa: E402
from make_fixtures import (  # noqa: E402
    MIN_CHANGE,
    calibrate_batchnorm,
    convert_keras,
    fresh_start,
    images,
    op_histogram,
    rng,
    scale_logits,
    seed_zero_weights,
    seeded_input,
)

CLASSES = 10
VOCAB, TOKENS = 100, 16


# ---------------------------------------------------------------------------------------------
# keras.applications


def _application(factory: Callable, size: int, *, beta: float = 1.0, **kwargs) -> keras.Model:
    shape = (size, size, 3)
    model = factory(input_shape=shape, weights=None, classes=CLASSES, classifier_activation=None, **kwargs)
    _scale_layer_scale(model)
    calibrate_batchnorm(model, images(shape, 16, salt=3), beta=beta)
    head = next(layer for layer in reversed(model.layers) if len(layer.get_weights()) == 2)
    scale_head(model, head, images(shape, 16, salt=4))
    return model


def scale_head(model: keras.Model, head: layers.Layer, calibration: np.ndarray, spread: float = 2.0) -> None:
    """make_fixtures.scale_logits for any head with (kernel, bias) whose last axis is the classes
    (MobileNetV3's head is a 1x1 Conv2D)."""
    logits = np.asarray(keras.Model(model.inputs, head.output)(calibration))
    logits = logits.reshape(len(calibration), -1, logits.shape[-1])
    kernel, bias = head.get_weights()
    gain = spread / logits.std(axis=0).mean()
    head.set_weights([kernel * gain, (bias - logits.mean(axis=(0, 1))) * gain])


def _scale_layer_scale(model: keras.Model) -> None:
    """ConvNeXt's LayerScale starts at 1e-6: every residual block would add ~nothing."""
    gen = rng(5)
    for layer in model.layers:
        if type(layer).__name__ == "LayerScale":
            for w in layer.weights:
                w.assign(gen.uniform(0.3, 0.7, size=w.shape).astype(np.float32))


def mobilenet_v3_small() -> keras.Model:
    return _application(keras.applications.MobileNetV3Small, 96, include_preprocessing=True)


def mobilenet_v3_large() -> keras.Model:
    return _application(keras.applications.MobileNetV3Large, 96, include_preprocessing=True)


def efficientnet_b0() -> keras.Model:
    return _application(keras.applications.EfficientNetB0, 64)


def efficientnet_v2_b0() -> keras.Model:
    return _application(keras.applications.EfficientNetV2B0, 64, include_preprocessing=True)


def resnet50() -> keras.Model:
    return _application(keras.applications.ResNet50, 64)


def resnet50_v2() -> keras.Model:
    return _application(keras.applications.ResNet50V2, 64)


def densenet121() -> keras.Model:
    return _application(keras.applications.DenseNet121, 64)


def nasnet_mobile() -> keras.Model:
    return _application(keras.applications.NASNetMobile, 64)


def xception() -> keras.Model:
    return _application(keras.applications.Xception, 71)


def inception_v3() -> keras.Model:
    return _application(keras.applications.InceptionV3, 75)


def convnext_tiny() -> keras.Model:
    return _application(keras.applications.ConvNeXtTiny, 64, include_preprocessing=True)


def regnet_x002() -> keras.Model:
    """RegNetX-200MF's X blocks (Keras 3 dropped keras.applications.RegNet*): stem, then stages of
    1x1 conv -> 3x3 grouped conv (group width 8) -> 1x1 conv + shortcut; widths 24, 56, 152, 368,
    fewer blocks per stage than the original's 1, 1, 4, 7."""
    shape = (64, 64, 3)
    inp = keras.Input(shape, name="image")

    def conv_bn(x, filters, kernel, strides=1, groups=1, relu=True):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", groups=groups, use_bias=False)(x)
        x = layers.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)
        return layers.ReLU()(x) if relu else x

    x = conv_bn(inp, 32, 3, strides=2)
    for width, depth in ((24, 1), (56, 1), (152, 2), (368, 2)):
        for block in range(depth):
            strides = 2 if block == 0 else 1
            shortcut = x if block else conv_bn(x, width, 1, strides=strides, relu=False)
            y = conv_bn(x, width, 1)
            y = conv_bn(y, width, 3, strides=strides, groups=width // 8)
            y = conv_bn(y, width, 1, relu=False)
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, layers.Dense(CLASSES, name="predictions")(x), name="regnet_x002")
    calibrate_batchnorm(model, images(shape, 16, salt=3))
    scale_head(model, model.get_layer("predictions"), images(shape, 16, salt=4))
    return model


# ---------------------------------------------------------------------------------------------
# Hand-written models


def audio_conv1d() -> keras.Model:
    """A keyword-spotting style 1-D classifier over 400 samples of 1 channel."""
    inp = keras.Input((400, 1), name="waveform")
    x = layers.Conv1D(16, 9, strides=2, padding="same")(inp)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.SeparableConv1D(24, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling1D(2)(x)
    x = layers.Conv1D(32, 3, dilation_rate=2, padding="causal", activation="relu")(x)
    x = layers.SeparableConv1D(32, 3, strides=2, padding="valid", depth_multiplier=2)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("swish")(x)
    x = layers.AveragePooling1D(2)(x)
    x = layers.GlobalAveragePooling1D()(x)
    logits = layers.Dense(6, name="logits")(x)
    model = keras.Model(inp, logits, name="audio_conv1d")
    seed_zero_weights(model, salt=11)
    calibrate_batchnorm(model, images((400, 1), 16, salt=12), beta=0.5)
    scale_logits(model, model.get_layer("logits"), images((400, 1), 16, salt=13))
    return model


def text_token_ids(count: int, salt: int) -> np.ndarray:
    return rng(salt).integers(0, VOCAB, size=(count, TOKENS)).astype(np.int32)


def text_rnn() -> keras.Model:
    """Token ids -> Embedding -> GRU (sequences) -> Bidirectional LSTM -> Dense."""
    ids = keras.Input((TOKENS,), dtype="int32", name="token_ids")
    x = layers.Embedding(VOCAB, 16)(ids)
    x = layers.GRU(16, return_sequences=True)(x)
    x = layers.Bidirectional(layers.LSTM(12))(x)
    logits = layers.Dense(4, name="logits")(x)
    model = keras.Model(ids, logits, name="text_rnn")
    seed_zero_weights(model, salt=21)
    scale_logits(model, model.get_layer("logits"), text_token_ids(32, salt=22))
    return model


def attention_encoder() -> keras.Model:
    """A float sequence -> Dense -> MultiHeadAttention + GroupNormalization blocks -> Dense."""
    inp = keras.Input((TOKENS, 24), name="features")
    x = layers.Dense(32)(inp)
    for _ in range(2):
        attended = layers.MultiHeadAttention(num_heads=4, key_dim=8)(x, x)
        x = layers.GroupNormalization(groups=4, epsilon=1e-5)(layers.Add()([x, attended]))
        hidden = layers.Dense(64, activation="gelu")(x)
        x = layers.GroupNormalization(groups=8, epsilon=1e-5)(layers.Add()([x, layers.Dense(32)(hidden)]))
    x = layers.GlobalAveragePooling1D()(x)
    logits = layers.Dense(5, name="logits")(x)
    model = keras.Model(inp, logits, name="attention_encoder")
    seed_zero_weights(model, salt=31)
    gen = rng(32)
    for layer in model.layers:
        if isinstance(layer, layers.GroupNormalization):
            layer.gamma.assign(gen.uniform(0.7, 1.3, size=layer.gamma.shape).astype(np.float32))
    scale_logits(model, model.get_layer("logits"), images((TOKENS, 24), 16, salt=33))
    return model


def upsample_decoder() -> keras.Model:
    """UpSampling2D (bilinear and nearest), Conv2DTranspose (valid and same), Cropping2D, ZeroPadding2D."""
    inp = keras.Input((24, 24, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)  # 12x12
    x = layers.UpSampling2D(2, interpolation="bilinear")(x)  # 24x24
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="valid", activation="relu")(x)  # 49x49
    x = layers.Cropping2D(((1, 0), (2, 1)))(x)  # 48x46
    x = layers.ZeroPadding2D(((0, 0), (1, 1)))(x)  # 48x48
    y = layers.Conv2D(8, 3, strides=2, padding="same")(x)  # 24x24
    y = layers.UpSampling2D((2, 2), interpolation="nearest")(y)  # 48x48
    y = layers.Conv2DTranspose(8, 4, strides=1, padding="same")(y)
    x = layers.Concatenate()([x, y])
    x = layers.UpSampling2D((1, 2), interpolation="bilinear")(x)  # 48x96
    x = layers.Cropping2D(((4, 4), (8, 8)))(x)  # 40x80
    out = layers.Conv2D(2, 3, padding="same", name="mask")(x)
    model = keras.Model(inp, out, name="upsample_decoder")
    seed_zero_weights(model, salt=41)
    return model


def mobilenet_v1() -> keras.Model:
    return _application(keras.applications.MobileNet, 64, alpha=0.25)


def vgg16() -> keras.Model:
    """No BatchNorm: plain conv + ReLU at Keras' default init, scaled up per layer by the head."""
    return _application(keras.applications.VGG16, 32)


def inception_resnet_v2() -> keras.Model:
    return _application(keras.applications.InceptionResNetV2, 75)


def activations_zoo() -> keras.Model:
    """Dense layers through the activations keras.activations offers, side by side."""
    inp = keras.Input((24,), name="features")
    names = [
        "elu",
        "selu",
        "softplus",
        "softsign",
        "mish",
        "silu",
        "gelu",
        "hard_sigmoid",
        "hard_silu",
        "relu6",
        "leaky_relu",
        "exponential",
        "tanh",
        "sigmoid",
        "log_softmax",
        "softmax",
    ]
    branches = [layers.Dense(8, activation=name, name=f"dense_{name}")(inp) for name in names]
    branches.append(layers.Activation(keras.activations.gelu)(layers.Dense(8)(inp)))  # exact erf form
    branches.append(layers.PReLU()(layers.Dense(8)(inp)))
    branches.append(layers.ELU(alpha=0.5)(layers.Dense(8)(inp)))
    x = layers.Concatenate()(branches)
    logits = layers.Dense(6, name="logits")(x)
    model = keras.Model(inp, logits, name="activations_zoo")
    seed_zero_weights(model, salt=51)
    scale_logits(model, model.get_layer("logits"), images((24,), 16, salt=52))
    return model


def gelu_tanh() -> keras.Model:
    inp = keras.Input((16, 24), name="features")
    x = layers.Dense(32)(inp)
    x = layers.Activation(lambda v: keras.activations.gelu(v, approximate=True))(x)
    x = layers.LayerNormalization()(x)
    x = layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inp, layers.Dense(4, name="logits")(x), name="gelu_tanh")
    seed_zero_weights(model, salt=56)
    return model


def text_cnn() -> keras.Model:
    """Token ids -> Embedding -> Conv1D (two widths) -> GlobalMaxPooling1D -> Dense."""
    ids = keras.Input((TOKENS,), dtype="int32", name="token_ids")
    x = layers.Embedding(VOCAB, 16)(ids)
    a = layers.GlobalMaxPooling1D()(layers.Conv1D(12, 3, activation="relu")(x))
    b = layers.GlobalMaxPooling1D()(layers.Conv1D(12, 5, padding="same", activation="relu")(x))
    x = layers.Dropout(0.5)(layers.Concatenate()([a, b]))
    logits = layers.Dense(3, name="logits")(x)
    model = keras.Model(ids, logits, name="text_cnn")
    seed_zero_weights(model, salt=61)
    scale_logits(model, model.get_layer("logits"), text_token_ids(32, salt=62))
    return model


def multi_io() -> keras.Model:
    """An image and a feature vector in; a class score and a regression map out."""
    image = keras.Input((16, 16, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(image)
    x = layers.MaxPooling2D(2)(x)
    m = layers.Dense(8, activation="relu")(meta)
    m = layers.Reshape((1, 1, 8))(m)
    x = layers.Multiply()([x, layers.Activation("sigmoid")(m)])
    score = layers.Dense(4, name="score")(layers.GlobalAveragePooling2D()(x))
    heat = layers.Conv2DTranspose(1, 2, strides=2, name="heat")(x)
    model = keras.Model([image, meta], [score, heat], name="multi_io")
    seed_zero_weights(model, salt=71)
    return model


def preprocessing_layers() -> keras.Model:
    """In-model preprocessing: an adapted Normalization, Resizing, CenterCrop, Rescaling."""
    inp = keras.Input((40, 40, 3), name="image")
    norm = layers.Normalization(axis=-1)
    norm.adapt(images((40, 40, 3), 8, salt=81) * 3.0 + 1.0)
    x = norm(inp)
    x = layers.Resizing(24, 24, interpolation="bilinear")(x)
    x = layers.CenterCrop(20, 20)(x)
    x = layers.Rescaling(0.5, offset=0.1)(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.Resizing(12, 12, interpolation="nearest")(x)
    x = layers.Flatten()(layers.MaxPooling2D(2)(x))
    model = keras.Model(inp, layers.Dense(4, name="logits")(x), name="preprocessing_layers")
    seed_zero_weights(model, salt=82)
    scale_logits(model, model.get_layer("logits"), images((40, 40, 3), 16, salt=83))
    return model


def keras_attention() -> keras.Model:
    """keras.layers.Attention (dot-product, scaled) and AdditiveAttention over a query/value pair."""
    query = keras.Input((8, 16), name="query")
    value = keras.Input((12, 16), name="value")
    a = layers.Attention(use_scale=True)([query, value])
    b = layers.AdditiveAttention()([query, value])
    x = layers.Concatenate()([a, b])
    x = layers.GlobalAveragePooling1D()(x)
    model = keras.Model([query, value], layers.Dense(3, name="logits")(x), name="keras_attention")
    seed_zero_weights(model, salt=91)
    return model


def bert_mini() -> keras.Model:
    """Token ids and an attention mask (int32, 1 = attend) -> 2 encoder blocks -> pooled logits."""
    ids = keras.Input((TOKENS,), dtype="int32", name="input_ids")
    mask = keras.Input((TOKENS,), dtype="int32", name="token_mask")
    x = layers.Embedding(VOCAB, 32)(ids)
    x = AddPositions()(x)
    x = layers.LayerNormalization(epsilon=1e-12)(x)
    attend = AttentionMask()(mask)
    for _ in range(2):
        attended = layers.MultiHeadAttention(num_heads=4, key_dim=8)(x, x, attention_mask=attend)
        x = layers.LayerNormalization(epsilon=1e-12)(layers.Add()([x, attended]))
        hidden = layers.Dense(64, activation="gelu")(x)
        x = layers.LayerNormalization(epsilon=1e-12)(layers.Add()([x, layers.Dense(32)(hidden)]))
    pooled = layers.Dense(32, activation="tanh")(FirstToken()(x))
    model = keras.Model([ids, mask], layers.Dense(3, name="logits")(pooled), name="bert_mini")
    seed_zero_weights(model, salt=101)
    return model


@keras.saving.register_keras_serializable(package="probe")
class AddPositions(layers.Layer):
    """Learned position embeddings added to the token embeddings."""

    def build(self, input_shape):
        self.positions = self.add_weight(shape=tuple(input_shape[1:]), initializer="zeros", name="positions")

    def call(self, x):
        return x + self.positions


@keras.saving.register_keras_serializable(package="probe")
class AttentionMask(layers.Layer):
    """[batch, keys] 0/1 ints -> [batch, queries, keys] booleans, as BERT's extended mask."""

    def call(self, mask):
        keep = keras.ops.cast(mask, "bool")
        return keras.ops.repeat(keras.ops.expand_dims(keep, 1), TOKENS, axis=1)


@keras.saving.register_keras_serializable(package="probe")
class FirstToken(layers.Layer):
    def call(self, x):
        return x[:, 0, :]


def yolo_like() -> keras.Model:
    """A small detector with an exported decode: two strides, sigmoid, grid offsets and anchor
    scales as constants, all boxes concatenated to [1, N, 5 + classes]."""
    classes, anchors = 3, 2
    inp = keras.Input((64, 64, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="swish")(inp)  # 32
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="swish")(x)  # 16
    p3 = layers.Conv2D(16, 3, strides=2, padding="same", activation="swish")(x)  # 8
    p4 = layers.Conv2D(24, 3, strides=2, padding="same", activation="swish")(p3)  # 4
    up = layers.UpSampling2D(2)(p4)
    p3 = layers.Concatenate()([p3, up])
    outs = []
    for feat, stride in ((p3, 8), (p4, 16)):
        size = 64 // stride
        raw = layers.Conv2D(anchors * (5 + classes), 1)(feat)
        raw = layers.Reshape((size * size * anchors, 5 + classes))(raw)
        outs.append(DecodeBoxes(size=size, stride=stride, anchors=anchors)(raw))
    out = layers.Concatenate(axis=1, name="detections")(outs)
    model = keras.Model(inp, out, name="yolo_like")
    seed_zero_weights(model, salt=111)
    for layer in model.layers:  # heads that move: sigmoid inputs spread over a few units
        if isinstance(layer, layers.Conv2D) and layer.kernel_size == (1, 1):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * 6.0, bias])
    return model


@keras.saving.register_keras_serializable(package="probe")
class DecodeBoxes(layers.Layer):
    def __init__(self, size, stride, anchors, **kwargs):
        super().__init__(**kwargs)
        self.size, self.stride, self.anchors = size, stride, anchors

    def call(self, raw):
        ys, xs = np.meshgrid(np.arange(self.size), np.arange(self.size), indexing="ij")
        grid = np.repeat(np.stack([xs, ys], -1).reshape(-1, 1, 2), self.anchors, axis=1).reshape(1, -1, 2)
        wh = np.tile(
            np.array([[1.0, 1.5], [2.0, 1.0]][: self.anchors], np.float32), (self.size * self.size, 1)
        )
        sig = keras.ops.sigmoid(raw)
        xy = (sig[..., :2] * 2.0 - 0.5 + grid.astype(np.float32)) * float(self.stride)
        size = (sig[..., 2:4] * 2.0) ** 2 * wh[None] * float(self.stride)
        return keras.ops.concatenate([xy, size, sig[..., 4:]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "stride": self.stride, "anchors": self.anchors}


def super_resolution() -> keras.Model:
    """ESPCN-style x3 upscaler: convs, then DEPTH_TO_SPACE (pixel shuffle), then a clip to [0, 1]."""
    inp = keras.Input((16, 16, 1), name="low_res")
    x = layers.Conv2D(16, 5, padding="same", activation="tanh")(inp)
    x = layers.Conv2D(8, 3, padding="same", activation="tanh")(x)
    x = layers.Conv2D(9, 3, padding="same")(x)
    x = PixelShuffle(block=3)(x)
    out = layers.ReLU(max_value=1.0, name="high_res")(x)
    model = keras.Model(inp, out, name="super_resolution")
    seed_zero_weights(model, salt=121)
    return model


@keras.saving.register_keras_serializable(package="probe")
class PixelShuffle(layers.Layer):
    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block)

    def get_config(self):
        return {**super().get_config(), "block": self.block}


def layers_zoo_1d() -> keras.Model:
    """1-D and reshaping layers: Conv1DTranspose, DepthwiseConv1D, UpSampling1D, Cropping1D,
    ZeroPadding1D, RepeatVector, Permute, Dot (cosine), UnitNormalization, Softmax on axis 1,
    Minimum / Maximum / Average, Dense on a 3-D input."""
    inp = keras.Input((20, 6), name="sequence")
    x = layers.Conv1D(8, 3, padding="same", activation="relu")(inp)
    x = layers.DepthwiseConv1D(3, depth_multiplier=2, padding="same")(x)  # 16 channels
    x = layers.Conv1DTranspose(8, 3, strides=2, padding="same")(x)  # 40 steps
    x = layers.Cropping1D((3, 5))(x)  # 32
    x = layers.ZeroPadding1D((1, 0))(x)  # 33
    x = layers.UpSampling1D(2)(layers.MaxPooling1D(3)(x))  # 11 -> 22
    d = layers.Dense(8)(x)  # keep_num_dims
    p = layers.Permute((2, 1))(d)  # [8, 22]
    att = layers.Softmax(axis=1)(p)
    mixed = layers.Average()([layers.Minimum()([p, att]), layers.Maximum()([p, att])])
    v = layers.GlobalMaxPooling1D()(layers.Permute((2, 1))(mixed))  # [8]
    rep = layers.RepeatVector(4)(v)  # [4, 8]
    cos = layers.Dot(axes=-1, normalize=True)([rep, layers.Dense(8)(rep)])  # [4, 4]
    u = layers.UnitNormalization()(layers.Flatten()(cos))
    logits = layers.Dense(5, name="logits")(layers.Concatenate()([u, v]))
    model = keras.Model(inp, logits, name="layers_zoo_1d")
    seed_zero_weights(model, salt=131)
    scale_logits(model, model.get_layer("logits"), images((20, 6), 16, salt=132))
    return model


def grouped_conv() -> keras.Model:
    """ResNeXt-style grouped 3x3 convolutions and a channel shuffle (Reshape / Permute)."""
    inp = keras.Input((16, 16, 8), name="features")
    x = layers.Conv2D(16, 1, activation="relu")(inp)
    x = layers.Conv2D(16, 3, padding="same", groups=4, activation="relu")(x)
    x = layers.Reshape((16, 16, 4, 4))(x)
    x = layers.Permute((1, 2, 4, 3))(x)
    x = layers.Reshape((16, 16, 16))(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", groups=8)(x)
    x = layers.GlobalMaxPooling2D()(x)
    model = keras.Model(inp, layers.Dense(4, name="logits")(x), name="grouped_conv")
    seed_zero_weights(model, salt=141)
    return model


# ---------------------------------------------------------------------------------------------
# Checks


def run(path: Path, salt: int) -> list[np.ndarray]:
    """make_fixtures.run, with token ids (unquantized int32 inputs) drawn in [0, VOCAB)."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    for i, detail in enumerate(interpreter.get_input_details()):
        if detail["dtype"] == np.int32 and not detail["quantization"][0]:
            high = 2 if "mask" in detail["name"] else VOCAB
            value = rng(1000 + salt + i).integers(0, high, size=detail["shape"]).astype(np.int32)
        else:
            value = seeded_input(detail, salt + i)
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    outputs = []
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"]).astype(np.float64)
        scale, zero_point = detail["quantization"]
        outputs.append((value - zero_point) * scale if scale else value)
    return outputs


def sensitivity(path: Path) -> list[float]:
    """Per output: max |change| between two seeded inputs over max |value|."""
    ratios = []
    for a, b in zip(run(path, 0), run(path, 1), strict=True):
        magnitude = max(np.abs(a).max(), np.abs(b).max())
        ratios.append(float(np.abs(a - b).max() / magnitude) if magnitude else 0.0)
    return ratios


# ---------------------------------------------------------------------------------------------
# Variants


def representative(model: keras.Model, count: int = 16) -> Callable:
    """Seeded calibration samples for every input: token ids in [0, VOCAB), else floats in [-1, 1]."""
    per_input = []
    for k, spec in enumerate(model.inputs):
        if spec.dtype == "int32" and "mask" in spec.name:
            per_input.append(rng(97 + k).integers(0, 2, size=(count, 1, *spec.shape[1:])).astype(np.int32))
        elif spec.dtype == "int32":
            per_input.append(text_token_ids(count, salt=98 + k)[:, None])
        else:
            per_input.append(images(tuple(spec.shape[1:]), count, salt=99 + k)[:, None])

    def generate():
        for i in range(count):
            yield [samples[i] for samples in per_input]

    return generate


def as_float(model: keras.Model) -> bytes:
    return convert_keras(model)


def as_fp16(model: keras.Model) -> bytes:
    return convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT], supported_types=[tf.float16])


def as_dynamic(model: keras.Model) -> bytes:
    return convert_keras(model, optimizations=[tf.lite.Optimize.DEFAULT])


def as_int8(model: keras.Model) -> bytes:
    """Full integer; int8 input and output, except token ids (which stay int32)."""
    io = {} if any(t.dtype == "int32" for t in model.inputs) else {"inference_input_type": tf.int8}
    return convert_keras(
        model,
        optimizations=[tf.lite.Optimize.DEFAULT],
        representative_dataset=representative(model),
        supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS_INT8],
        inference_output_type=tf.int8,
        **io,
    )


VARIANTS = {"float": as_float, "fp16": as_fp16, "dynamic": as_dynamic, "int8": as_int8}
ALL_VARIANTS = ("float", "fp16", "dynamic", "int8")

MODELS: dict[str, tuple[Callable[[], keras.Model], tuple[str, ...]]] = {
    "mobilenet_v3_small": (mobilenet_v3_small, ALL_VARIANTS),
    "mobilenet_v3_large": (mobilenet_v3_large, ("float", "int8")),
    "efficientnet_b0": (efficientnet_b0, ALL_VARIANTS),
    "efficientnet_v2_b0": (efficientnet_v2_b0, ("float", "int8")),
    "resnet50": (resnet50, ALL_VARIANTS),
    "resnet50_v2": (resnet50_v2, ("float",)),
    "densenet121": (densenet121, ("float", "int8")),
    "nasnet_mobile": (nasnet_mobile, ("float",)),
    "xception": (xception, ("float",)),
    "inception_v3": (inception_v3, ("float",)),
    "convnext_tiny": (convnext_tiny, ("float", "fp16")),
    "regnet_x002": (regnet_x002, ("float",)),
    "audio_conv1d": (audio_conv1d, ("float", "dynamic", "int8")),
    "text_rnn": (text_rnn, ("float", "fp16", "dynamic")),
    "attention_encoder": (attention_encoder, ("float", "fp16", "dynamic", "int8")),
    "upsample_decoder": (upsample_decoder, ("float", "fp16", "int8")),
    "mobilenet_v1": (mobilenet_v1, ("float", "int8")),
    "vgg16": (vgg16, ("float",)),
    "inception_resnet_v2": (inception_resnet_v2, ("float",)),
    "activations_zoo": (activations_zoo, ("float", "int8")),
    "gelu_tanh": (gelu_tanh, ("float",)),
    "text_cnn": (text_cnn, ("float", "dynamic", "int8")),
    "multi_io": (multi_io, ("float", "int8")),
    "preprocessing_layers": (preprocessing_layers, ("float",)),
    "keras_attention": (keras_attention, ("float", "int8")),
    "bert_mini": (bert_mini, ("float", "fp16", "dynamic", "int8")),
    "yolo_like": (yolo_like, ("float", "int8")),
    "super_resolution": (super_resolution, ("float", "int8")),
    "layers_zoo_1d": (layers_zoo_1d, ("float", "int8")),
    "grouped_conv": (grouped_conv, ("float", "int8")),
}


def names() -> list[str]:
    return [f"{m}_{v}" for m, (_, variants) in MODELS.items() for v in variants]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".probe")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="model names (mobilenet_v3_small) or files (mobilenet_v3_small_int8)",
    )
    parser.add_argument("--list", action="store_true", help="print the file names and stop")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names()))
        return 0
    wanted = set(args.only) if args.only else None
    args.out.mkdir(parents=True, exist_ok=True)
    constant = []
    for model_name, (build, variants) in MODELS.items():
        todo = [
            v for v in variants if wanted is None or model_name in wanted or f"{model_name}_{v}" in wanted
        ]
        if not todo:
            continue
        start = time.time()
        fresh_start()
        model = build()  # one set of weights for every variant of an architecture
        for variant in todo:
            path = args.out / f"{model_name}_{variant}.tflite"
            path.write_bytes(VARIANTS[variant](model))
            ratios = sensitivity(path)
            flag = "" if min(ratios) > MIN_CHANGE else "  CONSTANT? an output moves by <= 1%"
            if flag:
                constant.append(path.name)
            ops = len(list(op_histogram(path).elements()))
            print(
                f"{path.name:34} {path.stat().st_size:>11,} B  {ops:4} ops  "
                f"sensitivity {[round(r, 3) for r in ratios]}  {time.time() - start:.0f}s{flag}",
                flush=True,
            )
            start = time.time()
    if constant:
        print(f"outputs that barely move with the input: {', '.join(constant)}")
    return 1 if constant else 0


if __name__ == "__main__":
    raise SystemExit(main())
