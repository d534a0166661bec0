"""The only way a value reaches generated source: `Code` fragments and `lit()`.

`lit` writes plain data with repr() and refuses anything else, so nothing from a model can
become code. Templates accept only `Code` (see emit.py's jinja `finalize`).
"""

from __future__ import annotations

import math
import re

import numpy as np

from tfl_rebuild import text

F32_MAX = float(np.finfo(np.float32).max)
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.,/:;+=@-]+")


class Code(str):
    """A fragment of generated source, built only by this package from vetted pieces."""


def lit(value) -> Code:
    return Code(_repr(_plain(value)))


def lit_lines(value, width: int) -> list[Code]:
    """`lit(value)` on one line, or a list/tuple spread over lines (items filled up to `width`,
    nested items one per line) so no line is wider than it needs to be; the first line is the
    opening bracket, the last the closing one."""
    value = _plain(value)
    one = _repr(value)
    if len(one) <= width or not isinstance(value, (list, tuple)) or not value:
        return [Code(one)]
    open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
    items = [_repr(v) for v in value]
    if len(value) == 1 and isinstance(value, tuple):
        items[0] += ","
    lines, row = [], ""
    flat = not any(isinstance(v, (list, tuple)) for v in value)
    for item in items:
        if flat and row and len(row) + len(item) + 2 <= width - 4:
            row = f"{row}, {item}"
            continue
        if row:
            lines.append(row + ",")
        row = item
    lines.append(row + ",")
    return [Code(open_), *(Code("    " + ln) for ln in lines), Code(close)]


def _repr(value) -> str:
    """repr(), with strings in double quotes (the style of the rest of the module)."""
    if isinstance(value, str):
        r = repr(value)
        # repr chose single quotes and the text has no quote at all: only the delimiters change.
        return f'"{r[1:-1]}"' if r[0] == "'" and '"' not in value and "'" not in value else r
    if isinstance(value, float):
        return repr(_short_float(value))
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_repr(v) for v in value)
        if isinstance(value, tuple):
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return f"[{inner}]"
    return repr(value)


def _short_float(f: float) -> float:
    """A float32 value (what models store) written with its shortest float32 digits: 0.2, not
    0.20000000298023224. Both parse to the same float32; other float64 values stay exact."""
    if not abs(f) <= F32_MAX:
        return f
    f32 = np.float32(f)
    if float(f32) == f:
        short = float(str(f32))
        if np.float32(short) == f32:
            return short
    return f


def _plain(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"cannot write non-finite float {f!r} into generated code")
        return f
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    raise TypeError(f"cannot write {type(value).__name__} into generated code")


def shell_command(words: list[str]) -> Code:
    """Words quoted for a POSIX shell on one line (text.shell_command), as a comment fragment."""
    return Code(text.shell_command(words))


def display(text: str, limit: int = 80) -> Code:
    """A model string shown in a comment: as is when it is a plain path-like name, else comment()."""
    if len(text) <= limit and PLAIN_NAME.fullmatch(text):
        return Code(text)
    return comment(text, limit)


def comment(text: str, limit: int = 80) -> Code:
    """A model string shown in a comment: truncated and repr()-escaped, so it stays one line."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    body = repr(short)
    if any(c in body for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
        raise ValueError("comment text must be one line")
    return Code(body)
