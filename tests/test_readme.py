"""The README's supported-ops table is generated from the registry, never hand-kept."""

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
