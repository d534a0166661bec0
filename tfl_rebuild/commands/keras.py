"""`tfl-rebuild keras`: generate, write (atomically), import, verify, optionally save."""

from __future__ import annotations

from tfl_rebuild.commands.pipeline import rebuild_and_verify
from tfl_rebuild.errors import InputError, OutputError
from tfl_rebuild.fileio import writable_file


def rebuild(
    model_path: str,
    outdir: str,
    name: str | None = None,
    verify: bool = True,
    fake_quant: bool | None = None,
    save_keras: str | None = None,
    signature: str | None = None,
    input_shapes: tuple[str, ...] = (),
    json_out: str | None = None,
    backends: tuple[str, ...] = (),
) -> bool:
    """The `keras` command; True when the rebuild verifies (or was not asked to). `json_out`:
    the verification report as JSON, to a file or "-" (stdout; the human report goes to stderr).
    backends: verify on each of these Keras backends, each in its own worker process
    (commands/backends.py), instead of on this process's backend."""
    from rich.console import Console
    from rich.markup import escape

    from tfl_rebuild.commands.report import print_report, report_doc, stages, write_json

    con = Console(highlight=False, stderr=json_out == "-")
    if json_out and json_out != "-":
        writable_file(json_out)
    if save_keras:
        if not save_keras.endswith(".keras"):
            raise InputError(f"--save-keras {save_keras}: Keras saves a model only to a .keras file")
        writable_file(save_keras)

    def written(r) -> None:
        for note in r.notes:
            con.print(f"note: {escape(note)}")
        con.print(f"wrote {r.py} and {r.weights.name}")

    with stages(Console(stderr=True)) as stage:
        result = rebuild_and_verify(
            model_path,
            outdir,
            name=name,
            fake_quant=fake_quant,
            signature=signature,
            input_shapes=input_shapes,
            build=(verify and not backends) or bool(save_keras),
            verify=verify and not backends,
            written=written,
            stage=stage,
        )
    if result.verify_error is not None:
        raise result.verify_error
    ok = True
    if result.report is not None:
        print_report(result.report, con)
        ok = result.report.ok
    per_backend = _on_backends(result, backends, con) if verify and backends else []
    ok = ok and all(r.ok and not r.error for r in per_backend)
    if json_out:
        doc = {"model": model_path, "paths": {k: str(v) for k, v in result.paths.items()}}
        doc.update(notes=result.notes, verification=report_doc(result.report))
        if per_backend:
            doc["backends"] = {r.backend: _backend_doc(r) for r in per_backend}
        write_json(doc, json_out, con.print)
    if save_keras:
        try:
            result.keras_model.save(save_keras)
        except OSError as exc:
            raise OutputError(f"{save_keras}: cannot write ({exc.strerror or exc})") from None
        con.print(f"saved {save_keras}")
    return ok


def _on_backends(result, backends: tuple[str, ...], con) -> list:
    """Verify the written module on each backend (a worker each; the header then names those that
    passed), print each report and a summary."""
    from rich.markup import escape
    from rich.table import Table

    from tfl_rebuild.commands.backends import verify_on_backends

    results = verify_on_backends(result, backends, report_to="stderr" if con.stderr else "stdout")
    table = Table("backend", "verdict", "max abs", "max rel", "seconds", box=None, pad_edge=False)
    for r in results:
        if r.error:
            verdict = f"[red]error[/red]: {escape(r.error)}"
        else:
            verdict = "[green]match[/green]" if r.ok else "[red]MISMATCH[/red]"
        table.add_row(r.backend, verdict, _number(r.max_abs), _number(r.max_rel), f"{r.seconds:.1f}")
    con.print("Keras backends (each verified in its own process):")
    con.print(table)
    return results


def _number(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _backend_doc(r) -> dict:
    return {"ok": r.ok and not r.error, "error": r.error, "seconds": r.seconds, "verification": r.report}
