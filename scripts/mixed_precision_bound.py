"""How close can any choice of float32 ops bring a model to the float16 bar? (not for CI)

    .venv/bin/python scripts/mixed_precision_bound.py MODEL.tflite [--max-fp32 K] [--beam B] [--inputs N]

`coreml --precision mixed` keeps float16 but for a few ops, picked on inputs of its own. This asks
the question behind its 90%-float16 goal: with at most K ops in float32 (default: 10% of the
castable ops), what is the smallest error any set reaches, with the mixed search's simulator, on
N seeded inputs (default 13: the check's 3 and 10 more)? Every set is tried when there are at most
20,000 of them, else a beam search (width B) over sets picked on those same inputs, which flatters
the sets (the real search may not pick on the inputs it is judged on). A best error over the
float16 bar (rel 0.01) means no mixed conversion with K ops in float32 can pass on those inputs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time

from tfl_rebuild.commands.pipeline import write_generated
from tfl_rebuild.coreml import mixed
from tfl_rebuild.coreml.check import FP16_REL_TOL, program_inputs, seeded_feeds
from tfl_rebuild.coreml.convert import Options, convert
from tfl_rebuild.coreml.precision import ALL_OPS
from tfl_rebuild.rebuild.loader import build, load_module

EXHAUSTIVE_LIMIT = 20_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--max-fp32", type=int, help="ops in float32 at most (default: 10%% of the castable ops)")
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=13)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model, py, weights = write_generated(args.model, tmp)
        keras_model = build(load_module(py), weights)
        conv = convert(keras_model, model, Options(precision="mixed", fp32_ops=frozenset({ALL_OPS})))
    feeds = [program_inputs(conv, f) for f in seeded_feeds(model, conv, args.inputs)]
    sim = mixed.Simulator(conv.program, feeds)
    ops = [r.op for r in mixed.op_risks(conv.program, feeds[:3])]
    k_max = args.max_fp32 if args.max_fp32 is not None else math.floor(0.1 * len(conv.asked))
    print(
        f"{len(conv.asked)} castable ops, {len(ops)} measured; at most {k_max} in float32; {len(feeds)} inputs"
    )

    def error(kept) -> float:
        return sim.error(lambda name: name not in kept)

    print(f"all in float16: rel {error(set()):.4f} (bar {FP16_REL_TOL:g})")
    start = time.perf_counter()
    if sum(math.comb(len(ops), k) for k in range(k_max + 1)) <= EXHAUSTIVE_LIMIT:
        for k in range(1, k_max + 1):
            best = min((error(set(c)), c) for c in itertools.combinations(ops, k))
            print(
                f"every set of {k}: best rel {best[0]:.4f} {list(best[1])} ({time.perf_counter() - start:.0f} s)"
            )
        return
    beam = [frozenset()]
    for k in range(1, k_max + 1):
        scored = {s | {op}: 0.0 for s in beam for op in ops if op not in s}
        for s in scored:
            scored[s] = error(s)
        beam = sorted(scored, key=scored.get)[: args.beam]
        best = scored[beam[0]]
        print(f"beam, {k} ops: best rel {best:.4f} {sorted(beam[0])} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
