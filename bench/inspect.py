"""How fast and how lean is `tfl-rebuild inspect` next to TensorFlow's own model analyzer?

    .venv/bin/python bench/inspect.py [MODEL ...] [--runs 5]

Without MODEL, builds (once, cached in bench/.cache/, git-ignored) and measures two float models,
both Keras networks converted with tf.lite.TFLiteConverter: one of ~480 small ops with long fused
tensor names (the op table is the work; about BirdNET's op count) and one of more than 50 MB (a few
large Conv2D and Dense layers: the bytes are the work).

Each command runs as a whole process, one at a time, alternating, --runs times:

  inspect        tfl-rebuild inspect MODEL             (the console script)
  inspect-json   tfl-rebuild inspect --json MODEL
  analyzer       python -c "tf.lite.experimental.Analyzer.analyze(model_path=MODEL)"

Wall time is the median over the runs; peak RSS is the largest ru_maxrss of the process, read by a
small wrapper process that runs only that one command and reports getrusage(RUSAGE_CHILDREN). The
bar: inspect takes <= 0.05x the analyzer's wall time and peaks at <= 120 MiB, and <= 0.25 s on a
model of more than 400 ops. Then
`python -X importtime` of the inspect command shows where its start-up goes, and an in-process
breakdown times the parse and the report. Nothing is asserted: this prints numbers.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this file's directory leads sys.path and its name would shadow the standard
# library's `inspect` (which numpy, rich and others import): drop that entry first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
BIG_MODEL = CACHE / "big_float.tflite"
MANY_OPS_MODEL = CACHE / "ops500_float.tflite"
MANY_OPS_BLOCKS = 120  # 4 ops a block: ~480 ops, about BirdNET's count, with long fused tensor names
MIN_SIZE = 50 * 1024 * 1024
BAR_RATIO = 0.05
BAR_RSS_MIB = 120
BAR_MANY_OPS_S = 0.25  # whole-process inspect of a model with more than MANY_OPS ops
MANY_OPS = 400

WRAPPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
                  "rc": proc.returncode,
                  "stderr": proc.stderr.decode(errors="replace")[-400:]}))
"""


def build_big_model(path: Path) -> None:
    """~15M float32 parameters (~58 MB): two 3x3 convs and four wide Dense layers."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 64), batch_size=1)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(inp)
    x = layers.Conv2D(512, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(2048, activation="relu")(x)
    for _ in range(3):
        x = layers.Dense(2048, activation="relu")(x)
    x = layers.Dense(10)(x)
    model = keras.Model(inp, x, name="big_float")
    gen = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([gen.normal(0, 0.02, w.shape).astype(np.float32) for w in layer.get_weights()])
    with contextlib.redirect_stdout(io.StringIO()):  # the converter narrates its SavedModel export
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def build_many_ops_model(path: Path, blocks: int = MANY_OPS_BLOCKS) -> None:
    """~480 ops (CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL) in small blocks: the op table is the work."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 8), batch_size=1, name="spectrogram")
    x = inp
    for i in range(blocks):
        scope = f"MEL_SPEC{i}_residual_block_with_a_long_descriptive_scope_name"
        y = layers.Conv2D(8, 3, padding="same", activation="relu6", name=f"{scope}_expand_conv")(x)
        y = layers.DepthwiseConv2D(3, padding="same", name=f"{scope}_depthwise")(y)
        y = layers.Add(name=f"{scope}_add")([x, y])
        x = layers.Multiply(name=f"{scope}_gate")([y, x])
    model = keras.Model(inp, x, name="ops500_float")
    with contextlib.redirect_stdout(io.StringIO()):
        blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def inspect_command() -> list[str]:
    script = Path(sys.executable).with_name("tfl-rebuild")
    if script.exists():
        return [str(script)]
    found = shutil.which("tfl-rebuild")
    return [found] if found else [sys.executable, "-m", "tfl_rebuild.cli"]


def commands(model: Path) -> dict[str, list[str]]:
    analyzer = (
        "import os; os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
        "import tensorflow as tf\n"
        f"tf.lite.experimental.Analyzer.analyze(model_path={str(model)!r})\n"
    )
    return {
        "inspect": [*inspect_command(), "inspect", str(model)],
        "inspect-json": [*inspect_command(), "inspect", "--json", str(model)],
        "analyzer": [sys.executable, "-c", analyzer],
    }


def measure(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({result['rc']}): {result['stderr']}")
    return result


def import_breakdown(model: Path, top: int = 15) -> list[tuple[float, float, str]]:
    """(cumulative ms, self ms, module) of the slowest imports when running inspect in-process."""
    code = (
        "import contextlib, io\n"
        "from tfl_rebuild.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['inspect', {str(model)!r}], standalone_mode=False)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        self_us, cum_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append((int(cum_us) / 1000, int(self_us) / 1000, name))
    return rows


def top_level_packages(rows) -> list[tuple[float, str]]:
    """Self time summed per top-level package (numpy, rich, networkx, tflite, ...)."""
    totals: dict[str, float] = {}
    for _, self_ms, name in rows:
        pkg = name.strip().split(".")[0]
        totals[pkg] = totals.get(pkg, 0.0) + self_ms
    return sorted(((ms, pkg) for pkg, ms in totals.items()), reverse=True)


def in_process_breakdown(model: Path, runs: int) -> dict[str, float]:
    """Median ms of each stage of `inspect`, with every module already imported."""
    code = f"""
import io, json, statistics, time
from rich.console import Console
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.commands import inspect as ins
t = {{"read_model": [], "sha256": [], "report_plain": [], "report_rich": [], "to_json": []}}
for _ in range({runs}):
    s = time.perf_counter(); m = read_model({str(model)!r}); t["read_model"].append(time.perf_counter() - s)
    s = time.perf_counter(); m.sha256; t["sha256"].append(time.perf_counter() - s)
    s = time.perf_counter(); ins.print_report(m, file=io.StringIO())  # piped: plain rows
    t["report_plain"].append(time.perf_counter() - s)
    s = time.perf_counter(); ins.print_report(m, console=Console(file=io.StringIO(), width=200))
    t["report_rich"].append(time.perf_counter() - s)  # a terminal: rich for small tables only
    m2 = read_model({str(model)!r})
    s = time.perf_counter(); ins.to_json(m2); t["to_json"].append(time.perf_counter() - s)
print(json.dumps({{k: 1000 * statistics.median(v) for k, v in t.items()}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def default_models() -> list[Path]:
    for path, build, min_size in (
        (MANY_OPS_MODEL, build_many_ops_model, 0),
        (BIG_MODEL, build_big_model, MIN_SIZE),
    ):
        if not path.exists() or path.stat().st_size < max(min_size, 1):
            print(f"building {path.relative_to(ROOT)} (TensorFlow converter, once) ...", flush=True)
            start = time.perf_counter()
            build(path)
            print(f"  built in {time.perf_counter() - start:.1f} s", flush=True)
    return [MANY_OPS_MODEL, BIG_MODEL]


def op_count(model: Path) -> int:
    code = (
        "from tfl_rebuild.tflite.reader import read_model\n"
        f"print(sum(len(sg.operators) for sg in read_model({str(model)!r}).subgraphs))\n"
    )
    return int(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models",
        nargs="*",
        type=Path,
        help=f"default: {MANY_OPS_MODEL.relative_to(ROOT)} and {BIG_MODEL.relative_to(ROOT)} (built once)",
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    for model in args.models or default_models():
        bench_model(model, args.runs)
    startup = statistics.median(measure([sys.executable, "-c", "pass"])["wall"] for _ in range(args.runs))
    print(f"\npython {sys.version.split()[0]} start-up alone (python -c pass): {startup * 1000:.0f} ms")


def bench_model(model: Path, runs: int) -> None:
    size = model.stat().st_size
    n_ops = op_count(model)
    print(f"\n=== model: {model} ({size / 2**20:.1f} MiB, {n_ops} ops)")
    cmds = commands(model)
    for argv in cmds.values():  # warm the page cache and .pyc files; not counted
        measure(argv)
    results: dict[str, list[dict]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, argv in cmds.items():  # alternate, so background load hits all alike
            results[name].append(measure(argv))

    wall = {n: statistics.median(r["wall"] for r in rs) for n, rs in results.items()}
    rss = {n: max(r["maxrss_kib"] for r in rs) / 1024 for n, rs in results.items()}
    cpu = {n: statistics.median(r["cpu"] for r in rs) for n, rs in results.items()}
    base_wall, base_rss = wall["analyzer"], rss["analyzer"]
    print(
        f"\n{runs} runs each, whole processes; wall and CPU (user + sys: what a shared, loaded machine "
        "hurts less) = median, peak RSS = max over runs\n"
    )
    print(
        f"{'command':<14} {'wall s':>8} {'x analyzer':>11} {'cpu s':>8} {'x analyzer':>11} "
        f"{'peak RSS MiB':>13} {'x analyzer':>11}"
    )
    for name in cmds:
        print(
            f"{name:<14} {wall[name]:>8.3f} {wall[name] / base_wall:>11.3f} {cpu[name]:>8.3f} "
            f"{cpu[name] / cpu['analyzer']:>11.3f} {rss[name]:>13.1f} {rss[name] / base_rss:>11.3f}"
        )
    ok_time = wall["inspect"] <= BAR_RATIO * base_wall
    ok_rss = rss["inspect"] <= BAR_RSS_MIB
    print(
        f"\nbar: inspect wall <= {BAR_RATIO:.2f}x analyzer: {'PASS' if ok_time else 'MISS'} "
        f"({wall['inspect'] / base_wall:.3f}x);  inspect peak RSS <= {BAR_RSS_MIB} MiB: "
        f"{'PASS' if ok_rss else 'MISS'} ({rss['inspect']:.1f} MiB)"
    )
    if n_ops > MANY_OPS:
        ok = wall["inspect"] <= BAR_MANY_OPS_S
        print(
            f"bar: inspect of a {n_ops}-op model <= {BAR_MANY_OPS_S:.2f} s: {'PASS' if ok else 'MISS'} "
            f"({wall['inspect']:.3f} s wall, {cpu['inspect']:.3f} s CPU)"
        )

    rows = import_breakdown(model)
    total_ms = sum(self_ms for _, self_ms, _ in rows)
    print(
        f"\nimports of `tfl-rebuild inspect` (python -X importtime): {total_ms:.0f} ms in {len(rows)} modules"
    )
    print(f"  {'self ms':>8}  top-level package")
    for ms, pkg in top_level_packages(rows)[:12]:
        print(f"  {ms:>8.1f}  {pkg}")
    print(f"\n  {'cum ms':>8} {'self ms':>8}  slowest single imports (nesting shown by indent)")
    for cum, self_ms, name in sorted(rows, reverse=True)[:15]:
        print(f"  {cum:>8.1f} {self_ms:>8.1f}  {name}")

    stages = in_process_breakdown(model, runs)
    print("\nin-process stages (median ms, modules already imported):")
    for stage, ms in stages.items():
        print(f"  {stage:<14} {ms:>8.1f}")


if __name__ == "__main__":
    main()
