"""The only way a value reaches generated source: `Code` fragments and `lit()`.

`lit` writes plain data with repr() and refuses anything else, so nothing from a model can
become code. Templates accept only `Code` (see emit.py's jinja `finalize`).
"""

from __future__ import annotations

import math

import numpy as np


class Code(str):
    """A fragment of generated source, built only by this package from vetted pieces."""


def lit(value) -> Code:
    return Code(repr(_plain(value)))


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


def comment(text: str, limit: int = 80) -> Code:
    """A model string shown in a comment: truncated and repr()-escaped, so it stays one line."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    body = repr(short)
    if any(c in body for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
        raise ValueError("comment text must be one line")
    return Code(body)
