"""The one place that picks the TFLite runtime: LiteRT when installed, else tf.lite.

Both expose the same `Interpreter` API. LiteRT imports in a fraction of TensorFlow's time.
"""

from __future__ import annotations

import importlib.util

from tfl_rebuild.errors import RuntimeUnavailableError

_FORCED: list[str] = []  # set by `use` in a child process: the runtime its parent chose
_MISSING = "running a model needs ai-edge-litert or tensorflow: pip install 'tfl-rebuild[litert]'"


def use(runtime: str) -> None:
    """Take this runtime ("ai_edge_litert" / "tensorflow", a parent's `runtime_module`) from now on."""
    _FORCED[:] = [runtime]


def interpreter_class():
    """LiteRT's Interpreter, else tf.lite's (or what `use` chose)."""
    if _FORCED != ["tensorflow"]:
        try:
            from ai_edge_litert.interpreter import Interpreter

            return Interpreter
        except ImportError:
            pass
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeUnavailableError(_MISSING) from None
    return tf.lite.Interpreter


def runtime_module() -> str:
    """The runtime `interpreter_class` takes here, without importing TensorFlow."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401  (light)
    except ImportError:
        if importlib.util.find_spec("tensorflow") is None:
            raise RuntimeUnavailableError(_MISSING) from None
        return "tensorflow"
    return "ai_edge_litert"
