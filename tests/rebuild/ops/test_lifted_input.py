"""Preprocessing lifting (passes/lift_input.py): constant arithmetic on a model input comes back as
keras.layers.Rescaling or Normalization, its constants written at the call; the same arithmetic
elsewhere keeps the faithful form. Each case verifies against TFLite, end to end and layer-local.
"""

from __future__ import annotations

import keras
import pytest

SHAPE = (8, 8, 3)


def _model(pre, after=None) -> keras.Model:
    x = keras.Input(SHAPE, batch_size=1)
    y = pre(x)
    y = (after or keras.layers.MaxPooling2D())(y)
    return keras.Model(x, keras.layers.Conv2D(4, 3)(y))


def _source(tfl) -> str:
    (path,) = (tfl.tmp_path / "gen").glob("*.py")
    return "".join(path.read_text(encoding="utf-8").split())


# layer, the op the converter leaves, the call text (whitespace-free)
CASES = {
    "rescaling-scalar": (
        lambda: keras.layers.Rescaling(0.5, offset=-1.0),
        "MUL",
        "keras.layers.Rescaling(scale=0.5,offset=-1.0,",
    ),
    "rescaling-scale-only": (
        lambda: keras.layers.Rescaling(0.25),
        "MUL",
        "keras.layers.Rescaling(scale=0.25,",
    ),
    "rescaling-per-channel": (
        lambda: keras.layers.Rescaling([0.5, 2.0, 4.0], offset=[0.1, -0.2, 0.3]),
        "MUL",
        "keras.layers.Rescaling(scale=[0.5,2.0,4.0],offset=[0.1,-0.2,0.3],",
    ),
    "normalization": (
        lambda: keras.layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.04, 0.09, 0.16]),
        "SUB",
        "keras.layers.Normalization(mean=[0.5,0.4,0.3],variance=[0.04,0.09,0.16],",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_preprocessing_lifts(tfl, case):
    make, op, text = CASES[case]
    report = tfl.check(tfl.keras(_model(make())), op)
    source = _source(tfl)
    assert text in source, source
    assert "BinaryOp(" not in source and "keras.layers.Multiply(" not in source, source
    lifted = [r for r in report.layers if r.op in ("Rescaling", "Normalization")]
    assert lifted and all(r.ok for r in report.layers), report.layers


def test_scaling_inside_the_model_stays(tfl):
    """A constant per-channel scale after a layer is not preprocessing of an input: no Rescaling."""
    x = keras.Input(SHAPE, batch_size=1)
    y = keras.layers.MaxPooling2D()(keras.layers.Conv2D(3, 1)(x))
    y = keras.layers.Rescaling([0.5, 2.0, 4.0], offset=[0.1, -0.2, 0.3])(y)
    model = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same")(keras.layers.MaxPooling2D()(y)))
    tfl.check(tfl.keras(model), "CONV_2D")
    assert "keras.layers.Rescaling(" not in _source(tfl)
