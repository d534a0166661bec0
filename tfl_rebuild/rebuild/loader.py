"""Load a generated module, read its sidecar, and run the model it builds."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError, TflRebuildError
from tfl_rebuild.fileio import file_sha256
from tfl_rebuild.rebuild.limits import deep_recursion
from tfl_rebuild.rebuild.weights_h5 import check_h5

# A weights file inflating to more than this many times its size is not one `keras` wrote (np.savez
# stores arrays uncompressed): a zip bomb.
MAX_INFLATION = 20


def load_module(path: str | Path):
    """Import a generated module from its file (each call gets a fresh module)."""
    from tfl_rebuild.native_logs import preload_tensorflow

    preload_tensorflow()  # the module imports keras, and so TensorFlow: without its C++ start-up notices
    deep_recursion()  # Keras walks a functional model recursively, a frame or two per layer
    path = Path(path).resolve()
    name = f"tfl_rebuild_generated_{abs(hash((str(path), path.stat().st_mtime_ns)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TflRebuildError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_source(source: str, path: str | Path):
    """The module `source` would be once written at `path` (its `__file__`), imported from memory:
    `keras` builds it to write its weights before the source is renamed into place."""
    import types

    from tfl_rebuild.native_logs import preload_tensorflow

    preload_tensorflow()
    deep_recursion()
    path = Path(path).resolve()
    module = types.ModuleType(f"tfl_rebuild_generated_{abs(hash((str(path), source)))}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def build(module, weights_path: str | Path | None = None):
    """`module.build_model(weights_path)` (default: the module's own weights file), with a weights
    file that cannot be what the module needs refused in one line first: not HDF5 (or, for a
    module from before the .weights.h5, not a zip), links to elsewhere, non-numeric data, a bomb;
    and a file that does not hold what the module's layers need, after Keras tried to load it."""
    path = weights_path
    if path is None:
        path = getattr(module, "WEIGHTS", None) or getattr(module, "WEIGHTS_PATH", None)
    if not path:
        return module.build_model()
    if str(path).endswith(".npz"):
        return _build_npz(module, path)
    check_weights(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = module.build_model(str(path))
        except ValueError as exc:
            if "could not be loaded" in str(exc):  # Keras' load_weights: layers or shapes do not match
                parts = str(exc).split("\n\n")
                raise InputError(
                    f"{path}: does not hold the weights this module's layers need{_why(parts)}"
                ) from None
            raise
    for w in caught:
        if "Skipping nested container" in str(w.message):  # Keras leaves those layers as initialised
            raise InputError(f"{path}: does not hold the weights this module's layers need (a sub-model's)")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def _why(parts: list[str]) -> str:
    """Keras' example error, the second paragraph of its message, as ` (first line)`."""
    lines = parts[1].strip().splitlines() if len(parts) > 1 else []
    return f" ({lines[0][:200]})" if lines else ""


def _build_npz(module, path: str | Path):
    """A module generated before the .weights.h5 loaded its arrays from a .npz itself."""
    names = _check_npz(path)
    try:
        return module.build_model(str(path))
    except KeyError as exc:
        key = exc.args[0] if exc.args else None
        if isinstance(key, str) and key not in names:
            raise InputError(f"{path}: has no array {key!r}, which the module needs") from None
        raise


def check_weights(path: str | Path) -> set[str]:
    """The array (dataset) names of a weights file, after checking it can be loaded safely
    (InputError if not): a .weights.h5 (`weights_h5.check_h5`), or a .npz from an older module."""
    return _check_npz(path) if str(path).endswith(".npz") else check_h5(path)


def _check_npz(path: str | Path) -> set[str]:
    """The array names of a weights .npz: no zip bomb, no object arrays (pickles)."""
    import zipfile

    try:
        size = Path(path).stat().st_size
        with zipfile.ZipFile(path) as z:
            infos = [i for i in z.infolist() if not i.is_dir()]
            inflated = sum(i.file_size for i in infos)
            if inflated > MAX_INFLATION * size + (1 << 20):
                raise InputError(
                    f"{path}: inflates to {inflated} bytes from {size}: not a weights file tfl-rebuild wrote"
                )
            for info in infos:
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    _, _, dtype = read(f)
                if dtype.hasobject:
                    raise InputError(
                        f"{path}: array {info.filename.removesuffix('.npy')!r} holds Python objects "
                        "(a pickle), which are never loaded"
                    )
    except FileNotFoundError:
        raise InputError(f"{path}: no such weights file") from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile lacks
        raise InputError(f"{path}: not a readable weights .npz ({exc})") from None
    return {i.filename.removesuffix(".npy") for i in infos}


def sidecar_for(py_path: str | Path) -> Path:
    py_path = Path(py_path)
    return py_path.with_name(f"{py_path.stem}_tensors.json")


def read_sidecar(py_path: str | Path) -> list[dict] | None:
    """The TFLite tensor -> Keras layer mapping `keras` writes beside the module (None if absent)."""
    side = sidecar_for(py_path)
    if not side.is_file():
        return None
    return json.loads(side.read_text(encoding="utf-8"))["tensors"]


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


def run_keras(keras_model, inputs: list[np.ndarray], predict: bool = False) -> list[np.ndarray]:
    """The model's outputs on `inputs`: called like a function, or (predict=True) through
    `model.predict`, the compiled path a user takes, whenever the inputs share one batch axis."""
    import keras

    x = inputs if len(inputs) > 1 else inputs[0]
    out = None
    if predict and can_predict(inputs):
        try:
            out = keras_model.predict(x, batch_size=len(inputs[0]), verbose=0)
        except ValueError:  # an output without a batch axis (a rank, a scalar) predict cannot stack
            out = None
    if out is None:
        out = keras_model(x, training=False)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [to_numpy(o, keras) for o in outs]


def can_predict(inputs: list[np.ndarray]) -> bool:
    """`model.predict` slices every input along one batch axis: they need one, of a single size."""
    return bool(inputs) and all(np.ndim(x) >= 1 for x in inputs) and len({len(x) for x in inputs}) == 1


def to_numpy(value, keras=None) -> np.ndarray:
    """A backend tensor as numpy: torch's carry gradients and may sit on a device, which
    `np.asarray` refuses; `keras.ops.convert_to_numpy` detaches and copies on every backend."""
    if isinstance(value, np.ndarray):
        return value
    if keras is None:
        import keras
    return np.asarray(keras.ops.convert_to_numpy(value))
