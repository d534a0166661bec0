"""Elementwise ops: arithmetic of two operands (both inputs, broadcast, one constant; fused
activations), comparisons and logic, and one-operand math functions."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

A, B_SAME, B_BCAST = [1, 3, 4], [1, 3, 4], [1, 1, 4]
# Constant operands: big enough that fused RELU6 / RELU_N1_TO_1 clip, never zero (divisors).
C = np.array([-7.5, -0.5, 0.75, 9.0], np.float32)


def pos(x):
    """Strictly positive values (bases of POW, divisors) computed from an input."""
    return tf.abs(x) + 0.25


# op -> (tf function, lhs transform, rhs transform, constant operand)
BINARY = {
    "ADD": (tf.add, None, None, C),
    "SUB": (tf.subtract, None, None, C),
    "MUL": (tf.multiply, None, None, C),
    "DIV": (tf.divide, None, pos, C),
    "MAXIMUM": (tf.maximum, None, None, C / 10),
    "MINIMUM": (tf.minimum, None, None, C / 10),
    "SQUARED_DIFFERENCE": (tf.math.squared_difference, None, None, C),
    "POW": (tf.pow, pos, lambda x: x * 2.0, np.array([1.0, 2.0, 3.0, 0.5], np.float32)),
    "FLOOR_DIV": (tf.math.floordiv, lambda x: x * 4.0, pos, np.array([0.3, 0.7, 1.1, 2.0], np.float32)),
    "FLOOR_MOD": (tf.math.floormod, lambda x: x * 4.0, pos, np.array([0.3, 0.7, 1.1, 2.0], np.float32)),
}


def _binary_fn(op: str, variant: str):
    fn, lhs, rhs, const = BINARY[op]
    lhs, rhs = lhs or (lambda x: x), rhs or (lambda x: x)
    if variant == "const-rhs":
        return lambda a: fn(lhs(a), const)
    if variant == "const-lhs":
        base = np.abs(const) + 0.5 if op == "POW" else const  # POW: positive base, input exponent
        return lambda a: fn(base, a * 2.0 if op == "POW" else rhs(a))
    return lambda a, b: fn(lhs(a), rhs(b))


def _binary_params():
    params = []
    for op in BINARY:
        for variant, specs in (
            ("same-shape", (A, B_SAME)),
            ("broadcast", (A, B_BCAST)),
            ("const-rhs", (A,)),
            ("const-lhs", (A,)),
        ):
            if (op, variant) == ("DIV", "const-rhs"):
                continue  # the converter turns x / c into x * (1 / c)
            params.append(pytest.param(op, variant, specs, id=f"{op.lower()}-{variant}"))
    return params


@pytest.mark.parametrize("op, variant, specs", _binary_params())
def test_binary(tfl, op, variant, specs):
    tfl.check(tfl.function(_binary_fn(op, variant), *specs), op)


# Operand shapes where Keras' TensorFlow backend took the second ADD operand for a bias
# (tf.nn.bias_add keeps the first one's shape): a rank-2 FULLY_CONNECTED output plus a rank-3 slice,
# as ai-edge-torch's unrolled LSTM writes it ([1, 128] + [1, 1, 128] came out [1, 128]); a column
# plus a row; the bias-like operand first; a column added to a square (the bias reading added it
# along the last axis); the bias cases that shortcut gets right.
ADD_BROADCAST = {
    "more-axes-second": ([1, 8], [1, 1, 8]),
    "column-plus-row": ([1, 1, 8], [1, 8, 1]),
    "vector-first": ([1, 1, 8], [1, 3, 8]),
    "along-axis-1-of-square": ([1, 8, 8], [1, 8, 1]),
    "bias-last-axis": ([1, 3, 8], [8]),
    "bias-axis-1": ([1, 8, 3, 3], [1, 8, 1, 1]),
}


@pytest.mark.parametrize("shapes", ADD_BROADCAST.values(), ids=ADD_BROADCAST)
def test_add_broadcast_shapes(tfl, shapes):
    tfl.check(tfl.function(lambda a, b: tf.add(a, b * 2.0), *shapes), "ADD")


def test_add_rank_2_plus_rank_3(tfl):
    """ai-edge-torch's unrolled LSTM: ADD(FULLY_CONNECTED [1, 8], SLICE [1, 1, 8]) -> [1, 1, 8], in
    that operand order (TensorFlow's converter puts the larger operand first, so it is crafted)."""
    from flatbuf import Op, T, build_model

    perm = np.array([2, 1, 0], np.int32)  # a reader that needs the rank (the outputs are compared flat)
    blob = build_model(
        [
            T("a", [1, 8]),
            T("b", [1, 1, 8]),
            T("sum", [1, 1, 8]),
            T("perm", [3], "int32", perm),
            T("y", [8, 1, 1]),
        ],
        [
            Op("ADD", [0, 1], [2], options={"fused_activation_function": "NONE"}),
            Op("TRANSPOSE", [2, 3], [4], options_type="TransposeOptions"),
        ],
        inputs=[0, 1],
        outputs=[4],
    )
    tfl.check(tfl.crafted(blob), "ADD")


ACTIVATIONS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "relu_n1_to_1": lambda x: tf.clip_by_value(x, -1.0, 1.0),
}


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "DIV"])
@pytest.mark.parametrize("variant", ["const", "broadcast"])
def test_fused_activation(tfl, op, act, variant):
    if variant == "const":  # the constant makes values reach past 6 (x / c is a MUL: use c / x)
        fn = _binary_fn(op, "const-lhs" if op == "DIV" else "const-rhs")
        path = tfl.function(lambda a: ACTIVATIONS[act](fn(a)), A)
    else:
        fn = _binary_fn(op, variant)
        path = tfl.function(lambda a, b: ACTIVATIONS[act](fn(a * 4.0, b * 4.0)), A, B_BCAST)
    from tfl_rebuild.tflite.reader import read_model

    fused = [
        o.options.get("fused_activation_function")
        for o in read_model(str(path)).main.operators
        if o.opcode == op
    ]
    assert act.upper() in fused, f"{act} did not fuse into {op}: {fused}"
    tfl.check(path, op)


def rounded(x):
    """Few distinct values, so EQUAL / NOT_EQUAL see both answers."""
    return tf.round(x * 2.0)


COMPARE = {
    "LESS": tf.less,
    "LESS_EQUAL": tf.less_equal,
    "GREATER": tf.greater,
    "GREATER_EQUAL": tf.greater_equal,
    "EQUAL": tf.equal,
    "NOT_EQUAL": tf.not_equal,
}


@pytest.mark.parametrize("variant", ["same-shape", "broadcast", "const-rhs"])
@pytest.mark.parametrize("op", COMPARE)
def test_compare(tfl, op, variant):
    fn = COMPARE[op]
    if variant == "const-rhs":
        path = tfl.function(lambda a: fn(rounded(a), np.array([-1.0, 0.0, 0.0, 1.0], np.float32)), A)
    else:
        path = tfl.function(
            lambda a, b: fn(rounded(a), rounded(b)), A, B_SAME if variant == "same-shape" else B_BCAST
        )
    tfl.check(path, op)


LOGIC = {
    "LOGICAL_AND": lambda a, b: tf.logical_and(a > 0, b > 0),
    "LOGICAL_OR": lambda a, b: tf.logical_or(a > 0, b > 0),
}


@pytest.mark.parametrize("op", LOGIC)
def test_logic(tfl, op):
    tfl.check(tfl.function(LOGIC[op], A, B_BCAST), op)


def test_logical_not(tfl):
    # not(a > b) folds into a <= b: LOGICAL_NOT only survives on a boolean input.
    tfl.check(tfl.function(tf.logical_not, (A, tf.bool)), "LOGICAL_NOT")


# op -> tf function of an input in [-1, 1) (inside the op's domain, away from its edges)
UNARY = {
    "EXP": lambda x: tf.exp(x * 3.0),
    "LOG": lambda x: tf.math.log(pos(x)),
    "SQRT": lambda x: tf.sqrt(pos(x)),
    "RSQRT": lambda x: tf.math.rsqrt(pos(x)),
    "SQUARE": tf.square,
    "NEG": tf.negative,
    "ABS": tf.abs,
    "SIN": lambda x: tf.sin(x * 3.0),
    "COS": lambda x: tf.cos(x * 3.0),
    "FLOOR": lambda x: tf.floor(x * 3.0),
    "CEIL": lambda x: tf.math.ceil(x * 3.0),
    "ROUND": lambda x: tf.round(x * 3.0),
    "SIGN": tf.sign,
}


@pytest.mark.parametrize("op", UNARY)
def test_unary(tfl, op):
    tfl.check(tfl.function(UNARY[op], A), op)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_add_n(tfl, n):
    fn = lambda *xs: tf.add_n([x * float(k + 1) for k, x in enumerate(xs)])  # noqa: E731
    tfl.check(tfl.function(fn, *([A] * n)), "ADD_N")


@pytest.mark.parametrize("numerator", [1.0, 3.0], ids=["one", "three"])
def test_div_constant_numerator_core_ml(tfl, numerator):
    # Grappler's constant folding (coremltools runs it) writes 1 / x as Reciprocal where it knows the
    # divisor's shape (here from the reshape), which coremltools made inverse(x, epsilon=1e-4):
    # 1 / (x + 1e-4), off by rel 2e-3 at x = 0.05 (onnx2tf's erf polynomial divides so).
    tfl.core_ml(tfl.function(lambda x: numerator / (tf.abs(tf.reshape(x, [1, 12])) + 0.05), A), "DIV")
