"""Golden generated sources: the Keras module each fixture model rebuilds to, reviewed like code.

A change in code generation shows up here as a unified diff. When the change is intended, rewrite
the goldens and review `git diff tests/rebuild/golden/` before committing:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/rebuild/test_golden.py
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_fixture

from tfl_rebuild.rebuild.codegen.emit import generate
from tfl_rebuild.rebuild.codegen.layout import WIDTH
from tfl_rebuild.rebuild.codegen.naming import sanitize
from tfl_rebuild.tflite.reader import read_model

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
# One of each kind: dense, constant operand, densified sparse, op zoo, deep float, full int8 (FakeQuant).
GOLDEN = ["mnist", "add_one", "sparse_fc", "ops_zoo", "mobilenet_v2_float", "mobilenet_v2_int8"]
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def source_for(name: str) -> str:
    """What `tfl-rebuild keras fixtures/<name>.tflite` writes as <name>.py."""
    return generate(read_model(require_fixture(name)), sanitize(name, "model")).source


@pytest.mark.parametrize("name", GOLDEN)
def test_generated_source_matches_golden(name):
    source = source_for(name)
    golden = GOLDEN_DIR / f"{name}.py"
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(source, encoding="utf-8", newline="\n")
        return
    if not golden.exists():
        pytest.fail(
            f"{golden} is missing: run UPDATE_GOLDEN=1 pytest tests/rebuild/test_golden.py", pytrace=False
        )
    expected = golden.read_text(encoding="utf-8")
    if source != expected:
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            source.splitlines(keepends=True),
            f"tests/rebuild/golden/{name}.py (golden)",
            f"{name}.py (generated now)",
        )
        pytest.fail(
            "generated source differs from the golden (UPDATE_GOLDEN=1 to accept):\n" + "".join(diff),
            pytrace=False,
        )


def _ruff() -> str | None:
    """The ruff of this environment (a dev dependency), else one on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    return str(beside) if beside.exists() else shutil.which("ruff")


@pytest.mark.parametrize("name", GOLDEN)
def test_generated_source_is_stable_under_ruff_format(name):
    """A module a team checks in survives their formatter: `ruff format` changes nothing in it."""
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it is a dev dependency: pip install -e '.[dev]')")
    source = source_for(name)
    result = subprocess.run(
        [ruff, "format", "--isolated", f"--line-length={WIDTH}", "--target-version=py310", "-"],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if result.stdout != source:
        diff = difflib.unified_diff(
            source.splitlines(keepends=True), result.stdout.splitlines(keepends=True), name, "ruff format"
        )
        pytest.fail("ruff format rewrites the generated source:\n" + "".join(diff), pytrace=False)


def test_layout_width_is_the_formatter_line_length():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert tomllib.loads(pyproject.read_text())["tool"]["ruff"]["line-length"] == WIDTH


def test_no_stale_goldens():
    if UPDATE:
        pytest.skip("rewriting goldens")
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.py")) == sorted(GOLDEN)


def _without_identity(source: str, name: str) -> list[str]:
    """The source minus what names the file: the header line (file name, sha256), the stem, and
    the WEIGHTS statement (its line wraps or not with the length of the stem)."""
    start = source.index("WEIGHTS = ")
    source = source[:start] + source[source.index("\n\n\n", start) :]
    return [line.replace(name, "<stem>") for line in source.splitlines()[1:]]


@pytest.mark.parametrize("variant", ["mobilenet_v2_fp16", "mobilenet_v2_dynamic"])
def test_float_weight_variants_generate_the_float_code(variant):
    """fp16 and dynamic-range weights are dequantized to float32: the network code is the float one."""
    assert _without_identity(source_for(variant), variant) == _without_identity(
        source_for("mobilenet_v2_float"), "mobilenet_v2_float"
    )
