"""`tfl-rebuild compare A.tflite B.tflite`: two encodings of one network (float vs int8, fp16,
dynamic-range), layer by layer; which layer of B loses what A computes? And
`tfl-rebuild compare model.tflite refs.npz|DIR [--map ...]`: the model against another
framework's activations (which layer of the conversion drifts?).

The data come from `verify.cross` and `verify.external`; this module renders them: a rich table on
a terminal, plain aligned text when piped, a verdict line, `--json FILE|-`, `--plot` (per-layer
SQNR) and `--model-explorer` (each tensor's SQNR as colours on the TFLite graph).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tfl_rebuild.errors import InputError
from tfl_rebuild.fileio import atomic_output, writable_file
from tfl_rebuild.runtime.inputs import InputOptions
from tfl_rebuild.text import printable
from tfl_rebuild.verify.cross import CrossComparison, PairRow, compare_models, db, short_name
from tfl_rebuild.verify.references import is_references

NAME_WIDTH = 60
# --model-explorer: SQNR in dB, clipped to this range (inf, an exact pair, is written as the top).
EXPLORER_DB = (0.0, 100.0)


def run(
    model_a: str,
    model_b: str,
    inputs: InputOptions | None = None,
    seed: int = 0,
    json_out: str | None = None,
    plot: str | None = None,
    explorer: str | None = None,
    sqnr: float | None = None,
    local: bool = False,
    name_map: str | None = None,
    console=None,
) -> int:
    """Compare, render, write; the exit code: 0 no divergence, 1 a divergence (or, `local`, a jump).
    `model_b` is a .tflite, or references (`is_references`) named by `name_map`."""
    refs = is_references(model_b)
    if name_map and not refs:
        raise InputError("--map is for `compare MODEL REFS.npz|DIR` (references from another framework)")
    check_outputs(sqnr, json_out, plot, explorer)
    values = None
    inputs = inputs or InputOptions()
    if inputs.specs:
        from tfl_rebuild.runtime.interpreter import make_interpreter

        details = make_interpreter(model_a).get_input_details()
        values, _ = inputs.load(details, seed)
    if refs:
        from tfl_rebuild.verify.external import compare_references

        result = compare_references(model_a, model_b, name_map, values, seed, sqnr, local)
    else:
        result = compare_models(model_a, model_b, values, seed=seed, threshold_db=sqnr, local=local)
    return write_outputs(result, console, json_out, plot, explorer)


def check_outputs(sqnr: float | None, json_out: str | None, plot: str | None, explorer: str | None) -> None:
    """The --sqnr value and every output path, refused before the runs, not after."""
    if sqnr is not None and not math.isfinite(sqnr):
        raise InputError(f"--sqnr {sqnr} must be a finite number of dB")
    if plot:
        from tfl_rebuild.commands.compare import check_plot_path

        check_plot_path(plot)
    for path in (plot, explorer, None if json_out in (None, "-") else json_out):
        if path:
            writable_file(path)


def write_outputs(
    result: CrossComparison, console, json_out: str | None, plot: str | None, explorer: str | None
) -> int:
    """The report (or the JSON alone on stdout), the JSON file, the plot, the Model Explorer data;
    the exit code: 0 no pair flagged, 1 one is."""
    if json_out == "-":
        import click

        click.echo(result.to_json())
    else:
        if json_out:
            with atomic_output(json_out, "w") as f:
                f.write(result.to_json() + "\n")
        print_report(result, console)
    if plot:
        write_plot(result, plot)
    if explorer:
        write_model_explorer(result, explorer)
    return 0 if result.flagged is None else 1


def write_model_explorer(result: CrossComparison, path: str) -> None:
    """Model Explorer node data for model A's graph (the .tflite against references): each paired
    tensor's SQNR in dB (clipped to EXPLORER_DB), red low, green high."""
    low, high = EXPLORER_DB
    doc = {
        "results": {
            r.tensor: {"value": low if math.isnan(r.sqnr_db) else min(max(r.sqnr_db, low), high)}
            for r in result.rows
        },
        "gradient": [
            {"stop": 0, "bgColor": "#c62828"},
            {"stop": 0.5, "bgColor": "#f9a825"},
            {"stop": 1, "bgColor": "#2e7d32"},
        ],
    }
    with atomic_output(path, "w") as f:
        json.dump(doc, f, indent=1)


# -- the table --------------------------------------------------------------------------------------

HEADINGS = [
    "op",
    "type",
    "tensor",
    "shape",
    "pair",
    "SQNR dB",
    "max abs",
    "max rel",
    "cosine",
    "mean err",
    "LSB",
]
LOCAL_HEADINGS = ["in dB", "drop dB"]


def cells(result: CrossComparison, r: PairRow) -> list[str]:
    """One row of the table as text (model strings made printable)."""
    out = [
        "in" if r.op_index < 0 else str(r.op_index),
        printable(r.op),
        cut(short_name(r.tensor)),
        "x".join(map(str, r.shape)) or "scalar",
        r.how,
        db(r.sqnr_db),
        f"{r.max_abs:.3g}",
        f"{r.max_rel:.3g}",
        f"{r.cosine:.6f}",
        f"{r.mean_error:+.2g}",
        "-" if r.lsb is None else f"{r.lsb:.2f}",
    ]
    if result.references:
        out[5:5] = [cut(r.b_tensor, 40), r.layout or "-"]
    if result.mode == "local":
        out += [db(r.input_sqnr_db), db(r.drop_db)]
    return out


def cut(name: str, width: int = NAME_WIDTH) -> str:
    """A model string made printable and cut to `width` characters (with '...' when cut)."""
    text = printable(name)
    return text if len(text) <= width else text[: width - 3] + "..."


def headings(result: CrossComparison) -> list[str]:
    head = HEADINGS[:5] + (["reference", "layout"] if result.references else []) + HEADINGS[5:]
    return head + (LOCAL_HEADINGS if result.mode == "local" else [])


def unpaired_lines(result: CrossComparison, limit: int | None = None) -> list[str]:
    """'unpaired in A: name' lines (up to `limit` per side); against references, the unpaired
    references by name and only the count of TFLite tensors (most are decomposition steps)."""
    if result.references:
        names = [("reference", n) for n in result.unpaired_b]
        tail = [f"{len(result.unpaired_a)} TFLite tensor(s) hold no reference (--json lists them)"]
    else:
        names = [("in A", n) for n in result.unpaired_a] + [("in B", n) for n in result.unpaired_b]
        tail = []
    out, shown = [], {}
    for side, name in names:
        shown[side] = shown.get(side, 0) + 1
        if limit is None or shown[side] <= limit:
            out.append(f"unpaired {side}: {cut(name)}")
    for side, n in shown.items():
        if limit is not None and n > limit:
            out.append(f"... and {n - limit} more unpaired {side} (--json lists them all)")
    return out + tail


def summary(result: CrossComparison) -> str:
    """The heading line: what was compared, on which inputs, and how the tensors paired."""
    n = len(result.rows)
    how = ", ".join(f"{v} {k}" for k, v in result.how.items() if v)
    if result.references:
        transposed = sum(1 for r in result.rows if r.layout not in (None, "as is"))
        return (
            f"{printable(result.model_a)} ({result.kind_a}) vs references {printable(result.model_b)}, "
            f"inputs {printable(result.inputs)}; paired {result.coverage:.1%} of the references "
            f"({how or 'none'}), {transposed} transposed to TFLite's layout, "
            f"unpaired: {len(result.unpaired_b)} references; SQNR threshold {result.threshold_db:g} dB"
            + (f", jump {result.jump_db:g} dB" if result.mode == "local" else "")
            + f"; {n} rows"
        )
    return (
        f"{printable(result.model_a)} ({result.kind_a}) vs {printable(result.model_b)} ({result.kind_b}), "
        f"inputs {result.inputs}; paired {result.coverage:.1%} of A's tensors ({how or 'none'}), "
        f"unpaired: {len(result.unpaired_a)} in A, {len(result.unpaired_b)} in B; "
        f"SQNR threshold {result.threshold_db:g} dB"
        + (f", jump {result.jump_db:g} dB" if result.mode == "local" else "")
        + f"; {n} rows"
    )


def _style(result: CrossComparison, r: PairRow) -> str | None:
    if r is result.flagged:
        return "bold red"
    if result.mode == "local":
        return "yellow" if result.is_jump(r) else None
    return "red" if r.sqnr_db < result.threshold_db else None


def print_report(result: CrossComparison, console=None) -> None:
    """A rich table on a terminal; plain aligned text for a file or a pipe."""
    from rich.console import Console

    con = console or Console(highlight=False)
    if con.is_terminal:
        _print_rich(result, con)
    else:
        con.file.write(plain_text(result))
        con.file.flush()


def _print_rich(result: CrossComparison, con) -> None:
    from rich.markup import escape
    from rich.table import Table

    con.print(escape(summary(result)))
    table = Table(*headings(result), box=None, pad_edge=False)
    for r in result.rows:
        table.add_row(*(escape(c) for c in cells(result, r)), style=_style(result, r))
    con.print(table)
    for line in unpaired_lines(result, 10):
        con.print(escape(line))
    color = "green" if result.flagged is None else "red"
    con.print(f"[{color}]{escape(result.verdict())}[/{color}]")


def plain_text(result: CrossComparison) -> str:
    """The table as aligned columns, with a '*' before each row under the threshold (or a jump,
    in local mode) and '>' before the one the verdict names."""
    head = headings(result)
    rows = [cells(result, r) for r in result.rows]
    marks = [">" if r is result.flagged else ("*" if _style(result, r) else " ") for r in result.rows]
    widths = [max([len(h)] + [len(row[k]) for row in rows]) for k, h in enumerate(head)]

    def line(mark: str, values: list[str]) -> str:
        return (mark + " " + "  ".join(v.ljust(w) for v, w in zip(values, widths))).rstrip()

    out = [summary(result), line(" ", head)]
    out += [line(m, row) for m, row in zip(marks, rows)]
    out += unpaired_lines(result)
    out.append(result.verdict())  # the last line, for scripts
    return "\n".join(out) + "\n"


# -- the plot ---------------------------------------------------------------------------------------


def write_plot(result: CrossComparison, path: str) -> None:
    """Per-layer SQNR of B against A (x: A's op index; an exact pair, SQNR inf, drawn as a triangle
    at the top), the threshold, and in local mode each op's drop as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.op_index for r in result.rows]
    finite = [r.sqnr_db for r in result.rows if math.isfinite(r.sqnr_db)]
    top = max(finite + [result.threshold_db]) + 10.0
    bottom = min(finite + [result.threshold_db]) - 10.0
    ys = [min(max(r.sqnr_db, bottom), top) for r in result.rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(xs, ys, marker=".", linewidth=1, label="SQNR of B vs A")
    exact = [(x, top) for x, r in zip(xs, result.rows) if r.sqnr_db == math.inf]
    if exact:
        ax.scatter(*zip(*exact), marker="^", color="green", label="equal (inf dB)", zorder=3)
    ax.axhline(
        result.threshold_db,
        color="red",
        linestyle="--",
        linewidth=0.8,
        label=f"threshold {result.threshold_db:g} dB",
    )
    bad = result.flagged
    if bad is not None:
        ax.axvline(bad.op_index, color="red", linewidth=0.6, alpha=0.6)
    if result.mode == "local":
        drops = [(x, min(r.drop_db, top)) for x, r in zip(xs, result.rows) if r.drop_db is not None]
        if drops:
            ax.bar(*zip(*drops), color="orange", alpha=0.5, label="drop (dB added by the op)")
    ax.set_xlabel("op index in " + ("the model" if result.references else "A"))
    ax.set_ylabel("dB")
    ax.set_title(f"{result.model_b} vs {result.model_a}: per-layer SQNR")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    with atomic_output(path) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
