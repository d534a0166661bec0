"""`tfl-rebuild coreml`: generate and verify the Keras model (or take a generated one), convert it
to Core ML, check the numbers against TFLite, write the package atomically."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tfl_rebuild.coreml.check import CheckResult, NotChecked, convert_checked, float16_reason
from tfl_rebuild.coreml.convert import (
    Converted,
    Options,
    check_extension,
    check_options,
    check_output,
    save_atomic,
    set_metadata,
)
from tfl_rebuild.errors import InputError, RuntimeUnavailableError
from tfl_rebuild.fileio import file_sha256, writable_file
from tfl_rebuild.rebuild.loader import find_original
from tfl_rebuild.verify.end_to_end import Report


def resolve_source(source: str, tflite: str | None, required: bool = True) -> tuple[Path | None, Path | None]:
    """(generated .py or None, .tflite) for a .tflite or generated-module argument; a module's
    .tflite is the one its sidecar records (`find_original`: one line when it is gone or changed).
    Not `required` (no check asked for), a module whose .tflite cannot be found converts alone."""
    src = Path(source)
    if src.suffix != ".py":
        return None, src
    if tflite:
        return src, Path(tflite)
    try:
        return src, find_original(src)
    except InputError:
        if required:
            raise
        return src, None


@dataclass
class CoremlResult:
    """What `convert_source` did: the saved package (None when the Keras rebuild did not verify,
    so nothing was converted), the check of the converted program, and what led there."""

    path: Path | None
    converted: Converted | None = None
    result: CheckResult | NotChecked | None = None  # None: not checked (--no-check)
    keras_report: Report | None = None  # the rebuild's verification (a .tflite source)
    keras_unverified: str | None = None  # why the rebuild could not be verified (no runtime)
    float16_failed: CheckResult | None = None  # auto precision: the float16 check that failed
    mixed: object | None = None  # coreml.mixed.MixedSearch: auto / mixed precision's search
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # converting and checking

    @property
    def ok(self) -> bool:
        """Saved, and every check that ran passed (a NotChecked program is not ok)."""
        if self.path is None or isinstance(self.result, NotChecked):
            return False
        return self.result is None or self.result.report.ok


def convert_source(
    source: str,
    output: str | None,
    opts: Options,
    tflite: str | None = None,
    do_check: bool = True,
    keras_dir: str | None = None,
    say: Callable[[str], None] = lambda text: None,
    on_rebuilt: Callable[[CoremlResult], None] = lambda done: None,
    stage: Callable[[str], None] = lambda text: None,
) -> CoremlResult:
    """Rebuild and verify a .tflite (or take a generated module), convert it to Core ML, check the
    converted program against TFLite and save it atomically. `say` gets progress lines, `on_rebuilt`
    the result so far once the Keras model is verified (before the slow conversion)."""
    from tfl_rebuild.rebuild.loader import build, load_module
    from tfl_rebuild.runtime.views import for_module
    from tfl_rebuild.tflite.reader import read_model

    py_path, tfl_path = resolve_source(source, tflite, required=do_check)
    model = read_model(str(tfl_path)) if tfl_path is not None else None
    if model is not None and py_path is not None:
        model = for_module(model, py_path)  # the signature / input shapes the module was built for
    stem = (tfl_path or py_path).stem
    out = output or f"{stem}{'.mlpackage' if opts.format == 'mlprogram' else '.mlmodel'}"
    check_extension(out, opts.format)
    check_output(out)  # before the (slow) conversion, not after it
    if model is not None:
        check_options(opts, model)  # names and label counts: before minutes of rebuilding
    done = CoremlResult(None)
    with tempfile.TemporaryDirectory(prefix="tfl-rebuild-") as tmp:
        if py_path is None:
            from tfl_rebuild.commands.pipeline import rebuild_and_verify
            from tfl_rebuild.rebuild.codegen.emit import quantized_io_notes

            def written(r) -> None:
                done.notes += r.notes + quantized_io_notes(r.model, image_hint=opts.image is None)
                if keras_dir:
                    say(f"wrote {r.py} and {r.weights.name}")

            # the Keras gate checks the stateless view only (no streaming): as before the pipeline
            r = rebuild_and_verify(
                str(tfl_path), keras_dir or tmp, verify=do_check, stream=False, written=written
            )
            model, keras_model = r.model, r.keras_model
            if isinstance(r.verify_error, RuntimeUnavailableError):
                done.keras_unverified = str(r.verify_error)
            elif r.verify_error is not None:
                raise r.verify_error
            done.keras_report = r.report
            on_rebuilt(done)
            if done.keras_report is not None and not done.keras_report.ok:
                return done  # a rebuild that does not match is not converted
        else:
            keras_model = build(load_module(py_path))
        if do_check and model is not None and sys.platform != "darwin":
            say("checking the converted MIL program with numpy (Core ML itself predicts only on macOS)")
        start = time.perf_counter()
        stage("converting to Core ML" + (" and checking the program against TFLite" if do_check else ""))
        checked = convert_checked(keras_model, model, opts, do_check, stage=stage)
    conv = checked.conv
    done.converted, done.result, done.float16_failed = conv, checked.result, checked.float16_failed
    done.mixed = checked.mixed
    set_metadata(conv.mlmodel, model, tfl_path or py_path, conv)
    if model is None:
        conv.mlmodel.user_defined_metadata["tfl_rebuild.source_sha256"] = file_sha256(py_path)
    done.seconds = time.perf_counter() - start
    done.path = save_atomic(conv.mlmodel, out)
    return done


def run_command(
    source: str,
    output: str | None,
    opts: Options,
    tflite: str | None = None,
    do_check: bool = True,
    keras_dir: str | None = None,
    console=None,
    json_out: str | None = None,
) -> int:
    """The whole `coreml` command: `convert_source`, printed; the exit code (0 ok, 1 mismatch or
    not checked). `json_out`: the result as JSON, to a file or "-" (then the text goes to stderr)."""
    from rich.console import Console
    from rich.markup import escape

    from tfl_rebuild.commands.report import print_report, stages, write_json

    con = console or Console(highlight=False, stderr=json_out == "-")
    if json_out and json_out != "-":
        writable_file(json_out)
    say = lambda text: con.print(escape(text))  # noqa: E731

    def rebuilt(done: CoremlResult) -> None:
        for note in done.notes:
            say(f"note: {note}")
        if done.keras_unverified:
            con.print(f"[yellow]Keras rebuild not verified: {escape(done.keras_unverified)}[/yellow]")
        elif done.keras_report is not None:
            print_report(done.keras_report, con)

    with stages(Console(stderr=True)) as stage:
        done = convert_source(
            source, output, opts, tflite, do_check, keras_dir, say=say, on_rebuilt=rebuilt, stage=stage
        )
    if json_out:
        write_json(result_doc(done, opts), json_out, say)
    if done.path is None:
        con.print(
            "[red]the Keras rebuild does not match the TFLite model: not converting[/red] "
            "(--no-check converts anyway)"
        )
        return 1
    if done.float16_failed is not None:
        _print_check(done.float16_failed, con, print_report)
        _print_mixed(done, con)
    conv, result = done.converted, done.result
    con.print(f"converted to a Core ML {opts.format} ({conv.precision_text()}) in {conv.seconds:.1f} s")
    if isinstance(result, CheckResult):
        _print_check(result, con, print_report)
        con.print(f"converted and checked in {done.seconds:.1f} s")
    con.print(f"wrote {escape(str(done.path))}")
    if isinstance(result, NotChecked):
        con.print(f"[yellow]not checked: {escape(result.reason)}[/yellow] (--no-check skips the check)")
        return 1
    return 0 if done.ok else 1


def result_doc(done: CoremlResult, opts: Options) -> dict:
    """`coreml --json`: what was written, the Keras verification and the Core ML check as data."""
    from tfl_rebuild.commands.report import report_doc

    def check(result) -> dict | None:
        if result is None:
            return None
        if isinstance(result, NotChecked):
            return {"checked": False, "reason": result.reason}
        return {
            "checked": True,
            "report": report_doc(result.report),
            "fp16_weight_effect": list(result.weight_effect),
            "nan_origins": list(result.nan_origins),
            "float16_overflow": list(result.overflow),
        }

    conv = done.converted
    return {
        "ok": done.ok,
        "path": None if done.path is None else str(done.path),
        "format": opts.format,
        "precision": None if conv is None else conv.options.precision,
        "mixed": None if done.mixed is None else mixed_doc(done),
        "notes": done.notes,
        "keras_verification": report_doc(done.keras_report),
        "keras_unverified": done.keras_unverified,
        "check": check(done.result),
        "float16_check_that_failed": check(done.float16_failed),
        "seconds": round(done.seconds, 2),
    }


def mixed_doc(done: CoremlResult) -> dict:
    """The mixed-precision search as data: the ops kept in float32 (and why), the share, each try."""
    conv, search = done.converted, done.mixed
    kept = conv.fp32_kept if conv is not None and conv.options.precision == "mixed" else []
    return {
        "kept": conv is not None and conv.options.precision == "mixed",
        "fp32_ops": kept,
        "fp32_why": search.why(kept),
        "fp16_share": None if not kept else conv.precision_text(),
        "attempts": [
            {"fp32_ops": a.fp32, "passed": a.passed, "fp16_share": a.share} for a in search.attempts
        ],
        "simulated": [{"fp32_ops": k, "max_rel": rel} for k, rel in search.simulated],
    }


def _print_mixed(done: CoremlResult, con) -> None:
    """Why float16 was not kept, and what the mixed-precision search kept in float32 (or tried)."""
    from rich.markup import escape

    from tfl_rebuild.coreml.mixed import failed_line, mixed_line

    reason = escape(float16_reason(done.float16_failed))
    conv, search = done.converted, done.mixed
    tries = ""
    if search is not None and search.attempts:
        tries = "; tried " + ", ".join(
            f"{a.fp32} in float32 ({'pass' if a.passed else 'fail'})" for a in search.attempts
        )
    if conv.options.precision == "mixed":
        con.print(f"[yellow]float16 not kept ({reason})[/yellow]")
        con.print(escape(mixed_line(conv) + tries))
        for line in search.why(conv.fp32_kept):
            con.print(f"  float32: {escape(line)}")
        return
    con.print(
        f"[yellow]float16 not kept ({reason}): converted with float32 instead[/yellow] "
        "(--precision float16 keeps float16)"
    )
    if search is not None:
        con.print(escape(failed_line(search)))


def _print_check(result: CheckResult, con, print_report) -> None:
    from rich.markup import escape

    print_report(result.report, con)
    if any(result.weight_effect):
        effects = ", ".join(f"{o.name} {e:.2g}" for o, e in zip(result.report.outputs, result.weight_effect))
        con.print(f"fp16 weights alone change the outputs by rel {escape(effects)} (Keras, fp32 activations)")
    if result.nan_origins:
        con.print(
            f"[yellow]NaN first made by MIL op {escape(result.nan_origins[0])}"
            + (f" (and {len(result.nan_origins) - 1} more)" if len(result.nan_origins) > 1 else "")
            + "[/yellow]"
        )
    if result.overflow:
        first = ", ".join(result.overflow[:3]) + (", ..." if len(result.overflow) > 3 else "")
        con.print(
            f"[yellow]{len(result.overflow)} MIL value(s) overflow float16 (|x| > 65504): "
            f"{escape(first)}[/yellow]"
        )
    if not result.report.ok and result.report.kind.startswith("Core ML float16"):
        con.print(
            "[yellow]float16 precision loses too much here: --precision auto or float32 converts "
            "with float32[/yellow]"
        )
