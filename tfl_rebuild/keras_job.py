"""`tfl-rebuild keras`: generate, write (atomically), import, verify, optionally save."""

from __future__ import annotations

import json
from pathlib import Path

from .codegen.emit import generate
from .codegen.naming import sanitize
from .fileio import atomic_output
from .reader import read_model
from .weights import write_npz_atomic


def write_generated(model_path: str, outdir: str, name: str | None = None, fake_quant: bool | None = None):
    """Generate and write <stem>.py, <stem>_weights.npz and <stem>_tensors.json; returns (model, paths)."""
    model = read_model(model_path)
    stem = sanitize(name or Path(model_path).stem, "model")
    gen = generate(model, stem, fake_quant=fake_quant)
    out = Path(outdir)
    write_npz_atomic(out / f"{stem}_weights.npz", gen.weights)
    with atomic_output(out / f"{stem}_tensors.json", "w") as f:
        json.dump({"model": Path(model_path).name, "tensors": gen.tensors}, f, indent=1)
    with atomic_output(out / f"{stem}.py", "w") as f:
        f.write(gen.source)
    return model, out / f"{stem}.py", out / f"{stem}_weights.npz"


def rebuild(model_path: str, outdir: str, name: str | None = None, verify: bool = True,
            fake_quant: bool | None = None, save_keras: str | None = None) -> bool:
    from rich.console import Console

    con = Console(highlight=False)
    model, py_path, w_path = write_generated(model_path, outdir, name, fake_quant)
    con.print(f"wrote {py_path} and {w_path.name}")
    if not (verify or save_keras):
        return True
    from .verify import load_module, print_report
    from .verify import verify as run_verify

    keras_model = load_module(py_path).build_model(str(w_path))
    ok = True
    if verify:
        report = run_verify(model, keras_model)
        print_report(report, con)
        ok = report.ok
    if save_keras:
        keras_model.save(save_keras)
        con.print(f"saved {save_keras}")
    return ok
