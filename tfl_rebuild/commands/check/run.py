"""`tfl-rebuild check PATH...`: every model end to end, one row each.

Per model: parse; list every op we cannot convert (all of them, not the first); generate the Keras
rebuild and verify it against TFLite (`keras_job` / `verify`); convert it to Core ML and check the
converted program's numbers against TFLite (`coreml` / `coreml_check`).

Each model runs in its own Python process (`python -m tfl_rebuild.commands.check.run --worker ...`), at most
`jobs` at once: a segfault, an uncaught exception, the OOM killer or a hang in one model ends that
process only, and its row says which. The worker writes its row as JSON to a file (stdout and
stderr belong to TensorFlow's chatter; their last line explains a crash).

Stage statuses: Keras verified | mismatch | not verified (the runtime cannot run the model) |
built (--no-verify) | unsupported | failed; Core ML checked | mismatch | not checked (the MIL
evaluator cannot run the program) | converted (--no-verify) | unsupported | failed | skipped.
A row passes when both stages are verified/checked (built/converted under --no-verify; Core ML
skipped under --no-coreml): "not verified" is never a pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tfl_rebuild.errors import InputError, TflRebuildError, UnsupportedOpError

DEFAULT_TIMEOUT = 1800.0  # seconds per model; the largest corpus models need minutes on a busy CPU
REASON_CHARS = 300

# Stage statuses. A stage passes only when it was checked and matched (or the user asked to skip it).
PASSED = {"verified", "checked"}
UNCHECKED = {"built", "converted"}  # what --no-verify leaves; passes only under --no-verify
SKIPPED = "skipped"


@dataclass
class Options:
    verify: bool = True
    coreml: bool = True
    precision: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    # --input-shape specs; each applies to the models it fits (an input of that name, or the one input)
    input_shapes: tuple[str, ...] = ()


@dataclass
class Stage:
    status: str = "-"  # "-": not reached
    max_rel: float | None = None
    lsb: float | None = None  # quantized outputs: max error in LSB of the output scale
    seconds: float = 0.0
    reason: str = ""
    precision: str | None = None  # Core ML: the compute precision converted with
    note: str = ""  # what a passing stage still has to say (Keras: the signature / input shapes rebuilt;
    # Core ML: why float16 was not kept)


@dataclass
class Row:
    path: str
    name: str
    outcome: str = "fail"  # pass | fail | error (unreadable) | crash | timeout
    ops: int | None = None
    params: int | None = None
    quantization: str | None = None
    unsupported: list[dict] = field(default_factory=list)  # {"op": "custom Foo" | "BAR v2", "count": n}
    conversion_errors: list[str] = field(default_factory=list)
    keras: Stage = field(default_factory=Stage)
    coreml: Stage = field(default_factory=Stage)
    seconds: float = 0.0
    reason: str = ""  # the first failure, one line

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = dict(d)
        d["keras"], d["coreml"] = Stage(**d["keras"]), Stage(**d["coreml"])
        return cls(**d)


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error, prefixed with its type unless it is one of ours."""
    text = exc if isinstance(exc, str) else str(exc)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not isinstance(exc, (str, TflRebuildError)):
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


# --- which models -------------------------------------------------------------------------------


def collect_models(paths: list[str]) -> list[Path]:
    """Files as given, directories as every *.tflite below them (sorted); one-line errors."""
    found: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            models = sorted(m for m in path.rglob("*.tflite") if m.is_file())
            if not models:
                raise InputError(f"{p}: no .tflite files in this directory")
            found += models
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{p}: no such file or directory")
    unique: dict[Path, Path] = {}
    for m in found:
        unique.setdefault(m.resolve(), m)
    return list(unique.values())


def keep_names(models: list[Path]) -> list[str]:
    """One directory name per model under --keep: its stem, numbered when stems repeat."""
    seen: dict[str, int] = {}
    names = []
    for m in models:
        n = seen[m.stem] = seen.get(m.stem, 0) + 1
        names.append(m.stem if n == 1 else f"{m.stem}_{n}")
    return names


# --- one model (runs in the worker process) -------------------------------------------------------


def reachable_subgraphs(model) -> list[int]:
    """Subgraph 0 and every subgraph its control-flow ops (WHILE, IF, CALL_ONCE, ...) call."""
    order, todo = [], [0]
    while todo:
        i = todo.pop()
        if i in order or not 0 <= i < len(model.subgraphs):
            continue
        order.append(i)
        for op in model.subgraphs[i].operators:
            for key, v in op.options.items():
                if (key.endswith("subgraph_index") or key == "subgraph") and isinstance(v, int):
                    todo.append(v)
    return sorted(order)


def scan_ops(model) -> tuple[list[dict], list[str]]:
    """Every op the rebuild would refuse, not just the first: (ops the registry does not take, as
    {"op", "count", "detail"}; ConversionErrors the main subgraph's converters raise)."""
    from tfl_rebuild.rebuild.ops import ConversionError, lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare

    missing: dict[str, dict] = {}
    errors: list[str] = []
    try:
        ctx, main_ops = prepare(model)
    except Exception:  # the rebuild reports this; still list what the registry lacks
        ctx, main_ops = None, list(model.main.operators)
    for i in reachable_subgraphs(model):
        sg = model.subgraphs[i]
        for op in main_ops if i == 0 else _prepared_ops(model, i):
            try:
                fn = lookup(op, sg)
            except TflRebuildError as exc:
                what = f"custom {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
                # "no converter for X" says nothing the op name does not; other refusals explain why
                detail = "" if str(exc).startswith("no converter for") else one_line(exc)
                missing.setdefault(what, {"op": what, "count": 0, "detail": detail})["count"] += 1
                continue
            if i != 0 or ctx is None:
                continue  # called subgraphs are converted within their control-flow op, not alone
            try:
                fn(op, ctx)
            except ConversionError as exc:
                errors.append(f"{op.key} (op {op.index}): {one_line(exc)}")
            except Exception:  # a converter bug surfaces again, with its traceback, in the rebuild
                pass
    return list(missing.values()), errors


def _prepared_ops(model, index: int) -> list:
    """A called subgraph's ops after passes.prepare (which folds e.g. DEQUANTIZE of fp16 weights),
    as the rebuild converts them."""
    from tfl_rebuild.rebuild.passes.pipeline import prepare

    try:
        return prepare(model, index)[1]
    except Exception:  # the rebuild reports this; still list what the registry lacks
        return list(model.subgraphs[index].operators)


def _max_lsb(report) -> float | None:
    lsbs = [o.lsb for o in report.outputs if o.lsb is not None]
    return max(lsbs) if lsbs else None


def check_model(path: str, opts: Options, keep: str | None = None) -> Row:
    """Every stage for one model; an exception ends its stage, never the row."""
    start = time.perf_counter()
    row = Row(path=path, name=Path(path).name)
    try:
        with tempfile.TemporaryDirectory(prefix="tfl-rebuild-check-") as tmp:
            _run_stages(row, opts, Path(keep) if keep else Path(tmp), keep is not None)
    finally:
        row.seconds = time.perf_counter() - start
    return row


def _run_stages(row: Row, opts: Options, outdir: Path, keep: bool) -> None:
    from tfl_rebuild.runtime.views import VARIABLE_OPS
    from tfl_rebuild.tflite.analysis import params_by_dtype, quantization_kind
    from tfl_rebuild.tflite.reader import read_model

    try:
        model = read_model(row.path)
    except Exception as exc:
        row.outcome, row.reason = "error", one_line(exc)
        return
    row.ops = sum(len(sg.operators) for sg in model.subgraphs)
    row.params = sum(params_by_dtype(model).values())
    row.quantization = quantization_kind(model)
    target, why = _stateless(model)
    row.unsupported, row.conversion_errors = scan_ops(target)
    for entry in row.unsupported if why else ():  # the variable ops stayed: say why
        if entry["op"].split()[0] in VARIABLE_OPS:
            entry["detail"] = why
    shapes = shapes_for(model, opts.input_shapes)
    if (
        row.conversion_errors and not row.unsupported
    ):  # maybe only at the stored dynamic shapes: scan as built
        row.conversion_errors = scan_ops(_fixed_view(model, shapes))[1]
    if row.unsupported:
        listed = [u["op"] + (f" x{u['count']}" if u["count"] > 1 else "") for u in row.unsupported]
        detail = next((u["detail"] for u in row.unsupported if u["detail"]), "")
        row.keras.status, row.coreml.status = "unsupported", SKIPPED
        row.keras.reason = f"{len(listed)} op type(s) not supported: {', '.join(listed)}" + (
            f" ({detail})" if detail else ""
        )
        row.reason = row.keras.reason
        return
    keras_model, model = _keras_stage(row, model, opts, outdir, shapes)
    if keras_model is not None:
        row.conversion_errors = []  # the scan called converters out of context; the real build worked
    if opts.coreml and keras_model is not None and row.keras.status in PASSED | UNCHECKED:
        _coreml_stage(row, model, keras_model, opts, outdir if keep else None)
    elif row.coreml.status == "-":
        row.coreml.status = SKIPPED
        row.coreml.reason = "--no-coreml" if not opts.coreml else "the Keras rebuild did not pass"
    row.outcome = "pass" if passes(row, opts) else "fail"
    row.reason = "" if row.outcome == "pass" else _first_reason(row)


def _stateless(model):
    """(what the rebuild converts, None): the model with its resource variables made inputs and
    outputs (views.state_view), or the model itself; or (the model, why its state cannot be made
    explicit)."""
    from tfl_rebuild.runtime.views import ViewError, has_variables, state_view

    if not has_variables(model):
        return model, None
    try:
        return state_view(model)[0], None
    except ViewError as exc:
        return model, one_line(exc)


def shapes_for(model, specs) -> tuple[str, ...]:
    """The --input-shape specs that fit this model (views.parse_input_shapes takes them); check runs
    many models, so a spec naming another model's input is left out here rather than refused."""
    from tfl_rebuild.runtime.views import parse_input_shapes

    fitting = []
    for spec in specs:
        try:
            parse_input_shapes(model, [spec])
        except InputError:
            continue
        fitting.append(spec)
    return tuple(fitting)


def unfit_input_shapes(models: list[Path], specs) -> list[str]:
    """The specs no model takes (a typo would otherwise change nothing, silently). Models that do
    not read are skipped here: their rows say why."""
    from tfl_rebuild.tflite.reader import read_model

    left = list(specs)
    for path in models:
        if not left:
            break
        try:
            model = read_model(str(path))
        except TflRebuildError:
            continue
        left = [s for s in left if not shapes_for(model, [s])]
    return left


def _fixed_view(model, shapes: tuple[str, ...]):
    """The model as the rebuild takes it (views.py: dynamic dims fixed), or as it is when that fails
    (the rebuild then reports why)."""
    from tfl_rebuild.runtime.views import make_view

    try:
        return make_view(model, input_shapes=shapes).model
    except Exception:
        return model


def passes(row: Row, opts: Options) -> bool:
    ok = PASSED if opts.verify else PASSED | UNCHECKED
    return row.keras.status in ok and (
        row.coreml.status in ok or (not opts.coreml and row.coreml.status == SKIPPED)
    )


def _first_reason(row: Row) -> str:
    for name, stage in (("Keras", row.keras), ("Core ML", row.coreml)):
        if stage.status not in PASSED | UNCHECKED | {SKIPPED}:
            return f"{name}: {stage.reason or stage.status}"
    return row.reason


def _keras_stage(row: Row, model, opts: Options, outdir: Path, shapes: tuple[str, ...]):
    """(the Keras model or None, the model it rebuilds: with its dynamic dims fixed, see views.py)."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify
    from tfl_rebuild.errors import RuntimeUnavailableError

    stage, start = row.keras, time.perf_counter()

    def written(r) -> None:  # which signature / input shape was rebuilt (views.py)
        stage.note = "; ".join(r.notes)

    try:
        rebuilt = rebuild_and_verify(
            row.path, str(outdir), input_shapes=shapes, verify=opts.verify, written=written
        )
    except Exception as exc:
        stage.status, stage.reason = "failed", one_line(exc)
        stage.seconds = time.perf_counter() - start
        return None, model
    stage.status = "built"
    report, error = rebuilt.report, rebuilt.verify_error
    if isinstance(error, RuntimeUnavailableError):
        stage.status, stage.reason = "not verified", one_line(error)
    elif error is not None:
        stage.status, stage.reason = "failed", f"verification: {one_line(error)}"
    elif report is not None:
        try:
            if report.stream is not None:
                _add_note(stage, report.stream.text())
            stage.max_rel, stage.lsb = report.max_rel, _max_lsb(report)
            stage.status = "verified" if report.ok else "mismatch"
            stage.reason = "" if report.ok else report.mismatch()
            if report.ok:
                _other_signatures(stage, rebuilt.original, outdir)
        except Exception as exc:
            stage.status, stage.reason = "failed", f"verification: {one_line(exc)}"
    stage.seconds = time.perf_counter() - start
    return rebuilt.keras_model, rebuilt.model


def _add_note(stage: Stage, text: str) -> None:
    stage.note = "; ".join(filter(None, [stage.note, text]))


def _other_signatures(stage: Stage, original, outdir: Path) -> None:
    """Each signature besides subgraph 0's (an LLM's decode beside its prefill) rebuilt and verified
    as `keras --signature` does; the stage keeps the worst. One that cannot be viewed alone (its
    subgraph also called by control flow) is noted, as `keras --signature` refuses it too."""
    from tfl_rebuild.commands.pipeline import rebuild_and_verify
    from tfl_rebuild.runtime.views import ViewError

    main = next((s.key for s in original.signatures if s.subgraph_index == 0), None)
    for k, sig in enumerate(s for s in original.signatures if s.key != main):
        try:
            rebuilt = rebuild_and_verify(
                str(original.path), str(outdir / f"signature_{k}"), signature=sig.key
            )
        except ViewError as exc:
            _add_note(stage, f"signature {sig.key!r} not checked: {one_line(exc)}")
            continue
        except Exception as exc:
            error = exc
        else:
            error = rebuilt.verify_error
        if error is not None:
            stage.status, stage.reason = "failed", f"signature {sig.key!r}: {one_line(error)}"
            return
        report = rebuilt.report
        stage.max_rel = max(stage.max_rel or 0.0, report.max_rel)
        lsb = _max_lsb(report)
        stage.lsb = lsb if stage.lsb is None else max(stage.lsb, lsb or 0.0)
        if not report.ok:
            stage.status, stage.reason = "mismatch", f"signature {sig.key!r}: {report.mismatch()}"
            return
        err = f"{lsb:.2f} LSB" if lsb is not None else f"rel {report.max_rel:.2g}"
        _add_note(stage, f"signature {sig.key!r} verified too ({err})")


def _coreml_stage(row: Row, model, keras_model, opts: Options, keep: Path | None) -> None:
    from tfl_rebuild.coreml import convert as cm
    from tfl_rebuild.coreml.check import NotChecked, convert_checked, float16_reason

    stage, start = row.coreml, time.perf_counter()
    try:
        done = convert_checked(keras_model, model, cm.Options(precision=opts.precision), opts.verify)
        conv, result = done.conv, done.result
        stage.status, stage.precision = "converted", conv.options.precision
        if isinstance(result, NotChecked):
            stage.status, stage.reason = "not checked", one_line(result.reason)
        elif result is not None:
            report = result.report
            stage.max_rel, stage.lsb = report.max_rel, _max_lsb(report)
            stage.status = "checked" if report.ok else "mismatch"
            stage.reason = "" if report.ok else report.mismatch()
            if not report.ok and conv.options.precision == "float16":
                stage.reason += "; float16 may lose too much here: try --precision auto or float32"
        if done.float16_failed is not None:
            stage.note = f"float16 not kept: {float16_reason(done.float16_failed)}"
        if keep is not None:
            cm.set_metadata(conv.mlmodel, model, Path(row.path), conv)
            cm.save_atomic(conv.mlmodel, keep / f"{Path(row.path).stem}.mlpackage")
    except Exception as exc:
        stage.status = "unsupported" if isinstance(exc, UnsupportedOpError) else "failed"
        stage.reason = one_line(exc)
    stage.seconds = time.perf_counter() - start


# --- the driver: one worker process per model ------------------------------------------------------


def worker_command(model: Path, result: Path, opts: Options, keep: Path | None) -> list[str]:
    """The command that checks one model and writes its row to `result` (tests swap it for a crash)."""
    cmd = [
        sys.executable,
        "-m",
        "tfl_rebuild.commands.check.run",
        "--worker",
        str(model),
        str(result),
        json.dumps(asdict(opts)),
    ]
    return cmd + ([str(keep)] if keep else [])


_LIVE: set[subprocess.Popen] = set()  # running workers, killed together when the user interrupts
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def run_one(model: Path, opts: Options, keep: Path | None = None) -> Row:
    """Check one model in its own process; a crash or a timeout becomes the row's reason."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfl-rebuild-worker-") as tmp:
        result, log = Path(tmp) / "row.json", Path(tmp) / "log.txt"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        with open(log, "wb") as out:
            with _LIVE_LOCK:
                if _STOPPING.is_set():
                    raise KeyboardInterrupt
                proc = subprocess.Popen(
                    worker_command(model, result, opts, keep),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )  # Ctrl-C reaches us only: run_all stops it
                _LIVE.add(proc)
            try:
                code = proc.wait(timeout=opts.timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return _failed_row(model, "timeout", f"timed out after {opts.timeout:g} s", start)
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        if code == 0 and result.is_file():
            try:
                return Row.from_dict(json.loads(result.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError) as exc:
                return _failed_row(model, "crash", f"worker wrote an unreadable row: {one_line(exc)}", start)
        return _failed_row(model, "crash", _crash_reason(code, log), start)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own session: only what it started
    except ProcessLookupError:
        pass
    proc.wait()


def _crash_reason(code: int, log: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"worker killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        what = f"worker exited with code {code}"
    lines = [
        ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
    ]
    return one_line(f"{what}: {lines[-1]}" if lines else what)


def _failed_row(model: Path, outcome: str, reason: str, start: float) -> Row:
    row = Row(path=str(model), name=model.name, outcome=outcome, reason=reason)
    row.seconds = time.perf_counter() - start
    return row


def run_all(
    models: list[Path],
    opts: Options,
    jobs: int = 1,
    keep: Path | None = None,
    progress: Callable[[int, Row], None] | None = None,
) -> list[Row]:
    """Rows in the order of `models`; `progress(done, row)` as each finishes."""
    names = keep_names(models)
    rows: list[Row | None] = [None] * len(models)
    _STOPPING.clear()
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = {
        pool.submit(run_one, m, opts, keep / n if keep else None): k
        for k, (m, n) in enumerate(zip(models, names))
    }
    try:
        for done, fut in enumerate(as_completed(futures), 1):
            k = futures[fut]
            try:
                rows[k] = fut.result()
            except Exception as exc:  # cannot start a process, disk full: that model's row, not the run
                rows[k] = _failed_row(
                    models[k], "crash", f"could not run the worker: {one_line(exc)}", time.perf_counter()
                )
            if progress:
                progress(done, rows[k])
    except BaseException:  # Ctrl-C: no new workers, and the running ones die with us
        _STOPPING.set()
        with _LIVE_LOCK:
            for proc in list(_LIVE):
                _kill(proc)
        pool.shutdown(wait=True, cancel_futures=True)  # quick: every worker it waits on is dead
        raise
    pool.shutdown()
    return [r for r in rows if r is not None]


def _worker_main(argv: list[str]) -> int:
    model, result, opts_json = argv[:3]
    keep = argv[3] if len(argv) > 3 else None
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    raw = json.loads(opts_json)
    opts = Options(
        **{**raw, "input_shapes": tuple(raw.get("input_shapes", ()))}
    )  # JSON made the tuple a list
    try:
        row = check_model(model, opts, keep)
    except BaseException as exc:  # a bug of ours: still one row, with the traceback in the log
        traceback.print_exc()
        row = Row(
            path=model, name=Path(model).name, outcome="crash", reason=f"checker error: {one_line(exc)}"
        )
    from tfl_rebuild.fileio import atomic_output

    with atomic_output(result, "w") as f:
        json.dump(asdict(row), f)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main(sys.argv[2:]))
    sys.exit(
        "usage: python -m tfl_rebuild.commands.check.run --worker MODEL RESULT OPTIONS_JSON [KEEP_DIR] (use `tfl-rebuild check`)"
    )
