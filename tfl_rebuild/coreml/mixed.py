"""Mixed precision: float16 everywhere except the few MIL ops that must compute in float32.

Which ops: the float32 program is run once per input with numpy (mil_eval), and each op is rerun
on its inputs rounded to float16, its result rounded too: what that op alone loses in float16
(`OpRisk.rel`, relative to the op's own largest value), and whether it overflows float16's
+-65504 or makes a NaN; where the evaluations fit a time budget, also how far the outputs move
when that op alone computes in float16 (`OpRisk.effect`: an op's own error times what the ops
after it make of it). Ops are ranked by that (overflow and NaN first); the search keeps the top
k in float32 (coremltools' FP16ComputePrecision op_selector), converts and runs the real check,
doubling k until the outputs pass the float16 bar, then bisects k down between the last failure
and the first pass. The risk only orders the search; the check of the converted program decides.

Names: the selector is asked at coremltools' `add_fp16_cast` pass, near the end of the pipeline;
the cleanup passes after it rename some ops (a transpose "transpose_1" ends as "transpose_14").
The float32 program measured is converted through the same pass (every op kept float32), and its
ops are matched to the names the pass asked about: by name, else by op type in order (`asked_names`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.coreml.precision import fp16_share

FP16_MAX = 65504.0
FP16_TINY = 2.0**-14  # float16's smallest normal: below it no relative precision is kept
# An op whose own float16 error is over this fraction of its largest value starts in float32:
# float16 rounding alone is 2^-11 (4.9e-4), so such an op loses 20 times what rounding does.
OWN_REL_START = 1e-2
EFFECT_BUDGET_S = 300.0  # seconds of evaluations spent measuring each op's effect on the outputs
MAX_FP32_SHARE = 0.5
GOOD_SHARE = 0.9  # a search keeping less float16 than this tries the other ranking too  # the search stops past this share of ranked ops in float32
BISECT_STEPS = 3  # tries spent shrinking the set once one passes


@dataclass
class OpRisk:
    """What one op of the float32 program loses when it alone computes in float16."""

    name: str
    op_type: str
    rel: float = 0.0  # max |fp16 - fp32| / max(max |fp32|, 2^-14), worst over outputs and inputs
    overflow: bool = False  # a value beyond float16's range (inf in float16)
    nan: bool = False  # float16 makes a NaN that float32 does not
    effect: float | None = None  # max rel change of the outputs when this op alone is float16

    def key(self) -> tuple:
        return (self.overflow or self.nan, self.rel if self.effect is None else self.effect)

    def text(self) -> str:
        why = "overflows float16" if self.overflow else ("makes NaN in float16" if self.nan else "")
        if not why:
            why = f"own fp16 error rel {self.rel:.2g}"
            if self.effect is not None:
                why += f", alone in fp16 moves the outputs by rel {self.effect:.2g}"
        return f"{self.op_type} {self.name} ({why})"


def _round16(value):
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            return value.astype(np.float16).astype(np.float32)
    if isinstance(value, list):
        return [_round16(v) for v in value]
    return value


def _input_vars(operation):
    for var in operation.inputs.values():
        yield from var if isinstance(var, (list, tuple)) else (var,)


def _measure(risk: OpRisk, ref, got) -> None:
    if not (isinstance(ref, np.ndarray) and ref.dtype.kind == "f" and isinstance(got, np.ndarray)):
        return
    got = _round16(np.asarray(got, np.float32))
    if got.shape != ref.shape:
        return
    finite = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        if (np.abs(ref[finite]) > FP16_MAX).any() or (np.isinf(got) & finite).any():
            risk.overflow = True
        if (np.isnan(got) & ~np.isnan(ref)).any():
            risk.nan = True
        both = finite & np.isfinite(got)
        if both.any():
            scale = max(float(np.max(np.abs(ref[both]))), FP16_TINY)
            risk.rel = max(risk.rel, float(np.max(np.abs(got[both] - ref[both]))) / scale)


def op_risks(program, feeds: list[dict[str, np.ndarray]]) -> list[OpRisk]:
    """Each float op of a float32 MIL program, its float16 risk over `feeds` (program inputs by name)."""
    from tfl_rebuild.coreml.mil_eval import evaluate

    risks: dict[str, OpRisk] = {}

    def observe(operation, env) -> None:
        refs = [env.get(v.name) for v in operation.outputs]
        if not any(isinstance(r, np.ndarray) and r.dtype.kind == "f" for r in refs):
            return
        results = _in_float16(operation, env)
        if results is None:
            return
        risk = risks.setdefault(operation.name, OpRisk(operation.name, operation.op_type))
        for ref, got in zip(refs, results):
            _measure(risk, ref, got)

    with np.errstate(all="ignore"):
        for feed in feeds:
            evaluate(program, feed, fp16=False, observe=observe)
    return list(risks.values())


def _in_float16(operation, env) -> tuple | None:
    """The op's outputs computed on its inputs rounded to float16 (None: it will not run on them)."""
    from tfl_rebuild.coreml.mil_eval import OPS, Args

    rounded = {}
    for var in _input_vars(operation):
        value = env[var.name] if var.name in env else var.val
        rounded[var.name] = _round16(np.asarray(value, np.float32)) if _is_float(value) else value
    try:
        with np.errstate(all="ignore"):
            result = OPS[operation.op_type](Args(operation, rounded))
    except Exception:
        return None
    return result if len(operation.outputs) > 1 else (result,)


def add_output_effects(
    program, feed: dict[str, np.ndarray], risks: list[OpRisk], budget: float = EFFECT_BUDGET_S
) -> bool:
    """Set each risk's `effect`: how far the program's outputs move (max rel, as the check measures)
    when that op alone computes in float16, the rest in float32. One evaluation per op, so only
    when they fit in `budget` seconds (False: not measured, the own error ranks alone)."""
    from tfl_rebuild.coreml.mil_eval import evaluate

    outs = [v.name for v in program.functions["main"].outputs]
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        ref = evaluate(program, feed, fp16=False)
    if (time.perf_counter() - start) * len(risks) > budget:
        return False
    for risk in risks:

        def observe(operation, env, target=risk.name) -> None:
            if operation.name != target:
                return
            results = _in_float16(operation, env)
            for var, got in zip(operation.outputs, results or ()):
                if isinstance(env.get(var.name), np.ndarray) and env[var.name].dtype.kind == "f":
                    env[var.name] = _round16(np.asarray(got, np.float32))

        with np.errstate(all="ignore"):
            got = evaluate(program, feed, fp16=False, observe=observe)
        risk.effect = max(_rel(np.asarray(ref[n], np.float32), np.asarray(got[n], np.float32)) for n in outs)
    return True


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    if ref.shape != got.shape or not np.isfinite(got[np.isfinite(ref)]).all():
        return math.inf
    finite = np.isfinite(ref)
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(ref[finite]))), FP16_TINY)
    return float(np.max(np.abs(got[finite] - ref[finite]))) / scale


def asked_names(program, asked: list[tuple[str, str]]) -> dict[str, str]:
    """Final program op name -> the name the float16 pass asked about: the same name where it
    is one the pass saw, else the op of the same type at the aligned place (difflib over types)."""
    from difflib import SequenceMatcher

    from tfl_rebuild.coreml.mil_eval.core import _walk

    final = [
        (o.name, o.op_type) for o in _walk(program.functions["main"]) if o.op_type not in ("const", "cast")
    ]
    seen = {n for n, _ in asked}
    out = {n: n for n, _ in final if n in seen}
    matcher = SequenceMatcher(None, [t for _, t in final], [t for _, t in asked], autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            name, other = final[block.a + k][0], asked[block.b + k][0]
            out.setdefault(name, other)
    return out


def _is_float(value) -> bool:
    return value is not None and np.asarray(value).dtype.kind == "f"


def ranked(risks: list[OpRisk]) -> list[OpRisk]:
    """Riskiest first (overflow / NaN, then own error), program order among equals."""
    return sorted(risks, key=lambda r: r.key(), reverse=True)


@dataclass
class Attempt:
    fp32: int  # ops asked to stay float32
    passed: bool
    share: float  # fp16 share of the castable ops


@dataclass
class MixedSearch:
    """The search's outcome: the kept conversion and its check (None: none passed), and each try."""

    conv: object | None
    result: object | None
    attempts: list[Attempt] = field(default_factory=list)
    risks: list[OpRisk] = field(default_factory=list)  # ranked

    def why(self, names: list[str]) -> list[str]:
        """The risk line of each op named (what made it stay float32)."""
        by = {r.name: r for r in self.risks}
        return [by[n].text() if n in by else n for n in names]


def search(
    risks: list[OpRisk],
    convert: Callable[[frozenset[str]], object],
    passes: Callable[[object], tuple[bool, object]],
    max_share: float = MAX_FP32_SHARE,
    stage: Callable[[str], None] = lambda text: None,
) -> MixedSearch:
    """The smallest top-k of `risks` kept in float32 whose conversion passes (see the module
    docstring). `convert(fp32_names)` -> Converted; `passes(conv)` -> (ok, check result);
    `stage` is told each try as it starts (each is a conversion and a check: minutes on big models)."""
    order = ranked(risks)
    out = MixedSearch(None, None, risks=order)
    limit = max(1, math.floor(max_share * len(order)))
    start = sum(1 for r in order if r.overflow or r.nan or r.rel > OWN_REL_START)
    k, failed = min(max(start, 1), limit), 0

    def attempt(n: int) -> bool:
        stage(f"mixed precision: converting and checking with {n} of {len(order)} ops in float32")
        conv = convert(frozenset(r.name for r in order[:n]))
        ok, result = passes(conv)
        out.attempts.append(Attempt(n, ok, fp16_share(conv.fp16_ops, len(conv.fp32_kept))))
        if ok:
            out.conv, out.result = conv, result
        return ok

    while not attempt(k):
        failed = k
        if k >= limit:
            return out
        k = min(limit, max(2 * k, k + 1))
    for _ in range(BISECT_STEPS):
        if k - failed <= 1:
            break
        mid = (k + failed) // 2
        if attempt(mid):
            k = mid
        else:
            failed = mid
    return out  # out.conv: the smallest k that passed (a failed try never replaces it)


def share_of(found: MixedSearch) -> float:
    """The float16 share of the search's kept conversion (0 when none passed)."""
    conv = found.conv
    return 0.0 if conv is None else fp16_share(conv.fp16_ops, len(conv.fp32_kept))


def mixed_line(conv) -> str:
    """'mixed precision: 3 of 222 ops in float32 (98% fp16): conv a, add b, ...' for a mixed conversion."""
    kept = conv.fp32_kept
    total = conv.fp16_ops + len(kept)
    names = ", ".join(kept[:5]) + (f", ... ({len(kept) - 5} more)" if len(kept) > 5 else "")
    return (
        f"mixed precision: {len(kept)} of {total} ops in float32 ({fp16_share(conv.fp16_ops, len(kept)):.0%} fp16)"
        + (f": {names}" if kept else "")
    )
