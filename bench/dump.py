"""How much does exposing every intermediate tensor cost? Side by side, in one process:

  plain       one inference of the unpatched model (set inputs, invoke, read its outputs)
  dump run    our patched model, interpreter already built: set inputs, invoke, every tensor as an
              array viewing the interpreter's memory (what `dump()` returns and the CLI writes)
  dump+copy   the same with a copy of every tensor (`Dumper.run()`, safe across repeated runs)
  dump+write  the same plus writing the .npy files, index.json and summary.csv
  dump cold   read + patch + build the interpreter + run (what `tfl-rebuild dump` pays once)
  per-tensor  tflite_tensor_outputter's method: for each tensor, point the model's output at it,
              build a new interpreter, run, read it (the rewrite here is our cheap byte patch, so
              this underestimates the script, which re-serializes the whole model every time)
  preserve    experimental_preserve_all_tensors, interpreter built: invoke + get_tensor each

Each is timed in two kernel modes: `builtin` (no default delegate: what `dump` uses, every tensor
computed) and `xnnpack` (the runtime's default delegate). Medians over --repeats runs
(--per-tensor-repeats for the slow per-tensor loop). Nothing is asserted: this prints numbers.

    .venv/bin/python bench/dump.py [MODEL ...] [--repeats 15] [--per-tensor-repeats 3]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Python puts this script's directory first on the path, where bench/inspect.py would shadow the
# standard library's inspect (numpy imports it): import from the project root instead.
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfl_rebuild.commands import dump as dump_cmd  # noqa: E402
from tfl_rebuild.errors import TflRebuildError  # noqa: E402
from tfl_rebuild.runtime import interpreter as runtime  # noqa: E402
from tfl_rebuild.runtime import outputter  # noqa: E402
from tfl_rebuild.tflite import fb_patch  # noqa: E402
from tfl_rebuild.tflite.reader import read_model  # noqa: E402

DEFAULT_MODELS = [ROOT / ".corpus/pose_landmark_full.tflite", ROOT / "fixtures/mobilenet_v2_float.tflite"]
MODES = {"builtin": False, "xnnpack": True}  # mode -> xnnpack


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    return paired_ms([fn], repeats, warmup)[0]


def paired_ms(fns, repeats: int, warmup: int = 1) -> list[float]:
    """Median ms of each function, run round-robin so load from other processes hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def bench_model(path: Path, repeats: int, pt_repeats: int) -> list[tuple[str, str, float, int]]:
    """(mode, method, median ms, tensors) rows for one model."""
    model = read_model(path)
    indices = [e.tensor_index for e in outputter.select_tensors(model)]
    # Also the same model padded to 50 MB (trailing bytes are legal). The patch itself
    # (patch_pieces) copies nothing; the interpreter needs one `bytes`, i.e. one copy of the file.
    big = read_model(bytes(model._storage) + bytes(max(0, 50_000_000 - model.size)))
    t = {
        (m.size, how): median_ms(lambda m=m, f=f: f(m, indices), repeats)
        for m in (model, big)
        for how, f in (("patch", outputter.patch_pieces), ("bytes", outputter.patch_outputs))
    }
    print(
        f"\n{path.name}: {model.size / 1e6:.1f} MB, {len(indices)} op outputs; byte patch "
        f"{t[model.size, 'patch']:.2f} ms, + joined to bytes {t[model.size, 'bytes']:.2f} ms; padded to "
        f"50 MB: {t[big.size, 'patch']:.2f} ms, + bytes {t[big.size, 'bytes']:.1f} ms"
    )
    return [
        row
        for mode, xnnpack in MODES.items()
        for row in bench_mode(path, model, mode, xnnpack, repeats, pt_repeats)
    ]


def bench_mode(path: Path, model, mode: str, xnnpack: bool, repeats: int, pt_repeats: int):
    plain = runtime.make_interpreter(model_path=str(path), reference_kernels=not xnnpack)
    x = runtime.random_inputs(plain, 0)
    patched = outputter.prepare(model, xnnpack=xnnpack)
    n, indices = len(patched.entries), [e.tensor_index for e in patched.entries]
    dumper = outputter.Dumper(patched)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = runtime.make_interpreter(
            model_path=str(path), preserve_all_tensors=True, reference_kernels=not xnnpack
        )

    def preserve():
        runtime.set_inputs(keep, x)
        keep.invoke()
        return [keep.get_tensor(t) for t in indices]

    # Fast models get more rounds (about 2 s of plain runs), so noise from other processes averages out.
    rounds = max(repeats, min(500, int(2000 / max(median_ms(lambda: runtime.run(plain, x), 5), 0.01))))
    t_plain, t_run, t_copy, t_keep = paired_ms(
        [lambda: runtime.run(plain, x), lambda: dumper.run(x, copy=False), lambda: dumper.run(x), preserve],
        rounds,
    )
    rows = [(mode, "plain", t_plain, 0), (mode, "dump run", t_run, n), (mode, "dump+copy", t_copy, n)]
    if not xnnpack:
        with tempfile.TemporaryDirectory() as tmp:

            def run_and_write():
                dump_cmd.write_dump(dumper.run(x, copy=False), Path(tmp) / "out", model=model)

            rows.append((mode, "dump+write", median_ms(run_and_write, repeats), n))

    def cold():
        outputter.Dumper(outputter.prepare(read_model(path), xnnpack=xnnpack)).run(x)

    rows.append((mode, "dump cold", median_ms(cold, max(3, repeats // 3)), n))

    def per_tensor():
        for t in indices:
            interp = runtime.make_interpreter(
                model_content=_only_output(model, t), reference_kernels=not xnnpack
            )
            runtime.run(interp, x)

    rows.append((mode, "per-tensor", median_ms(per_tensor, pt_repeats, warmup=0), n))

    rows.append((mode, "preserve", t_keep, n))
    return rows


def _only_output(model, tensor: int) -> bytes:
    """The model with its outputs replaced by [tensor]: the per-tensor method's rewrite."""
    buf = fb_patch.Buffer.of(model)
    field = outputter._outputs_field(buf, 0)
    return b"".join(buf.appended_vector(field, [tensor], "subgraph 0 outputs field"))


def print_table(name: str, rows) -> None:
    plain = {mode: ms for mode, method, ms, _ in rows if method == "plain"}
    run = {mode: ms for mode, method, ms, _ in rows if method == "dump run"}
    print(f"  {'mode':8} {'method':11} {'tensors':>7} {'median ms':>10} {'x plain':>8} {'x dump run':>11}")
    for mode, method, ms, n in rows:
        print(
            f"  {mode:8} {method:11} {n or '':>7} {ms:10.1f} {ms / plain[mode]:8.2f} {ms / run[mode]:11.2f}"
        )
    for mode in plain:
        pt = next(ms for m, meth, ms, _ in rows if m == mode and meth == "per-tensor")
        cold = next(ms for m, meth, ms, _ in rows if m == mode and meth == "dump cold")
        print(
            f"  {mode}: dump run = {run[mode] / plain[mode]:.2f}x plain; per-tensor is "
            f"{pt / run[mode]:.0f}x slower than dump run, {pt / cold:.0f}x slower than dump cold"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--per-tensor-repeats", type=int, default=3)
    args = ap.parse_args(argv)
    print(
        f"runtime: {runtime.interpreter_class().__module__}; cpus: {os.cpu_count()}; "
        f"repeats: {args.repeats} (per-tensor: {args.per_tensor_repeats})"
    )
    for path in args.models:
        if not path.exists():
            print(
                f"\n{path.name}: missing, skipped ({'run scripts/fetch_corpus.sh' if '.corpus' in str(path) else 'run fixtures/make_fixtures.py'})"
            )
            continue
        try:
            print_table(path.name, bench_model(path, args.repeats, args.per_tensor_repeats))
        except TflRebuildError as exc:
            print(f"\n{path.name}: skipped: {exc}")


if __name__ == "__main__":
    main()
