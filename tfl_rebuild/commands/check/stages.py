"""One model through every stage, in the worker process: parse, scan, Keras (the commands'
pipeline, each further signature too), Core ML. An exception ends its stage, never the row."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tfl_rebuild.commands.check.discover import safe_component, shapes_for
from tfl_rebuild.commands.check.rows import (
    PASSED,
    SKIPPED,
    UNCHECKED,
    Options,
    Row,
    Stage,
    first_reason,
    one_line,
    passes,
)
from tfl_rebuild.commands.check.scan import scan_ops
from tfl_rebuild.errors import UnsupportedOpError


def _max_lsb(report) -> float | None:
    lsbs = [o.lsb for o in report.outputs if o.lsb is not None]
    return max(lsbs) if lsbs else None


def check_model(path: str, opts: Options, keep: str | None = None, name: str | None = None) -> Row:
    """Every stage for one model; an exception ends its stage, never the row. `keep`: the folder
    the rebuild and the .mlpackage stay in (else a temporary one); `name`: the row's name."""
    start = time.perf_counter()
    row = Row(path=path, name=name or Path(path).name)
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
    shapes = shapes_for(model, opts.input_shapes)
    if row.unsupported or row.conversion_errors:  # maybe only at the dynamic dims: scan as built
        fixed = _fixed_view(target, shapes)
        if fixed is not target:  # BirdNET's RANGE lengths fold once its dims are fixed
            row.unsupported, row.conversion_errors = scan_ops(fixed)
    for entry in row.unsupported if why else ():  # the variable ops stayed: say why
        if entry["op"].split()[0] in VARIABLE_OPS:
            entry["detail"] = why
    if row.unsupported:
        listed = [u["op"] + (f" x{u['count']}" if u["count"] > 1 else "") for u in row.unsupported]
        detail = next((u["detail"] for u in row.unsupported if u["detail"]), "")
        row.keras.status, row.coreml.status = "unsupported", SKIPPED
        row.keras.reason = f"{len(listed)} op type(s) not supported: {', '.join(listed)}" + (
            f" ({detail})" if detail else ""
        )
        row.reason = row.keras.reason
        return
    keras_model, model, rebuilt = _keras_stage(row, model, opts, outdir, shapes)
    for backend in opts.backends:  # run only on a verified rebuild
        row.backends[backend] = Stage(status=SKIPPED, reason="the Keras rebuild did not pass")
    if opts.backends and row.keras.status in PASSED:
        _backend_stages(row, opts, rebuilt)
    if keras_model is not None:
        row.conversion_errors = []  # the scan called converters out of context; the real build worked
    if opts.coreml and keras_model is not None and row.keras.status in PASSED | UNCHECKED:
        _coreml_stage(row, model, keras_model, opts, outdir if keep else None)
    elif row.coreml.status == "-":
        row.coreml.status = SKIPPED
        row.coreml.reason = "--no-coreml" if not opts.coreml else "the Keras rebuild did not pass"
    row.outcome = "pass" if passes(row, opts) else "fail"
    row.reason = "" if row.outcome == "pass" else first_reason(row)


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


def _fixed_view(model, shapes: tuple[str, ...]):
    """The model as the rebuild takes it (views.py: dynamic dims fixed), or as it is when that fails
    (the rebuild then reports why)."""
    from tfl_rebuild.runtime.views import make_view

    try:
        return make_view(model, input_shapes=shapes).model
    except Exception:
        return model


def _keras_stage(row: Row, model, opts: Options, outdir: Path, shapes: tuple[str, ...]):
    """(the Keras model or None, the model it rebuilds: with its dynamic dims fixed, see views.py,
    the pipeline's Rebuild or None)."""
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
        return None, model, None
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
            if report.batch is not None:
                _add_note(stage, report.batch.text())
            stage.max_rel, stage.lsb = report.max_rel, _max_lsb(report)
            stage.status = "verified" if report.ok else "mismatch"
            stage.reason = "" if report.ok else report.mismatch()
            if report.ok:
                _other_signatures(stage, rebuilt.original, outdir)
        except Exception as exc:
            stage.status, stage.reason = "failed", f"verification: {one_line(exc)}"
    stage.seconds = time.perf_counter() - start
    return rebuilt.keras_model, rebuilt.model, rebuilt


def _backend_stages(row: Row, opts: Options, rebuilt) -> None:
    """The written rebuild verified on each of --backends, each in its worker (commands/backends.py)."""
    from tfl_rebuild.commands.backends import Workers

    with Workers() as workers:
        for backend in opts.backends:
            stage = row.backends[backend] = Stage()
            try:
                result = workers.verify(backend, rebuilt)
            except Exception as exc:
                stage.status, stage.reason = "failed", one_line(exc)
                continue
            stage.seconds, stage.max_rel = result.seconds, result.max_rel
            if result.error:
                stage.status, stage.reason = "failed", result.error
            else:
                lsbs = [o["lsb"] for o in result.report["outputs"] if o["lsb"] is not None]
                stage.lsb = max(map(float, lsbs)) if lsbs else None
                stage.status = "verified" if result.ok else "mismatch"
                stage.reason = "" if result.ok else f"on {backend}: the rebuild differs from TFLite"


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
    from tfl_rebuild.coreml.mixed import failed_line, mixed_line

    stage, start = row.coreml, time.perf_counter()
    try:
        done = convert_checked(keras_model, model, cm.Options(precision=opts.precision), opts.verify)
        conv, result = done.conv, done.result
        stage.status, stage.precision = "converted", conv.precision_text()
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
            if conv.options.precision == "mixed":
                stage.note += f"; {mixed_line(conv)}"
            elif done.mixed is not None:
                stage.note += f"; {failed_line(done.mixed)}"
        if keep is not None:
            cm.set_metadata(conv.mlmodel, model, Path(row.path), conv)
            cm.save_atomic(conv.mlmodel, keep / f"{safe_component(Path(row.path).stem)}.mlpackage")
    except Exception as exc:
        stage.status = "unsupported" if isinstance(exc, UnsupportedOpError) else "failed"
        stage.reason = one_line(exc)
    stage.seconds = time.perf_counter() - start
