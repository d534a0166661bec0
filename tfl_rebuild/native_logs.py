"""Keep TensorFlow's and LiteRT's C++ notices off the user's terminal.

TensorFlow 2.21 prints oneDNN, CUDA and CPU-feature notices from C++ when it is imported and when it
first looks for devices, ignoring TF_CPP_MIN_LOG_LEVEL; LiteRT prints "Created TensorFlow Lite
XNNPACK delegate" for every interpreter. For those moments only, the process's stderr (file
descriptor 2) goes to /dev/null: Python errors still surface (a failing interpreter's message is in
its exception), and everything printed later is untouched.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager


@contextmanager
def silenced():
    """Native writes to stderr are dropped inside the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def preload_tensorflow() -> None:
    """Import TensorFlow quietly when it is installed; where it is not, the command that needs it
    says so itself."""
    if "tensorflow" in sys.modules:
        return
    with silenced():
        try:
            import tensorflow as tf
        except ImportError:
            return
        tf.config.list_physical_devices()  # the CUDA probe's "failed call to cuInit" happens here
