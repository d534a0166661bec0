"""The `check` command: arguments checked before the (long) run, the run, the table and reports."""

from __future__ import annotations

import sys

from tfl_rebuild.commands.check import report as check_report
from tfl_rebuild.commands.check.discover import collect_models, unfit_input_shapes
from tfl_rebuild.commands.check.pool import run_all
from tfl_rebuild.commands.check.rows import Options
from tfl_rebuild.errors import InputError
from tfl_rebuild.fileio import atomic_output, ensure_dir, writable_file
from tfl_rebuild.text import printable


def run_command(
    paths: list[str],
    opts: Options,
    jobs: int = 1,
    json_out: str | None = None,
    md_out: str | None = None,
    keep: str | None = None,
) -> int:
    """The whole `check` command; returns the exit code (0: every model passes)."""
    from rich.console import Console
    from rich.markup import escape

    if json_out == "-" and md_out == "-":
        raise InputError("--json - and --markdown -: only one of them can go to stdout")
    models = collect_models(list(paths))
    for dest in (json_out, md_out):  # before the (long) run, not after it
        if dest and dest != "-":
            writable_file(dest)
    keep_dir = ensure_dir(keep) if keep else None
    unfit = unfit_input_shapes(models, opts.input_shapes)
    if unfit:
        raise InputError(
            f"--input-shape {unfit[0]!r} fits none of the {len(models)} model(s): no input of that "
            "name (or, unnamed, no one-input model) takes it; `inspect` lists inputs and dims"
        )

    def shown(text: str) -> str:  # model strings (names, custom codes in reasons) stay one safe line
        return escape(printable(text))

    err = Console(stderr=True, highlight=False)
    out = err if "-" in (json_out, md_out) else Console(highlight=False)
    err.print(f"checking {len(models)} model(s), {min(jobs, len(models))} at a time")

    def progress(done, row):
        err.print(
            f"[{done}/{len(models)}] {shown(row.name)}: {row.outcome} ({row.seconds:.0f} s)"
            + (f" - {shown(row.reason)}" if row.reason else "")
            + "".join(f" ({shown(stage.note)})" for stage in (row.keras, row.coreml) if stage.note),
            soft_wrap=True,
        )

    rows = run_all(models, opts, jobs=jobs, keep=keep_dir, progress=progress)
    check_report.print_table(rows, opts, out)
    for dest, text in ((json_out, check_report.to_json), (md_out, check_report.to_markdown)):
        if dest == "-":
            sys.stdout.write(text(rows, opts) + "\n")
        elif dest:
            with atomic_output(dest, "w") as f:
                f.write(text(rows, opts))
            err.print(f"wrote {escape(dest)}")
    return 0 if all(r.outcome == "pass" for r in rows) else 1
