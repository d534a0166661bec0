"""Per-op compute precision for `--precision mixed`: the op selector handed to coremltools'
FP16ComputePrecision, and how the share of float16 ops is counted and spelled."""

from __future__ import annotations

import math
import re

ALL_OPS = "*"  # in Options.fp32_ops: every op stays float32 (a float32 program with the pass's names)


def mil_name(name: str) -> str:
    """An op's name as the saved MIL program spells it (coremltools' backend sanitizes names)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def fp16_share(fp16: int, fp32: int) -> float:
    """The share of castable ops that run in float16 (floored, so 99.6% never reads as 100%)."""
    total = fp16 + fp32
    return math.floor(100 * fp16 / total) / 100 if total else 1.0


class Fp16Selector:
    """coremltools' `op_selector`: True (cast to float16) unless the op is one of `fp32_ops`.

    The pass calls it for every op it could cast, consts too (those are not counted); it records
    each op asked about (sanitized name, type, in order) so the caller can count and match them."""

    def __init__(self, fp32_ops: frozenset[str]):
        self.fp32_ops = fp32_ops
        self.cast: dict[str, bool] = {}
        self.asked: list[tuple[str, str]] = []

    def __call__(self, op) -> bool:
        if op.op_type == "const":
            return True
        name = mil_name(op.name)  # the pass sees TF names ("a/b"); the saved program "a_b"
        self.cast[name] = name not in self.fp32_ops and ALL_OPS not in self.fp32_ops
        self.asked.append((name, op.op_type))
        return self.cast[name]

    def counts(self) -> tuple[int, list[str], list[tuple[str, str]]]:
        """(ops cast to float16, the names kept in float32 (sorted), every op asked about)."""
        kept = sorted(n for n, fp16 in self.cast.items() if not fp16)
        return sum(self.cast.values()), kept, list(self.asked)
