"""A core install (no extras): each command that needs one says which, in one line, before any work."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner
from conftest import require_fixture

from tfl_rebuild.cli import main
from tfl_rebuild.commands import extras
from tfl_rebuild.commands.extras import missing_extras


@pytest.fixture
def absent(monkeypatch):
    """Make modules look uninstalled: sys.modules[name] = None makes find_spec return None."""

    def hide(*names):
        for name in names:
            monkeypatch.setitem(sys.modules, name, None)

    return hide


def test_missing_extras_by_find_spec(absent):
    absent("keras", "tensorflow", "ai_edge_litert", "coremltools")
    assert missing_extras("keras", "litert") == ["keras"]  # [keras] brings TensorFlow, a runtime
    assert missing_extras("litert") == ["litert"]
    assert missing_extras("keras", None, "coreml") == ["keras", "coreml"]
    assert missing_extras(None) == []


def test_find_spec_does_not_import(monkeypatch):
    seen = []
    monkeypatch.setattr(extras, "find_spec", lambda name: seen.append(name))
    assert missing_extras("coreml") == ["coreml"] and seen == ["coremltools"]


def _argv(command, tmp_path, model):
    out = tmp_path / "out"
    (tmp_path / "mnist.py").write_text("")  # a module path that exists: compare checks extras first
    return {
        "keras": ["keras", model, "-o", out],
        "compare": ["compare", model, tmp_path / "mnist.py"],
        "compare-models": ["compare", model, model],
        "coreml": ["coreml", model, "-o", out / "m.mlpackage"],
        "check": ["check", model, "--keep", out],
    }[command], out


@pytest.mark.parametrize(
    "command, hidden, extra",
    [
        ("keras", ("keras", "tensorflow", "ai_edge_litert"), "keras"),
        ("compare", ("keras", "tensorflow", "ai_edge_litert"), "keras"),
        ("compare-models", ("tensorflow", "ai_edge_litert"), "litert"),
        ("coreml", ("keras", "tensorflow", "ai_edge_litert", "coremltools"), "keras,coreml"),
        ("coreml", ("coremltools",), "coreml"),
        ("check", ("keras", "tensorflow", "ai_edge_litert", "coremltools"), "keras,coreml"),
        ("check", ("coremltools",), "coreml"),
    ],
    ids=[
        "keras",
        "compare",
        "compare-models",
        "coreml-core",
        "coreml-no-coremltools",
        "check-core",
        "check-no-coremltools",
    ],
)
def test_command_names_the_extra_and_writes_nothing(command, hidden, extra, absent, tmp_path):
    model = str(require_fixture("mnist"))
    argv, out = _argv(command, tmp_path, model)
    absent(*hidden)
    result = CliRunner().invoke(main, [str(a) for a in argv])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: `tfl-rebuild {command.split('-')[0]}` needs ")
    if extra == "keras,coreml":
        assert "needs keras and coremltools, not installed here" in result.stderr
    assert result.stderr.rstrip().endswith(f"pip install 'tfl-rebuild[{extra}]'")
    assert not out.exists()


def test_keras_without_verify_needs_keras_but_no_runtime(absent, tmp_path):
    """Keras writes the .weights.h5, so even --no-verify names the keras extra before any work;
    without a TFLite runtime it still writes (only verifying runs TFLite)."""
    absent("keras", "tensorflow")
    args = ["keras", str(require_fixture("mnist")), "-o", str(tmp_path / "a"), "--no-verify"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "keras" in result.output, result.output
    assert not (tmp_path / "a").exists()


def test_keras_without_verify_needs_no_runtime(absent, tmp_path):
    absent("ai_edge_litert")
    result = CliRunner().invoke(
        main, ["keras", str(require_fixture("mnist")), "-o", str(tmp_path), "--no-verify"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mnist.py").is_file() and (tmp_path / "mnist.weights.h5").is_file()


def test_check_without_coreml_needs_no_coremltools(absent):
    absent("coremltools")
    assert missing_extras("keras", "litert", None) == []
