"""runtime/inputs.py: nothing changed without a word (integer arrays for float inputs, images)."""

from __future__ import annotations

import numpy as np
import pytest

from tfl_rebuild.errors import InputError
from tfl_rebuild.runtime.inputs import ImageOptions, from_arrays, load_inputs


def detail(name="x", dtype=np.float32, shape=(1, 4), quant=(0.0, 0)):
    shape = np.array(shape, np.int32)
    return {"name": name, "dtype": dtype, "shape": shape, "shape_signature": shape, "quantization": quant}


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_npy_for_a_float_input_is_refused_naming_cast(tmp_path, dtype):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[200, 0, 1, 3]]).astype(dtype))
    with pytest.raises(InputError) as exc:
        load_inputs([str(path)], [detail()])
    msg = str(exc.value)
    assert "\n" not in msg and "--cast" in msg and f"got {np.dtype(dtype)}" in msg


def test_cast_converts_and_says_so(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[200, 0, 1, 3]], np.uint8))
    notes = {}
    (value,), _ = load_inputs([str(path)], [detail()], cast=True, notes=notes)
    assert value.dtype == np.float32 and value[0, 0] == 200.0
    assert notes == {"x": f"{path}: cast uint8 -> float32"}


def test_npz_goes_through_the_same_check(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.ones((1, 4), np.uint8))
    with pytest.raises(InputError, match="--cast"):
        load_inputs([str(path)], [detail()])


def test_notes_for_float_batch_random_and_quantized(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((1, 4), np.float32))
    np.save(tmp_path / "b.npy", np.ones(4, np.float32))  # no batch dimension
    np.save(tmp_path / "q.npy", np.array([[1.0, -1.0]], np.float32))
    details = [detail("a"), detail("b"), detail("q", np.int8, (1, 2), quant=(0.5, -1)), detail("r")]
    notes = {}
    values, sources = load_inputs(
        [f"a={tmp_path / 'a.npy'}", f"b={tmp_path / 'b.npy'}", f"q={tmp_path / 'q.npy'}"],
        details,
        seed=0,
        notes=notes,
    )
    assert notes["a"] == f"{tmp_path / 'a.npy'}: as given"
    assert notes["b"] == f"{tmp_path / 'b.npy'}: added a batch dimension of 1"
    assert notes["q"] == f"{tmp_path / 'q.npy'}: quantized float32 -> int8 (scale 0.5, zero point -1)"
    assert notes["r"] == "random(seed=0): 1x4 float32"
    assert values[2].tolist() == [[1, -3]] and sources[3] == "random(seed=0)"


def test_image_notes_say_resized_and_normalized(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    notes = {}
    (value,), _ = load_inputs([str(path)], [detail("img", shape=(1, 6, 8, 3))], notes=notes)
    assert value.shape == (1, 6, 8, 3) and value.dtype == np.float32
    assert notes["img"] == f"{path}: resized 16x12 -> 8x6 (WxH, bilinear), (pixel - 127.5) / 127.5"
    notes = {}
    opts = ImageOptions(mean=(10.0, 20.0, 30.0), scale=1 / 255, bgr=True)
    load_inputs([str(path)], [detail("img", shape=(1, 12, 16, 3))], image=opts, notes=notes)
    assert notes["img"] == f"{path}: channels as BGR, (pixel - 10,20,30) * 0.00392157"
    notes = {}
    load_inputs([str(path)], [detail("img", np.uint8, (1, 12, 16, 3))], notes=notes)
    assert notes["img"] == f"{path}: raw pixels (uint8)"


def test_python_api_still_casts():
    """from_arrays (the Python API) keeps converting integer arrays: the caller wrote the dtype."""
    (value,) = from_arrays([np.arange(4)], [detail()])
    assert value.dtype == np.float32 and value.tolist() == [[0.0, 1.0, 2.0, 3.0]]
