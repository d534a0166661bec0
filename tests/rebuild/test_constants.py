"""Constants where a person would put them (codegen/constants.py): small operands as literals at
the call, long integer grids as the short exact expression that makes them."""

from __future__ import annotations

import numpy as np
import pytest

from tfl_rebuild.rebuild.codegen.constants import SMALL, index_grid, inline_small_constant
from tfl_rebuild.rebuild.ops import LayerSpec

GRIDS = {
    "frames": (np.arange(0, 300 * 512, 512)[:, None] + np.arange(1024)).tolist(),
    "strided-rows": (np.arange(10)[:, None] * 7 + np.arange(0, 40, 2) + 3).tolist(),
    "batched": [(np.arange(9)[:, None] * 4 + np.arange(8)).tolist()],
    "range": list(range(5, 500, 3)),
    "descending": list(range(200, -10, -2)),
}


@pytest.mark.parametrize("name", GRIDS)
def test_index_grid_is_exact(name):
    value = GRIDS[name]
    expr = index_grid(value)
    assert expr is not None and len(expr) < 80
    assert eval(expr, {"__builtins__": {"list": list, "range": range}}) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(list(range(10)), id="short"),
        pytest.param([1] * 100, id="constant"),
        pytest.param(list(range(99)) + [7], id="one-off"),
        pytest.param([[i, i + 1, i + 3] for i in range(40)], id="uneven-row"),
        pytest.param([float(i) for i in range(100)], id="floats"),
        pytest.param([[1, 2], [3]] * 40, id="ragged"),
    ],
)
def test_index_grid_refuses_what_is_no_grid(value):
    assert index_grid(value) is None


def _spec(value) -> LayerSpec:
    arr = np.asarray(value, np.float32)
    return LayerSpec(
        "BinaryOp", {"op": "add", "constant_shape": list(arr.shape)}, (0,), (1,), ((("constant", arr)),), True
    )


def test_small_constant_becomes_a_literal():
    spec = _spec([0.5, 1 / 127.5])
    inline_small_constant(spec)
    assert spec.weights == () and "constant_shape" not in spec.kwargs
    assert np.array_equal(np.float32(spec.kwargs["constant"]), np.float32([0.5, 1 / 127.5]))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.ones(SMALL + 1), id="large"),
        pytest.param([1.0, np.inf], id="infinite"),
        pytest.param([np.nan], id="nan"),
    ],
)
def test_other_constants_stay_weights(value):
    spec = _spec(value)
    inline_small_constant(spec)
    assert len(spec.weights) == 1 and "constant" not in spec.kwargs
