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
