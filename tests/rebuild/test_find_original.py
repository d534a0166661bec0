"""A generated module finds the .tflite it was made from: relative, absolute, gone, changed."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from tfl_rebuild.errors import InputError
from tfl_rebuild.rebuild.loader import find_original, source_record


def _generated(tmp_path, model_dir="models", out_dir="out"):
    """models/m.tflite and out/m.py + out/m_tensors.json recording it (as `keras` writes it)."""
    model = tmp_path / model_dir / "m.tflite"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"TFL3 not really a model")
    py = tmp_path / out_dir / "m.py"
    py.parent.mkdir(parents=True)
    py.write_text("# generated\n")
    side = {"model": "m.tflite", "source": source_record(model, py), "tensors": []}
    (py.parent / "m_tensors.json").write_text(json.dumps(side))
    return model, py


def test_record_is_relative_absolute_and_hashed(tmp_path):
    model, py = _generated(tmp_path)
    record = json.loads((py.parent / "m_tensors.json").read_text())["source"]
    assert record["relative"] == "../models/m.tflite"
    assert record["absolute"] == str(model.resolve())
    assert record["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert find_original(py).resolve() == model.resolve()


def test_moving_both_together_keeps_the_relative_path(tmp_path):
    _generated(tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    found = find_original(tmp_path / "b" / "out" / "m.py")
    assert found.resolve() == (tmp_path / "b" / "models" / "m.tflite").resolve()


def test_moving_the_module_alone_falls_back_to_the_absolute_path(tmp_path):
    model, py = _generated(tmp_path)
    shutil.move(py.parent, tmp_path / "elsewhere" / "deeper")
    assert find_original(tmp_path / "elsewhere" / "deeper" / "m.py") == model.resolve()


def test_gone_is_one_line(tmp_path):
    model, py = _generated(tmp_path)
    model.unlink()
    with pytest.raises(InputError) as exc:
        find_original(py)
    msg = str(exc.value)
    assert "\n" not in msg and "is gone" in msg and "m.tflite" in msg


def test_changed_is_one_line(tmp_path):
    model, py = _generated(tmp_path)
    model.write_bytes(b"TFL3 another model")
    with pytest.raises(InputError) as exc:
        find_original(py)
    msg = str(exc.value)
    assert "\n" not in msg and "changed since m.py was generated" in msg


def test_a_changed_copy_does_not_hide_the_original(tmp_path):
    """Relative path points at a changed file, the absolute one at the recorded bytes: that one wins."""
    model, py = _generated(tmp_path)
    shutil.copytree(tmp_path / "out", tmp_path / "x" / "out")
    (tmp_path / "x" / "models").mkdir()
    (tmp_path / "x" / "models" / "m.tflite").write_bytes(b"different")
    assert find_original(tmp_path / "x" / "out" / "m.py") == model.resolve()


def test_older_sidecar_with_the_bare_name(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"x")
    (tmp_path / "m.py").write_text("")
    (tmp_path / "m_tensors.json").write_text(json.dumps({"model": "m.tflite", "tensors": []}))
    assert find_original(tmp_path / "m.py") == tmp_path / "m.tflite"


@pytest.mark.parametrize(
    "sidecar", [None, "not json", json.dumps({"tensors": []})], ids=["none", "bad", "empty"]
)
def test_no_record_is_one_line(tmp_path, sidecar):
    (tmp_path / "m.py").write_text("")
    if sidecar is not None:
        (tmp_path / "m_tensors.json").write_text(sidecar)
    with pytest.raises(InputError) as exc:
        find_original(tmp_path / "m.py")
    assert "\n" not in str(exc.value) and "give the .tflite explicitly" in str(exc.value)


def test_the_readers_sha256_can_be_passed(tmp_path):
    """keras has the model read already: its sha256 (Model.sha256) is the file's."""
    from conftest import require_fixture

    from tfl_rebuild.tflite.reader import read_model

    path = require_fixture("add_one")
    (tmp_path / "m.py").write_text("")
    record = source_record(path, tmp_path / "m.py", read_model(path).sha256)
    assert record == source_record(path, tmp_path / "m.py")
