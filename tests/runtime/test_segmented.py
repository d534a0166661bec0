"""Segmented runs (segmented.py): TFLite runs what it can, numpy references the custom ops it lacks,
and the result looks like one interpreter to verify / compare / dump."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from flatbuf import Op, T, build_model
from flatbuffers import flexbuffers

sys.path.insert(0, str(Path(__file__).parents[1] / "rebuild" / "ops"))
from test_mediapipe import deconv_model, pool_model, pool_unpool_model  # noqa: E402

from tfl_rebuild.errors import RuntimeUnavailableError  # noqa: E402
from tfl_rebuild.runtime import interpreter as runtime
from tfl_rebuild.runtime import outputter  # noqa: E402
from tfl_rebuild.runtime import reference as ref  # noqa: E402
from tfl_rebuild.runtime.segmented import SegmentedInterpreter  # noqa: E402
from tfl_rebuild.tflite import custom_options  # noqa: E402
from tfl_rebuild.tflite.reader import read_model  # noqa: E402

OFFSET = np.array([1.0, -2.0], np.float32)
GAIN = np.array([0.5, 3.0], np.float32)


def sandwich_model(fp16_gain: bool = False) -> bytes:
    """x + OFFSET -> TransformLandmarks(m) -> * GAIN: builtin, custom, builtin. With `fp16_gain` the
    gain is an fp16 constant behind DEQUANTIZE, computed before the custom op and read after it."""
    tensors = [
        T("x", [1, 3, 2]),
        T("m", [1, 4, 4]),
        T("offset", [2], data=OFFSET),
        T("shifted", [1, 3, 2]),
        T("moved", [1, 3, 2]),
        T("y", [1, 3, 2]),
    ]
    ops = [
        Op("ADD", [0, 2], [3], options={"fused_activation_function": "NONE"}),
        Op("CUSTOM", [3, 1], [4], custom_code="TransformLandmarks", version=2),
    ]
    if fp16_gain:
        tensors += [T("gain16", [2], "float16", data=GAIN.astype(np.float16)), T("gain", [2])]
        ops.insert(0, Op("DEQUANTIZE", [6], [7]))
        ops.append(Op("MUL", [4, 7], [5], options={"fused_activation_function": "NONE"}))
    else:
        tensors.append(T("gain", [2], data=GAIN))
        ops.append(Op("MUL", [4, 6], [5], options={"fused_activation_function": "NONE"}))
    return build_model(tensors, ops, inputs=[0, 1], outputs=[5])


def _inputs():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(1, 3, 2)).astype(np.float32), rng.normal(size=(1, 4, 4)).astype(np.float32)]


def _expected(x, m):
    return ref.transform_landmarks(x + OFFSET, m, 2) * GAIN


@pytest.mark.parametrize("fp16_gain", [False, True], ids=["float", "fp16-weights"])
@pytest.mark.parametrize("reference_kernels", [False, True], ids=["xnnpack", "builtin"])
def test_sandwich_runs_in_three_segments(fp16_gain, reference_kernels):
    interp = runtime.make_interpreter(
        model_content=sandwich_model(fp16_gain), reference_kernels=reference_kernels
    )
    assert isinstance(interp, SegmentedInterpreter)
    assert [s.numpy for s in interp.segments] == [False, True, False]
    x, m = _inputs()
    (got,) = runtime.run(interp, [x, m])
    np.testing.assert_allclose(got, _expected(x, m), rtol=1e-6)
    assert got.shape == tuple(interp.get_output_details()[0]["shape"])


def test_dump_returns_every_intermediate():
    x, m = _inputs()
    d = outputter.dump(read_model(sandwich_model()), [x, m])
    assert list(d) == ["shifted", "moved", "y"]
    np.testing.assert_allclose(d["shifted"], x + OFFSET, rtol=1e-6)
    np.testing.assert_allclose(d["moved"], ref.transform_landmarks(x + OFFSET, m, 2), rtol=1e-6)
    np.testing.assert_allclose(d["y"], _expected(x, m), rtol=1e-6)


def test_ops_xnnpack_has_run_in_numpy_on_the_builtin_kernels_and_agree():
    """The built-in kernels lack the pooling ops XNNPACK has: the segmented (numpy) run matches XNNPACK."""
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype(np.float32)
    blob = pool_unpool_model()
    fast = runtime.make_interpreter(model_content=blob)
    slow = runtime.make_interpreter(model_content=blob, reference_kernels=True)
    assert not isinstance(fast, SegmentedInterpreter) and isinstance(slow, SegmentedInterpreter)
    assert slow.missing == {"MaxPoolingWithArgmax2D", "MaxUnpooling2D"}
    np.testing.assert_array_equal(runtime.run(slow, [x])[0], runtime.run(fast, [x])[0])


def test_ops_xnnpack_refuses_are_learned():
    """XNNPACK takes MaxPoolingWithArgmax2D only for some windows: for the others the runtime's error
    names the op, and the segmented run adds it to the numpy side."""
    interp = runtime.make_interpreter(model_content=pool_model((1, 9, 8, 3), "same", (2, 2), (3, 3)))
    assert isinstance(interp, SegmentedInterpreter) and interp.missing == {"MaxPoolingWithArgmax2D"}
    x = np.random.default_rng(3).normal(size=(1, 9, 8, 3)).astype(np.float32)
    want = ref.max_pool_argmax(x, custom_options.pool_options(struct.pack("<6i", 1, 2, 2, 3, 3, 0), "test"))
    for got, w in zip(runtime.run(interp, [x]), want):
        np.testing.assert_array_equal(got, w)


def test_constant_weights_of_a_numpy_op():
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype(np.float32)
    blob = deconv_model("same", (2, 2))
    slow = runtime.make_interpreter(model_content=blob, reference_kernels=True)
    assert isinstance(slow, SegmentedInterpreter)
    np.testing.assert_allclose(
        runtime.run(slow, [x])[0],
        runtime.run(runtime.make_interpreter(model_content=blob), [x])[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_custom_op_without_reference_is_refused_by_name():
    blob = build_model(
        [T("x", [2]), T("y", [2])], [Op("CUSTOM", [0], [1], custom_code="NoSuchOp")], inputs=[0], outputs=[1]
    )
    with pytest.raises(RuntimeUnavailableError, match="NoSuchOp"):
        runtime.make_interpreter(model_content=blob)


def test_bad_options_fail_at_invoke_with_one_line():
    opts = flexbuffers.Dumps({"output_height": 0, "output_width": 4})
    blob = build_model(
        [T("x", [1, 4, 4, 1]), T("m", [1, 4, 4]), T("y", [1, 4, 4, 1])],
        [Op("CUSTOM", [0, 1], [2], custom_code="TransformTensorBilinear", custom_options=opts, version=2)],
        inputs=[0, 1],
        outputs=[2],
    )
    interp = runtime.make_interpreter(model_content=blob)
    with pytest.raises(custom_options.OptionsError, match="output_height"):
        runtime.run(interp, runtime.random_inputs(interp))


@pytest.mark.corpus
def test_corpus_numpy_op_matches_xnnpack_on_its_own_inputs():
    """selfie_segmentation's Convolution2DTransposeBias: XNNPACK runs it, the built-in kernels do not.
    In the segmented built-in run, the op alone under XNNPACK, fed the same inputs, gives the same output
    as its numpy reference (a real-model check of the reference)."""
    from conftest import require_corpus

    slow = runtime.make_interpreter(
        model_path=str(require_corpus("selfie_segmentation")), reference_kernels=True
    )
    assert isinstance(slow, SegmentedInterpreter)
    runtime.run(slow, runtime.random_inputs(slow, 0))
    numpy_ops = [seg.ops[0] for seg in slow.segments if seg.numpy]
    assert numpy_ops
    for index in numpy_ops:
        alone = runtime.make_interpreter(model_content=slow.single_op_model(index))
        assert not isinstance(alone, SegmentedInterpreter), "XNNPACK should run the op itself"
        op = slow.model.main.operators[index]
        (got,) = runtime.run(alone, [slow.get_tensor(d["index"]) for d in alone.get_input_details()])
        want = slow.get_tensor(op.outputs[0])
        assert np.abs(got - want).max() <= 1e-6 * np.abs(got).max(), op.custom_code


@pytest.mark.corpus
def test_corpus_kernel_sets_agree_in_segments():
    """face_landmark_with_attention runs in segments on both kernel sets; they agree as closely as
    TFLite's kernel sets do on models it runs whole."""
    from conftest import require_corpus

    path = str(require_corpus("face_landmark_with_attention"))
    fast = runtime.make_interpreter(model_path=path)
    slow = runtime.make_interpreter(model_path=path, reference_kernels=True)
    assert isinstance(fast, SegmentedInterpreter) and isinstance(slow, SegmentedInterpreter)
    x = runtime.random_inputs(fast, 0)
    for a, b in zip(runtime.run(fast, x), runtime.run(slow, x)):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
