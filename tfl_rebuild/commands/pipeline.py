"""The one chain every command and the tests run: write the rebuild, load it, build it, verify it.

`keras`, `coreml`, `check` (its Keras stage and each further signature) and the per-op tests call
`rebuild_and_verify`; it returns data and prints nothing (the callers print at the edges).

    rebuild_and_verify(path, outdir)                   # write, build, verify: .report
    rebuild_and_verify(path, outdir, build=False)       # write only (keras --no-verify)
    rebuild_and_verify(path, outdir, verify=False)      # write and build (coreml's own check)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.fileio import atomic_output, file_sha256, output_dir, writable_file
from tfl_rebuild.rebuild.codegen.emit import generate
from tfl_rebuild.rebuild.codegen.naming import sanitize
from tfl_rebuild.rebuild.limits import check_rebuildable, check_sizes
from tfl_rebuild.rebuild.loader import source_record
from tfl_rebuild.rebuild.ops.registry import ConversionError, never_rebuilt
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.tflite.reader import read_model

SUFFIXES = (("py", ".py"), ("weights", ".weights.h5"), ("tensors", "_tensors.json"))


class VerificationError(TflRebuildError):
    """Verification raised something other than our own one-line errors."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _summary(exc: BaseException, limit: int = 400) -> str:
    """`Type: message` on one line (Keras' multi-line, coloured messages included), cut to `limit`."""
    text = " ".join(ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Rebuild:
    """What one run of the chain made. `model` is the view rebuilt (views.py: subgraph 0 or the
    signature's subgraph, dynamic dims fixed, state explicit); `original` the file as read."""

    original: Model
    model: Model
    paths: dict[str, Path]  # "py", "weights", "tensors": all three written
    tensors: list[dict]  # TFLite tensor -> Keras layer, as the `_tensors.json` sidecar holds it
    notes: list[str] = field(default_factory=list)  # what the view did (signature, shapes, state)
    keras_model: Any = None  # built unless build=False
    report: Any = None  # verify.end_to_end.Report unless verify=False or verification raised
    verify_error: Exception | None = None  # what verification raised (the runtime cannot run it, ...)
    signature: str | None = None  # the view asked for (backend workers rebuild it from the file)
    input_shapes: tuple[str, ...] = ()
    backends: list = field(default_factory=list)  # backends.BackendResult per backend asked for

    @property
    def py(self) -> Path:
        return self.paths["py"]

    @property
    def weights(self) -> Path:
        return self.paths["weights"]


def write_rebuild(
    model_path: str,
    outdir: str,
    name: str | None = None,
    fake_quant: bool | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
) -> Rebuild:
    """Generate and write <stem>.py, <stem>.weights.h5 and <stem>_tensors.json.

    The weights file is Keras' own: the module is built (from memory) without weights, each layer
    given its arrays, and `save_weights` writes them. Every target is checked before the work
    starts, and the module and sidecar are renamed into place only after the weights are written:
    a failed run leaves no module without its weights.
    """
    from tfl_rebuild.runtime.views import VARIABLE_OPS, make_view

    original = read_model(model_path)
    check_rebuildable(original)  # before any work: sizes, op count, chain length, nesting
    for op in original.subgraphs[0].operators:  # an op nothing can rebuild says so before any shape work
        if op.opcode in VARIABLE_OPS:
            continue  # the view makes the state explicit, or says why it cannot
        refusal = never_rebuilt(op, original.subgraphs[0])
        if refusal is not None:
            raise refusal
    with output_dir(outdir) as out:  # before the (slow) generation: a bad -o fails at once
        view = make_view(original, signature, input_shapes)
        check_sizes(view.model)  # the shapes it was fixed to
        stem = sanitize(name or Path(model_path).stem, "model")
        paths = {kind: writable_file(out / f"{stem}{suffix}") for kind, suffix in SUFFIXES}
        options = [
            *(["--signature", signature] if signature else []),
            *(
                w
                for n, dims in view.input_shapes.items()
                if input_shapes
                for w in ("--input-shape", f"{n}={','.join(map(str, dims))}")
            ),
        ]
        gen = generate(view.model, stem, fake_quant=fake_quant, view_options=tuple(options), notes=view.notes)
        with atomic_output(paths["py"], "w") as py, atomic_output(paths["tensors"], "w") as side:
            py.write(gen.source)
            _write_weights(gen, paths)  # before the rename: if it fails, the other two are dropped
            json.dump(
                {
                    "model": Path(model_path).name,
                    "source": source_record(model_path, paths["py"], original.sha256),
                    "weights": {"file": paths["weights"].name, "sha256": file_sha256(paths["weights"])},
                    "view": view.sidecar(),
                    "tensors": gen.tensors,
                },
                side,
                indent=1,
            )
    return Rebuild(
        original,
        view.model,
        paths,
        gen.tensors,
        list(view.notes),
        signature=signature,
        input_shapes=input_shapes,
    )


def _write_weights(gen, paths: dict[str, Path]) -> None:
    """Build the module from memory and write its .weights.h5 (weights_h5.write_weights)."""
    from tfl_rebuild.rebuild.loader import load_source
    from tfl_rebuild.rebuild.weights_h5 import write_weights

    try:
        write_weights(load_source(gen.source, paths["py"]), gen.weights, paths["weights"])
    except TflRebuildError:
        raise
    except Exception as exc:  # a file whose shapes contradict each other (a corrupt one) builds no model
        raise ConversionError(
            f"{paths['py'].name}: the generated Keras model does not build ({_summary(exc)})"
        ) from exc


def write_generated(
    model_path: str,
    outdir: str,
    name: str | None = None,
    fake_quant: bool | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
):
    """(the view rebuilt, the module's path, the weights' path): `write_rebuild` as a tuple."""
    r = write_rebuild(model_path, outdir, name, fake_quant, signature, input_shapes)
    return r.model, r.py, r.weights


def rebuild_and_verify(
    model_path: str,
    outdir: str,
    *,
    name: str | None = None,
    fake_quant: bool | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
    build: bool = True,
    verify: bool = True,
    stream: bool = True,
    written: Callable[[Rebuild], None] | None = None,
    stage: Callable[[str], None] = lambda text: None,
) -> Rebuild:
    """Write the rebuild of `model_path` into `outdir`, build it (unless `build` and `verify` are
    both False) and verify it against TFLite (unless `verify` is False).

    stage: told each step as it starts (a progress display). written: called once the files are
    written, before the (slow) build: callers print the notes
    and paths there, the tests may alter the files. stream: when the file keeps state in resource
    variables and no signature is asked for, also stream the rebuild against the stateful model.
    Errors writing or building raise; an error verifying is kept in `verify_error` (a runtime that
    cannot run the model is "not verified" to some callers, fatal to others).
    """
    stage("generating the Keras source")
    result = write_rebuild(model_path, outdir, name, fake_quant, signature, input_shapes)
    if written is not None:
        written(result)
    if not (build or verify):
        return result
    build_and_verify(result, verify=verify, stream=stream and signature is None, stage=stage)
    if result.report is not None and result.report.ok:
        import keras

        stamp_verified_on(result, (keras.backend.backend(),))
    return result


def stamp_verified_on(result: Rebuild, backends) -> None:
    """Rewrite the module's header line naming the Keras backends it verified on (atomically)."""
    from tfl_rebuild.rebuild.codegen.emit import stamp_verified

    source = stamp_verified(result.py.read_text(encoding="utf-8"), backends)
    with atomic_output(result.py, "w") as py:
        py.write(source)


def build_and_verify(
    result: Rebuild,
    *,
    verify: bool = True,
    stream: bool = True,
    stage: Callable[[str], None] = lambda text: None,
) -> Rebuild:
    """Build `result`'s written module on this process's Keras backend and verify it (unless
    `verify` is False): the second half of `rebuild_and_verify`, also run by the backend workers
    (commands/backends.py) on files written by their parent."""
    from tfl_rebuild.rebuild.loader import build as build_from
    from tfl_rebuild.rebuild.loader import load_module

    stage("building the Keras model")
    try:
        result.keras_model = build_from(load_module(result.py), result.weights)
    except TflRebuildError:
        raise
    except Exception as exc:  # a file whose shapes contradict each other (a corrupt one) builds no model
        raise ConversionError(
            f"{result.py.name}: the generated Keras model does not build ({_summary(exc)})"
        ) from exc
    if verify:
        from tfl_rebuild.verify.end_to_end import verify as run_verify

        stage("verifying against TFLite: outputs, then every layer on TFLite's own inputs")
        try:
            result.report = run_verify(
                result.model,
                result.keras_model,
                tensors=result.tensors,
                original=result.original if stream else None,
            )
        except TflRebuildError as exc:  # the caller decides: "not verified", a failed stage, or its own error
            result.verify_error = exc
        except Exception as exc:  # one line all the same (a corrupt file the runtime half-digests)
            error = VerificationError(f"{result.py.name}: verification failed ({_summary(exc)})")
            error.__cause__ = exc
            result.verify_error = error
    return result
