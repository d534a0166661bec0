"""Ops and the batch axis (ops/batch.py, passes/batch_axis.py): each case converts a tiny graph,
checks the reason the batch stays fixed (or that it is free), and verifies the rebuild, which
runs it at batch 3 too when the batch is free."""

from __future__ import annotations

import pytest

from tfl_rebuild.rebuild.passes.batch_axis import fixed_batch_reason
from tfl_rebuild.rebuild.passes.pipeline import prepare
from tfl_rebuild.tflite.reader import read_model

tf = pytest.importorskip("tensorflow")


def _reason(path) -> str | None:
    ctx, ops = prepare(read_model(str(path)))
    return fixed_batch_reason(ctx, ops)


def test_a_transpose_that_moves_the_batch_keeps_it_fixed(tfl):
    path = tfl.function(lambda x: tf.transpose(x, [2, 0, 1]) * 2.0, [1, 3, 4])
    assert _reason(path).startswith("TRANSPOSE ")  # its output leads with 4, not the batch
    report = tfl.check(path, "TRANSPOSE")
    assert report.batch is None  # a fixed batch has no batch check, and says so in its header


@pytest.mark.parametrize(
    "fn, op, free",
    [
        (lambda x: tf.transpose(x, [0, 2, 1]) * 2.0, "TRANSPOSE", True),
        (lambda x: tf.reduce_mean(x, axis=[1]), "MEAN", True),
        (lambda x: tf.reduce_sum(x, axis=[0, 2]), "SUM", False),
        (lambda x: tf.pad(x, [[0, 0], [1, 2], [0, 1]]), "PAD", True),
        (lambda x: tf.pad(x, [[1, 0], [1, 2], [0, 1]]), "PAD", False),
        (lambda x: x[:, 1:3, ::2] * 2.0, "STRIDED_SLICE", True),
        (lambda x: x[0] * 2.0, "STRIDED_SLICE", False),
        (lambda x: tf.reshape(x, [1, 12]) + 1.0, "RESHAPE", True),
        (lambda x: tf.reshape(x, [3, 4]) + 1.0, "RESHAPE", False),
        (lambda x: tf.reshape(tf.reshape(x, [3, 4]) * 2.0, [1, 12]), "RESHAPE", True),
        (lambda x: tf.reshape(x, [3, 4]) + tf.constant([[1.0], [2.0], [3.0]]), "RESHAPE", False),
        (lambda x: tf.concat([x, x * 2.0], axis=2), "CONCATENATION", True),
        (lambda x: tf.concat([x, x * 2.0], axis=0), "CONCATENATION", False),
        (lambda x: tf.tile(x, [1, 2, 1]), "TILE", True),
        (lambda x: tf.gather(x, [2, 0], axis=1), "GATHER", True),
        (lambda x: tf.matmul(x, tf.transpose(x, [0, 2, 1])), "BATCH_MATMUL", True),
    ],
    ids=[
        "transpose-keeps-batch",
        "mean-not-batch",
        "sum-over-batch",
        "pad-not-batch",
        "pad-batch",
        "slice-not-batch",
        "slice-picks-row",
        "reshape-keeps-batch",
        "reshape-folds-batch",
        "reshape-folds-and-unfolds",
        "constant-along-folded-rows",
        "concat-channels",
        "concat-batch",
        "tile-not-batch",
        "gather-axis-1",
        "batch-matmul",
    ],
)
def test_batch_rules(tfl, fn, op, free):
    path = tfl.function(fn, [1, 3, 4])
    reason = _reason(path)
    assert (reason is None) == free, reason
    report = tfl.check(path, op)
    assert (report.batch is not None) == free
    if free:
        assert report.batch.ok, report.batch.text()
