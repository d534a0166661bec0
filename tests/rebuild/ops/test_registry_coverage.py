"""Every builtin converter in the registry has rebuild tests here (by its quoted op name)."""

from __future__ import annotations

from pathlib import Path

from tfl_rebuild.rebuild.ops import REGISTRY

# Custom ops need their own runtime (the stock interpreter cannot run them): tested elsewhere.
BUILTIN = sorted({name for name, _ in REGISTRY if name != "CUSTOM"})


def test_every_builtin_converter_has_a_test():
    text = "".join(
        p.read_text(encoding="utf-8")
        for p in Path(__file__).parent.glob("test_*.py")
        if p.name != Path(__file__).name
    )
    untested = [name for name in BUILTIN if f'"{name}"' not in text]
    assert not untested, f"converters without a test in tests/rebuild/ops: {untested}"
