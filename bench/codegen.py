"""How long does Keras source generation take? Two measurements, nothing asserted:

  codegen   `generate(read_model(path), stem)` alone on a ~1,000-op model: reading the .tflite,
            the passes, every converter, naming, the templates and the module's own ast.parse.
            No TensorFlow import, no model build. Median of --repeats. Bar: under 1 s.
            The model (a Keras chain of Conv2D / sigmoid / Multiply / Add blocks on a 1x8x8x4
            tensor, converted with TFLiteConverter) is built once into bench/.cache/ (git-ignored).
  keras     `tfl-rebuild keras fixtures/mobilenet_v2_float.tflite -o <tmp>` with verification, as
            a whole process (median of --e2e-repeats), then the same steps timed one by one in a
            fresh process: import TensorFlow/Keras, generate + write, import the module + build the
            Keras model, verify (three seeded batches on both TFLite kernel sets and Keras).

    .venv/bin/python bench/codegen.py [--ops 1000] [--repeats 5] [--e2e-repeats 3] [--model M.tflite]

Other processes on the machine slow every number here alike; the load average is printed with them.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The script's directory comes first on sys.path, where bench/inspect.py would shadow the standard
# library's inspect (numpy imports it): import from the project root instead.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CACHE = HERE / ".cache"
E2E_MODEL = ROOT / "fixtures" / "mobilenet_v2_float.tflite"
CODEGEN_BAR_S = 1.0
OPS_PER_BLOCK = 4  # CONV_2D, LOGISTIC, MUL, ADD


def build_chain(n_ops: int) -> Path:
    """A ~n_ops-op .tflite (cached): blocks of conv -> sigmoid -> gate -> residual add."""
    path = CACHE / f"chain_{n_ops}.tflite"
    if path.exists():
        return path
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4), batch_size=1, name="x")
    x = inp
    for i in range(max(1, n_ops // OPS_PER_BLOCK)):
        y = keras.layers.Conv2D(4, 1, name=f"block{i}_conv")(x)
        y = keras.layers.Activation("sigmoid", name=f"block{i}_gate")(y)
        y = keras.layers.Multiply(name=f"block{i}_mul")([x, y])
        x = keras.layers.Add(name=f"block{i}_add")([x, y])
    model = keras.Model(inp, x)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter lists every captured variable
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    CACHE.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return path


def time_codegen(path: Path, repeats: int) -> dict:
    from tfl_rebuild.rebuild.codegen.emit import generate
    from tfl_rebuild.tflite.reader import read_model

    model = read_model(path)
    generate(model, "chain")  # warm up: imports, template compilation
    reads, gens, totals, cpu = [], [], [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        model = read_model(path)
        t1 = time.perf_counter()
        gen = generate(model, "chain")
        c2, t2 = time.process_time(), time.perf_counter()
        reads.append(t1 - t0)
        gens.append(t2 - t1)
        totals.append(t2 - t0)
        cpu.append(c2 - c0)
    return {
        "ops": len(model.main.operators),
        "lines": gen.source.count("\n"),
        "read_s": statistics.median(reads),
        "generate_s": statistics.median(gens),
        "total_s": statistics.median(totals),
        "cpu_s": statistics.median(cpu),  # this process's CPU time: what other processes' load does not add
    }


def time_e2e(model: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "tfl_rebuild.cli", "keras", str(model), "-o", out],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"tfl-rebuild keras failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return times


def phases(model: str) -> None:
    """Run in a fresh process (--phases): print one JSON line of per-step seconds."""
    t = {}
    t0 = time.perf_counter()
    import keras  # noqa: F401
    import tensorflow  # noqa: F401

    t["import TF + Keras"] = time.perf_counter() - t0
    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module
    from tfl_rebuild.verify.end_to_end import verify

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        ir, py, weights = write_generated(model, out)
        t["generate + write"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        keras_model = load_module(py).build_model(str(weights))
        t["import module + build"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = verify(ir, keras_model)
        t["verify"] = time.perf_counter() - t0
    if not report.ok:
        raise SystemExit("verification failed")
    print(json.dumps(t))


def time_phases(model: Path, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--phases", str(model)], capture_output=True, text=True, cwd=ROOT
        )
        if proc.returncode != 0:
            raise SystemExit(f"phase run failed:\n{proc.stdout}{proc.stderr}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=1000, help="size of the generated chain model")
    ap.add_argument("--model", type=Path, help="time codegen on this .tflite instead of the chain")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--e2e-repeats", type=int, default=3)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--phases", metavar="MODEL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phases:
        phases(args.phases)
        return

    print(f"load average {load()}")
    path = args.model or build_chain(args.ops)
    cg = time_codegen(path, args.repeats)
    verdict = "under" if cg["total_s"] < CODEGEN_BAR_S else "OVER"
    print(f"\ncodegen: {path.name}, {cg['ops']} ops -> {cg['lines']} lines, median of {args.repeats}")
    print(f"  {'read_model':<22}{cg['read_s']:8.3f} s")
    print(f"  {'generate':<22}{cg['generate_s']:8.3f} s")
    print(
        f"  {'read + generate':<22}{cg['total_s']:8.3f} s   ({verdict} the {CODEGEN_BAR_S:g} s bar; "
        f"{cg['total_s'] / cg['ops'] * 1e3:.2f} ms/op)"
    )
    print(f"  {'  CPU time':<22}{cg['cpu_s']:8.3f} s   (of this process; machine load does not inflate it)")
    if args.skip_e2e:
        return

    e2e = time_e2e(E2E_MODEL, args.e2e_repeats)
    split = time_phases(E2E_MODEL, args.e2e_repeats)
    print(
        f"\nkeras: tfl-rebuild keras {E2E_MODEL.relative_to(ROOT)} -o <tmp> (verify on), "
        f"median of {args.e2e_repeats} processes"
    )
    print(
        f"  {'whole process':<24}{statistics.median(e2e):8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in e2e)})"
    )
    print("  split, in a fresh process:")
    for k, v in split.items():
        print(f"    {k:<22}{v:8.2f} s")
    print(
        f"    {'sum':<22}{sum(split.values()):8.2f} s   (the rest of the process: Python start-up, CLI, exit)"
    )
    print(f"\nload average {load()}")


if __name__ == "__main__":
    main()
