"""`tfl-rebuild compare`: run verify.compare and render its Comparison: a rich table, one JSON
document, the per-layer error plot (matplotlib), Model Explorer node data."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from tfl_rebuild.errors import InputError
from tfl_rebuild.fileio import atomic_output, writable_file
from tfl_rebuild.rebuild.loader import check_made_from
from tfl_rebuild.runtime.inputs import InputOptions
from tfl_rebuild.text import printable
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.compare import Comparison


def run(
    model: str,
    module: str,
    inputs: InputOptions | None = None,
    seed: int = 0,
    as_json: str | bool | None = None,
    plot: str | None = None,
    explorer: str | None = None,
    local: bool = False,
) -> int:
    """The whole `compare` command; returns the exit code (0: every tensor within tolerance)."""
    from tfl_rebuild.runtime.interpreter import make_interpreter
    from tfl_rebuild.verify.compare import compare

    for path in (plot, explorer, None if as_json in (None, False, True, "-") else as_json):
        if path:
            writable_file(path)  # refuse before the run, not after
    if plot:
        check_plot_path(plot)
    check_made_from(module, read_model(model).sha256, Path(model).name)
    values = None
    inputs = inputs or InputOptions()
    if inputs.specs:
        details = make_interpreter(model).get_input_details()
        values, _ = inputs.load(details, seed)
    result = compare(model, module, values, seed=seed, local=local)
    if as_json and as_json != "-":
        with atomic_output(as_json, "w") as f:
            f.write(to_json(result) + "\n")
    if as_json == "-" or as_json is True:
        print(to_json(result))
    else:
        print_table(result)
    if plot:
        write_plot(result, plot)
    if explorer:
        write_model_explorer(result, explorer)
    return 0 if result.first_divergence is None else 1


def print_table(result: Comparison, console=None) -> None:
    """The rows in op order, first divergence highlighted, then the verdict. On a terminal a rich
    table; piped or redirected, plain aligned text with every tensor name whole."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    columns = ["op", "type", "tensor", "shape", "max abs", "max rel", "LSB", "cosine"]
    if result.mode != "local":
        columns.insert(7, "noise")
    rows = []
    for r in result.rows:
        cells = [
            str(r.op_index),
            printable(r.op),
            printable(r.tensor),
            "x".join(map(str, r.shape)),
            f"{r.max_abs:.3g}",
            f"{r.max_rel:.3g}",
            "-" if r.lsb is None else f"{r.lsb:.2f}",
            f"{r.cosine:.6f}",
        ]
        if result.mode != "local":
            cells.insert(7, f"{r.noise:.3g}")
        rows.append(cells)
    first = result.first_divergence
    verdict = printable(result.verdict())
    if not con.is_terminal:
        widths = [max(len(c) for c in col) for col in zip(columns, *rows)]
        for cells in [columns, *rows]:
            con.print(escape("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()), soft_wrap=True)
        con.print(escape(verdict), soft_wrap=True)
        return
    table = Table(*columns, box=None, pad_edge=False)
    table.columns[2].overflow = "fold"
    for r, cells in zip(result.rows, rows):
        style = "bold red" if r is first else ("red" if not r.ok else None)
        table.add_row(*map(escape, cells), style=style)
    con.print(table)
    color = "green" if first is None else "red"
    con.print(f"[{color}]{escape(verdict)}[/{color}]")


def to_json(result: Comparison) -> str:
    doc = {
        "model": result.model,
        "kind": result.kind,
        "mode": result.mode,
        "tolerance": result.tolerance,
        "verdict": result.verdict(),
        "rows": [asdict(r) for r in result.rows],
    }
    return json.dumps(doc, indent=1, allow_nan=True)


def write_plot(result: Comparison, path: str) -> None:
    """Each tensor's error in units of its own bar (LSB for quantized tensors, rel for float ones,
    the runtime-noise allowance included), so the bar is the line at 1 for every row; exact
    tensors (error 0) are marked on the bottom edge instead of at an invented tiny value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    nonzero = [r for r in result.rows if r.of_bar > 0]
    zero = [r for r in result.rows if r.of_bar <= 0]
    ax.set_yscale("log")
    if nonzero:
        ax.plot(
            [r.op_index for r in nonzero], [r.of_bar for r in nonzero], marker=".", linewidth=1, label="error"
        )
    bottom = min([r.of_bar for r in nonzero] + [1e-3]) / 10
    ax.set_ylim(bottom=bottom, top=max([r.of_bar for r in nonzero] + [1.0]) * 10)
    if zero:
        ax.plot(
            [r.op_index for r in zero],
            [bottom] * len(zero),
            "v",
            color="green",
            clip_on=False,
            label="exact (0)",
        )
    ax.axhline(1.0, color="red", linestyle="--", linewidth=0.8, label=f"the bar: {result.tolerance}")
    ax.set_xlabel("op index")
    ax.set_ylabel("error / bar (LSB or rel)")
    what = "each layer on TFLite's inputs" if result.mode == "local" else "per layer"
    ax.set_title(f"{result.model}: Keras rebuild vs TFLite, {what}")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)


def check_plot_path(path: str) -> None:
    """A --plot path whose format matplotlib can write, checked before the run (not after it)."""
    from matplotlib.backend_bases import FigureCanvasBase

    suffix = Path(path).suffix.lstrip(".").lower()
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix not in formats:
        raise InputError(
            f"--plot {path}: unknown image format {suffix!r}; use one of {', '.join(sorted(formats))}"
        )


def write_model_explorer(result: Comparison, path: str) -> None:
    """Model Explorer node data: each op's output tensor name -> its max rel error, coloured."""
    doc = {
        "results": {r.tensor: {"value": r.max_rel} for r in result.rows},
        "gradient": [
            {"stop": 0, "bgColor": "#2e7d32"},
            {"stop": 0.5, "bgColor": "#f9a825"},
            {"stop": 1, "bgColor": "#c62828"},
        ],
    }
    with atomic_output(path, "w") as f:
        json.dump(doc, f, indent=1)
