"""runtime/isolated.py: interpreters in a child process give what in-process ones give, and a child
that dies is one error, not a hang or a traceback."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from conftest import require_fixture

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.runtime import isolated, outputter
from tfl_rebuild.runtime.interpreter import make_interpreter, random_inputs, run


def _same_details(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["name"] == y["name"] and x["index"] == y["index"] and x["dtype"] == y["dtype"]
        np.testing.assert_array_equal(x["shape"], y["shape"])
        np.testing.assert_array_equal(x["shape_signature"], y["shape_signature"])
        assert tuple(x["quantization"]) == tuple(y["quantization"])


@pytest.mark.parametrize("name", ["mobilenet_v2_int8", "mul_w"])
def test_remote_interpreter_matches_in_process(name):
    path = str(require_fixture(name))
    local = make_interpreter(model_path=path)
    with isolated.session():
        remote = make_interpreter(model_path=path)
        assert isinstance(remote, isolated.Remote) and remote.runtime_module == type(local).__module__
        _same_details(remote.get_input_details(), local.get_input_details())
        _same_details(remote.get_output_details(), local.get_output_details())
        x = random_inputs(local, 3)
        for got, want in zip(run(remote, x), run(local, x)):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_dump_in_a_session_matches_in_process():
    path = str(require_fixture("mobilenet_v2_int8"))
    want = outputter.dump(path, seed=1)
    with isolated.session():
        got = outputter.dump(path, seed=1)
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_child_that_dies_is_one_error():
    path = str(require_fixture("mul_w"))
    with isolated.session():
        interp = make_interpreter(model_path=path)
        child = isolated._SESSION[-1].proc
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        with pytest.raises(TflRebuildError, match="crashed .* signal SIGKILL"):
            interp.invoke()


def test_the_session_ends_its_child_and_temp_dir():
    path = str(require_fixture("mul_w"))
    with isolated.session():
        make_interpreter(model_path=path)
        holder = isolated._SESSION[-1]
    assert holder.proc.returncode is not None and not holder.tmp.exists()
    assert not isolated.active()


def test_errors_of_the_child_are_ours(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" * 8)
    with isolated.session(), pytest.raises(TflRebuildError, match="cannot load this model"):
        make_interpreter(model_path=str(bad))
