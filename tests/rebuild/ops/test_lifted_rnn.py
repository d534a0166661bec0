"""Recurrent lifting (passes/lift_rnn.py, ops/lifted_rnn.py): the WHILE loops Keras 3 LSTM, GRU,
SimpleRNN and Bidirectional layers convert to come back as those layers, with their weights in
Keras' layout and gate order; a loop whose body computes another cell keeps the faithful WhileLoop.

Each case builds a tiny Keras model with seeded weights (biases too: the zero initial biases would
hide a misplaced one), converts it, rebuilds it, checks the generated source for the layer and
verifies it against TFLite, end to end and layer-local (the lifted layer is mapped to the tensor
the loop's output is read back as).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

STEPS, FEATURES = 6, 5


def _seeded(model: keras.Model) -> keras.Model:
    rng = np.random.default_rng(7)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(0.0, 0.5, w.shape).astype(np.float32) for w in layer.weights])
    return model


def _model(*layers) -> keras.Model:
    x = keras.Input((STEPS, FEATURES), batch_size=1)
    y = x
    for layer in layers:
        y = layer(y)
    return _seeded(keras.Model(x, y))


def _source(tfl) -> str:
    (path,) = (tfl.tmp_path / "gen").glob("*.py")
    return "".join(path.read_text(encoding="utf-8").split())


# layers, the text each lifted call holds (whitespace-free)
CASES = {
    "lstm": (lambda: [keras.layers.LSTM(7)], ["keras.layers.LSTM(units=7,"]),
    "lstm-sequences": (
        lambda: [keras.layers.LSTM(7, return_sequences=True)],
        ["keras.layers.LSTM(units=7,return_sequences=True,"],
    ),
    "lstm-go-backwards": (
        lambda: [keras.layers.LSTM(7, go_backwards=True)],
        ["keras.layers.LSTM(units=7,go_backwards=True,"],
    ),
    "gru-reset-after": (lambda: [keras.layers.GRU(6)], ["keras.layers.GRU(units=6,"]),
    "gru-reset-before": (
        lambda: [keras.layers.GRU(6, reset_after=False)],
        ["keras.layers.GRU(units=6,reset_after=False,"],
    ),
    "simple-rnn": (lambda: [keras.layers.SimpleRNN(8)], ["keras.layers.SimpleRNN(units=8,"]),
    "simple-rnn-relu": (
        lambda: [keras.layers.SimpleRNN(8, activation="relu")],
        ['keras.layers.SimpleRNN(units=8,activation="relu",'],
    ),
    "bidirectional-lstm": (
        lambda: [keras.layers.Bidirectional(keras.layers.LSTM(4))],
        ["keras.layers.Bidirectional(layer=keras.layers.LSTM(units=4,"],
    ),
    "bidirectional-gru-sequences": (
        lambda: [keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))],
        ["keras.layers.Bidirectional(layer=keras.layers.GRU(units=4,return_sequences=True,"],
    ),
    "stacked": (
        lambda: [keras.layers.LSTM(6, return_sequences=True), keras.layers.GRU(5)],
        ["keras.layers.LSTM(units=6,return_sequences=True,", "keras.layers.GRU(units=5,"],
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_recurrent_layer_lifts(tfl, case):
    make, texts = CASES[case]
    report = tfl.check(tfl.keras(_model(*make())), "WHILE")
    source = _source(tfl)
    for text in texts:
        assert text in source, source
    assert "WhileLoop(" not in source, source
    lifted = [r for r in report.layers if r.op in ("Recurrent", "Bidirectional")]
    assert lifted and all(r.ok for r in report.layers), report.layers


def test_other_cell_stays_a_loop(tfl):
    """An LSTM with a relu cell activation is not the cell the pass knows: the faithful loop stays."""
    report = tfl.check(tfl.keras(_model(keras.layers.LSTM(7, activation="relu"))), "WHILE")
    source = _source(tfl)
    assert "WhileLoop(" in source and "keras.layers.LSTM(" not in source, source
    assert report.ok


def test_returned_state_stays_a_loop(tfl):
    """The final state is also a model output: the loop's other results are read, so no lift."""
    x = keras.Input((STEPS, FEATURES), batch_size=1)
    out, h, _ = keras.layers.LSTM(7, return_state=True)(x)
    model = _seeded(keras.Model(x, [out, keras.layers.Add()([h, h])]))
    tfl.check(tfl.keras(model), "WHILE")
    assert "keras.layers.LSTM(" not in _source(tfl)


def test_a_loop_layer_named_like_a_keras_cell_keeps_its_weights(tfl):
    """A summed Bidirectional GRU before a GRU: the loops that stay faithful hold a Dense named
    "gru_cell" from the TFLite names, as Keras auto-names a lifted GRU's cell; each gets its own."""
    layers = [
        keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True), merge_mode="sum"),
        keras.layers.GRU(5),
    ]
    report = tfl.check(tfl.keras(_model(*layers)), "WHILE")
    source = _source(tfl)
    assert 'name="gru_cell"' in source and "keras.layers.GRU(" in source, source
    assert report.ok, report.layers
