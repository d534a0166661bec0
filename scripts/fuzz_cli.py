"""Fuzz the CLI with mutated models: every run must end cleanly (exit 0, 1 for a keras mismatch,
or 2 with exactly one `error:` line), quickly, with no traceback, no raw control characters in
its output and no output file left half-written or written outside the -o path.

    PYTHONPATH=$PWD python scripts/fuzz_cli.py --seed 1 --files 3000 --keras 400 --verify 50

Case i is a pure function of (--seed, i): `--only I` re-runs one case, `--save-all` keeps every
mutated file. Mutations (one strategy per case, applied 1-3 times): bit flips, random byte runs,
4-byte little-endian extremes (0, -1, 2^31-1, sizes, huge offsets) at aligned offsets, truncation,
vtable / field-offset corruption at table starts, splices of two models, tensor shape entries,
and indices (tensor buffer, op input/output, opcode index, opcode builtin code, Buffer offset/size).
Offsets favour the flatbuffer's structure over constant data, as in tests/tflite/test_fuzz.py.

How each command runs:
- inspect, weights -o F.npz, inspect --json --tensors --graph G.graphml ("inspect-json") and
  weights --layout keras --dequantize ("weights-keras"): in-process through click's CliRunner, in one long-lived worker process (a
  subprocess of this script), case after case; an exception escaping the CLI is a defect. The
  parent reads the worker's results line by line: a case past --timeout is a hang (the worker is
  killed and restarted at the next case), a worker dying on a signal is a crash.
- keras (--no-verify, and with verification for the first --verify cases): one subprocess each
  (`python -m tfl_rebuild.cli keras F -o DIR`), killed past --timeout.

Defect cases are written to OUT/defects/<command>-<case>/ (model.tflite, stderr, stdout, info.json).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "fixtures").glob("*.tflite")) + sorted(
    (ROOT / "fixtures/user_models").glob("*.tflite")
)
# Big seeds cost ~10x per run: drawn less often.
HEAVY = {"mobilenet_v2_float", "mobilenet_v2_dynamic", "mobilenet_v2_int8", "mobilenet_v2_fp16", "mnist"}
COMMANDS = ("inspect", "weights", "inspect-json", "weights-keras")  # in process, each file in this order
STRATEGIES = ["flip", "bytes", "int", "truncate", "table", "splice", "shape", "index"]
EXTREMES = [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0x7FFFFFF0, 0x10000, 0xFFFF, 8, 4, 2]
MEMORY_LIMIT = 8 << 30  # address space per run: a mutated shape asking for terabytes fails, not the box


# ----------------------------------------------------------------------------------------------
# Seeds and their structure


@cache
def seed_blob(i: int) -> bytes:
    return FIXTURES[i].read_bytes()


def seed_weights() -> np.ndarray:
    w = np.array([0.25 if p.stem in HEAVY else 1.0 for p in FIXTURES])
    return w / w.sum()


@cache
def structure(i: int) -> dict:
    """Positions in seed i: hot (non-constant-data) offsets, table starts, and the fields we aim at."""
    import tflite

    blob = seed_blob(i)
    cold = np.zeros(len(blob), bool)
    tables, shapes, indices = [], [], []
    m = tflite.Model.GetRootAsModel(blob, 0)

    def field(tab, vt):
        o = tab.Offset(vt)
        return tab.Pos + o if o else None

    def vector(tab, vt, width=4):
        o = tab.Offset(vt)
        if not o:
            return []
        start, n = tab.Vector(o), tab.VectorLen(o)
        return [start + k * width for k in range(n)]

    tables.append(m._tab.Pos)
    for b in range(m.BuffersLength()):
        buf = m.Buffers(b)
        tables.append(buf._tab.Pos)
        o = buf._tab.Offset(4)
        if o:
            start, n = buf._tab.Vector(o), buf._tab.VectorLen(o)
            cold[start : start + n] = True
        for vt in (6, 8):
            p = field(buf._tab, vt)
            if p is not None:
                indices.append((p, 8))
    for c in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(c)
        tables.append(oc._tab.Pos)
        for vt, w in ((4, 1), (10, 4), (8, 4)):
            p = field(oc._tab, vt)
            if p is not None:
                indices.append((p, w))
    for s in range(m.SubgraphsLength()):
        sg = m.Subgraphs(s)
        tables.append(sg._tab.Pos)
        indices += [(p, 4) for p in vector(sg._tab, 6) + vector(sg._tab, 8)]
        for t in range(sg.TensorsLength()):
            ten = sg.Tensors(t)
            tables.append(ten._tab.Pos)
            shapes += vector(ten._tab, 4) + vector(ten._tab, 18)
            for vt in (6, 8):
                p = field(ten._tab, vt)
                if p is not None:
                    indices.append((p, 1 if vt == 6 else 4))
            q = ten.Quantization()
            if q is not None:
                tables.append(q._tab.Pos)
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            tables.append(op._tab.Pos)
            p = field(op._tab, 4)
            if p is not None:
                indices.append((p, 4))
            indices += [(p, 4) for p in vector(op._tab, 6) + vector(op._tab, 8)]
            o = op._tab.Offset(12)
            if o:
                tables.append(op._tab.Indirect(op._tab.Pos + o))
    hot = np.flatnonzero(~cold)
    return {"hot": hot, "tables": tables, "shapes": shapes, "indices": indices}


# ----------------------------------------------------------------------------------------------
# Mutations


def mutate(seed: int, case: int) -> tuple[bytes, dict]:
    """The mutated file of one case, and what was done (a pure function of seed and case)."""
    rng = np.random.default_rng([seed, case])
    si = int(rng.choice(len(FIXTURES), p=seed_weights()))
    strategy = STRATEGIES[int(rng.integers(len(STRATEGIES)))]
    buf = bytearray(seed_blob(si))
    st = structure(si)
    info = {"case": case, "seed_model": FIXTURES[si].name, "strategy": strategy, "edits": []}

    def hot_offset() -> int:
        if st["hot"].size and rng.random() < 0.85:
            return min(int(st["hot"][rng.integers(st["hot"].size)]), len(buf) - 1)
        return int(rng.integers(len(buf)))

    def extreme() -> int:
        size = len(buf)
        pool = EXTREMES + [size, size - 4, size // 2, size + 4, 2 * size]
        return int(pool[rng.integers(len(pool))]) if rng.random() < 0.8 else int(rng.integers(0, 2**32))

    def put(at: int, value: int, width: int = 4) -> None:
        at = max(0, min(at, len(buf) - width))
        buf[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        info["edits"].append([at, width, value & ((1 << (8 * width)) - 1)])

    for _ in range(int(rng.integers(1, 4))):
        if len(buf) < 16:
            break
        if strategy == "flip":
            at = hot_offset()
            buf[at] ^= 1 << int(rng.integers(8))
            info["edits"].append([at, "flip"])
        elif strategy == "bytes":
            at, n = hot_offset(), int(rng.integers(1, 9))
            buf[at : at + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            info["edits"].append([at, "bytes", n])
        elif strategy == "int":
            put(hot_offset() & ~3, extreme())
        elif strategy == "truncate":
            cut = int(rng.integers(1, len(buf)))
            del buf[cut:]
            info["edits"].append([cut, "truncate"])
            break
        elif strategy == "table":
            pos = st["tables"][rng.integers(len(st["tables"]))]
            if pos + 4 > len(buf):
                continue
            soff = int.from_bytes(buf[pos : pos + 4], "little", signed=True)
            vt = pos - soff
            where = rng.integers(3)
            if where == 0 or not (0 <= vt <= len(buf) - 4):  # the vtable pointer itself
                put(pos, extreme() if rng.random() < 0.7 else soff + int(rng.integers(-8, 9)))
            elif where == 1:  # a vtable entry (vtable size, table size or a field's offset)
                vsize = int.from_bytes(buf[vt : vt + 2], "little")
                k = int(rng.integers(max(2, min(vsize // 2, 64))))
                put(
                    vt + 2 * k,
                    int(rng.choice([0, 1, 2, 3, 0xFFFF, 0x7FFF, vsize, int(rng.integers(65536))])),
                    2,
                )
            else:  # a field's value (often a uoffset to a subtable, vector or string)
                vsize = int.from_bytes(buf[vt : vt + 2], "little")
                k = int(rng.integers(2, max(3, min(vsize // 2, 64))))
                fo = (
                    int.from_bytes(buf[vt + 2 * k : vt + 2 * k + 2], "little")
                    if vt + 2 * k + 2 <= len(buf)
                    else 0
                )
                put(pos + (fo or 4), extreme())
        elif strategy == "splice":
            other = bytearray(seed_blob(int(rng.choice(len(FIXTURES), p=seed_weights()))))
            if rng.random() < 0.4:
                a, b = int(rng.integers(len(buf))), int(rng.integers(len(other)))
                buf[a:] = other[b:]
                info["edits"].append([a, "splice-tail", b])
            else:
                n = int(rng.integers(4, 257))
                src = int(rng.integers(max(1, len(other) - n)))
                dst = hot_offset()
                how = ["overwrite", "insert"][int(rng.integers(2))]
                if how == "overwrite":
                    buf[dst : dst + n] = other[src : src + n]
                else:
                    buf[dst:dst] = other[src : src + n]
                info["edits"].append([dst, "splice-" + how, src, n])
        elif strategy == "shape":
            if not st["shapes"]:
                continue
            at = st["shapes"][rng.integers(len(st["shapes"]))]
            value = int(
                rng.choice(
                    [0, -1, -2, 0x7FFFFFFF, 0x80000000, 1 << 20, 3, 65536, int(rng.integers(1, 1 << 31))]
                )
            )
            put(at, value)
        elif strategy == "index":
            at, width = st["indices"][rng.integers(len(st["indices"]))]
            if width == 1:
                put(at, int(rng.integers(256)), 1)
            elif width == 8:
                put(at, extreme() | (int(rng.choice([0, 0, 1, 0xFFFFFFFF])) << 32), 8)
            else:
                choice = rng.random()
                value = (
                    extreme() if choice < 0.5 else int(rng.integers(-2, 300)) if choice < 0.9 else 0xFFFFFFFF
                )
                put(at, value)
    return bytes(buf), info


# ----------------------------------------------------------------------------------------------
# Classification


def control_chars(data: bytes) -> bool:
    return any(b < 0x20 and b != 0x0A or b == 0x7F for b in data)


def classify(command: str, rc: int | None, out: bytes, err: bytes, escaped: str | None = None) -> str | None:
    """None for a clean run, else the defect class."""
    if escaped is not None:
        return "exception"
    if rc is None:
        return "hang"
    if rc < 0:
        return f"signal{-rc}"
    if b"Traceback" in err or b"Traceback" in out:
        return "traceback"
    if control_chars(out) or control_chars(err):
        return "control-chars"
    lines = err.decode("utf-8", "replace").splitlines()
    if rc == 2:
        if len(lines) != 1:
            return "error-lines"
        if not lines[0].startswith("error:"):
            return "error-format"
        return None
    if rc == 0 or (rc == 1 and command.startswith("keras")):
        return None
    return f"exit{rc}"


def check_outputs(
    command: str, rc: int | None, scratch: Path, outdir: Path, known: set[str], out: bytes = b""
) -> str | None:
    """Files: nothing hidden left under the -o path, nothing outside it, nothing on an error."""
    stray = sorted(set(os.listdir(scratch)) - known)
    if stray:
        return "stray-write"
    if not outdir.exists():
        return None
    names = [str(p.relative_to(outdir)) for p in outdir.rglob("*")]
    if any(part.startswith(".") for n in names for part in Path(n).parts):
        return "temp-left"
    if rc == 2 and names and not (command.startswith("keras") and b"wrote " in out):
        return "output-on-error"  # keras may fail after it wrote (and said so): verification failed
    if command.startswith("keras"):
        try:
            for py in outdir.glob("*.py"):
                ast.parse(py.read_text(encoding="utf-8"))
            for h5 in outdir.glob("*.weights.h5"):
                from tfl_rebuild.rebuild.weights_h5 import check_h5

                check_h5(h5)
            for js in outdir.glob("*.json"):
                json.loads(js.read_text(encoding="utf-8"))
        except Exception:
            return "bad-output"
    if command.startswith("weights") and rc == 0:
        try:
            with np.load(outdir / "out.npz", allow_pickle=False) as z:
                for k in z.files:
                    z[k]
        except Exception:
            return "bad-output"
    return None


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# ----------------------------------------------------------------------------------------------
# The in-process worker (inspect, weights)


def run_inprocess(command: str, path: Path, scratch: Path) -> dict:
    from click.testing import CliRunner

    from tfl_rebuild.cli import main

    outdir = scratch / "out"
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir()
    args = {
        "inspect": ["inspect", str(path)],
        "inspect-json": ["inspect", str(path), "--json", "--tensors", "--graph", str(outdir / "g.graphml")],
        "weights": ["weights", str(path), "-o", str(outdir / "out.npz")],
        "weights-keras": [
            "weights",
            str(path),
            "-o",
            str(outdir / "out.npz"),
            "--layout",
            "keras",
            "--dequantize",
        ],
    }[command]
    known = set(os.listdir(scratch))
    result = CliRunner().invoke(main, args, catch_exceptions=True)
    escaped = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        escaped = "".join(traceback.format_exception(result.exception))
    out, err = result.stdout_bytes, result.stderr_bytes or b""
    rc = result.exit_code
    if command == "inspect-json" and rc == 0 and escaped is None:
        try:
            json.loads(out)
        except ValueError:
            escaped = "stdout is not one JSON document"
    defect = classify(command, rc, out, err, escaped) or check_outputs(
        command, rc, scratch, outdir, known, out
    )
    return {"rc": rc, "defect": defect, "stderr": (escaped or err.decode("utf-8", "replace"))[-4000:]}


def worker(seed: int, cases: list[int]) -> None:
    limit_memory()
    scratch = Path(tempfile.mkdtemp(prefix="fuzzw-"))
    os.chdir(scratch)
    path = scratch / "case.tflite"
    for case in cases:
        blob, _ = mutate(seed, case)
        path.write_bytes(blob)
        for command in COMMANDS:
            print(json.dumps({"start": case, "command": command}), flush=True)
            t = time.perf_counter()
            try:
                res = run_inprocess(command, path, scratch)
            except BaseException as exc:  # the harness itself: report, keep going
                res = {"rc": None, "defect": "harness", "stderr": repr(exc)}
            res.update(case=case, command=command, seconds=round(time.perf_counter() - t, 3))
            print(json.dumps(res), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The parent


class Campaign:
    def __init__(self, seed: int, out: Path, timeout: float, save_all: bool):
        self.seed, self.out, self.timeout, self.save_all = seed, out, timeout, save_all
        self.counts = defaultdict(Counter)  # (command) -> Counter(clean / defect class)
        self.by_strategy = defaultdict(Counter)  # (command, strategy) -> Counter
        self.defects = []
        self.slow = []
        self.parsed = set()  # cases inspect read (exit 0): verification is tried on these first

    def record(self, command: str, case: int, res: dict) -> None:
        blob, info = mutate(self.seed, case)
        outcome = res["defect"] or "clean"
        if command == "inspect" and res["rc"] == 0:
            self.parsed.add(case)
        self.counts[command][outcome] += 1
        self.counts[command][f"rc={res['rc']}"] += 1
        self.by_strategy[(command, info["strategy"])][outcome] += 1
        if res.get("seconds", 0) > 10:
            self.slow.append((command, case, res["seconds"]))
        if res["defect"] or self.save_all:
            d = self.out / ("defects" if res["defect"] else "all") / f"{command}-{case:05d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / "model.tflite").write_bytes(blob)
            (d / "stderr.txt").write_text(res.get("stderr", ""))
            (d / "info.json").write_text(
                json.dumps({**info, **{k: v for k, v in res.items() if k != "stderr"}})
            )
        if res["defect"]:
            self.defects.append((command, case, res["defect"], info["strategy"], info["seed_model"]))
            last = (res.get("stderr") or "").strip().splitlines()[-1:] or [""]
            print(
                f"DEFECT {command} case {case} [{info['strategy']} {info['seed_model']}] {res['defect']}: {last[0][:200]}",
                flush=True,
            )

    def run_worker(self, cases: list[int]) -> None:
        pending = list(cases)
        while pending:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--seed",
                str(self.seed),
                "--cases",
                ",".join(map(str, pending)),
            ]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=os.environ)
            current, started, seen = None, time.monotonic(), set()
            buf = b""
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        msg = json.loads(line)
                        if "start" in msg:
                            current, started = (msg["start"], msg["command"]), time.monotonic()
                        else:
                            self.record(msg["command"], msg["case"], msg)
                            seen.add(msg["case"]) if msg["command"] == COMMANDS[-1] else None
                            current = None
                            done = len(cases) - len(pending) + len(seen)
                            if msg["command"] == COMMANDS[-1] and done % 1000 == 0:
                                print(f"  {done}/{len(cases)} files in process", flush=True)
                elif current is not None and time.monotonic() - started > self.timeout:
                    proc.kill()
                    proc.wait()
                    break
            rc = proc.wait()
            if current is not None:  # killed on a hang or died on a signal mid-case
                case, command = current
                defect = "hang" if time.monotonic() - started > self.timeout else f"worker-died({rc})"
                self.record(command, case, {"rc": rc, "defect": defect, "stderr": ""})
                for later in COMMANDS[COMMANDS.index(command) + 1 :]:
                    self.record(later, case, {"rc": None, "defect": "skipped", "stderr": ""})
                seen.add(case)
            pending = [c for c in pending if c not in seen]
            if current is None and pending:  # worker ended early without a case in flight
                print(f"worker exited {rc} with {len(pending)} cases left", flush=True)
                break

    def run_keras(self, case: int, verify: bool) -> None:
        command = "keras" if verify else "keras-noverify"
        blob, _ = mutate(self.seed, case)
        scratch = Path(tempfile.mkdtemp(prefix="fuzzk-"))
        try:
            path = scratch / "case.tflite"
            path.write_bytes(blob)
            outdir = scratch / "k"
            args = [sys.executable, "-m", "tfl_rebuild.cli", "keras", str(path), "-o", str(outdir)]
            if not verify:
                args.append("--no-verify")
            known = set(os.listdir(scratch)) | {"k"}
            t = time.perf_counter()
            proc = subprocess.Popen(
                args,
                cwd=scratch,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=None if verify else limit_memory,
            )
            try:
                out, err = proc.communicate(timeout=self.timeout * (3 if verify else 1))
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                rc = None
            defect = classify(command, rc, out, err) or check_outputs(
                command, rc, scratch, outdir, known, out
            )
            res = {"rc": rc, "defect": defect, "stderr": err.decode("utf-8", "replace")[-4000:]}
            res["seconds"] = round(time.perf_counter() - t, 3)
            self.record(command, case, res)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def report(self) -> str:
        lines = [f"seed {self.seed}"]
        for command, c in self.counts.items():
            total = sum(v for k, v in c.items() if not k.startswith("rc="))
            clean = c["clean"]
            classes = {k: v for k, v in c.items() if k != "clean" and not k.startswith("rc=")}
            rcs = {k: v for k, v in c.items() if k.startswith("rc=")}
            lines.append(
                f"{command}: {total} runs, {clean} clean, {total - clean} defects {dict(classes)} {dict(sorted(rcs.items()))}"
            )
        lines.append("by strategy (clean/total):")
        for (command, strategy), c in sorted(self.by_strategy.items()):
            lines.append(
                f"  {command:15s} {strategy:9s} {c['clean']}/{sum(c.values())} {dict((k, v) for k, v in c.items() if k != 'clean')}"
            )
        if self.slow:
            lines.append(f"runs over 10 s: {self.slow[:20]}")
        return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--files", type=int, default=3000, help="mutated files through inspect and weights")
    ap.add_argument("--keras", type=int, default=400, help="of those, through keras --no-verify")
    ap.add_argument("--verify", type=int, default=50, help="of those, through keras with verification")
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--only", type=int, action="append", help="run only these cases")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run (verification: 3x)")
    ap.add_argument("--out", type=Path, default=ROOT / ".fuzz")
    ap.add_argument("--save-all", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cases", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.seed, [int(c) for c in a.cases.split(",")])
        return 0
    cases = a.only or list(range(a.start, a.start + a.files))
    camp = Campaign(a.seed, a.out, a.timeout, a.save_all)
    t = time.time()
    if a.files:
        camp.run_worker(cases)
        print(f"in process ({', '.join(COMMANDS)}): {time.time() - t:.0f} s", flush=True)
    keras_cases = cases[: a.keras]  # unbiased: the first cases, whatever inspect made of them
    for n, case in enumerate(keras_cases, 1):
        camp.run_keras(case, verify=False)
        if n % 50 == 0:
            print(f"  {n}/{len(keras_cases)} through keras --no-verify ({time.time() - t:.0f} s)", flush=True)
    verify_cases = [c for c in cases if c in camp.parsed] + [c for c in cases if c not in camp.parsed]
    for n, case in enumerate(verify_cases[: a.verify], 1):
        camp.run_keras(case, verify=True)
        if n % 10 == 0:
            print(f"  {n}/{a.verify} through keras with verification ({time.time() - t:.0f} s)", flush=True)
    report = camp.report()
    print(report)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"report-seed{a.seed}.txt").write_text(report + "\n" + "\n".join(map(str, camp.defects)) + "\n")
    return 1 if camp.defects else 0


if __name__ == "__main__":
    sys.exit(main())
