"""Test helper: read and change a generated module's weights the way a user would, through Keras
(the .weights.h5 is Keras' own format; its groups are named by layer class, not layer name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def weights_of(model) -> dict:
    """ "<layer>/<weight>" -> the Keras variable, in the model's layer order (nested models too)."""
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for v in [*layer._trainable_variables, *layer._non_trainable_variables]:
            found.setdefault(f"{layer.name}/{v.name}", v)
    return found


def arrays_of(py: str | Path, weights_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The module's weights as arrays, keyed "<layer>/<weight>" (build order)."""
    from tfl_rebuild.rebuild.loader import build, load_module

    model = build(load_module(py), weights_path)
    return {k: np.asarray(v.numpy()) for k, v in weights_of(model).items()}


def edit_weights(
    py: str | Path, edit: Callable[[dict[str, np.ndarray]], str], weights_path: str | Path | None = None
) -> str:
    """Load the module's weights, let `edit` change the arrays dict in place (it returns the key
    it changed), and save them back to the same file with `model.save_weights`."""
    from tfl_rebuild.rebuild.loader import load_module

    module = load_module(py)
    path = str(weights_path or module.WEIGHTS)
    model = module.build_model(path)
    variables = weights_of(model)
    arrays = {k: np.asarray(v.numpy()) for k, v in variables.items()}
    key = edit(arrays)
    variables[key].assign(arrays[key])
    model.save_weights(path)
    return key


def scale_weight(
    py: str | Path, pick: Callable[[list[str]], str], factor: float = 1.1, weights_path=None
) -> str:
    """Multiply the weight `pick(keys)` chooses by `factor`; returns its key."""

    def edit(arrays: dict[str, np.ndarray]) -> str:
        key = pick(list(arrays))
        arrays[key] = arrays[key] * np.float32(factor)
        return key

    return edit_weights(py, edit, weights_path)
