"""Generated code runs on every Keras backend: only keras / keras.ops / numpy, nothing of one backend.

Every custom layer template (rebuild/templates/layers/*.j2) and every golden module is parsed and
walked: its imports are keras, numpy and os only; no name reaches TensorFlow, JAX or PyTorch
(`tf.`, `jnp.`, `torch.`), Keras' private `keras.src`, or a tensor's TensorFlow-eager `.numpy()`.
Numbers on each backend are the per-op matrix's job (tests/rebuild/ops, run on JAX and PyTorch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tfl_rebuild.rebuild.codegen.templates import class_template

TEMPLATES = Path(__file__).resolve().parents[2] / "tfl_rebuild" / "rebuild" / "templates"
GOLDEN = Path(__file__).resolve().parent / "golden"
ALLOWED_IMPORTS = {"keras", "numpy", "os"}
BACKEND_ROOTS = {"tf", "tensorflow", "jax", "jnp", "torch", "np_tf"}


def offences(source: str) -> list[str]:
    """What in `source` ties it to one backend (empty: neutral)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] not in ALLOWED_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in BACKEND_ROOTS:
            found.append(f"name {node.id} (line {node.lineno})")
        elif isinstance(node, ast.Attribute):
            if node.attr == "numpy" and not (isinstance(node.value, ast.Name) and node.value.id == "np"):
                found.append(f".numpy() (line {node.lineno}): TensorFlow eager only")
            if node.attr == "src" and isinstance(node.value, ast.Name) and node.value.id == "keras":
                found.append(f"keras.src (line {node.lineno}): private to one Keras version")
    return found


def test_offences_catches_backend_code():
    """The checker itself: each kind of backend tie is found, neutral code passes."""
    assert offences("import tensorflow as tf\nx = tf.add(1, 2)")
    assert offences("from jax import numpy as jnp")
    assert offences("y = x.numpy()")
    assert offences("import keras\nk = keras.src.ops")
    assert offences("import torch")
    assert not offences("import keras\nimport numpy as np\ny = keras.ops.add(np.float32(1), 2)")


@pytest.mark.parametrize("name", sorted(p.name for p in (TEMPLATES / "layers").glob("*.j2")))
def test_layer_template_is_backend_neutral(name):
    source = class_template(name.removesuffix(".py.j2"))  # every helper the class may carry
    assert not offences(source), f"{name}: {offences(source)}"


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.py")))
def test_generated_module_is_backend_neutral(name):
    source = (GOLDEN / name).read_text(encoding="utf-8")
    assert not offences(source), f"{name}: {offences(source)}"
