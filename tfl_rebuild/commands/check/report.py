"""The `check` results as a rich table, one JSON document, or a Markdown coverage report."""

from __future__ import annotations

import json
from dataclasses import asdict

from tfl_rebuild.commands.check.rows import PASSED, SKIPPED, UNCHECKED, Options, Row, Stage
from tfl_rebuild.text import printable

OUTCOME_STYLE = {"pass": "green", "fail": "red", "error": "red", "crash": "magenta", "timeout": "magenta"}


def error_text(stage: Stage) -> str:
    """The stage's max error: LSB for quantized outputs, else max rel (max |err| / max |ref|)."""
    if stage.lsb is not None:
        return f"{stage.lsb:.2f} LSB"
    return "-" if stage.max_rel is None else f"{stage.max_rel:.2g}"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def coreml_status(stage: Stage) -> str:
    """The Core ML status with the precision it was converted with (fp16 / fp32 / mixed 97% fp16)."""
    prec = {"float16": "fp16", "float32": "fp32"}.get(stage.precision or "", stage.precision or "")
    return f"{stage.status} {prec}" if prec and stage.status not in ("-", SKIPPED) else stage.status


def summary(rows: list[Row], opts: Options) -> dict:
    """Counts for the summary line and the JSON document."""
    good = PASSED if opts.verify else PASSED | UNCHECKED
    doc = {
        "models": len(rows),
        "passed": sum(r.outcome == "pass" for r in rows),
        "keras_ok": sum(r.keras.status in good for r in rows),
    }
    if opts.coreml:
        doc["coreml_ok"] = sum(r.coreml.status in good for r in rows)
    for b in opts.backends:
        doc[f"{b}_ok"] = sum(r.backends.get(b, Stage()).status in good for r in rows)
    for outcome in ("error", "crash", "timeout"):
        doc[outcome] = sum(r.outcome == outcome for r in rows)
    return doc


def summary_line(rows: list[Row], opts: Options) -> str:
    s, n = summary(rows, opts), len(rows)
    parts = [
        f"{s['passed']}/{n} passed",
        f"Keras {'verified' if opts.verify else 'built'} {s['keras_ok']}/{n}",
    ]
    if opts.coreml:
        parts.append(f"Core ML {'checked' if opts.verify else 'converted'} {s['coreml_ok']}/{n}")
    parts += [f"on {b} {s[f'{b}_ok']}/{n}" for b in opts.backends]
    return ", ".join(parts + [f"{s[k]} {k}" for k in ("error", "crash", "timeout") if s[k]])


def print_table(rows: list[Row], opts: Options, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    backend_cols = [h for b in opts.backends for h in (b, "err")]
    table = Table(
        "model",
        "ops",
        "params",
        "quant",
        "Keras",
        "err",
        "Core ML",
        "err",
        *backend_cols,
        "s",
        "result",
        "first failure",
        box=None,
        pad_edge=False,
    )
    right = {1, 2, 5, 7, 8 + len(backend_cols), *range(9, 9 + len(backend_cols), 2)}
    for k, col in enumerate(table.columns[:-1]):
        col.no_wrap = True
        col.justify = "right" if k in right else "left"
    table.columns[-1].overflow = "fold"
    if not console.is_terminal:  # a file or a pipe: room for the reasons instead of 80 columns
        console.width = max(console.width, 160)
    for r in rows:
        style = OUTCOME_STYLE.get(r.outcome, "red")
        table.add_row(
            escape(printable(r.name)),
            "-" if r.ops is None else str(r.ops),
            human_count(r.params),
            r.quantization or "-",
            _styled(r.keras),
            error_text(r.keras),
            _styled(r.coreml, coreml_status(r.coreml)),
            error_text(r.coreml),
            *(c for b in opts.backends for c in (_styled(_on(r, b)), error_text(_on(r, b)))),
            f"{r.seconds:.0f}",
            f"[{style}]{r.outcome}[/{style}]",
            escape(printable(r.reason)),
        )
    console.print(table)
    console.print(summary_line(rows, opts))


def _on(row: Row, backend: str) -> Stage:
    return row.backends.get(backend, Stage())


def _styled(stage: Stage, text: str | None = None) -> str:
    text = stage.status if text is None else text
    if stage.status in PASSED:
        return f"[green]{text}[/green]"
    if stage.status in UNCHECKED | {"-", SKIPPED}:
        return text
    return f"[red]{text}[/red]"


def to_json(rows: list[Row], opts: Options) -> str:
    return json.dumps(
        {"options": asdict(opts), "summary": summary(rows, opts), "models": [asdict(r) for r in rows]},
        indent=1,
    )


def _md(text: str) -> str:
    """A model's text in a Markdown cell: control characters escaped (printable), | and \\ quoted."""

    return printable(text).replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(rows: list[Row], opts: Options) -> str:
    """A coverage report: the table, the ops no converter takes (by model), every failure reason."""
    heads = "".join(f" {b} | {b} error |" for b in opts.backends)
    out = [
        "# tfl-rebuild check",
        "",
        summary_line(rows, opts) + ".",
        "",
        f"| model | ops | params | quantization | Keras | Keras error | Core ML | Core ML error |{heads} seconds | result |",
        "|---|--:|--:|---|---|--:|---|--:|" + "---|--:|" * len(opts.backends) + "--:|---|",
    ]
    for r in rows:
        cells = "".join(f" {_on(r, b).status} | {error_text(_on(r, b))} |" for b in opts.backends)
        out.append(
            f"| {_md(r.name)} | {'-' if r.ops is None else r.ops} | {human_count(r.params)} | "
            f"{r.quantization or '-'} | {r.keras.status} | {error_text(r.keras)} | {coreml_status(r.coreml)} | "
            f"{error_text(r.coreml)} |{cells} {r.seconds:.0f} | {r.outcome} |"
        )
    by_op: dict[str, tuple[list[str], str]] = {}
    for r in rows:
        for u in r.unsupported:
            models, _ = by_op.setdefault(u["op"], ([], u.get("detail", "")))
            models.append(f"{r.name} (x{u['count']})" if u["count"] > 1 else r.name)
    if by_op:
        out += [
            "",
            "## Ops not supported",
            "",
            "| op | models | why (when not just a missing converter) |",
            "|---|---|---|",
        ]
        out += [
            f"| {_md(op)} | {_md(', '.join(models))} | {_md(detail)} |"
            for op, (models, detail) in sorted(by_op.items())
        ]
    conv_errors = [(r.name, e) for r in rows for e in r.conversion_errors]
    if conv_errors:
        out += ["", "## Ops a converter refuses", ""] + [f"- {_md(n)}: {_md(e)}" for n, e in conv_errors]
    notes = [(r.name, stage.note) for r in rows for stage in (r.keras, r.coreml) if stage.note]
    notes += [
        (r.name, f"{b}: {st.reason}")
        for r in rows
        for b, st in r.backends.items()
        if st.status not in PASSED and st.reason and r.keras.status in PASSED
    ]
    if notes:
        out += ["", "## Notes", ""] + [f"- {_md(n)}: {_md(note)}" for n, note in notes]
    failed = [r for r in rows if r.outcome != "pass"]
    if failed:
        out += ["", "## Failures", ""] + [
            f"- **{_md(r.name)}** ({r.outcome}): {_md(r.reason)}" for r in failed
        ]
    return "\n".join(out) + "\n"
