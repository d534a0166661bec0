"""How much of the Keras its authors wrote a rebuild gives back: layer classes before and after.

Builds the small Keras models below (their source is here), converts each with tf.lite, rebuilds it
with tfl-rebuild (`write_generated`), loads the generated module and compares layer classes.

Matching rule: the original model's layers are counted without InputLayer, BatchNormalization,
Dropout, Activation and ReLU (the converter folds or fuses those, and a rebuild need not show
them). An original layer counts as recovered when the rebuilt model has at least one layer of the
same class name (a class counted once per original layer, not paired one to one). A rebuilt layer
is custom when its class is not from keras (a class defined in the generated module). An original
layer's name counts as recovered when a rebuilt layer has exactly that name (same counted layers).

Batch: the originals take any batch (no batch_size), as their authors would write them, except
where the converter needs a fixed one (the LSTM). A rebuild of a free-batch original counts as taking batch 3 when its model, called on 3 seeded rows, returns TFLite's outputs for them
(the file resized to batch 3) within rel 1e-4. Run it on an older checkout for the "before" figures.

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
    inp = keras.Input((16,))
    x = keras.layers.Dense(32, activation="relu")(inp)
    x = keras.layers.Dropout(0.1)(x)
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _cnn(keras):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _conv1d(keras):
    inp = keras.Input((32, 4))
    x = keras.layers.Conv1D(8, 3, activation="relu")(inp)
    x = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu")(x)
    x = keras.layers.MaxPooling1D(2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _transformer(keras):
    inp = keras.Input((8, 16))
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(inp, inp)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([inp, h]))
    f = keras.layers.Dense(32, activation="gelu")(x)
    f = keras.layers.Dense(16)(f)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([x, f]))
    return keras.Model(inp, x)


def _lstm(keras):
    # batch_size=1: with a free batch the converter refuses Keras 3's LSTM loop (its TensorList
    # element shape must be static), so this original fixes its batch.
    inp = keras.Input((10, 4), batch_size=1)
    x = keras.layers.LSTM(8)(inp)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _gru(keras):
    inp = keras.Input((10, 4), batch_size=1)
    x = keras.layers.GRU(8, return_sequences=True)(inp)
    x = keras.layers.GRU(6, reset_after=False)(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _simple_rnn(keras):
    inp = keras.Input((10, 4), batch_size=1)
    x = keras.layers.SimpleRNN(8)(inp)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _bidirectional(keras):
    inp = keras.Input((10, 4), batch_size=1)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(inp)
    x = keras.layers.Bidirectional(keras.layers.GRU(4))(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _text(keras):
    inp = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _squeeze_excite(keras):
    inp = keras.Input((8, 8, 8))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    s = keras.layers.GlobalAveragePooling2D()(x)
    s = keras.layers.Dense(2, activation="relu")(s)
    s = keras.layers.Dense(8, activation="sigmoid")(s)
    s = keras.layers.Reshape((1, 1, 8))(s)
    x = keras.layers.Multiply()([x, s])
    return keras.Model(inp, keras.layers.Conv2D(4, 1)(x))


def _rescaling(keras):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _normalization(keras):
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.16])(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


def _causal_decoder(keras):
    inp = keras.Input((12, 32))
    h = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8)(inp, inp, use_causal_mask=True)
    x = keras.layers.LayerNormalization()(keras.layers.Add()([inp, h]))
    f = keras.layers.Dense(64, activation="gelu")(x)
    return keras.Model(inp, keras.layers.Add()([x, keras.layers.Dense(32)(f)]))


def _group_norm_block(keras):
    inp = keras.Input((16, 16, 8))
    x = keras.layers.Conv2D(16, 3, padding="same")(inp)
    x = keras.layers.GroupNormalization(groups=4)(x)
    x = keras.layers.Activation("swish")(x)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    return keras.Model(inp, keras.layers.GroupNormalization(groups=8, epsilon=1e-5)(x))


def _embedding_head(keras):
    inp = keras.Input((4, 4, 32))
    x = keras.layers.Dense(16, activation="tanh")(inp)  # Dense on a rank-4 input
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.UnitNormalization()(keras.layers.Dense(8)(x)))


def _attention_pool(keras):
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.SeparableConv2D(16, 3, dilation_rate=2, padding="same", activation="relu")(x)
    x = keras.layers.Reshape((64, 16))(x)
    weights = keras.layers.Softmax(axis=1)(keras.layers.Dense(1)(x))  # over the 64 positions
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Multiply()([x, weights]))
    return keras.Model(inp, keras.layers.Dense(4)(x))


MODELS = {
    "mlp": _mlp,
    "cnn_separable": _cnn,
    "conv1d_flatten": _conv1d,
    "transformer": _transformer,
    "lstm": _lstm,
    "gru_stacked": _gru,
    "simple_rnn": _simple_rnn,
    "bidirectional": _bidirectional,
    "text_embedding": _text,
    "squeeze_excite": _squeeze_excite,
    "rescaling_head": _rescaling,
    "normalization": _normalization,
    "causal_decoder": _causal_decoder,
    "group_norm_block": _group_norm_block,
    "embedding_head": _embedding_head,
    "attention_pool": _attention_pool,
}


def classes(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def batch_ok(path: Path, rebuilt_model, rows: int = 3) -> str:
    """'' when the rebuild called on `rows` seeded rows matches TFLite resized to them, else why not."""
    import numpy as np

    from tfl_rebuild.runtime.interpreter import make_interpreter, run

    interp = make_interpreter(model_path=str(path))
    rng = np.random.default_rng(0)
    inputs = []
    for d in interp.get_input_details():
        shape = (rows, *[int(n) for n in d["shape"][1:]])
        if np.dtype(d["dtype"]).kind in "iu":
            inputs.append(rng.integers(0, 10, shape).astype(d["dtype"]))
        else:
            inputs.append(rng.standard_normal(shape).astype(np.float32))
    ref = run(interp, inputs)
    try:
        out = rebuilt_model(inputs if len(inputs) > 1 else inputs[0])
    except Exception as e:  # noqa: BLE001 - a rebuild fixed at batch 1 fails here
        return f"batch {rows}: {type(e).__name__}"
    outs = out if isinstance(out, (list, tuple)) else [out]
    for r, o in zip(ref, outs):
        o = np.asarray(o)
        if o.shape != r.shape:
            return f"batch {rows}: shape {list(o.shape)} for {list(r.shape)}"
        rel = float(np.max(np.abs(o - r)) / max(float(np.max(np.abs(r))), 1e-12))
        if rel > 1e-4:
            return f"batch {rows}: rel {rel:.2g}"
    return ""


def measure(name: str, build, workdir: Path) -> tuple[int, int, int, int, int, str, bool | None]:
    """(recovered, original, custom, rebuilt, names recovered, note, takes batch 3: None when the
    original does not) for one model."""
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
    free = model.inputs[0].shape[0] is None  # the original takes any batch
    try:
        _, py, weights = write_generated(str(path), str(workdir / name))
        rebuilt_model = load_module(py).build_model(str(weights))
    except Exception as e:  # a model the rebuild refuses counts as nothing recovered
        return 0, len(original), 0, 0, 0, f"{type(e).__name__}: {str(e)[:60]}", False if free else None
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
    batch = batch_ok(path, rebuilt_model) if free else ""
    notes = [("missing " + ", ".join(missing)) if missing else "", batch]
    if lost and os.environ.get("SHOW_NAMES"):  # which original names the rebuild did not give back
        notes.append(f"names lost: {', '.join(lost)}; rebuilt: {', '.join(sorted(rebuilt_names))}")
    takes = (not batch) if free else None
    return recovered, len(original), custom, len(rebuilt), names, "; ".join(n for n in notes if n), takes


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            rows.append((name, *measure(name, build, Path(tmp))))
    print(f"{'model':<16} {'recovered':>10} {'custom':>10} {'names':>8} {'batch 3':>8}  note")
    for name, rec, total, custom, rebuilt, names, note, batch in rows:
        takes = "-" if batch is None else "yes" if batch else "no"
        print(
            f"{name:<16} {f'{rec}/{total}':>10} {f'{custom}/{rebuilt}':>10} {f'{names}/{total}':>8}"
            f" {takes:>8}  {note}"
        )
    rec, total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    custom, rebuilt = sum(r[3] for r in rows), sum(r[4] for r in rows)
    names = sum(r[5] for r in rows)
    batch = f"{sum(bool(r[7]) for r in rows)}/{sum(r[7] is not None for r in rows)}"
    print(
        f"{'total':<16} {f'{rec}/{total}':>10} {f'{custom}/{rebuilt}':>10} {f'{names}/{total}':>8} {batch:>8}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
