"""Model strings made safe for people: one terminal line, one shell word.

Any text a model carries (names, descriptions, custom codes) is shown through `printable`, so
escape sequences, line breaks and bidi controls never reach a terminal, a log or a table raw.
"""

from __future__ import annotations

import re
import shlex
import unicodedata

# C0 / C1 controls, DEL, line and paragraph separators, bidi embeddings / overrides / isolates,
# and the noncharacters a terminal may mangle.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")

# The same past ASCII: json.dumps escapes C0 itself, and its own line breaks must stay.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, limit: int | None = None) -> str:
    """`text` with every control character written as a visible escape (\\x1b, \\n, \\u2028), cut
    to `limit` characters with a count of what was cut."""
    safe = _UNSAFE.sub(lambda m: _escape(m.group()), text)
    if limit is not None and len(safe) > limit:
        return f"{safe[:limit]}... ({len(safe) - limit} more characters)"
    return safe


def json_text(document: str) -> str:
    """A JSON document (json.dumps with ensure_ascii=False) with the invisible or line-breaking
    characters JSON leaves raw (U+2028, bidi controls, C1) written as \\uXXXX escapes: the same
    document, but safe to print. JSON allows them only inside strings, where the escape means them."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", document)


def shell_word(word: str) -> str:
    """One word quoted for a POSIX shell (shlex.quote); a word with a line break or an invisible
    character is written as a bash $'...' string with escapes instead."""
    if word.isprintable():
        return shlex.quote(word)
    out = []
    for c in word:
        if c in "\\'":
            out.append("\\" + c)
        elif c.isprintable() and unicodedata.category(c) != "Cf":
            out.append(c)
        elif ord(c) < 0x100:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
    return "$'" + "".join(out) + "'"


def shell_command(words: list[str]) -> str:
    """Words quoted for a POSIX shell, on one line."""
    return " ".join(shell_word(w) for w in words)
