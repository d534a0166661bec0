"""weights.py: dequantize, densify and Keras layout, each against an independent reference
(numpy, the TFLite runtime's own DEQUANTIZE/DENSIFY outputs, or the original Keras weights)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CORPUS_DIR,
    FIXTURES_DIR,
    convert_keras,
    custom_op_reason,
    interpreter,
    invoke,
    read_cached,
    require_fixture,
    require_model,
    seeded_inputs,
)
from flatbuf import Op, T, build_model

from tfl_rebuild.errors import ModelFormatError
from tfl_rebuild.tflite.ir import DimensionMetadata, Quantization, Sparsity, Tensor
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.tflite.weights import densify, dequantize, export_weights, to_keras_layout, value


def reference_dequantize(q: np.ndarray, scale, zero_point, axis: int) -> np.ndarray:
    """(q - zero_point) * scale in float64, channel by channel: written apart from weights.py."""
    scale, zero_point = np.asarray(scale, np.float64), np.asarray(zero_point, np.int64)
    if scale.size == 1:
        return ((q.astype(np.float64) - zero_point[0]) * scale[0]).astype(np.float32)
    out = np.empty(q.shape, np.float64)
    for c in range(q.shape[axis]):
        idx = tuple(c if d == axis else slice(None) for d in range(q.ndim))
        out[idx] = (q[idx].astype(np.float64) - zero_point[c]) * scale[c]
    return out.astype(np.float32)


def _tensor(
    data: np.ndarray, scale=None, zero_point=None, axis: int = 0, sparsity=None, shape=None
) -> Tensor:
    quant = None
    if scale is not None:
        quant = Quantization(np.asarray(scale, np.float32), np.asarray(zero_point, np.int64), axis)
    return Tensor(
        index=0,
        name="t",
        shape=tuple(shape if shape is not None else data.shape),
        dtype=data.dtype.name,
        buffer=1,
        quantization=quant,
        sparsity=sparsity,
        data=data,
    )


# ---------------------------------------------------------------------------------------------
# Dequantize: numpy reference


GEN = np.random.default_rng(7)
UNIT_CASES = {
    "int8-per-tensor": ("int8", (3, 4), [0.05], [3], 0),
    "uint8-per-tensor": ("uint8", (3, 4), [0.1], [128], 0),
    "int16-per-tensor": ("int16", (3, 4), [0.001], [0], 0),
    "int8-per-channel-axis0": ("int8", (3, 4), [0.1, 0.2, 0.3], [0, 5, -5], 0),
    "int8-per-channel-axis1": ("int8", (3, 4), [0.1, 0.2, 0.3, 0.4], [0, 1, -1, 2], 1),
    "int8-per-channel-axis3": ("int8", (1, 2, 2, 5), [0.1, 0.2, 0.3, 0.4, 0.5], [0] * 5, 3),
    "uint8-per-channel-axis1": ("uint8", (3, 4), [0.1, 0.2, 0.3, 0.4], [0, 1, 2, 3], 1),
    "int16-per-channel-axis1": ("int16", (3, 4), [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0], 1),
    "int32-bias-per-channel": ("int32", (4,), [1e-4, 2e-4, 3e-4, 4e-4], [0] * 4, 0),
    "int8-scalar": ("int8", (), [0.5], [1], 0),
}


def _quantized(dtype, shape):
    info = np.iinfo(dtype)
    return GEN.integers(max(info.min, -(1 << 20)), min(info.max, 1 << 20) + 1, shape).astype(dtype)


@pytest.mark.parametrize("case", sorted(UNIT_CASES))
def test_dequantize_matches_numpy_reference(case):
    dtype, shape, scale, zp, axis = UNIT_CASES[case]
    q = _quantized(dtype, shape)
    got = dequantize(_tensor(q, scale, zp, axis))
    assert got.dtype == np.float32 and got.shape == q.shape
    np.testing.assert_allclose(got, reference_dequantize(q, scale, zp, axis), rtol=1e-6, atol=0)


def test_dequantize_returns_a_copy():
    q = _quantized("int8", (4,))
    q.setflags(write=False)
    got = dequantize(_tensor(q, [0.5], [0]))
    assert got.flags.owndata and got.flags.writeable


# Runtime DEQUANTIZE of crafted constants (int16 per channel: the runtime supports per-tensor only).
RUNTIME_CASES = {
    k: v for k, v in UNIT_CASES.items() if not k.startswith(("int16-per-channel", "int32", "int8-scalar"))
}


@pytest.mark.parametrize("case", sorted(RUNTIME_CASES) + ["float16"])
def test_dequantize_matches_runtime_dequantize_op(case):
    if case == "float16":
        dtype, shape, q = "float16", (3, 4), GEN.normal(size=(3, 4)).astype(np.float16)
        quant = {}
    else:
        dtype, shape, scale, zp, axis = RUNTIME_CASES[case]
        q = _quantized(dtype, shape)
        quant = dict(scale=scale, zero_point=zp, quantized_dimension=axis)
    blob = build_model(
        [T("q", list(shape), dtype=dtype, data=q, **quant), T("y", list(shape))],
        [Op("DEQUANTIZE", [0], [1])],
        inputs=[],
        outputs=[1],
    )
    interp = interpreter(blob)
    interp.invoke()
    theirs = interp.get_tensor(1)
    ours = dequantize(read_model(blob).main.tensors[0])
    assert ours.dtype == theirs.dtype == np.float32
    # The runtime computes per-tensor scaling in double, then rounds: allow one float32 ulp.
    np.testing.assert_allclose(ours, theirs, rtol=2.5e-7, atol=0)


@pytest.mark.parametrize(
    "name, dtype, per_channel_axes",
    [("mobilenet_v2_int8", "int8", {0, 3}), ("mobilenet_v2_dynamic", "int8", {0, 3})],
)
def test_dequantize_fixture_constants(name, dtype, per_channel_axes):
    """Every quantized constant of the fixture against the reference (conv kernels per channel
    along 0, depthwise along 3, int32 biases)."""
    model = read_model(require_fixture(name))
    quantized = [t for t in model.main.tensors if t.data is not None and t.quantized]
    axes = {
        t.quantization.quantized_dimension
        for t in quantized
        if t.dtype == dtype and t.quantization.per_channel
    }
    assert axes == per_channel_axes
    bad = []
    for t in quantized:
        q = t.quantization
        want = reference_dequantize(np.asarray(t.data), q.scale, q.zero_point, q.quantized_dimension)
        got = dequantize(t)
        if got.dtype != np.float32 or not np.allclose(got, want, rtol=1e-6, atol=0):
            bad.append(t.name)
    assert bad == []


def test_value_refuses_non_constants_and_keeps_raw_on_request():
    model = read_model(require_fixture("mobilenet_v2_int8"))
    act = model.main.tensors[model.main.inputs[0]]
    with pytest.raises(ModelFormatError, match="not a constant"):
        value(act)
    w = next(t for t in model.main.tensors if t.data is not None and t.dtype == "int8")
    raw = value(w, dequant=False)
    assert raw.dtype == np.int8 and np.array_equal(raw, w.data) and raw.flags.owndata


# ---------------------------------------------------------------------------------------------
# Dequantize against the runtime's DEQUANTIZE ops on model constants (fp16 fixture + corpus)

DEQUANTIZE_MODELS = [pytest.param(FIXTURES_DIR / "mobilenet_v2_fp16.tflite", id="mobilenet_v2_fp16")] + [
    pytest.param(CORPUS_DIR / f"{n}.tflite", id=n, marks=pytest.mark.corpus)
    for n in [
        "face_detection_full_range_sparse",
        "face_detection_short_range",
        "face_landmark",
        "face_landmark_with_attention",
        "hand_landmark_full",
        "hand_landmark_lite",
        "palm_detection_full",
        "palm_detection_lite",
        "pose_detection",
        "pose_landmark_full",
        "selfie_segmentation",
    ]
]


@cache
def _preserved_run(path: Path):
    """One reference-kernel run keeping every tensor; returns the interpreter."""
    interp = interpreter(path, preserve_all_tensors=True)
    invoke(interp, seeded_inputs(interp))
    return interp


def _skip_if_custom(path: Path) -> None:
    reason = custom_op_reason(path)
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("path", DEQUANTIZE_MODELS)
def test_dequantize_matches_runtime_on_model_constants(path):
    model = read_model(require_model(path))
    _skip_if_custom(path)
    sg = model.main
    pairs = [
        (sg.tensors[op.inputs[0]], op.outputs[0])
        for op in sg.operators
        if op.opcode == "DEQUANTIZE" and sg.tensors[op.inputs[0]].data is not None
    ]
    assert pairs, "the model has DEQUANTIZE ops on constants"
    interp = _preserved_run(path)
    bad = []
    for const, out in pairs:
        theirs, ours = interp.get_tensor(out), dequantize(const)
        if ours.dtype != theirs.dtype or ours.shape != theirs.shape or not np.array_equal(ours, theirs):
            bad.append(f"{const.index} {const.name}")
    assert bad == []


def test_fp16_constants_widen_exactly():
    model = read_model(require_fixture("mobilenet_v2_fp16"))
    halves = [t for t in model.main.tensors if t.data is not None and t.dtype == "float16"]
    assert len(halves) > 50
    for t in halves[:5] + halves[-5:]:
        got = dequantize(t)
        assert got.dtype == np.float32 and np.array_equal(got, t.data.astype(np.float32))


def test_bfloat16_widens():
    bits = np.array([0x3F80, 0xC000, 0x0000, 0x7F80], np.uint16)  # 1.0, -2.0, 0.0, inf
    t = Tensor(index=0, name="b", shape=(4,), dtype="bfloat16", buffer=1, data=bits)
    np.testing.assert_array_equal(dequantize(t), np.array([1.0, -2.0, 0.0, np.inf], np.float32))


# ---------------------------------------------------------------------------------------------
# DENSIFY: every DENSIFY op of the sparse models against the runtime's output


def _densify_cases() -> list:
    cases = []
    for path, marks in [
        (FIXTURES_DIR / "sparse_fc.tflite", ()),
        (CORPUS_DIR / "face_detection_full_range_sparse.tflite", (pytest.mark.corpus,)),
        (CORPUS_DIR / "pose_detection.tflite", (pytest.mark.corpus,)),
    ]:
        if not path.exists():
            cases.append(pytest.param(path, -1, id=f"{path.stem}-missing", marks=marks))
            continue
        sg = read_model(path).main
        cases += [
            pytest.param(path, op.index, id=f"{path.stem}-op{op.index}", marks=marks)
            for op in sg.operators
            if op.opcode == "DENSIFY"
        ]
    return cases


@pytest.mark.parametrize("path, op_index", _densify_cases())
def test_densify_matches_runtime_densify_op(path, op_index):
    model = read_cached(require_model(path))
    assert op_index >= 0, f"{path.name} has no DENSIFY op"
    sg = model.main
    op = sg.operators[op_index]
    sparse = sg.tensors[op.inputs[0]]
    assert sparse.sparsity is not None and sparse.data is not None
    theirs = _preserved_run(path).get_tensor(op.outputs[0])
    ours = densify(sparse)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == sparse.shape
    np.testing.assert_array_equal(ours, theirs)
    assert np.count_nonzero(ours) <= sparse.data.size  # every packed value lands once


# Hand-built sparsity: the 4x4 example of TFLite's sparse tensor documentation.
M4 = np.array([[1, 0, 2, 3], [0, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 6]], np.float32)


def _dense(n):
    return DimensionMetadata("DENSE", n)


def _csr(segments, indices):
    return DimensionMetadata("SPARSE_CSR", 0, np.array(segments, np.int64), np.array(indices, np.int64))


DENSIFY_UNIT = {
    "csr-2d": (
        M4,
        Sparsity((0, 1), (), (_dense(4), _csr([0, 3, 4, 5, 6], [0, 2, 3, 1, 2, 3]))),
        [1, 2, 3, 4, 5, 6],
    ),
    "csr-2d-column-major": (
        M4,
        Sparsity((1, 0), (), (_dense(4), _csr([0, 1, 2, 4, 6], [0, 1, 0, 2, 0, 3]))),
        [1, 4, 2, 5, 3, 6],
    ),
    "block-2x2": (
        M4,
        Sparsity((0, 1, 2, 3), (0, 1), (_dense(2), _csr([0, 2, 3], [0, 1, 1]), _dense(2), _dense(2))),
        [1, 0, 0, 4, 2, 3, 0, 0, 5, 0, 0, 6],
    ),
    "block-1x2-cols": (
        M4,
        Sparsity((0, 1, 2), (1,), (_dense(4), _csr([0, 2, 3, 4, 5], [0, 1, 0, 1, 1]), _dense(2))),
        [1, 0, 2, 3, 0, 4, 5, 0, 0, 6],
    ),
    "dense-only": (M4, Sparsity((0, 1), (), (_dense(4), _dense(4))), M4.reshape(-1)),
    "dense-only-transposed": (M4, Sparsity((1, 0), (), (_dense(4), _dense(4))), M4.T.reshape(-1)),
    "csr-3d-last-level": (
        np.arange(12, dtype=np.float32).reshape(2, 2, 3) * (np.arange(12).reshape(2, 2, 3) % 2),
        Sparsity((0, 1, 2), (), (_dense(2), _dense(2), _csr([0, 1, 3, 4, 6], [1, 0, 2, 1, 0, 2]))),
        [1, 3, 5, 7, 9, 11],
    ),
}


@pytest.mark.parametrize("case", sorted(DENSIFY_UNIT))
def test_densify_hand_built(case):
    expected, sparsity, values = DENSIFY_UNIT[case]
    t = _tensor(np.asarray(values, expected.dtype), sparsity=sparsity, shape=expected.shape)
    got = densify(t)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def _encode_csr(dense: np.ndarray) -> tuple[Sparsity, np.ndarray]:
    """CSR over the last dimension of a 2-D array (an encoder written for the test)."""
    segments, indices, values = [0], [], []
    for row in dense:
        nz = np.flatnonzero(row)
        indices += nz.tolist()
        values += row[nz].tolist()
        segments.append(len(indices))
    return Sparsity((0, 1), (), (_dense(dense.shape[0]), _csr(segments, indices))), np.array(
        values, dense.dtype
    )


@pytest.mark.parametrize("seed", range(5))
def test_densify_round_trips_random_csr(seed):
    gen = np.random.default_rng(seed)
    dense = (gen.normal(size=(gen.integers(1, 20), gen.integers(1, 20))) * (gen.random((1, 1)) < 0.5)).astype(
        np.float32
    )
    dense[gen.random(dense.shape) < 0.7] = 0
    sparsity, values = _encode_csr(dense)
    np.testing.assert_array_equal(densify(_tensor(values, sparsity=sparsity, shape=dense.shape)), dense)


@pytest.mark.parametrize(
    "sparsity, values, message",
    [
        (Sparsity((0,), (), (_dense(4), _dense(4))), np.zeros(16), "inconsistent sparsity"),
        (Sparsity((0, 0), (), (_dense(4), _dense(4))), np.zeros(16), "inconsistent sparsity"),
        (
            Sparsity((0, 1), (), (_dense(4), _csr([0, 3], [0, 1, 2]))),
            np.zeros(3),
            "expands to 4 entries, more than the 1",
        ),
        (Sparsity((0, 1), (), (_csr([0], []), _dense(4))), np.zeros(3), "segments are too short"),
        (Sparsity((0, 1), (), (_dense(4), _csr([0, 9, 9, 9, 9], [0, 1]))), np.zeros(9), "out of range"),
        (Sparsity((0, 1), (), (_dense(4), _csr([0, 1, 1, 1, 1], [7]))), np.zeros(1), "index out of range"),
        (Sparsity((0, 1), (), (_dense(4), _dense(4))), np.zeros(5), "expands to 16 entries, more than the 5"),
        (
            Sparsity((0, 1), (), (_dense(4), _csr([0, 1, 2, 3, 3], [0, 1, 2]))),
            np.zeros(5),
            "sparsity describes 3 values, buffer has 5",
        ),
        (
            Sparsity((0, 1), (), (_dense(4), _csr([0, 5, 5, 5, 5], [0, 1, 2, 3, 0]))),
            np.zeros(2),
            "expands to 5 entries, more than the 2",
        ),
        (Sparsity((0, 1, 2), (5,), (_dense(4), _dense(2), _dense(2))), np.zeros(16), "block map"),
        (Sparsity((0, 1), (), (_dense(-1), _dense(4))), np.zeros(16), "larger than the tensor"),
    ],
    ids=[
        "order-short",
        "order-repeats",
        "dense-beyond-segments",
        "segments-short",
        "segments-past-indices",
        "index-past-dim",
        "dense-beyond-values",
        "value-count",
        "csr-beyond-values",
        "block-map-dim",
        "negative-dense-size",
    ],
)
def test_densify_refuses_inconsistent_sparsity(sparsity, values, message):
    with pytest.raises(ModelFormatError, match=message):
        densify(_tensor(values.astype(np.float32), sparsity=sparsity, shape=(4, 4)))


def test_densify_refuses_dense_levels_before_allocating():
    """DENSE levels of 40000 x 40000 (1.6e9 paths) over 4 packed values: refused at once, not after
    expanding gigabytes of coordinates."""
    import tracemalloc

    n = 40_000
    t = _tensor(np.zeros(4, np.float32), sparsity=Sparsity((0, 1), (), (_dense(n), _dense(n))), shape=(n, n))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFormatError, match="more than the 4 the packed data holds"):
            densify(t)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_densify_refuses_huge_dense_shape():
    t = _tensor(
        np.zeros(1, np.float32),
        sparsity=Sparsity((0, 1), (), (_dense(1 << 20), _dense(1 << 20))),
        shape=(1 << 20, 1 << 20),
    )
    with pytest.raises(ModelFormatError, match="too large"):
        densify(t)


def test_sparse_fc_runtime_output_uses_the_densified_weights():
    """sparse_fc: Dense(64, relu) -> Dense(8) with 90% zero kernels, stored sparse.
    Recompute the network in numpy from densify() and compare with the runtime."""
    path = require_fixture("sparse_fc")
    sg = read_model(path).main
    producers = {o: op for op in sg.operators for o in op.outputs}
    interp = interpreter(path)
    x = seeded_inputs(interp, seed=3)
    invoke(interp, x)
    h = x[0].astype(np.float64)
    for op in sg.operators:
        if op.opcode != "FULLY_CONNECTED":
            continue
        w_id = op.inputs[1]
        w_t = sg.tensors[producers[w_id].inputs[0]] if w_id in producers else sg.tensors[w_id]
        w = densify(w_t) if w_t.sparsity is not None else np.asarray(w_t.data)
        b = sg.tensors[op.inputs[2]].data if len(op.inputs) > 2 and op.inputs[2] >= 0 else 0.0
        h = h @ w.T.astype(np.float64) + b
        if op.options["fused_activation_function"] == "RELU":
            h = np.maximum(h, 0)
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, h, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Keras layout, against the weights of the Keras model that was converted


@pytest.fixture(scope="module")
def keras_layers_model():
    """A tiny Keras model with one layer per kernel layout; non-square kernels and distinct channel
    counts so that a swapped axis cannot go unnoticed. Returns (keras weights by layer, tflite model)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(11)
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = layers.Conv2D(4, (3, 2), padding="same", name="conv")(inp)
    x = layers.DepthwiseConv2D((3, 2), depth_multiplier=1, padding="same", name="dw1")(x)
    x = layers.DepthwiseConv2D((2, 3), depth_multiplier=2, padding="same", name="dw2")(x)
    x = layers.Conv2DTranspose(5, (3, 2), strides=2, padding="same", name="tconv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(6, name="dense")(x)
    model = keras.Model(inp, x)
    gen = np.random.default_rng(11)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([gen.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    kernels = {layer.name: layer.get_weights()[0] for layer in model.layers if layer.weights}
    return kernels, read_model(convert_keras(model))


def _kernel_op(sg, opcode, depth_multiplier=None):
    ops = [
        op
        for op in sg.operators
        if op.opcode == opcode
        and (depth_multiplier is None or op.options["depth_multiplier"] == depth_multiplier)
    ]
    assert len(ops) == 1, f"expected one {opcode} in the converted model, found {len(ops)}"
    return ops[0]


@pytest.mark.parametrize(
    "layer, opcode, depth_multiplier",
    [
        ("conv", "CONV_2D", None),
        ("dw1", "DEPTHWISE_CONV_2D", 1),
        ("dw2", "DEPTHWISE_CONV_2D", 2),
        ("tconv", "TRANSPOSE_CONV", None),
        ("dense", "FULLY_CONNECTED", None),
    ],
    ids=["conv2d", "depthwise-m1", "depthwise-m2", "transpose-conv", "fully-connected"],
)
def test_to_keras_layout_recovers_keras_kernel(keras_layers_model, layer, opcode, depth_multiplier):
    kernels, model = keras_layers_model
    sg = model.main
    op = _kernel_op(sg, opcode, depth_multiplier)
    kernel = sg.tensors[op.inputs[1]]
    data_in = op.inputs[2] if opcode == "TRANSPOSE_CONV" else op.inputs[0]
    in_channels = sg.tensors[data_in].shape[-1]
    got = to_keras_layout(np.asarray(kernel.data), opcode, in_channels)
    assert got.shape == kernels[layer].shape
    np.testing.assert_array_equal(got, kernels[layer])


def test_export_weights_keras_layout_matches_keras(keras_layers_model, tmp_path):
    kernels, model = keras_layers_model
    sg = model.main
    out = tmp_path / "w.npz"
    n, nbytes = export_weights(model, str(out), layout="keras")
    with np.load(out, allow_pickle=False) as npz:
        arrays = dict(npz)
    assert n == len(arrays) and nbytes == sum(a.nbytes for a in arrays.values())
    for layer, opcode, dm in [
        ("conv", "CONV_2D", None),
        ("dw1", "DEPTHWISE_CONV_2D", 1),
        ("dw2", "DEPTHWISE_CONV_2D", 2),
        ("tconv", "TRANSPOSE_CONV", None),
        ("dense", "FULLY_CONNECTED", None),
    ]:
        name = sg.tensors[_kernel_op(sg, opcode, dm).inputs[1]].name
        np.testing.assert_array_equal(arrays[name], kernels[layer], err_msg=layer)


def test_depthwise_layout_refuses_channel_mismatch():
    with pytest.raises(ModelFormatError, match="does not divide"):
        to_keras_layout(np.zeros((1, 3, 3, 10), np.float32), "DEPTHWISE_CONV_2D", 3)


def test_export_weights_raw_and_dequantized(tmp_path):
    model = read_model(require_fixture("mobilenet_v2_int8"))
    consts = [t for t in model.main.tensors if t.data is not None]
    raw, deq = tmp_path / "raw.npz", tmp_path / "deq.npz"
    export_weights(model, str(raw))
    export_weights(model, str(deq), dequantize=True)
    with np.load(raw, allow_pickle=False) as r, np.load(deq, allow_pickle=False) as d:
        assert sorted(r.files) == sorted(d.files) == sorted(t.name for t in consts)
        for t in consts:
            assert r[t.name].dtype == t.data.dtype and r[t.name].shape == t.shape
            np.testing.assert_array_equal(r[t.name], t.data)
            expected = dequantize(t) if t.quantized else t.data
            assert d[t.name].dtype == expected.dtype
            np.testing.assert_array_equal(d[t.name], expected)
