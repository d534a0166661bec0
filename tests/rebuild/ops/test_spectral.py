"""Spectral ops: RFFT2D (through tf.signal.rfft / rfft2d / stft), COMPLEX_ABS, REAL, IMAG, CAST of complex."""

from __future__ import annotations

import pytest
import tensorflow as tf

# name -> (function, input shape, op under test)
CASES = {
    "rfft-abs": (lambda x: tf.abs(tf.signal.rfft(x)), [1, 16], "COMPLEX_ABS"),
    "rfft-real": (lambda x: tf.math.real(tf.signal.rfft(x)), [1, 16], "REAL"),
    "rfft-imag": (lambda x: tf.math.imag(tf.signal.rfft(x)), [1, 16], "IMAG"),
    "rfft-cast": (
        lambda x: tf.cast(tf.signal.rfft(x), tf.float32),
        [1, 16],
        "CAST",
    ),  # the real part (BirdNET)
    "rfft-long": (lambda x: tf.abs(tf.signal.rfft(x)), [2, 512], "RFFT2D"),
    "rfft-pad": (lambda x: tf.abs(tf.signal.rfft(x, fft_length=[32])), [1, 20], "RFFT2D"),
    "rfft-crop": (lambda x: tf.abs(tf.signal.rfft(x, fft_length=[16])), [1, 24], "RFFT2D"),
    "rfft2d-abs": (lambda x: tf.abs(tf.signal.rfft2d(x)), [1, 8, 16], "RFFT2D"),
    "rfft2d-real": (lambda x: tf.math.real(tf.signal.rfft2d(x)), [2, 4, 8], "REAL"),
    "rfft2d-imag": (lambda x: tf.math.imag(tf.signal.rfft2d(x)), [2, 4, 8], "IMAG"),
    "stft-magnitude": (lambda x: tf.abs(tf.signal.stft(x, 64, 32, 64)), [1, 256], "RFFT2D"),
    "log-mel-like": (
        lambda x: tf.math.log(tf.abs(tf.signal.stft(x, 32, 16, 32)) + 1e-3),
        [1, 128],
        "COMPLEX_ABS",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_spectral(tfl, case):
    fn, shape, op = CASES[case]
    tfl.check(tfl.function(fn, shape), op)
