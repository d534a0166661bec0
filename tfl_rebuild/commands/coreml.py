"""`tfl-rebuild coreml`: generate and verify the Keras model (or take a generated one), convert it
to Core ML, check the numbers against TFLite, write the package atomically."""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

from tfl_rebuild.coreml.check import CheckResult, NotChecked, convert_checked, float16_reason
from tfl_rebuild.coreml.convert import Options, check_extension, check_output, save_atomic, set_metadata
from tfl_rebuild.errors import RuntimeUnavailableError
from tfl_rebuild.tflite.ir import Model


def resolve_source(source: str, tflite: str | None) -> tuple[Path | None, Path | None]:
    """(generated .py or None, .tflite or None) for a .tflite or generated-module argument."""
    src = Path(source)
    if src.suffix != ".py":
        return None, src
    if tflite:
        return src, Path(tflite)
    sidecar = src.with_name(f"{src.stem}_tensors.json")
    try:
        name = json.loads(sidecar.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        name = None
    if isinstance(name, str) and name and Path(name).name == name and (src.parent / name).is_file():
        return src, src.parent / name
    return src, None


def source_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_command(
    source: str,
    output: str | None,
    opts: Options,
    tflite: str | None = None,
    do_check: bool = True,
    keras_dir: str | None = None,
    console=None,
) -> int:
    """The whole `coreml` command; returns the exit code (0 ok, 1 mismatch or not checked)."""
    from rich.console import Console
    from rich.markup import escape

    from tfl_rebuild.rebuild.loader import build, load_module
    from tfl_rebuild.tflite.reader import read_model
    from tfl_rebuild.verify.end_to_end import print_report

    con = console or Console(highlight=False)
    from tfl_rebuild.runtime.views import for_module

    py_path, tfl_path = resolve_source(source, tflite)
    model = read_model(str(tfl_path)) if tfl_path is not None else None
    if model is not None and py_path is not None:
        model = for_module(model, py_path)  # the signature / input shapes the module was built for
    stem = (tfl_path or py_path).stem
    out = output or f"{stem}{'.mlpackage' if opts.format == 'mlprogram' else '.mlmodel'}"
    check_extension(out, opts.format)
    check_output(out)  # before the (slow) conversion, not after it
    with tempfile.TemporaryDirectory(prefix="tfl-rebuild-") as tmp:
        if py_path is None:
            from tfl_rebuild.commands.keras import write_generated
            from tfl_rebuild.rebuild.codegen.emit import quantized_io_notes

            notes: list[str] = []
            model, py_path, w_path = write_generated(str(tfl_path), keras_dir or tmp, notes=notes)
            for note in notes + quantized_io_notes(model, image_hint=opts.image is None):
                con.print(f"note: {escape(note)}")
            keras_model = build(load_module(py_path), w_path)
            if keras_dir:
                con.print(f"wrote {escape(str(py_path))} and {escape(w_path.name)}")
            if do_check and not _keras_verified(model, keras_model, con, print_report):
                return 1
        else:
            keras_model = build(load_module(py_path))
        if do_check and model is not None and sys.platform != "darwin":
            con.print("checking the converted MIL program with numpy (Core ML itself predicts only on macOS)")
        start = time.perf_counter()
        done = convert_checked(keras_model, model, opts, do_check)
    conv, result = done.conv, done.result
    if done.float16_failed is not None:
        _print_check(done.float16_failed, con, print_report)
        con.print(
            f"[yellow]float16 not kept ({escape(float16_reason(done.float16_failed))}): "
            "converted with float32 instead[/yellow] (--precision float16 keeps float16)"
        )
    con.print(f"converted to a Core ML {opts.format} ({conv.options.precision}) in {conv.seconds:.1f} s")
    set_metadata(conv.mlmodel, model, tfl_path or py_path, conv)
    if model is None:
        conv.mlmodel.user_defined_metadata["tfl_rebuild.source_sha256"] = source_sha256(py_path)
    if isinstance(result, CheckResult):
        _print_check(result, con, print_report)
        con.print(f"converted and checked in {time.perf_counter() - start:.1f} s")
    save_atomic(conv.mlmodel, out)
    con.print(f"wrote {escape(out)}")
    if isinstance(result, NotChecked):
        con.print(f"[yellow]not checked: {escape(result.reason)}[/yellow] (--no-check skips the check)")
        return 1
    return 0 if result is None or result.report.ok else 1


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


def _keras_verified(model: Model, keras_model, con, print_report) -> bool:
    from rich.markup import escape

    from tfl_rebuild.verify.end_to_end import verify

    try:
        report = verify(model, keras_model)
    except RuntimeUnavailableError as exc:
        con.print(f"[yellow]Keras rebuild not verified: {escape(str(exc))}[/yellow]")
        return True
    print_report(report, con)
    if not report.ok:
        con.print(
            "[red]the Keras rebuild does not match the TFLite model: not converting[/red] "
            "(--no-check converts anyway)"
        )
    return report.ok
