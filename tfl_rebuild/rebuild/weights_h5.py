"""A generated module's weights file: Keras' own `<stem>.weights.h5`, written by Keras itself.

`write_weights` builds the module's model without weights, gives each layer its arrays and calls
`model.save_weights`, so the module needs one `model.load_weights(path)` on any backend and no
table of its layers. `check_h5` refuses, in one line and before Keras reads anything, a file that
is not one Keras could have written: links (soft, external), external or virtual datasets,
non-numeric data (strings, references, opaque), a size far beyond what the file holds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError
from tfl_rebuild.fileio import atomic_path
from tfl_rebuild.rebuild.ops.registry import ConversionError

# A weights file declaring more than this many times its size in data is a bomb (Keras writes
# datasets uncompressed), as is a tree deeper or larger than any generated model's.
MAX_INFLATION = 20
MAX_DEPTH = 64
MAX_OBJECTS = 1_000_000
NUMERIC = frozenset("biuf")  # bool, int, uint, float


def layer_arrays(arrays: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """ "<layer>/<weight>" -> array, as codegen keys them, grouped per layer (set_weights order)."""
    grouped: dict[str, list[np.ndarray]] = {}
    for key, arr in arrays.items():
        layer, _, _ = key.partition("/")  # layer names are identifiers: no "/" in them
        grouped.setdefault(layer, []).append(arr)
    return grouped


def write_weights(module, arrays: dict[str, np.ndarray], path: str | Path):
    """Build `module`'s model without weights, set `arrays` layer by layer (the layers of control
    flow sub-models included: names are unique across the module) and save them to `path`
    atomically in Keras' format. Returns the model, its weights set."""
    model = module.build_model(weights_path=None)
    layers = {}
    for layer in _module_layers(model):
        layers.setdefault(layer.name, layer)
    for name, values in layer_arrays(arrays).items():
        if name not in layers:
            raise ConversionError(f"the generated model has no layer {name!r} to hold its weights")
        layers[name].set_weights(values)
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))
    return model


def _module_layers(container):
    """The layers the module names, its control-flow sub-models' included, but not the insides of
    Keras' own layers: a lifted GRU's cell is auto-named "gru_cell", as a loop body's Dense taken
    from a TFLite name can be, and must not take that Dense's weights."""
    import keras

    for layer in container._flatten_layers(include_self=False, recursive=False):
        yield layer
        if isinstance(layer, keras.Model) or not type(layer).__module__.startswith("keras."):
            yield from _module_layers(layer)


def check_h5(path: str | Path) -> set[str]:
    """The dataset paths of a .weights.h5 after checking it can be read safely (InputError if not)."""
    import h5py

    path = Path(path)
    try:
        size = path.stat().st_size
        with h5py.File(path, "r") as f:
            found: set[str] = set()
            declared = _walk(path, f, "", found, 0)
    except FileNotFoundError:
        raise InputError(f"{path}: no such weights file") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InputError(
            f"{path}: not a readable weights .h5 ({str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from None
    if declared > MAX_INFLATION * size + (1 << 20):
        raise InputError(
            f"{path}: declares {declared} bytes of data in {size}: not a weights file tfl-rebuild wrote"
        )
    return found


def _walk(path: Path, group, prefix: str, found: set[str], depth: int) -> int:
    """Check every link under `group`; add its datasets to `found`; return their bytes in memory."""
    import h5py

    if depth > MAX_DEPTH:
        raise InputError(
            f"{path}: groups nested deeper than {MAX_DEPTH}: not a weights file tfl-rebuild wrote"
        )
    declared = 0
    for key in group:
        name = f"{prefix}{key}"
        if len(found) > MAX_OBJECTS:
            raise InputError(
                f"{path}: more than {MAX_OBJECTS} datasets: not a weights file tfl-rebuild wrote"
            )
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise InputError(f"{path}: {name!r} is a {type(link).__name__}, which is never followed")
        obj = group[key]
        if isinstance(obj, h5py.Group):
            declared += _walk(path, obj, f"{name}/", found, depth + 1)
        elif isinstance(obj, h5py.Dataset):
            if obj.dtype.kind not in NUMERIC or obj.dtype.fields is not None:
                raise InputError(f"{path}: dataset {name!r} holds {obj.dtype}, not numbers")
            if obj.external or obj.is_virtual:
                raise InputError(f"{path}: dataset {name!r} refers to other files, which are never read")
            declared += math.prod(obj.shape or ()) * obj.dtype.itemsize
            found.add(name)
        else:
            raise InputError(
                f"{path}: {name!r} is a {type(obj).__name__}: not a weights file tfl-rebuild wrote"
            )
    return declared
