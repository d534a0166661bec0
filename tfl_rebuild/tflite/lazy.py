"""Modules registered now and run on first use: what keeps `tfl-rebuild inspect` quick to start.

- `tflite` (always, when the reader is imported): the package's __init__ imports all ~190
  generated modules; registered lazily, `import tflite.Model` loads just that one module.
- `numpy` (only when `inspect` asks, for its own process): flatbuffers and every generated module
  run `import numpy` at import time, yet a float model's report never needs an array, and numpy's
  import is a third of the command's time. Registered lazily, numpy loads on the first attribute
  anyone reads from it (np.frombuffer, np.float32, ...), or when a numpy submodule is imported.

The module object stays the same one once loaded: `import numpy as np` taken early keeps working.
Loading is not guarded against two threads at once: inspect's hashing thread never uses numpy.
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["defer_numpy", "register_lazy_tflite"]


class _LazyPackage(types.ModuleType):
    """The `tflite` package, registered without running its __init__. The first attribute lookup
    on the package itself (tflite.ModelStart, tflite.Model) runs the real __init__, so every other
    user of `tflite` sees the usual package; a submodule import loads just that submodule."""

    def __getattr__(self, name):
        if self.__class__ is _LazyPackage:
            self.__class__ = types.ModuleType
            self.__spec__.loader.exec_module(self)
            if name in self.__dict__:
                return self.__dict__[name]
        sub = sys.modules.get(f"{self.__name__}.{name}")
        if sub is not None:
            return sub
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name, value):
        # The import system binds each loaded submodule on its package; the real __init__ rebinds
        # those names to the classes (tflite.Model is the class). Leave them to __getattr__.
        if isinstance(value, types.ModuleType) and name[:1].isupper():
            return
        super().__setattr__(name, value)


class _LazyModule(types.ModuleType):
    """A module whose code runs on the first attribute read that the bare module cannot answer.
    `__path__` is held back until then, so importing a submodule (numpy.linalg) loads the package
    first, as a normal import would."""

    def __getattr__(self, name):
        if self.__class__ is not _LazyModule:  # loaded, and still no such attribute
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        spec = self.__spec__
        self.__class__ = types.ModuleType
        if spec.submodule_search_locations is not None:
            self.__path__ = spec.submodule_search_locations
        try:
            spec.loader.exec_module(self)
        except BaseException:
            sys.modules.pop(spec.name, None)  # as a failed import leaves it: not half-loaded
            raise
        return getattr(self, name)


def _register(name: str, cls: type[types.ModuleType]) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    if cls is _LazyModule:
        module.__dict__.pop("__path__", None)
    module.__class__ = cls
    sys.modules[name] = module


def register_lazy_tflite() -> None:
    spec = importlib.util.find_spec("tflite") if "tflite" not in sys.modules else None
    if spec is not None and spec.submodule_search_locations:
        _register("tflite", _LazyPackage)


def defer_numpy() -> None:
    """Make numpy load when first used rather than when first imported, for this whole process.
    The CLI's `inspect` calls it before importing anything else; a library never should."""
    _register("numpy", _LazyModule)
