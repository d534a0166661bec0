"""`tfl-rebuild compare model.tflite model.mlpackage`: TFLite vs its Core ML conversion, op by op.

The layer names that pair the two come from the rebuild (`keras` writes them in the
`_tensors.json` sidecar): it is generated again into a temporary folder (no build, no check), the
same names `coreml` traced. The data come from coreml/compare.py; rendering is compare_models'.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tfl_rebuild.commands.compare_models import check_outputs, write_outputs
from tfl_rebuild.errors import InputError
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

    if explorer or local:
        raise InputError(
            "--model-explorer and --local are for `compare MODEL MODULE.py`, not a Core ML model"
        )
    check_outputs(sqnr, json_out, plot, None)
    _, spec = load_program(package)  # a package that is not an ML program: one line before the rebuild
    made_from = spec.description.metadata.userDefined.get("tfl_rebuild.source_sha256")
    if made_from and made_from != read_model(model).sha256:
        raise InputError(
            f"{package} was converted from another .tflite than {Path(model).name} (sha256 differs)"
        )
    values = None
    if inputs is not None and inputs.specs:  # the user's own inputs (a photo), before the rebuild
        from tfl_rebuild.runtime.interpreter import make_interpreter

        values, _ = inputs.load(make_interpreter(model).get_input_details(), seed)
    view, layers = layer_tensors(model)
    result = compare_coreml(view, package, layers, seed=seed, threshold_db=sqnr, values=values)
    return write_outputs(result, console, json_out, plot, None)
