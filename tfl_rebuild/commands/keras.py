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
) -> bool:
    """The `keras` command; True when the rebuild verifies (or was not asked to). `json_out`:
    the verification report as JSON, to a file or "-" (stdout; the human report goes to stderr)."""
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
            build=verify or bool(save_keras),
            verify=verify,
            written=written,
            stage=stage,
        )
    if result.verify_error is not None:
        raise result.verify_error
    ok = True
    if result.report is not None:
        print_report(result.report, con)
        ok = result.report.ok
    if json_out:
        doc = {"model": model_path, "paths": {k: str(v) for k, v in result.paths.items()}}
        write_json(
            {**doc, "notes": result.notes, "verification": report_doc(result.report)}, json_out, con.print
        )
    if save_keras:
        try:
            result.keras_model.save(save_keras)
        except OSError as exc:
            raise OutputError(f"{save_keras}: cannot write ({exc.strerror or exc})") from None
        con.print(f"saved {save_keras}")
    return ok
