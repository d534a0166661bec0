"""The README's supported-ops table is generated from the registry, never hand-kept."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_supported_ops_table_is_current():
    result = subprocess.run([sys.executable, "scripts/update_readme_ops.py", "--check"], cwd=ROOT)
    assert result.returncode == 0, "README ops table is stale: run python scripts/update_readme_ops.py"


def test_readme_shows_the_two_commands_first():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block


def _python_blocks(text: str) -> list[str]:
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_python_api_examples_run(tmp_path):
    """Every ```python block of README runs, from a folder that has the repository's fixtures."""
    blocks = _python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README has no Python example"
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    for k, code in enumerate(blocks):
        script = tmp_path / f"example_{k}.py"
        script.write_text(code, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, f"README example {k}:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert (tmp_path / "out" / "mnist.py").is_file() and (tmp_path / "out" / "mnist.mlpackage").is_dir()


def test_pytorch_recipe_runs(tmp_path):
    """README's ```python torch block: a corpus model rebuilt, verified on torch, trained, exported."""
    import pytest

    from tfl_rebuild.commands.extras import installed

    if not installed("torch"):
        pytest.skip("torch not installed (make test-torch)")
    if not (ROOT / ".corpus" / "palm_detection_lite.tflite").is_file():
        pytest.skip("corpus not fetched (make corpus)")
    blocks = [
        b.split("```", 1)[0]
        for b in (ROOT / "README.md").read_text(encoding="utf-8").split("```python torch\n")[1:]
    ]
    assert blocks, "README has no PyTorch recipe"
    (tmp_path / ".corpus").symlink_to(ROOT / ".corpus")
    for k, code in enumerate(blocks):
        script = tmp_path / f"torch_{k}.py"
        script.write_text(code, encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env
        )
        assert result.returncode == 0, f"PyTorch recipe {k}:\n{result.stdout}\n{result.stderr[-3000:]}"
        assert "('torch', True," in result.stdout, result.stdout


def test_import_loads_no_tensorflow():
    code = "import sys, tfl_rebuild; assert not any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def _torch_python() -> str | None:
    """A Python with torch: this one, or TFL_REBUILD_TORCH_PYTHON (CI has none: the test skips)."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return os.environ.get("TFL_REBUILD_TORCH_PYTHON")


def test_pytorch_recipe_captures_references(tmp_path):
    """README's forward-hook recipe (a ```py block: the torch-free test above does not run it)
    writes the input, then each leaf module's output in call order."""
    import numpy as np
    import pytest

    python = _torch_python()
    if python is None:
        pytest.skip("no torch here; set TFL_REBUILD_TORCH_PYTHON to a Python that has it")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = next(b.split("```", 1)[0] for b in text.split("```py\n")[1:] if "register_forward_hook" in b)
    (tmp_path / "recipe.py").write_text(recipe, encoding="utf-8")
    result = subprocess.run([python, "recipe.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(tmp_path / "refs.npz") as z:
        shapes = {k: z[k].shape for k in z.files}
    assert list(shapes) == ["input", "0", "1", "2", "3"]
    assert shapes["0"] == shapes["1"] == (1, 8, 30, 30) and shapes["3"] == (1, 4)
