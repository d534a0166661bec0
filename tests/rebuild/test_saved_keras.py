"""A rebuilt model with custom layer classes, saved as .keras, loads back in a new Python process
the two ways README shows: `keras.saving.load_model` once the generated module is imported (its
classes register under the module's name), or with `custom_objects` naming them; both give the
outputs of the model that was saved, bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import require_fixture

from tfl_rebuild.commands.pipeline import write_generated
from tfl_rebuild.rebuild.loader import load_module, run_keras

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: nothing registered yet but what importing the module registers.
LOAD = """
import importlib.util
import sys

import keras
import numpy as np

py, saved, x_path, out_path, mode = sys.argv[1:]
spec = importlib.util.spec_from_file_location("ops_zoo", py)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
if mode == "imported":
    loaded = keras.saving.load_model(saved)
else:
    names = [n for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, keras.layers.Layer)]
    loaded = keras.saving.load_model(saved, custom_objects={f"ops_zoo>{n}": getattr(module, n) for n in names})
out = loaded(np.load(x_path), training=False)
outs = out if isinstance(out, (list, tuple)) else [out]
np.savez(out_path, *[keras.ops.convert_to_numpy(o) for o in outs])
print(" ".join(sorted({type(layer).__module__.split(".")[0] + "." + type(layer).__name__ for layer in loaded.layers})))
"""


def test_saved_model_with_custom_layers_loads_in_a_new_process(tmp_path):
    _, py, weights = write_generated(str(require_fixture("ops_zoo")), str(tmp_path / "out"))
    built = load_module(py).build_model(str(weights))
    custom = {
        type(layer).__name__ for layer in built.layers if not type(layer).__module__.startswith("keras")
    }
    assert "Resize" in custom  # the case this test is about
    saved = tmp_path / "ops_zoo.keras"
    built.save(saved)
    x = np.random.default_rng(0).uniform(-1, 1, (1, *built.input_shape[1:])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    expected = run_keras(built, [x])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    for mode in ("imported", "custom_objects"):
        out_path = tmp_path / f"{mode}.npz"
        result = subprocess.run(
            [sys.executable, "-c", LOAD, str(py), str(saved), str(tmp_path / "x.npy"), str(out_path), mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{mode}:\n{result.stderr[-3000:]}"
        classes = result.stdout.split()
        assert {f"ops_zoo.{c}" for c in custom} <= set(classes), classes  # the module's own classes
        with np.load(out_path, allow_pickle=False) as got:
            outs = [got[f"arr_{k}"] for k in range(len(got.files))]
        assert len(outs) == len(expected)
        for a, b in zip(outs, expected, strict=True):
            np.testing.assert_array_equal(a, b)
