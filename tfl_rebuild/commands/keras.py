"""`tfl-rebuild keras`: generate, write (atomically), import, verify, optionally save."""

from __future__ import annotations

import json
from pathlib import Path

from tfl_rebuild.errors import InputError, OutputError
from tfl_rebuild.fileio import atomic_output, ensure_dir, writable_file
from tfl_rebuild.rebuild.codegen.emit import generate
from tfl_rebuild.rebuild.codegen.naming import sanitize
from tfl_rebuild.rebuild.limits import check_rebuildable, check_sizes
from tfl_rebuild.rebuild.ops.registry import never_rebuilt
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.tflite.weights import write_npz_atomic


def write_generated(
    model_path: str,
    outdir: str,
    name: str | None = None,
    fake_quant: bool | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
    notes: list | None = None,
):
    """Generate and write <stem>.py, <stem>_weights.npz and <stem>_tensors.json; returns (model, paths).

    The model is the view the rebuild is made of (views.py): subgraph 0, or `signature`'s
    subgraph, with dynamic dims fixed (to `input_shapes`, else the stored shapes); what the view
    did is appended to `notes`. Every target is checked before the work starts, and the module and
    sidecar are renamed into place only after the weights are written: a failed run leaves no
    module without its weights.
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
    out = ensure_dir(outdir)  # before the (slow) generation: a bad -o fails at once
    view = make_view(original, signature, input_shapes)
    model = view.model
    check_sizes(model)  # the shapes it was fixed to
    stem = sanitize(name or Path(model_path).stem, "model")
    paths = {
        kind: writable_file(out / f"{stem}{suffix}")
        for kind, suffix in (("py", ".py"), ("weights", "_weights.npz"), ("tensors", "_tensors.json"))
    }
    options = [
        *(["--signature", signature] if signature else []),
        *(
            w
            for n, dims in view.input_shapes.items()
            if input_shapes
            for w in ("--input-shape", f"{n}={','.join(map(str, dims))}")
        ),
    ]
    gen = generate(model, stem, fake_quant=fake_quant, view_options=tuple(options), notes=view.notes)
    with atomic_output(paths["py"], "w") as py, atomic_output(paths["tensors"], "w") as side:
        py.write(gen.source)
        json.dump(
            {"model": Path(model_path).name, "view": view.sidecar(), "tensors": gen.tensors}, side, indent=1
        )
        write_npz_atomic(paths["weights"], gen.weights)  # last: if it fails, the other two are dropped
    if notes is not None:
        notes += view.notes
    return model, paths["py"], paths["weights"]


def rebuild(
    model_path: str,
    outdir: str,
    name: str | None = None,
    verify: bool = True,
    fake_quant: bool | None = None,
    save_keras: str | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
) -> bool:
    from rich.console import Console
    from rich.markup import escape

    con = Console(highlight=False)
    if save_keras:
        if not save_keras.endswith(".keras"):
            raise InputError(f"--save-keras {save_keras}: Keras saves a model only to a .keras file")
        writable_file(save_keras)
    notes: list[str] = []
    model, py_path, w_path = write_generated(
        model_path, outdir, name, fake_quant, signature, input_shapes, notes
    )
    for note in notes:
        con.print(f"note: {escape(note)}")
    con.print(f"wrote {py_path} and {w_path.name}")
    if not (verify or save_keras):
        return True
    from tfl_rebuild.rebuild.loader import build, load_module, read_sidecar
    from tfl_rebuild.verify.end_to_end import print_report
    from tfl_rebuild.verify.end_to_end import verify as run_verify

    keras_model = build(load_module(py_path), w_path)
    ok = True
    if verify:
        stateful = read_model(model_path) if signature is None else None  # streamed when it has variables
        report = run_verify(model, keras_model, tensors=read_sidecar(py_path), original=stateful)
        print_report(report, con)
        ok = report.ok
    if save_keras:
        try:
            keras_model.save(save_keras)
        except OSError as exc:
            raise OutputError(f"{save_keras}: cannot write ({exc.strerror or exc})") from None
        con.print(f"saved {save_keras}")
    return ok
