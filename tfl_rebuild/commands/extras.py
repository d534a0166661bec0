"""Which optional extras a command needs, checked before it does any work.

A core install (`pip install tfl-rebuild`) runs `inspect` and `weights`; the other commands need
an extra. Each command asks here first, so a missing one is a single line naming the extra to
install (exit 2), not a ModuleNotFoundError traceback after files were written. Only
`importlib.util.find_spec` is used: it finds a package without importing it (no TensorFlow
start-up for a check).
"""

from __future__ import annotations

from importlib.util import find_spec

from tfl_rebuild.errors import RuntimeUnavailableError

# extra of pyproject.toml -> the top-level modules that provide it (any one is enough)
EXTRAS: dict[str, tuple[str, ...]] = {
    "keras": ("keras",),
    "coreml": ("coremltools",),
    "litert": ("ai_edge_litert", "tensorflow"),  # a TFLite runtime: LiteRT, or TensorFlow's tf.lite
}
# an extra that brings another's modules too: [keras] installs TensorFlow, whose tf.lite runs models
BRINGS = {"keras": ("litert",)}


def installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or sys.modules[module] = None
        return False


def missing_extras(*extras: str | None) -> list[str]:
    """The extras among `extras` (None entries ignored) whose modules are all absent."""
    missing = [e for e in dict.fromkeys(extras) if e and not any(installed(m) for m in EXTRAS[e])]
    covered = {b for e in missing for b in BRINGS.get(e, ())}
    return [e for e in missing if e not in covered]


def require_extras(command: str, *extras: str | None) -> None:
    """Raise a one-line RuntimeUnavailableError (exit 2) when `command` lacks one of `extras`."""
    missing = missing_extras(*extras)
    if missing:
        modules = " and ".join(" or ".join(EXTRAS[e]) for e in missing)
        raise RuntimeUnavailableError(
            f"`tfl-rebuild {command}` needs {modules}, not installed here: "
            f"pip install 'tfl-rebuild[{','.join(missing)}]'"
        )
