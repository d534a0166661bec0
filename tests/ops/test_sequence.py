"""Control flow and recurrent layers: WHILE (Keras 3 LSTM / GRU / SimpleRNN, as TF 2.21 converts
them, and plain tf.while_loop, including a data-dependent trip count) and IF (each branch taken).

The called subgraphs become keras.Models run by the WhileLoop / IfElse layers; SLICE with run-time
begin / size (a TensorList write inside a loop with return_sequences) is exercised here too.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

RNG = np.random.default_rng(11)
W = RNG.normal(size=(4, 4)).astype(np.float32) * 0.5


def recurrent(layer) -> keras.Model:
    inp = keras.Input((5, 3), batch_size=1)
    model = keras.Model(inp, layer(inp))
    for v in model.weights:  # zero biases would hide a dropped bias
        if not np.any(v.numpy()):
            v.assign(RNG.uniform(-0.3, 0.3, size=v.shape).astype(np.float32))
    return model


KERAS_LOOPS = {
    "lstm": lambda: keras.layers.LSTM(4),
    "lstm-return-sequences": lambda: keras.layers.LSTM(4, return_sequences=True),
    "gru": lambda: keras.layers.GRU(4),
    "gru-reset-before": lambda: keras.layers.GRU(4, reset_after=False),
    "simple-rnn": lambda: keras.layers.SimpleRNN(4),
    "simple-rnn-relu": lambda: keras.layers.SimpleRNN(4, activation="relu"),
    "lstm-go-backwards": lambda: keras.layers.LSTM(4, go_backwards=True),
    "bidirectional-gru": lambda: keras.layers.Bidirectional(keras.layers.GRU(3)),
}


@pytest.mark.parametrize("case", KERAS_LOOPS)
def test_while_keras_recurrent(tfl, case):
    tfl.check(tfl.keras(recurrent(KERAS_LOOPS[case]())), "WHILE")


def _fixed_steps(x):
    def body(i, v):
        return i + 1, tf.tanh(tf.matmul(v, W)) + v * 0.5

    return tf.while_loop(lambda i, v: i < 6, body, (tf.constant(0), x))[1]


def _data_dependent(x):
    # Doubles until the largest magnitude passes 10: the trip count depends on the input.
    def body(i, v):
        return i + 1, v * 2.0

    i, v = tf.while_loop(lambda i, v: tf.reduce_max(tf.abs(v)) < 10.0, body, (tf.constant(0), x))
    return v + tf.cast(i, tf.float32)


TF_LOOPS = {"fixed-steps": _fixed_steps, "data-dependent-trip-count": _data_dependent}


@pytest.mark.parametrize("case", TF_LOOPS)
def test_while_tf_loop(tfl, case):
    tfl.check(tfl.function(TF_LOOPS[case], [1, 4]), "WHILE")


# The predicate is fixed for every input in [-1, 1], so each case checks the branch it names.
IF_CASES = {
    "then": lambda x: tf.cond(tf.reduce_sum(x) > -100.0, lambda: tf.matmul(x, W) * 2.0, lambda: tf.nn.relu(x) - 1.0),
    "else": lambda x: tf.cond(tf.reduce_sum(x) < -100.0, lambda: tf.matmul(x, W) * 2.0, lambda: tf.nn.relu(x) - 1.0),
}


@pytest.mark.parametrize("case", IF_CASES)
def test_if(tfl, case):
    tfl.check(tfl.function(IF_CASES[case], [1, 4]), "IF")
