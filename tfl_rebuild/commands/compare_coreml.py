"""`tfl-rebuild compare model.tflite model.mlpackage`: TFLite vs its Core ML conversion, op by op.

The layer names that pair the two come from the rebuild (`keras` writes them in the
`_tensors.json` sidecar): it is generated again into a temporary folder (no build, no check), the
same names `coreml` traced. The data come from coreml/compare.py; rendering is compare_models'.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from tfl_rebuild.commands.compare_models import print_report, write_plot
from tfl_rebuild.errors import InputError
from tfl_rebuild.fileio import atomic_output, writable_file
from tfl_rebuild.tflite.reader import read_model


def layer_tensors(model_path: str) -> tuple[object, dict[str, int]]:
    """(the rebuilt view of the model, Keras layer -> its TFLite output tensor) from a fresh rebuild."""
    from tfl_rebuild.commands.pipeline import write_rebuild

    with tempfile.TemporaryDirectory(prefix="tfl-rebuild-") as tmp:
        r = write_rebuild(model_path, tmp)
    layers: dict[str, int] = {}
    for entry in r.tensors:
        if entry.get("layer") and entry.get("output", 0) == 0:
            layers.setdefault(entry["layer"], int(entry["tensor"]))
    return r.model, layers


def run(
    model: str,
    package: str,
    seed: int = 0,
    json_out: str | None = None,
    plot: str | None = None,
    explorer: str | None = None,
    sqnr: float | None = None,
    local: bool = False,
    console=None,
    inputs=None,
) -> int:
    """Compare, render, write; the exit code: 0 no pair under the SQNR threshold, 1 one is."""
    from tfl_rebuild.coreml.compare import compare_coreml, load_program

    if inputs is not None and inputs.specs:
        raise InputError(
            "--input is for TFLite models; against Core ML the inputs are seeded (--random SEED)"
        )
    if explorer or local:
        raise InputError(
            "--model-explorer and --local are for `compare MODEL MODULE.py`, not a Core ML model"
        )
    if sqnr is not None and not math.isfinite(sqnr):
        raise InputError(f"--sqnr {sqnr} must be a finite number of dB")
    if plot:
        from tfl_rebuild.commands.compare import check_plot_path

        check_plot_path(plot)
    for path in (plot, None if json_out in (None, "-") else json_out):
        if path:
            writable_file(path)
    _, spec = load_program(package)  # a package that is not an ML program: one line before the rebuild
    made_from = spec.description.metadata.userDefined.get("tfl_rebuild.source_sha256")
    if made_from and made_from != read_model(model).sha256:
        raise InputError(
            f"{package} was converted from another .tflite than {Path(model).name} (sha256 differs)"
        )
    view, layers = layer_tensors(model)
    result = compare_coreml(view, package, layers, seed=seed, threshold_db=sqnr)
    if json_out == "-":
        import click

        click.echo(result.to_json())
    else:
        if json_out:
            with atomic_output(json_out, "w") as f:
                f.write(result.to_json() + "\n")
        print_report(result, console)
    if plot:
        write_plot(result, plot)
    return 0 if result.flagged is None else 1
