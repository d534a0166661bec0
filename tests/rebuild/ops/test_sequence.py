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


def _nested(x):
    # A loop whose body runs a loop: the inner cond/body are called from a called subgraph.
    def inner(v):
        return tf.while_loop(
            lambda j, u: j < 3, lambda j, u: (j + 1, tf.sin(u) + u * 0.5), (tf.constant(0), v)
        )[1]

    return tf.while_loop(
        lambda i, v: i < 4, lambda i, v: (i + 1, tf.matmul(inner(v), W)), (tf.constant(0), x)
    )[1]


TF_LOOPS = {"fixed-steps": _fixed_steps, "data-dependent-trip-count": _data_dependent, "nested": _nested}


@pytest.mark.parametrize("case", TF_LOOPS)
def test_while_tf_loop(tfl, case):
    tfl.check(tfl.function(TF_LOOPS[case], [1, 4]), "WHILE")


# The predicate is fixed for every input in [-1, 1], so each case checks the branch it names.
IF_CASES = {
    "then": lambda x: tf.cond(
        tf.reduce_sum(x) > -100.0, lambda: tf.matmul(x, W) * 2.0, lambda: tf.nn.relu(x) - 1.0
    ),
    "else": lambda x: tf.cond(
        tf.reduce_sum(x) < -100.0, lambda: tf.matmul(x, W) * 2.0, lambda: tf.nn.relu(x) - 1.0
    ),
}


@pytest.mark.parametrize("case", IF_CASES)
def test_if(tfl, case):
    tfl.check(tfl.function(IF_CASES[case], [1, 4]), "IF")


# --- fused recurrent ops (crafted: TF 2.21 emits WHILE loops for Keras 3 layers) ---------------

UNITS, FEATURES, STEPS = 4, 3, 5


def _w(*shape):
    return RNG.normal(size=shape).astype(np.float32) * 0.6


def _lstm_model(activation: str, time_major: bool) -> bytes:
    from flatbuf import Op, T, build_model

    seq = [STEPS, 1, FEATURES] if time_major else [1, STEPS, FEATURES]
    out = [STEPS, 1, UNITS] if time_major else [1, STEPS, UNITS]
    tensors = [T("x", seq)]
    tensors += [T(f"w_{g}", [UNITS, FEATURES], data=_w(UNITS, FEATURES)) for g in "ifco"]  # 1-4
    tensors += [T(f"r_{g}", [UNITS, UNITS], data=_w(UNITS, UNITS)) for g in "ifco"]  # 5-8
    tensors += [T(f"b_{g}", [UNITS], data=_w(UNITS)) for g in "ifco"]  # 9-12
    tensors += [
        T("h", [1, UNITS], is_variable=True),
        T("c", [1, UNITS], is_variable=True),
        T("y", out),
    ]  # 13-15
    inputs = [0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1, 9, 10, 11, 12, -1, -1, 13, 14, -1, -1, -1, -1]
    options = {
        "fused_activation_function": activation,
        "time_major": time_major,
        "cell_clip": 0.0,
        "proj_clip": 0.0,
    }
    return build_model(
        tensors,
        [
            Op(
                "UNIDIRECTIONAL_SEQUENCE_LSTM",
                inputs,
                [15],
                options=options,
                options_type="UnidirectionalSequenceLSTMOptions",
            )
        ],
        inputs=[0],
        outputs=[15],
    )


LSTM_CASES = {"tanh": ("TANH", False), "relu": ("RELU", False), "tanh-time-major": ("TANH", True)}


@pytest.mark.parametrize("case", LSTM_CASES)
def test_unidirectional_sequence_lstm(tfl, case):
    tfl.check(tfl.crafted(_lstm_model(*LSTM_CASES[case])), "UNIDIRECTIONAL_SEQUENCE_LSTM")


def test_lstm_state_kept_between_invocations_is_noted(tfl):
    """TFLite carries the fused LSTM's state (variable tensors) into the next invocation; the rebuild
    starts from zeros every call, and its header says so."""
    tfl.check(tfl.crafted(_lstm_model("TANH", False)), "UNIDIRECTIONAL_SEQUENCE_LSTM")
    source = next((tfl.tmp_path / "gen").glob("*.py")).read_text()
    assert "TFLite keeps the state of 1 op(s) (UNIDIRECTIONAL_SEQUENCE_LSTM) in variable tensors" in source


def _rnn_model(activation: str, time_major: bool) -> bytes:
    from flatbuf import Op, T, build_model

    seq = [STEPS, 1, FEATURES] if time_major else [1, STEPS, FEATURES]
    out = [STEPS, 1, UNITS] if time_major else [1, STEPS, UNITS]
    tensors = [
        T("x", seq),
        T("w", [UNITS, FEATURES], data=_w(UNITS, FEATURES)),
        T("r", [UNITS, UNITS], data=_w(UNITS, UNITS)),
        T("b", [UNITS], data=_w(UNITS)),
        T("h", [1, UNITS], is_variable=True),
        T("y", out),
    ]
    options = {"fused_activation_function": activation, "time_major": time_major}
    return build_model(
        tensors,
        [
            Op(
                "UNIDIRECTIONAL_SEQUENCE_RNN",
                [0, 1, 2, 3, 4],
                [5],
                options=options,
                options_type="SequenceRNNOptions",
            )
        ],
        inputs=[0],
        outputs=[5],
    )


RNN_CASES = {"tanh": ("TANH", False), "relu": ("RELU", False), "tanh-time-major": ("TANH", True)}


@pytest.mark.parametrize("case", RNN_CASES)
def test_unidirectional_sequence_rnn(tfl, case):
    tfl.check(tfl.crafted(_rnn_model(*RNN_CASES[case])), "UNIDIRECTIONAL_SEQUENCE_RNN")


def test_lstm_with_peepholes_is_refused_in_one_line(tmp_path):
    from flatbuf import Op, T, build_model

    from tfl_rebuild.rebuild.codegen.emit import generate
    from tfl_rebuild.rebuild.ops import ConversionError
    from tfl_rebuild.tflite.reader import read_model

    tensors = [T("x", [1, STEPS, FEATURES])]
    tensors += [T(f"w_{g}", [UNITS, FEATURES], data=_w(UNITS, FEATURES)) for g in "ifco"]
    tensors += [T(f"r_{g}", [UNITS, UNITS], data=_w(UNITS, UNITS)) for g in "ifco"]
    tensors += [T(f"p_{g}", [UNITS], data=_w(UNITS)) for g in "ifo"]  # 9-11 peepholes
    tensors += [T(f"b_{g}", [UNITS], data=_w(UNITS)) for g in "ifco"]  # 12-15
    tensors += [
        T("h", [1, UNITS], is_variable=True),
        T("c", [1, UNITS], is_variable=True),
        T("y", [1, STEPS, UNITS]),
    ]
    inputs = [*range(16), -1, -1, 16, 17, -1, -1, -1, -1]
    path = tmp_path / "peephole.tflite"
    path.write_bytes(
        build_model(
            tensors,
            [
                Op(
                    "UNIDIRECTIONAL_SEQUENCE_LSTM",
                    inputs,
                    [18],
                    options={"fused_activation_function": "TANH"},
                    options_type="UnidirectionalSequenceLSTMOptions",
                )
            ],
            inputs=[0],
            outputs=[18],
        )
    )
    with pytest.raises(ConversionError, match="peephole weights has no keras.layers.LSTM equivalent"):
        generate(read_model(str(path)), "peephole")


def _bilstm_model(merge: bool, time_major: bool) -> bytes:
    from flatbuf import Op, T, build_model

    seq = [STEPS, 1, FEATURES] if time_major else [1, STEPS, FEATURES]

    def out(n):
        return [STEPS, 1, n] if time_major else [1, STEPS, n]

    tensors, inputs = [T("x", seq)], [0] + [-1] * 47
    for d, (w, r, b) in {"fw": (1, 5, 12), "bw": (18, 22, 29)}.items():
        for k, g in enumerate("ifco"):
            inputs[w + k], inputs[r + k], inputs[b + k] = len(tensors), len(tensors) + 1, len(tensors) + 2
            tensors += [
                T(f"{d}_w_{g}", [UNITS, FEATURES], data=_w(UNITS, FEATURES)),
                T(f"{d}_r_{g}", [UNITS, UNITS], data=_w(UNITS, UNITS)),
                T(f"{d}_b_{g}", [UNITS], data=_w(UNITS)),
            ]
    for k, name in zip((35, 36, 37, 38), ("fw_h", "fw_c", "bw_h", "bw_c")):
        inputs[k] = len(tensors)
        tensors.append(T(name, [1, UNITS], is_variable=True))
    outs = [len(tensors)] if merge else [len(tensors), len(tensors) + 1]
    tensors += [T("y", out(2 * UNITS))] if merge else [T("y_fw", out(UNITS)), T("y_bw", out(UNITS))]
    options = {
        "fused_activation_function": "TANH",
        "merge_outputs": merge,
        "time_major": time_major,
        "cell_clip": 0.0,
        "proj_clip": 0.0,
    }
    return build_model(
        tensors,
        [
            Op(
                "BIDIRECTIONAL_SEQUENCE_LSTM",
                inputs,
                outs,
                options=options,
                options_type="BidirectionalSequenceLSTMOptions",
            )
        ],
        inputs=[0],
        outputs=outs,
    )


BILSTM_CASES = {"merged": (True, False), "two-outputs": (False, False), "merged-time-major": (True, True)}


@pytest.mark.parametrize("case", BILSTM_CASES)
def test_bidirectional_sequence_lstm(tfl, case):
    tfl.check(tfl.crafted(_bilstm_model(*BILSTM_CASES[case])), "BIDIRECTIONAL_SEQUENCE_LSTM")


@pytest.mark.parametrize("activation", ["TANH", "RELU"])
def test_rnn_single_step(tfl, activation):
    from flatbuf import Op, T, build_model

    tensors = [
        T("x", [1, FEATURES]),
        T("w", [UNITS, FEATURES], data=_w(UNITS, FEATURES)),
        T("r", [UNITS, UNITS], data=_w(UNITS, UNITS)),
        T("b", [UNITS], data=_w(UNITS)),
        T("h", [1, UNITS], is_variable=True),
        T("y", [1, UNITS]),
    ]
    blob = build_model(
        tensors,
        [
            Op(
                "RNN",
                [0, 1, 2, 3, 4],
                [5],
                options={"fused_activation_function": activation},
                options_type="RNNOptions",
            )
        ],
        inputs=[0],
        outputs=[5],
    )
    tfl.check(tfl.crafted(blob), "RNN")


def _birnn_model(merge: bool, time_major: bool, activation: str = "TANH") -> bytes:
    from flatbuf import Op, T, build_model

    seq = [STEPS, 1, FEATURES] if time_major else [1, STEPS, FEATURES]

    def out(n):
        return [STEPS, 1, n] if time_major else [1, STEPS, n]

    tensors = [T("x", seq)]
    for d in ("fw", "bw"):  # inputs 1-4 and 5-8: weights, recurrent weights, bias, state
        tensors += [
            T(f"{d}_w", [UNITS, FEATURES], data=_w(UNITS, FEATURES)),
            T(f"{d}_r", [UNITS, UNITS], data=_w(UNITS, UNITS)),
            T(f"{d}_b", [UNITS], data=_w(UNITS)),
            T(f"{d}_h", [1, UNITS], is_variable=True),
        ]
    outs = [9] if merge else [9, 10]
    tensors += [T("y", out(2 * UNITS))] if merge else [T("y_fw", out(UNITS)), T("y_bw", out(UNITS))]
    options = {"fused_activation_function": activation, "merge_outputs": merge, "time_major": time_major}
    return build_model(
        tensors,
        [
            Op(
                "BIDIRECTIONAL_SEQUENCE_RNN",
                [*range(9), -1, -1, -1],
                outs,
                options=options,
                options_type="BidirectionalSequenceRNNOptions",
            )
        ],
        inputs=[0],
        outputs=outs,
    )


BIRNN_CASES = {
    "merged": (True, False),
    "two-outputs": (False, False),
    "merged-time-major": (True, True),
    "two-outputs-time-major-relu": (False, True, "RELU"),
}


@pytest.mark.parametrize("case", BIRNN_CASES)
def test_bidirectional_sequence_rnn(tfl, case):
    tfl.check(tfl.crafted(_birnn_model(*BIRNN_CASES[case])), "BIDIRECTIONAL_SEQUENCE_RNN")


FUSED_TO_CORE_ML = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": lambda: _lstm_model("TANH", False),
    "UNIDIRECTIONAL_SEQUENCE_RNN": lambda: _rnn_model("TANH", True),
    "BIDIRECTIONAL_SEQUENCE_LSTM": lambda: _bilstm_model(True, False),
    "BIDIRECTIONAL_SEQUENCE_RNN": lambda: _birnn_model(False, True),
    "SVDF": lambda: _svdf_model(2, "RELU"),
}


def _core_ml_checks(tfl, path, op: str, out_dir) -> None:
    pytest.importorskip("coremltools")
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.coreml import check as cc
    from tfl_rebuild.coreml import convert as cm
    from tfl_rebuild.rebuild.loader import load_module

    tfl.check(path, op)
    model, py, weights = write_generated(str(path), str(out_dir))
    keras_model = load_module(py).build_model(str(weights))
    conv = cm.convert(keras_model, model, cm.Options(precision="float16"))
    result = cc.check(model, conv, keras_model)
    assert not isinstance(result, cc.NotChecked), result
    assert result.report.ok, {o.name: o.max_rel for o in result.report.outputs}


@pytest.mark.parametrize("op", FUSED_TO_CORE_ML)
def test_fused_recurrent_rebuild_converts_to_core_ml(tfl, tmp_path, op):
    # The Keras layers are unrolled (short static sequences): coremltools cannot convert the
    # while_loop Keras 3 recurrent layers otherwise trace to.
    _core_ml_checks(tfl, tfl.crafted(FUSED_TO_CORE_ML[op]()), op, tmp_path / "coreml")


@pytest.mark.parametrize("case", ["while-fixed-steps", "while-data-dependent", "if-then", "if-else"])
def test_control_flow_converts_to_core_ml(tfl, tmp_path, case):
    # WhileLoop / IfElse trace to tf.while_loop / tf.cond, which Core ML takes; the MIL check runs
    # the program's while_loop / cond blocks.
    kind, variant = case.split("-", 1)
    if kind == "while":
        fn = TF_LOOPS["fixed-steps" if variant == "fixed-steps" else "data-dependent-trip-count"]
    else:
        fn = IF_CASES[variant]
    _core_ml_checks(tfl, tfl.function(fn, [1, 4]), kind.upper(), tmp_path / "coreml")


def test_hostile_subgraph_names_stay_inert():
    # Subgraph names reach the generated module only through the Namer (function names) and
    # comment() (a repr on one comment line): a name full of code must change nothing.
    import ast
    import dataclasses
    from pathlib import Path

    from tfl_rebuild.rebuild.codegen.emit import generate
    from tfl_rebuild.tflite.reader import read_model

    # The dynamic-range LSTM: its loop stays a WhileLoop over the subgraphs (the float one lifts).
    path = Path(__file__).resolve().parents[3] / "fixtures" / "lstm_int8.tflite"
    if not path.exists():
        pytest.skip("fixtures/lstm_int8.tflite is missing (fixtures/make_sequence_models.py)")
    model = read_model(str(path))
    hostile = '"""\nimport subprocess; subprocess.run("x")  # {{ 1 }}\r\u2028'
    subgraphs = tuple(
        dataclasses.replace(sg, name=hostile + str(sg.index)) if sg.index else sg for sg in model.subgraphs
    )
    source = generate(dataclasses.replace(model, subgraphs=subgraphs), "lstm").source
    tree = ast.parse(source)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert imported == {"os", "keras", "numpy"}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "subprocess"]
    # The text stays on its comment line, escaped (sanitized words may form identifiers elsewhere).
    assert [line.strip()[:12] for line in source.splitlines() if "subprocess.run" in line] == [
        "# subgraph 1",
        "# subgraph 2",
    ]
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert len(functions) == 3 and all(f.isidentifier() for f in functions)  # cond, body, build_model


def _svdf_model(rank: int, activation: str, bias: bool = True) -> bytes:
    # SVDF (keyword-spotting models): feature weights [units * rank, in], time weights [units * rank, memory].
    from flatbuf import Op, T, build_model

    filters, memory = UNITS * rank, 4
    tensors = [
        T("x", [2, FEATURES]),
        T("w_feature", [filters, FEATURES], data=_w(filters, FEATURES)),
        T("w_time", [filters, memory], data=_w(filters, memory)),
        T("b", [UNITS], data=_w(UNITS)),
        T("state", [2, memory * filters], is_variable=True),
        T("y", [2, UNITS]),
    ]
    inputs = [0, 1, 2, 3 if bias else -1, 4]
    return build_model(
        tensors,
        [
            Op(
                "SVDF",
                inputs,
                [5],
                options={"rank": rank, "fused_activation_function": activation},
                options_type="SVDFOptions",
            )
        ],
        inputs=[0],
        outputs=[5],
    )


SVDF_CASES = {"rank1-relu": (1, "RELU"), "rank2-none": (2, "NONE"), "rank2-no-bias-tanh": (2, "TANH", False)}


@pytest.mark.parametrize("case", SVDF_CASES)
def test_svdf(tfl, case):
    tfl.check(tfl.crafted(_svdf_model(*SVDF_CASES[case])), "SVDF")


# --- STABLEHLO_COMPOSITE (crafted: ai-edge-torch writes it; TensorFlow's converter does not) ------


def _rms_norm_decomposition(name: str = "odml.rms_norm.impl", rank_op: str = "RSQRT"):
    """odml.rms_norm's decomposition as ai-edge-torch writes it: x * rsqrt(mean(x^2) + eps) * w."""
    from flatbuf import Graph, Op, T

    tensors = [
        T("arg0", [1, 4, 8]),
        T("arg1", [8]),
        T("sq", [1, 4, 8]),
        T("axis", [1], "int32", np.array([2], np.int32)),
        T("mean", [1, 4, 1]),
        T("eps", [], data=np.array(1e-6, np.float32)),
        T("mean_eps", [1, 4, 1]),
        T("inv", [1, 4, 1]),
        T("normed", [1, 4, 8]),
        T("out", [1, 4, 8]),
    ]
    ops = [
        Op("MUL", [0, 0], [2]),
        Op("MEAN", [2, 3], [4], options={"keep_dims": True}, options_type="ReducerOptions"),
        Op("ADD", [4, 5], [6]),
        Op(rank_op, [6], [7]),
        Op("MUL", [0, 7], [8]),
        Op("MUL", [8, 1], [9]),
    ]
    return Graph(tensors, ops, [0, 1], [9], name)


def _composite(name: str, index: int) -> dict:
    from flatbuffers import flexbuffers

    attributes = np.frombuffer(flexbuffers.Dumps({"epsilon": 1e-6}), np.uint8)  # the runtime wants a map
    return {
        "name": name,
        "decomposition_subgraph_index": index,
        "composite_attributes": attributes,
        "version": 0,
    }


def composite_model(rank_op: str = "RSQRT") -> bytes:
    """main: y = rms_norm(x, w1); z = rms_norm(relu(y), w2), two STABLEHLO_COMPOSITE ops, each with
    its own decomposition subgraph (as ai-edge-torch writes one per call), weights as constant operands."""
    from flatbuf import Op, T, build_model

    w1, w2 = (np.random.default_rng(s).uniform(0.5, 1.5, 8).astype(np.float32) for s in (1, 2))
    tensors = [
        T("x", [1, 4, 8]),
        T("w1", [8], data=w1),
        T("y", [1, 4, 8]),
        T("relu", [1, 4, 8]),
        T("w2", [8], data=w2),
        T("z", [1, 4, 8]),
    ]
    ops = [
        Op(
            "STABLEHLO_COMPOSITE",
            [0, 1],
            [2],
            options=_composite("odml.rms_norm", 1),
            options_type="StableHLOCompositeOptions",
        ),
        Op("RELU", [2], [3]),
        Op(
            "STABLEHLO_COMPOSITE",
            [3, 4],
            [5],
            options=_composite("odml.rms_norm", 2),
            options_type="StableHLOCompositeOptions",
        ),
    ]
    return build_model(
        tensors,
        ops,
        inputs=[0],
        outputs=[5],
        subgraphs=[
            _rms_norm_decomposition(rank_op=rank_op),
            _rms_norm_decomposition("odml.rms_norm.impl_0", rank_op),
        ],
    )


def test_stablehlo_composite_runs_its_decomposition(tfl):
    tfl.check(tfl.crafted(composite_model()), "STABLEHLO_COMPOSITE")


def test_stablehlo_composite_converts_to_core_ml(tfl):
    tfl.core_ml(tfl.crafted(composite_model()), "STABLEHLO_COMPOSITE")


def test_stablehlo_composite_source_names_it(tmp_path):
    from tfl_rebuild.rebuild.codegen.emit import generate
    from tfl_rebuild.tflite.reader import read_model

    path = tmp_path / "composite.tflite"
    path.write_bytes(composite_model())
    source = generate(read_model(str(path)), "composite").source
    assert source.count("# STABLEHLO_COMPOSITE odml.rms_norm") == 2
    assert "def build_odml_rms_norm_impl():" in source and "def build_odml_rms_norm_impl_0():" in source
    assert "Composite(" in source and "Lambda" not in source


def test_op_inside_a_decomposition_without_converter_is_listed(tmp_path):
    """`check` lists ops without a converter inside decomposition subgraphs too, with counts."""
    from tfl_rebuild.commands.check.scan import scan_ops
    from tfl_rebuild.tflite.reader import read_model

    path = tmp_path / "composite.tflite"
    path.write_bytes(composite_model(rank_op="LSH_PROJECTION"))
    missing, _ = scan_ops(read_model(str(path)))
    assert [(m["op"], m["count"]) for m in missing] == [("LSH_PROJECTION v1", 2)], missing
