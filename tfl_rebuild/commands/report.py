"""The verification Report (verify.end_to_end) as rich text: outputs, stream, layers."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfl_rebuild.verify.end_to_end import Report

CONSTANT_NOTE = "constant output; not evidence of a match"


def print_report(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    table = Table(
        "output",
        "max abs",
        "max rel",
        "runtime noise",
        "cosine",
        "LSB",
        "top-1",
        "status",
        box=None,
        pad_edge=False,
    )
    for o in report.outputs:
        if not o.ok:
            status = "[red]MISMATCH[/red]"
        else:
            status = "[green]match[/green]" if o.input_sensitive else f"[yellow]{CONSTANT_NOTE}[/yellow]"
        table.add_row(
            escape(o.name),
            f"{o.max_abs:.3g}",
            f"{o.max_rel:.3g}",
            f"{o.noise:.3g}",
            f"{o.cosine:.6f}",
            "-" if o.lsb is None else f"{o.lsb:.2f}",
            "-" if o.top1_agree is None else f"{o.top1_agree:.0%}",
            status,
        )
    con.print(f"verification vs TFLite ({report.kind} model; {report.tolerance}):")
    con.print(table)
    for note in report.notes:
        con.print(f"[yellow]note: {escape(note)}[/yellow]")
    if report.stream is not None:
        status = "[green]match[/green]" if report.stream.ok else "[red]MISMATCH[/red]"
        con.print(f"{escape(report.stream.text())}: {status}")
    if report.batch is not None:
        status = "[green]match[/green]" if report.batch.ok else "[red]MISMATCH[/red]"
        con.print(f"any batch: {escape(report.batch.text())}: {status}")
    if not report.layerwise:
        return
    if report.layers_skipped:
        con.print(f"[yellow]layer-local check not run: {escape(report.layers_skipped)}[/yellow]")
        return
    bad = [r for r in report.layers if not r.ok]
    worst = report.worst_layer
    if worst is None:
        con.print("[yellow]layer-local check: no layer of the rebuild is mapped to a TFLite tensor[/yellow]")
        return
    if not bad:
        con.print(
            f"layers: {len(report.layers)} checked on TFLite's own inputs, all [green]match[/green]; "
            f"worst {escape(worst.text())}"
        )
        return
    con.print(
        f"layers: [red]MISMATCH[/red] in {len(bad)} of {len(report.layers)} (each fed TFLite's own inputs):"
    )
    for r in bad[:5]:
        con.print(f"  {escape(r.text())}")
    if len(bad) > 5:
        con.print(f"  ... and {len(bad) - 5} more")


def report_doc(report: Report | None) -> dict | None:
    """The verification Report as plain data (`--json`): the verdict, every output, the stream
    check, the batch check (None: the model keeps batch 1), every layer of the layer-local check; infinities and NaN as strings."""
    if report is None:
        return None
    return _plain(
        {
            "ok": report.ok,
            "kind": report.kind,
            "tolerance": report.tolerance,
            "outputs": [asdict(o) for o in report.outputs],
            "stream": None if report.stream is None else asdict(report.stream),
            "batch": None if report.batch is None else asdict(report.batch),
            "layers": [asdict(r) for r in report.layers],
            "layers_skipped": report.layers_skipped,
            "notes": list(report.notes),
        }
    )


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json(doc: dict, dest: str, echo: Callable[[str], None]) -> None:
    """`--json FILE|-`: one document, to stdout for "-", else written atomically."""
    from tfl_rebuild.fileio import atomic_output

    text = json.dumps(doc, indent=1, ensure_ascii=False)
    if dest == "-":
        print(text)
        return
    with atomic_output(dest, "w") as f:
        f.write(text + "\n")
    echo(f"wrote {dest}")


@contextlib.contextmanager
def stages(console) -> Iterator[Callable[[str], None]]:
    """A callback naming the stage the work is in: a live status line when `console` is a terminal
    (minutes of building and verifying show as such), nothing in a pipe or a log."""
    if not console.is_terminal:
        yield lambda text: None
        return
    with console.status("starting") as status:
        yield lambda text: status.update(text)
