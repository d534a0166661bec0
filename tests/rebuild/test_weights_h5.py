"""The generated module's weights file: Keras' own .weights.h5, loaded by one `load_weights` call,
and checked by the loader (rebuild/weights_h5.py) before Keras reads anything from it."""

from __future__ import annotations

import ast

import h5py
import numpy as np
import pytest
from conftest import require_fixture
from keras_weights import arrays_of

from tfl_rebuild.errors import InputError
from tfl_rebuild.rebuild.weights_h5 import check_h5


def _good(path) -> None:
    with h5py.File(path, "w") as f:
        f["layers/dense/vars/0"] = np.ones((3, 2), np.float32)
        f["layers/dense/vars/1"] = np.zeros(2, np.float32)


def test_a_plain_file_passes(tmp_path):
    _good(tmp_path / "m.weights.h5")
    assert check_h5(tmp_path / "m.weights.h5") == {"layers/dense/vars/0", "layers/dense/vars/1"}


def _soft_link(f):
    f["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0")


def _external_link(f):
    f["layers/dense/vars/2"] = h5py.ExternalLink("/etc/passwd", "/x")


def _strings(f):
    f["layers/dense/vars/2"] = np.array(["a"], dtype=h5py.string_dtype())


def _compound(f):
    f["layers/dense/vars/2"] = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])


def _bomb(f):
    f.create_dataset(
        "layers/dense/vars/2", shape=(1 << 30,), dtype="f4", chunks=(1 << 16,), compression="gzip"
    )


def _external_data(f):
    f.create_dataset("layers/dense/vars/2", shape=(4,), dtype="f4", external=[("/etc/passwd", 0, 16)])


def _deep(f):
    f.create_group("/".join(["g"] * 80))


@pytest.mark.parametrize(
    ("spoil", "text"),
    [
        pytest.param(_soft_link, "SoftLink, which is never followed", id="soft-link"),
        pytest.param(_external_link, "ExternalLink, which is never followed", id="external-link"),
        pytest.param(_strings, "not numbers", id="strings"),
        pytest.param(_compound, "not numbers", id="compound"),
        pytest.param(_bomb, "bytes of data in", id="bomb"),
        pytest.param(_external_data, "refers to other files", id="external-data"),
        pytest.param(_deep, "nested deeper than", id="deep"),
    ],
)
def test_a_spoiled_file_is_refused_in_one_line(tmp_path, spoil, text):
    path = tmp_path / "m.weights.h5"
    _good(path)
    with h5py.File(path, "a") as f:
        spoil(f)
    with pytest.raises(InputError) as info:
        check_h5(path)
    assert text in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_not_hdf5_is_refused(tmp_path, content):
    path = tmp_path / "m.weights.h5"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable weights .h5"):
        check_h5(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such weights file"):
        check_h5(tmp_path / "none.weights.h5")


def test_module_loads_its_weights_in_one_call(tmp_path):
    """No per-layer table and no numpy loading in the source: `model.load_weights` does it all,
    and the arrays it loads are the ones the TFLite file holds (Dense kernel = FC weight.T)."""
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.tflite.reader import read_model

    path = require_fixture("mnist")
    _, py, weights = write_generated(str(path), str(tmp_path))
    assert weights.name == "mnist.weights.h5"
    source = py.read_text(encoding="utf-8")
    assert "np.load" not in source and "set_weights" not in source and "import numpy" not in source
    (fn,) = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)]
    assert ast.unparse(fn.body[-2]) == "if weights_path:\n    model.load_weights(weights_path)"
    arrays = arrays_of(py)
    fc = [t for t in read_model(path).main.tensors if t.data is not None and t.data.ndim == 2]
    kernels = [a for k, a in arrays.items() if k.endswith("/kernel")]
    assert sorted(a.shape for a in kernels) == sorted(t.data.T.shape for t in fc)
    for t in fc:
        assert any(np.array_equal(np.asarray(t.data, np.float32).T, k) for k in kernels)
