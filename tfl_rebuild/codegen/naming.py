"""Namer: every identifier in generated code comes from here (sanitized, unique, never a keyword)."""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

from .literals import Code

# Names the generated module itself uses.
RESERVED = frozenset({"keras", "np", "os", "w", "model", "build_model", "weights_path", "WEIGHTS_PATH", "self"})
MAX_LEN = 48


def sanitize(raw: str, fallback: str = "t") -> str:
    """TFLite tensor name -> readable snake_case identifier, e.g. 'model/conv1/Relu6' -> 'conv1_relu6'."""
    first = raw.split(";")[0]
    parts = [p for p in re.split(r"[/:]+", first) if p]
    text = "_".join(parts[-2:]) if parts else ""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").lower()
    text = re.sub(r"_+", "_", text)[:MAX_LEN].rstrip("_")
    if not text:
        text = fallback
    elif text[0].isdigit():
        text = f"{fallback}_{text}"
    if keyword.iskeyword(text) or keyword.issoftkeyword(text) or text in RESERVED or hasattr(builtins, text):
        text += "_"
    return text


class Namer:
    def __init__(self) -> None:
        self.used: set[str] = set()

    def name(self, raw: str, fallback: str = "t") -> Code:
        base = sanitize(raw, fallback)
        candidate, n = base, 0
        while candidate in self.used:
            n += 1
            candidate = f"{base}_{n}"
        self.used.add(candidate)
        return Code(candidate)
