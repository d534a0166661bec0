"""Line layout of generated statements: one line when it fits, else wrapped the way black would.

Lines are returned as separate `Code` items with their own relative indentation, so a template
that indents each body line keeps the wrapped statement intact.
"""

from __future__ import annotations

from tfl_rebuild.rebuild.codegen.literals import Code, lit_lines

WIDTH = 100  # the longest line we aim for, including the function body's indentation
BODY_INDENT = 4
STEP = "    "


def call(
    head: str, kwargs: list[tuple[str | None, object]], tail: str = "", indent: int = BODY_INDENT
) -> list[Code]:
    """`head(k=v, ...)tail` where each value is a plain value written by lit() or a `Code`, and a
    None key makes a positional argument.

    Tries, in order: one line; the arguments on one indented line; one argument per line (a long
    list value spread over lines too), with a trailing comma.
    """
    texts = [(k, v if isinstance(v, Code) else lit_lines(v, 10**9)[0]) for k, v in kwargs]
    args = ", ".join(t if k is None else f"{k}={t}" for k, t in texts)
    one = f"{head}({args}){tail}"
    if indent + len(one) <= WIDTH:
        return [Code(one)]
    closing = _wrap_tail(tail, indent)
    head_line = f"{head}({args})"
    if len(closing) > 1 and indent + len(head_line) + 2 <= WIDTH:  # only the call's inputs are long
        return [Code(head_line + closing[0][1:]), *closing[1:]]
    if indent + len(STEP) + len(args) <= WIDTH:
        return [Code(f"{head}("), Code(STEP + args), *closing]
    lines = [Code(f"{head}(")]
    for k, v in kwargs:
        key = "" if k is None else f"{k}="
        if isinstance(v, Code):
            lines.append(Code(f"{STEP}{key}{v},"))
            continue
        value = lit_lines(v, WIDTH - indent - len(STEP) - len(key))
        if len(value) == 1:
            lines.append(Code(f"{STEP}{key}{value[0]},"))
        else:
            lines.append(Code(f"{STEP}{key}{value[0]}"))
            lines += [Code(STEP + ln) for ln in value[1:-1]]
            lines.append(Code(f"{STEP}{value[-1]},"))
    return lines + closing


def _wrap_tail(tail: str, indent: int) -> list[Code]:
    """`)` + tail, with a long call tail `(a, b, ...)` spread over lines."""
    if indent + 1 + len(tail) <= WIDTH or not (tail.startswith("(") and tail.endswith(")")):
        return [Code(")" + tail)]
    inner = tail[1:-1]
    if inner.startswith("[") and inner.endswith("]"):  # a list of inputs: one per line
        items = inner[1:-1].split(", ")
        return [Code(")(["), *(Code(f"{STEP}{item},") for item in items), Code("])")]
    if indent + len(STEP) + len(inner) <= WIDTH:
        return [Code(")("), Code(STEP + inner), Code(")")]
    return [Code(")("), *(Code(f"{STEP}{item},") for item in inner.split(", ")), Code(")")]
