"""Line layout of generated statements: one line when it fits, else wrapped as `ruff format`
(black's style) wraps it, so the generated module is stable under the formatter
(tests/rebuild/test_golden.py runs `ruff format --check` on fresh output).

Lines are returned as separate `Code` items with their own relative indentation, so a template
that indents each body line keeps the wrapped statement intact.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.codegen.literals import Code, lit_lines

WIDTH = 110  # the formatter's line length (pyproject.toml [tool.ruff]), indentation included
BODY_INDENT = 4
STEP = "    "
PACKED = "\0"  # marks (inside this module) a line of a list literal spread over several lines


def call(
    head: str, kwargs: list[tuple[str | None, object]], tail: str = "", indent: int = BODY_INDENT
) -> list[Code]:
    """`head(k=v, ...)tail` where each value is a plain value written by lit() or a `Code`, and a
    None key makes a positional argument.

    Tries, in order: one line; a layer's inputs alone inside the last brackets (when the head of
    the line fits); the arguments on one indented line; one argument per line (a long list value
    spread over lines too), with a trailing comma.
    """
    texts = [(k, v if isinstance(v, Code) else lit_lines(v, 10**9)[0]) for k, v in kwargs]
    args = ", ".join(t if k is None else f"{k}={t}" for k, t in texts)
    one = f"{head}({args}){tail}"
    if indent + len(one) <= WIDTH:
        return [Code(one)]
    targets, eq, ctor = head.partition(" = ")
    if eq and ", " in targets and indent + len(f"{head}(") > WIDTH:  # the formatter spreads the targets
        spread = [Code("("), *(Code(f"{STEP}{t},") for t in targets.split(", "))]
        return spread + call(f") = {ctor}", kwargs, tail, indent)
    lines = _call(head, kwargs, tail, indent, args)
    if any(line.startswith(PACKED) for line in lines):
        # A long list literal packed several values a line: the formatter would give each its own.
        return [Code("# fmt: off"), *(Code(line.removeprefix(PACKED)) for line in lines), Code("# fmt: on")]
    return lines


def _call(
    head: str, kwargs: list[tuple[str | None, object]], tail: str, indent: int, args: str
) -> list[Code]:
    inputs = tail[1:-1] if tail.startswith("(") and tail.endswith(")") else None
    if inputs is not None and indent + len(f"{head}({args})(") <= WIDTH:
        # The formatter splits the last brackets first: `layer = Layer(...)(` / inputs / `)`.
        return [Code(f"{head}({args})("), *_body(inputs, indent), Code(")")]
    closing = [Code(")" + tail)]
    if inputs is not None and indent + len(closing[0]) > WIDTH:
        closing = [Code(")("), *_body(inputs, indent), Code(")")]
    if indent + len(STEP) + len(args) <= WIDTH:
        return [Code(f"{head}("), Code(STEP + args), *closing]
    lines = [Code(f"{head}(")]
    for k, v in kwargs:
        key = "" if k is None else f"{k}="
        if isinstance(v, Code):  # a variable, or a list of them ([a, b]) spread when it is long
            if indent + len(STEP) + len(key) + len(v) + 1 > WIDTH and v.startswith("[") and v.endswith("]"):
                lines += [Code(f"{STEP}{key}["), *(Code(f"{STEP * 2}{i},") for i in v[1:-1].split(", "))]
                lines.append(Code(f"{STEP}],"))
            else:
                lines.append(Code(f"{STEP}{key}{v},"))
            continue
        value = lit_lines(v, WIDTH - indent - len(STEP) - len(key))
        if len(value) == 1:
            lines.append(Code(f"{STEP}{key}{value[0]},"))
        else:
            lines.append(Code(f"{PACKED}{STEP}{key}{value[0]}"))
            lines += [Code(STEP + ln) for ln in value[1:-1]]
            lines.append(Code(f"{STEP}{value[-1]},"))
    return lines + closing


def _body(inputs: str, indent: int) -> list[Code]:
    """A layer's inputs `a, b` or `[a, b]` inside a bracket, one level in: on one line when it
    fits, else one per line with a trailing comma (a list inside its own brackets)."""
    if indent + len(STEP) + len(inputs) <= WIDTH:
        return [Code(STEP + inputs)]
    if inputs.startswith("[") and inputs.endswith("]"):
        items = inputs[1:-1].split(", ")
        return [Code(STEP + "["), *(Code(f"{STEP * 2}{item},") for item in items), Code(STEP + "]")]
    return [Code(f"{STEP}{item},") for item in inputs.split(", ")]
