"""Any batch: which rebuilds leave the batch open, and the batch-3 check that holds them to it."""

from __future__ import annotations

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from conftest import require_fixture  # noqa: E402

from tfl_rebuild.rebuild.codegen.emit import generate  # noqa: E402
from tfl_rebuild.tflite.reader import read_model  # noqa: E402


def test_free_batch_source_has_no_batch_size():
    source = generate(read_model(require_fixture("mnist")), "mnist").source
    assert "batch_size" not in source
    assert "keras.Input(shape=(28, 28)," in source
    assert "the batch is fixed" not in source


def test_fixed_batch_says_why_in_the_header():
    source = generate(read_model(require_fixture("mul_w")), "mul_w").source
    assert "batch_size=4" in source
    assert "# Note: the batch is fixed at 1: input 'x' of shape [4] has no leading batch axis of 1" in source


def test_free_batch_is_verified_at_batch_3(tmp_path):
    from tfl_rebuild.commands.pipeline import rebuild_and_verify
    from tfl_rebuild.verify.batch_check import PER_ROW, RESIZED

    result = rebuild_and_verify(str(require_fixture("mnist")), str(tmp_path / "out"))
    batch = result.report.batch
    assert batch is not None and batch.ok, batch
    assert batch.size == 3 and batch.reference in (RESIZED, PER_ROW)
    assert [o.name for o in batch.outputs] == [o.name for o in result.report.outputs]


def test_batch_check_fails_a_model_that_mixes_rows(tmp_path):
    """The rebuild with its rows reversed matches at batch 1 (one row) but not at batch 3."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify
    from tfl_rebuild.runtime.interpreter import make_interpreter, random_inputs, run
    from tfl_rebuild.verify.batch_check import batch_check
    from tfl_rebuild.verify.measure import to_float

    result = rebuild_and_verify(str(require_fixture("mnist")), str(tmp_path / "out"), verify=False)
    model, keras_model = result.model, result.keras_model

    class RowsReversed:
        inputs = keras_model.inputs

        def __call__(self, x, training=False):
            return np.asarray(keras_model(x, training=training))[::-1]

    sg = model.main
    ins, outs = [sg.tensors[i] for i in sg.inputs], [sg.tensors[i] for i in sg.outputs]
    interp = make_interpreter(model_content=bytes(model._storage))
    rows = [random_inputs(interp, seed) for seed in range(3)]
    refs = [[to_float(outs[0], run(interp, r)[0]) for r in rows]]
    good = batch_check("float", interp, keras_model, ins, outs, rows, refs, [0.0])
    assert good.ok, good.text()
    bad = batch_check("float", interp, RowsReversed(), ins, outs, rows, refs, [0.0])
    assert not bad.ok and "1 output(s) off" in bad.text()
