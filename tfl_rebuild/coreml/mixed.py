"""Mixed precision: float16 everywhere except the few MIL ops that must compute in float32.

What each op risks: the float32 program is run with numpy (mil_eval), and each op is rerun on its
inputs rounded to float16, its result rounded too: what that op alone loses in float16
(`OpRisk.rel`, relative to its own largest value), whether it overflows float16's +-65504 or
makes a NaN, and, where the evaluations fit a time budget, how far the outputs move when that op
alone computes in float16 (`OpRisk.effect`, worst over the inputs).

The search: ops ranked by that (overflow and NaN first), the top k kept in float32 for many k,
each set simulated (`Simulator`: every other op's inputs, weights and result rounded to float16),
since the error is far from monotonic in k (cancelling roundings, ReLU kinks). Only the smallest
set whose simulated error is within the bar is converted through coremltools'
FP16ComputePrecision(op_selector=...) and checked; the check decides. The caller measures and
simulates on inputs other than the check's, so the check is an independent test of the set picked;
when it fails the set, the next one tried has twice the headroom (within half the bar).

Names: the selector is asked at coremltools' `add_fp16_cast` pass, near the end of the pipeline;
the cleanup passes after it rename some ops (a transpose "transpose_1" ends as "transpose_14").
The float32 program measured is converted through the same pass (every op kept float32), and its
ops are matched to the names the pass asked about: by name, else by op type in order (`asked_names`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import input_vars
from tfl_rebuild.coreml.precision import fp16_share

FP16_MAX = 65504.0
FP16_TINY = 2.0**-14  # float16's smallest normal: below it no relative precision is kept
EFFECT_BUDGET_S = 300.0  # seconds of evaluations spent measuring each op's effect on the outputs
MAX_FP32_SHARE = 0.5  # the search gives up past this share of the ops in float32
SIM_BUDGET_S = 600.0  # seconds of simulation before the search converts what it has found
MAX_CHECKS = 3  # conversions checked: the smallest set within the bar, then within 1/2, 1/4 of it


@dataclass
class OpRisk:
    """What one op of the float32 program loses when it alone computes in float16."""

    name: str
    op_type: str
    rel: float = 0.0  # max |fp16 - fp32| / max(max |fp32|, 2^-14), worst over outputs and inputs
    overflow: bool = False  # a value beyond float16's range (inf in float16)
    nan: bool = False  # float16 makes a NaN that float32 does not
    effect: float | None = None  # max rel change of the outputs when this op alone is float16
    op: str = ""  # its name in the measured float32 program (`name` is the float16 pass's)

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
        risk = risks.setdefault(operation.name, OpRisk(operation.name, operation.op_type, op=operation.name))
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
    for var in input_vars(operation):
        value = env[var.name] if var.name in env else var.val
        rounded[var.name] = _round16(np.asarray(value, np.float32)) if _is_float(value) else value
    try:
        with np.errstate(all="ignore"):
            result = OPS[operation.op_type](Args(operation, rounded))
    except Exception:
        return None
    return result if len(operation.outputs) > 1 else (result,)


def add_output_effects(sim: Simulator, risks: list[OpRisk], budget: float = EFFECT_BUDGET_S) -> None:
    """Set each risk's `effect`: how far the outputs move (max rel, as the check measures) when that
    op alone computes in float16, the rest in float32, over as many of the simulator's inputs as
    fit in `budget` seconds (one evaluation per op and input; none fit: `effect` stays None, and
    the own error ranks alone)."""
    feeds = min(len(sim.feeds), math.floor(budget / max(sim.seconds * len(risks), 1e-9)))
    for risk in risks if feeds >= 1 else ():
        risk.effect = sim.error(lambda name, op=risk.op: name == op, feeds)


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
    """Riskiest first (overflow / NaN, then effect or own error), program order among equals."""
    return sorted(risks, key=lambda r: r.key(), reverse=True)


class Simulator:
    """The float32 program run with a chosen set of ops kept float32 and every other float op in
    float16 (its inputs, weights and result rounded, as `_in_float16`), on the given inputs: how
    far its outputs move (max rel over inputs and outputs, as the check measures). It tracks the
    converted mixed program closely on Linux, where the check runs the same evaluator, at a
    fraction of a conversion's cost, so the search can try many sets and convert only the best."""

    def __init__(self, program, feeds: list[dict[str, np.ndarray]]):
        from tfl_rebuild.coreml.mil_eval import evaluate

        self.program, self.feeds = program, feeds
        self.outs = [v.name for v in program.functions["main"].outputs]
        start = time.perf_counter()
        with np.errstate(all="ignore"):
            self.refs = [evaluate(program, feed, fp16=False) for feed in feeds]
        self.seconds = (time.perf_counter() - start) / max(len(feeds), 1)  # one float32 evaluation

    def error(
        self, in_fp16: Callable[[str], bool], feeds: int | None = None, stop_above: float = math.inf
    ) -> float:
        """Max rel error of the outputs (over the first `feeds` inputs, default all) when the ops
        whose program name `in_fp16` accepts compute in float16 and the rest in float32; once it is
        over `stop_above` the inputs left are not run (the error returned is then a lower bound)."""
        from tfl_rebuild.coreml.mil_eval import evaluate

        def observe(operation, env) -> None:
            if in_fp16(operation.name):
                _store16(operation, env, _in_float16(operation, env))

        worst = 0.0
        for feed, ref in list(zip(self.feeds, self.refs))[:feeds]:
            with np.errstate(all="ignore"):
                got = evaluate(self.program, feed, fp16=False, observe=observe)
            for n in self.outs:
                worst = max(worst, _rel(np.asarray(ref[n], np.float32), np.asarray(got[n], np.float32)))
            if worst > stop_above:
                break
        return worst


def _store16(operation, env, results) -> None:
    """Put an op's float16 results in place of its float32 ones."""
    for var, got in zip(operation.outputs, results or ()):
        if isinstance(env.get(var.name), np.ndarray) and env[var.name].dtype.kind == "f":
            env[var.name] = _round16(np.asarray(got, np.float32))


@dataclass
class Attempt:
    fp32: int  # ops asked to stay float32
    passed: bool
    share: float  # fp16 share of the castable ops


@dataclass
class MixedSearch:
    """The search's outcome: the kept conversion and its check (None: none passed), each
    conversion tried, and the simulated error of each top-k set scanned ((k, max rel))."""

    conv: object | None
    result: object | None
    attempts: list[Attempt] = field(default_factory=list)
    risks: list[OpRisk] = field(default_factory=list)  # ranked
    simulated: list[tuple[int, float]] = field(default_factory=list)

    def why(self, names: list[str]) -> list[str]:
        """The risk line of each op named (what made it stay float32)."""
        by = {r.name: r for r in self.risks}
        return [by[n].text() if n in by else n for n in names]


def grid(start: int, limit: int) -> list[int]:
    """The top-k sizes the search simulates: every k up to 16 (a few ops usually do it, and the
    error is not monotonic in k), then steps of a quarter up to `limit`."""
    ks, k = [], max(1, start)
    while k <= limit:
        ks.append(k)
        k = k + 1 if k < 16 else max(k + 1, math.floor(k * 1.25))
    return ks


def search(
    risks: list[OpRisk],
    convert: Callable[[frozenset[str]], object],
    passes: Callable[[object], tuple[bool, object]],
    error: Callable[[frozenset[str]], float],
    target: float,
    max_share: float = MAX_FP32_SHARE,
    budget: float = SIM_BUDGET_S,
    stage: Callable[[str], None] = lambda text: None,
) -> MixedSearch:
    """The smallest top-k of a ranking of `risks` kept in float32 that passes the check.

    Two rankings (effect on the outputs, where measured, and own error; overflow and NaN first in
    both) are simulated together over `grid` sizes, smallest first, with `error(program op names)`
    (a Simulator), until a set is within the bar or `budget` seconds are spent; that set is
    converted and checked. When the check fails it, the simulation was optimistic on the check's
    inputs: the scan goes on to the smallest set with twice the headroom (within half the bar),
    then four times, up to MAX_CHECKS conversions; the first to pass is kept.
    `convert(fp32_names)` -> Converted; `passes(conv)` -> (ok, result); `stage` is told each step
    as it starts (a conversion and a check take minutes on big models)."""
    orders = [ranked(risks)]
    if any(r.effect is not None for r in risks):
        orders.append(ranked([replace(r, effect=None) for r in risks]))
    out = MixedSearch(None, None, risks=orders[0])
    limit = max(1, math.floor(max_share * len(risks)))
    ks = grid(sum(1 for r in risks if r.overflow or r.nan), limit)
    errors: dict[frozenset[str], tuple[int, float]] = {}  # program op names -> (k, simulated error)
    sets: dict[frozenset[str], list[OpRisk]] = {}
    spent = [0.0]  # seconds of simulation

    def simulate(k: int, order: list[OpRisk]) -> float:
        ops = frozenset(r.op for r in order[:k])
        if ops not in errors:
            stage(f"mixed precision: simulating {k} of {len(risks)} ops in float32")
            start = time.perf_counter()
            errors[ops] = (k, error(ops))
            spent[0] += time.perf_counter() - start
            sets[ops] = order[:k]
            out.simulated.append(errors[ops])
        return errors[ops][1]

    def smallest(bar: float, checked: set) -> frozenset[str] | None:
        fit = [ops for ops, (_, rel) in errors.items() if rel <= bar and ops not in checked]
        return min(fit, key=lambda ops: errors[ops][0], default=None)

    scanned, checked = 0, set()
    for level in range(MAX_CHECKS):
        bar = target / 2**level  # after a failed check, a set with more headroom
        pick = smallest(bar, checked)
        while pick is None and scanned < len(ks) and spent[0] <= budget:
            k, below = ks[scanned], ks[scanned - 1] if scanned else 0
            scanned += 1
            for order in orders:
                if simulate(k, order) <= bar:
                    for j in range(below + 1, k):  # between grid steps, the smallest k that fits
                        if simulate(j, order) <= bar:
                            break
            pick = smallest(bar, checked)
        if pick is None:
            break
        checked.add(pick)
        k = errors[pick][0]
        stage(f"mixed precision: converting and checking with {k} of {len(risks)} ops in float32")
        conv = convert(frozenset(r.name for r in sets[pick]))
        ok, result = passes(conv)
        out.attempts.append(Attempt(k, ok, fp16_share(conv.fp16_ops, len(conv.fp32_kept))))
        if ok:
            out.conv, out.result = conv, result
            break
    return out


def failed_line(found: MixedSearch) -> str:
    """Why the search kept no mixed conversion, in one line."""
    if found.attempts:
        tried = ", ".join(str(a.fp32) for a in found.attempts)
        return f"mixed precision: the sets simulated within the bar failed the check ({tried} ops in float32)"
    if found.simulated:
        k, rel = min(found.simulated, key=lambda s: (s[1], s[0]))
        return (
            "mixed precision: no set of at most half the ops in float32 simulated within the bar "
            f"(closest: {k} ops, rel >= {rel:.2g})"
        )
    return "mixed precision: not measured (the MIL evaluator cannot run the float32 program)"


def mixed_line(conv) -> str:
    """'mixed precision: 3 of 222 ops in float32 (98% fp16): conv a, add b, ...' for a mixed conversion."""
    kept = conv.fp32_kept
    total = conv.fp16_ops + len(kept)
    names = ", ".join(kept[:5]) + (f", ... ({len(kept) - 5} more)" if len(kept) > 5 else "")
    return (
        f"mixed precision: {len(kept)} of {total} ops in float32 ({fp16_share(conv.fp16_ops, len(kept)):.0%} fp16)"
        + (f": {names}" if kept else "")
    )
