"""Load a generated module, read its sidecar, and run the model it builds."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import TflRebuildError


def load_module(path: str | Path):
    """Import a generated module from its file (each call gets a fresh module)."""
    from tfl_rebuild.native_logs import preload_tensorflow

    preload_tensorflow()  # the module imports keras, and so TensorFlow: without its C++ start-up notices
    path = Path(path).resolve()
    name = f"tfl_rebuild_generated_{abs(hash((str(path), path.stat().st_mtime_ns)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TflRebuildError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sidecar_for(py_path: str | Path) -> Path:
    py_path = Path(py_path)
    return py_path.with_name(f"{py_path.stem}_tensors.json")


def read_sidecar(py_path: str | Path) -> list[dict] | None:
    """The TFLite tensor -> Keras layer mapping `keras` writes beside the module (None if absent)."""
    side = sidecar_for(py_path)
    if not side.is_file():
        return None
    return json.loads(side.read_text(encoding="utf-8"))["tensors"]


def run_keras(keras_model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in outs]
