"""The verification Report (verify.end_to_end) as rich text: outputs, stream, layers."""

from __future__ import annotations

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
