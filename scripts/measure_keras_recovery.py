"""How much of the Keras its authors wrote a rebuild gives back: layer classes before and after.

Builds the small Keras models below (their source is here), converts each with tf.lite, rebuilds it
with tfl-rebuild (`write_generated`), loads the generated module and compares layer classes.

Matching rule: the original model's layers are counted without InputLayer, BatchNormalization,
Dropout, Activation and ReLU (the converter folds or fuses those, and a rebuild need not show
them). An original layer counts as recovered when the rebuilt model has at least one layer of the
same class name (a class counted once per original layer, not paired one to one). A rebuilt layer
is custom when its class is not from keras (a class defined in the generated module). An original
layer's name counts as recovered when a rebuilt layer has exactly that name (same counted layers).

    PYTHONPATH=$PWD .venv/bin/python scripts/measure_keras_recovery.py
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IGNORED = {"InputLayer", "BatchNormalization", "Dropout", "Activation", "ReLU"}


def _mlp(keras):
    inp = keras.Input((16,), batch_size=1)
    x = keras.layers.Dense(32, activation="relu")(inp)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _cnn(keras):
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _conv1d(keras):
    inp = keras.Input((32, 4), batch_size=1)
    x = keras.layers.Conv1D(8, 3, activation="relu")(inp)
    x = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _transformer(keras):
    inp = keras.Input((8, 16), batch_size=1)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([inp, h]))
    f = keras.layers.Dense(32, activation="gelu")(x)
    f = keras.layers.Dense(16)(f)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([x, f]))
    return keras.Model(inp, x)


def _lstm(keras):
    inp = keras.Input((10, 4), batch_size=1)
    x = keras.layers.LSTM(8)(inp)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _text(keras):
    inp = keras.Input((12,), batch_size=1, dtype="int32")
    x = keras.layers.Embedding(50, 8)(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _squeeze_excite(keras):
    inp = keras.Input((8, 8, 8), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    s = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Dense(2, activation="relu")(s)
    s = keras.layers.Dense(8, activation="sigmoid")(s)
    s = keras.layers.Reshape((1, 1, 8))(s)
    x = keras.layers.Multiply()([x, s])
    return keras.Model(inp, keras.layers.Conv2D(4, 1)(x))


def _rescaling(keras):
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


MODELS = {
    "mlp": _mlp,
    "cnn_separable": _cnn,
    "conv1d_flatten": _conv1d,
    "transformer": _transformer,
    "lstm": _lstm,
    "text_embedding": _text,
    "squeeze_excite": _squeeze_excite,
    "rescaling_head": _rescaling,
}


def classes(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def measure(name: str, build, workdir: Path) -> tuple[int, int, int, int, int, str]:
    """(recovered, original, custom, rebuilt, names recovered, note) for one model."""
    import keras
    import tensorflow as tf

    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module

    keras.utils.set_random_seed(0)
    model = build(keras)
    path = workdir / f"{name}.tflite"
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its SavedModel signature
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    counted = [layer for layer in model.layers if type(layer).__name__ not in IGNORED]
    original = [type(layer).__name__ for layer in counted]
    try:
        _, py, weights = write_generated(str(path), str(workdir / name))
        rebuilt_model = load_module(py).build_model(str(weights))
    except Exception as e:  # a model the rebuild refuses counts as nothing recovered
        return 0, len(original), 0, 0, 0, f"{type(e).__name__}: {str(e)[:60]}"
    rebuilt = [
        layer for layer in rebuilt_model.layers if type(layer).__name__ != "InputLayer"
    ]  # keras.Input layers are not the authors' layers
    have = {type(layer).__name__ for layer in rebuilt}
    custom = sum(1 for layer in rebuilt if not type(layer).__module__.startswith("keras"))
    missing = sorted({c for c in original if c not in have})
    recovered = sum(1 for c in original if c in have)
    rebuilt_names = {layer.name for layer in rebuilt}
    names = sum(1 for layer in counted if layer.name in rebuilt_names)
    lost = [layer.name for layer in counted if layer.name not in rebuilt_names]
    note = ("missing " + ", ".join(missing)) if missing else ""
    if lost and os.environ.get("SHOW_NAMES"):  # which original names the rebuild did not give back
        note += f" names lost: {', '.join(lost)}; rebuilt: {', '.join(sorted(rebuilt_names))}"
    return recovered, len(original), custom, len(rebuilt), names, note


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            rows.append((name, *measure(name, build, Path(tmp))))
    print(f"{'model':<16} {'recovered':>10} {'custom':>10} {'names':>8}  note")
    for name, rec, total, custom, rebuilt, names, note in rows:
        print(
            f"{name:<16} {f'{rec}/{total}':>10} {f'{custom}/{rebuilt}':>10} {f'{names}/{total}':>8}  {note}"
        )
    rec, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    custom, rebuilt = sum(r[3] for r in rows), sum(r[4] for r in rows)
    names = sum(r[5] for r in rows)
    print(f"{'total':<16} {f'{rec}/{total}':>10} {f'{custom}/{rebuilt}':>10} {f'{names}/{total}':>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
