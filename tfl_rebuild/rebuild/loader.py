"""Load a generated module, read its sidecar, and run the model it builds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError, TflRebuildError


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


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_record(model_path: str | Path, py_path: str | Path, sha256: str | None = None) -> dict:
    """The sidecar's "source" entry: where the .tflite a module was generated from lies, relative
    to the module's folder (survives moving both together) and absolute (survives moving the
    module alone), and its sha256 (`find_original` refuses a changed file)."""
    model = Path(model_path).resolve()
    folder = Path(py_path).resolve().parent
    try:
        relative = os.path.relpath(model, folder)
    except ValueError:  # another drive (Windows): only the absolute path means anything
        relative = None
    return {"relative": relative, "absolute": str(model), "sha256": sha256 or file_sha256(model)}


def find_original(py_path: str | Path) -> Path:
    """The .tflite a generated module was made from, found through its sidecar's "source" entry
    (relative to the module's folder first, then the absolute path; a sidecar written before
    the entry existed gives only the file name, looked for beside the module).

    Raises a one-line InputError when the sidecar is missing, the file is gone from every
    recorded place, or every file found there differs from the recorded sha256."""
    py_path = Path(py_path)
    side = sidecar_for(py_path)
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        raise InputError(
            f"{py_path}: no readable {side.name} beside it to say which .tflite it was generated from; "
            "give the .tflite explicitly"
        )
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    places = [
        py_path.parent / source["relative"] if isinstance(source.get("relative"), str) else None,
        Path(source["absolute"]) if isinstance(source.get("absolute"), str) else None,
    ]
    name = doc.get("model")
    if not any(places) and isinstance(name, str) and name and Path(name).name == name:
        places.append(py_path.parent / name)  # an older sidecar: the bare file name
    places = [p for p in dict.fromkeys(places) if p is not None]
    if not places:
        raise InputError(f"{side}: records no source model; give the .tflite explicitly")
    want = source.get("sha256") if isinstance(source.get("sha256"), str) else None
    found = [p for p in places if p.is_file()]
    for p in found:
        if want is None or file_sha256(p) == want:
            return p
    if found:
        raise InputError(
            f"{found[0]}: changed since {py_path.name} was generated from it (sha256 {want[:12]}... "
            "recorded, not this file's); regenerate with `tfl-rebuild keras`, or give the .tflite explicitly"
        )
    raise InputError(
        f"{py_path.name} was generated from {' or '.join(str(p) for p in places)}, which is gone; "
        "give the .tflite explicitly"
    )


def check_made_from(py_path: str | Path, model_sha256: str, model_name: str) -> None:
    """Refuse (one line) a module whose sidecar records another source model than `model_name`
    (sha256 `model_sha256`): compared with the wrong model, every row would be nonsense."""
    try:
        doc = json.loads(sidecar_for(py_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no sidecar: the caller says what that means
    source = doc.get("source") if isinstance(doc, dict) else None
    want = source.get("sha256") if isinstance(source, dict) else None
    if isinstance(want, str) and want != model_sha256:
        made = source.get("relative") or doc.get("model") or "another model"
        raise InputError(
            f"{Path(py_path).name} was generated from {made} (sha256 {want[:12]}...), not from "
            f"{model_name} (sha256 {model_sha256[:12]}...)"
        )


def run_keras(keras_model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = keras_model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in outs]
