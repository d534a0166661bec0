"""Model strings never reach a terminal, a log or a report raw: escape sequences, line breaks and
300 KB custom codes in a crafted model come out escaped, on one line, and capped."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from flatbuf import Op, Signature, T, build_model

from tfl_rebuild.cli import main

ERROR_LIMIT = 1000  # characters of an error message shown (cli.ERROR_LIMIT)

ESC = "\x1b[2J\x1b]0;pwned\x07"  # clear the screen, set the window title
BREAKS = "a\nb\rc\u2028d\x0ce\u2029f\x1b[31m"


@pytest.fixture
def escapes(tmp_path):
    blob = build_model(
        [T("x" + ESC, [1, 4]), T("y\u2028z" + ESC, [1, 4])],
        [Op("TANH", [0], [1])],
        inputs=[0],
        outputs=[1],
        description="desc" + ESC + "\nsecond line",
        subgraph_name="sg" + ESC,
        metadata={"meta" + ESC: b"value" + ESC.encode()},
        signatures=[Signature("sig" + ESC, {"in" + ESC: 0}, {"out" + ESC: 1})],
    )
    path = tmp_path / "esc.tflite"
    path.write_bytes(blob)
    return str(path)


def custom_model(tmp_path, code: str) -> str:
    blob = build_model(
        [T("x", [2]), T("y", [2])], [Op("CUSTOM", [0], [1], custom_code=code)], inputs=[0], outputs=[1]
    )
    path = tmp_path / "custom.tflite"
    path.write_bytes(blob)
    return str(path)


def invoke(*args):
    return CliRunner().invoke(main, list(map(str, args)))


@pytest.mark.parametrize("flags", [[], ["--tensors"], ["--json"]], ids=["report", "tensors", "json"])
def test_inspect_prints_no_escape_sequence(escapes, flags):
    result = invoke("inspect", escapes, *flags)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u2028" not in result.output
    if not flags:
        assert "desc\\x1b[2J" in result.output  # shown, escaped


@pytest.mark.parametrize("command", ["keras", "dump"])
def test_error_is_one_line_whatever_the_custom_code_holds(command, tmp_path):
    path = custom_model(tmp_path, "Bad" + BREAKS)
    result = invoke(command, path, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()  # str.splitlines breaks at \r, \u2028, \x0c, \x1c... too
    assert len(lines) == 1 and lines[0].startswith("error: "), repr(result.output)
    assert "\x1b" not in result.output


def test_error_line_is_capped(tmp_path):
    path = custom_model(tmp_path, "Huge" + "A" * 300_000)
    result = invoke("keras", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert len(line) < ERROR_LIMIT + 60 and line.endswith("more characters)"), line[:400]


def test_check_markdown_escapes_model_text():
    from tfl_rebuild.commands.check.report import to_markdown
    from tfl_rebuild.commands.check.rows import Options, Row

    row = Row(
        path="m.tflite",
        name="m" + ESC,
        reason="failed: " + BREAKS,
        unsupported=[{"op": "custom Evil" + ESC, "count": 1, "detail": "why\n| col"}],
        conversion_errors=["ADD (op 0): " + ESC],
    )
    md = to_markdown([row], Options(coreml=False))
    assert (
        "\x1b" not in md and "\x07" not in md and "\r" not in md and "\u2028" not in md and "\x0c" not in md
    )
    assert "m\\\\x1b[2J" in md  # the escape is visible (its backslash quoted for Markdown)
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| m\\\\")]
    assert len(table_rows) == 1
