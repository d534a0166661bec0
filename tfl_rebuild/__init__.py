"""tfl-rebuild: see inside TensorFlow Lite models, debug them layer by layer, rebuild them in Keras.

The Python API. Each function is what the command of the same name does, returning data instead
of printing; errors are `TflRebuildError` subclasses with a one-line message. Importing this
package is cheap: TensorFlow, Keras and coremltools load only when a function needs them.

    import tfl_rebuild as tr

    model = tr.read_model("m.tflite")          # the parsed model (ir.Model)
    summary = tr.inspect("m.tflite")           # what `inspect --json` prints, as a dict
    arrays = tr.weights("m.tflite", layout="keras")
    tensors = tr.dump("m.tflite", seed=0)      # every intermediate tensor: {name: array}
    result = tr.rebuild("m.tflite", "out/")    # out/m.py + m.weights.h5; result.report
    table = tr.compare("m.tflite", "out/m.py") # or a second .tflite (float vs int8)
    done = tr.to_coreml("m.tflite", "m.mlpackage")
    rows = tr.check(["models/"])
"""

from __future__ import annotations

__version__ = "0.1.0"

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from tfl_rebuild.commands.check.rows import Row
    from tfl_rebuild.commands.coreml import CoremlResult
    from tfl_rebuild.commands.pipeline import Rebuild
    from tfl_rebuild.tflite.ir import Model
    from tfl_rebuild.verify.compare import Comparison
    from tfl_rebuild.verify.cross import CrossComparison

PathLike = str | os.PathLike

__all__ = [
    "__version__",
    "check",
    "compare",
    "dump",
    "inspect",
    "read_model",
    "rebuild",
    "to_coreml",
    "weights",
]


def read_model(path: PathLike | bytes) -> Model:
    """Parse a .tflite file (or its bytes) into the model: subgraphs, tensors, operators, weights.

    Needs no TensorFlow. Raises ModelFormatError (one line) for a file that is not a valid model."""
    from tfl_rebuild.tflite.reader import read_model as _read

    return _read(path)


def inspect(path: PathLike | bytes) -> dict:
    """The model summary `tfl-rebuild inspect --json` prints: sizes, quantization kind,
    parameters by dtype, signatures, metadata, and per subgraph its ops and tensors."""
    from tfl_rebuild.tflite.analysis import summarize

    return summarize(read_model(path))


def weights(path: PathLike | bytes, layout: str = "raw", dequantize: bool = False) -> dict[str, np.ndarray]:
    """Every constant tensor, keyed by tensor name (later subgraphs prefixed `subgraph<N>/`).

    layout="keras" transposes conv / depthwise / transposed-conv / dense kernels to Keras layout;
    dequantize=True gives quantized and fp16 constants as float32."""
    from tfl_rebuild.tflite.weights import constant_arrays

    if layout not in ("raw", "keras"):
        from tfl_rebuild.errors import InputError

        raise InputError(f"layout must be 'raw' or 'keras', not {layout!r}")
    return constant_arrays(read_model(path), layout, dequantize)


def dump(
    path: PathLike | bytes,
    inputs: Any = None,
    *,
    select: str | None = None,
    ops: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Run the model once with every intermediate tensor exposed: {tensor name: array}, in op order.

    inputs: None (seeded random), one array, a list in input order, or {input name: array}.
    select: a regex on tensor names; ops: op types to keep (e.g. ["CONV_2D"]). Needs a TFLite
    runtime (the `litert` extra)."""
    from tfl_rebuild.runtime.outputter import dump as _dump

    result = _dump(
        str(path) if isinstance(path, os.PathLike) else path, inputs, select=select, ops=ops, seed=seed
    )
    return dict(result)


def rebuild(
    path: PathLike,
    outdir: PathLike,
    *,
    name: str | None = None,
    verify: bool = True,
    signature: str | None = None,
    input_shapes: Sequence[str] = (),
    backends: Sequence[str] = (),
) -> Rebuild:
    """Write `<outdir>/<stem>.py` (Keras 3 source), `<stem>.weights.h5` and its sidecar, build the model
    and verify it against TFLite as `tfl-rebuild keras` does.

    backends ("tensorflow", "jax", "torch", "all"): verify on each of these Keras backends instead,
    each in its own process (this one imports no Keras then: `.keras_model` is None); `.backends`
    holds each verdict (`.ok`, `.max_rel`, `.seconds`, `.error`).

    Returns the Rebuild: `.paths` (py, weights, tensors), `.keras_model`, `.report` (per-output
    errors and the layer-local check; `.report.ok`), `.notes`. input_shapes: "[NAME=]D,D,..." specs
    for dynamic dims. Needs the `keras` extra (and a runtime to verify)."""
    from tfl_rebuild.commands.backends import parse_backends, require_backends, verify_on_backends
    from tfl_rebuild.commands.extras import require_extras
    from tfl_rebuild.commands.pipeline import rebuild_and_verify

    chosen = parse_backends(backends, "backends") if verify else ()
    require_extras("keras", "keras", "litert" if verify else None)
    require_backends("rebuild", chosen)
    result = rebuild_and_verify(
        str(path),
        str(outdir),
        name=name,
        build=not chosen,
        verify=verify and not chosen,
        signature=signature,
        input_shapes=tuple(input_shapes),
    )
    if result.verify_error is not None:
        raise result.verify_error
    if chosen:
        verify_on_backends(result, chosen)
    return result


def compare(
    model: PathLike,
    other: PathLike,
    inputs: Any = None,
    *,
    seed: int = 0,
    local: bool = False,
    name_map: str | None = None,
) -> Comparison | CrossComparison:
    """Layer by layer, on the same input.

    `other` a generated module (.py): each TFLite tensor against the Keras layer that computes it
    (`.rows`, `.first_divergence`). `other` a second .tflite (e.g. the int8 model): each of its
    tensors against `model`'s, with SQNR per layer. local=True: each layer fed the reference's
    own inputs, so the errors are the layers' own. `other` an .npz or a folder of .npy files:
    another framework's activations (`name_map`: a .json file or s/RE/REPL/), SQNR per layer."""
    from tfl_rebuild.verify.references import is_references

    if is_references(str(other)):
        from tfl_rebuild.verify.external import compare_references

        return compare_references(str(model), str(other), name_map, inputs, seed, local=local)
    if str(other).endswith(".tflite"):
        from tfl_rebuild.verify.cross import compare_models

        return compare_models(str(model), str(other), inputs, seed=seed, local=local)
    from tfl_rebuild.rebuild.loader import check_made_from
    from tfl_rebuild.verify.compare import compare as _compare

    check_made_from(other, read_model(model).sha256, Path(model).name)
    return _compare(str(model), str(other), inputs, seed=seed, local=local)


def to_coreml(
    source: PathLike,
    output: PathLike | None = None,
    *,
    precision: str = "auto",
    check: bool = True,
    tflite: PathLike | None = None,
) -> CoremlResult:
    """Convert a .tflite (rebuilt and verified first) or a generated module to Core ML, check the
    converted program against TFLite, and save it (`.path`; `.ok`; `.result.report` per output).

    precision: auto (float16 when it passes, else mixed, else float32) | float16 | float32 | mixed
    (float16 but the fewest ops in float32: `.converted.fp32_kept`). Needs the `keras` and
    `coreml` extras."""
    from tfl_rebuild.commands.coreml import convert_source
    from tfl_rebuild.coreml.convert import Options

    return convert_source(
        str(source),
        None if output is None else str(output),
        Options(precision=precision),
        tflite=None if tflite is None else str(tflite),
        do_check=check,
    )


def check(
    paths: Sequence[PathLike],
    *,
    jobs: int = 1,
    coreml: bool = True,
    verify: bool = True,
    timeout: float | None = None,
    input_shapes: Sequence[str] = (),
) -> list[Row]:
    """Every model end to end, each in its own process, as `tfl-rebuild check` does: one Row per
    model (`.outcome` pass / fail / error / crash / timeout, `.keras` and `.coreml` stages)."""
    from tfl_rebuild.commands.check.discover import collect_models
    from tfl_rebuild.commands.check.pool import run_all
    from tfl_rebuild.commands.check.rows import DEFAULT_TIMEOUT, Options

    opts = Options(
        verify=verify,
        coreml=coreml,
        timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        input_shapes=tuple(input_shapes),
    )
    return run_all(collect_models([str(p) for p in paths]), opts, jobs=jobs)
