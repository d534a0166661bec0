"""The one place that picks the TFLite runtime: LiteRT when installed, else tf.lite.

Both expose the same `Interpreter` API. LiteRT imports in a fraction of TensorFlow's time.
"""

from __future__ import annotations

from tfl_rebuild.errors import RuntimeUnavailableError


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            import tensorflow as tf
        except ImportError:
            raise RuntimeUnavailableError(
                "running a model needs ai-edge-litert or tensorflow: pip install 'tfl-rebuild[litert]'"
            ) from None
        Interpreter = tf.lite.Interpreter
    return Interpreter
