"""`tfl-rebuild compare`: every TFLite intermediate tensor against the Keras layer built for it.

One run of the patched model (outputter) gives all TFLite tensors; one run of a Keras model whose
outputs are every mapped layer gives the rebuild's. They are paired through the
`<stem>_tensors.json` sidecar that `keras` writes, and listed in topological (op) order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import atomic_output
from .inspect import quantization_kind
from .ir import Model
from .reader import read_model
from .verify import FLOAT_REL_TOL, INT8_LSB_TOL, compare_arrays, load_module, to_float


@dataclass
class Row:
    op_index: int
    op: str
    tensor: str
    shape: list[int]
    max_abs: float
    max_rel: float
    cosine: float
    lsb: float | None
    ok: bool


@dataclass
class Comparison:
    model: str
    kind: str
    tolerance: str
    rows: list[Row]

    @property
    def first_divergence(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def verdict(self) -> str:
        bad = self.first_divergence
        if bad is None:
            return f"all {len(self.rows)} tensors within tolerance ({self.tolerance})"
        err = f"{bad.lsb:.1f} LSB" if bad.lsb is not None else f"rel {bad.max_rel:.1e}"
        return f"first divergence at op {bad.op_index} {bad.op} {bad.tensor!r} ({err})"


def sidecar_for(py_path: Path) -> Path:
    return py_path.with_name(f"{py_path.stem}_tensors.json")


def compare(model_path: str, py_path: str, inputs=None, seed: int = 0) -> Comparison:
    import keras

    from .outputter import dump

    model: Model = read_model(model_path)
    py = Path(py_path)
    side = sidecar_for(py)
    if not side.is_file():
        raise InputError(f"{side}: missing; it is written by `tfl-rebuild keras` beside the module")
    mapping = json.loads(side.read_text(encoding="utf-8"))["tensors"]
    keras_model = load_module(py).build_model()

    reference = dump(model, inputs, seed=seed)
    by_index = {e.tensor_index: (key, e) for key, e in reference.entries.items()}
    sg = model.main
    feed = [to_float(sg.tensors[i], reference.inputs[name])
            for i, name in zip(sg.inputs, reference.inputs)]
    pairs = [(m, by_index[m["tensor"]]) for m in mapping if m["tensor"] in by_index]
    outputs = []
    for m, _ in pairs:
        out = keras_model.get_layer(m["layer"]).output
        outputs.append(out[m["output"]] if isinstance(out, (list, tuple)) else out)
    probe = keras.Model(keras_model.inputs, outputs)
    got = probe(feed if len(feed) > 1 else feed[0], training=False)
    got = got if isinstance(got, (list, tuple)) else [got]

    kind = quantization_kind(model)
    quantized = kind in ("full-int8", "int16x8")
    rows = []
    for (_, (key, entry)), value in zip(pairs, got):
        t = sg.tensors[entry.tensor_index]
        ref = to_float(t, reference[key])
        max_abs, max_rel, cos = compare_arrays(ref, np.asarray(value))
        lsb = max_abs / float(t.quantization.scale[0]) if quantized and t.quantized else None
        ok = lsb <= INT8_LSB_TOL if lsb is not None else max_rel <= FLOAT_REL_TOL
        rows.append(Row(entry.op_index, entry.op_type, t.name, list(t.shape), max_abs, max_rel, cos, lsb, ok))
    rows.sort(key=lambda r: r.op_index)
    tol = f"<= {INT8_LSB_TOL:g} LSB" if quantized else f"rel <= {FLOAT_REL_TOL:g}"
    return Comparison(Path(model_path).name, kind, tol, rows)


def print_table(result: Comparison, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    table = Table("op", "type", "tensor", "shape", "max abs", "max rel", "cosine", box=None, pad_edge=False)
    first = result.first_divergence
    for r in result.rows:
        style = "bold red" if r is first else ("red" if not r.ok else None)
        table.add_row(str(r.op_index), escape(r.op), escape(r.tensor[:60]), "x".join(map(str, r.shape)),
                      f"{r.max_abs:.3g}", f"{r.max_rel:.3g}", f"{r.cosine:.6f}", style=style)
    con.print(table)
    con.print(("[green]" if first is None else "[red]") + escape(result.verdict()) + ("[/green]" if first is None else "[/red]"))


def to_json(result: Comparison) -> str:
    doc = {"model": result.model, "kind": result.kind, "tolerance": result.tolerance,
           "verdict": result.verdict(), "rows": [asdict(r) for r in result.rows]}
    return json.dumps(doc, indent=1, allow_nan=True)


def write_plot(result: Comparison, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    xs = [r.op_index for r in result.rows]
    ys = [max(r.max_rel, 1e-12) for r in result.rows]
    ax.semilogy(xs, ys, marker=".", linewidth=1)
    ax.axhline(FLOAT_REL_TOL, color="red", linestyle="--", linewidth=0.8, label=f"tolerance {FLOAT_REL_TOL:g}")
    ax.set_xlabel("op index")
    ax.set_ylabel("max rel error (vs max |TFLite|)")
    ax.set_title(f"{result.model}: Keras rebuild vs TFLite, per layer")
    ax.legend()
    fig.tight_layout()
    with atomic_output(path) as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)


def write_model_explorer(result: Comparison, path: str) -> None:
    """Model Explorer node data: each op's output tensor name -> its max rel error, coloured."""
    doc = {
        "results": {r.tensor: {"value": r.max_rel} for r in result.rows},
        "gradient": [{"stop": 0, "bgColor": "#2e7d32"}, {"stop": 0.5, "bgColor": "#f9a825"},
                     {"stop": 1, "bgColor": "#c62828"}],
    }
    with atomic_output(path, "w") as f:
        json.dump(doc, f, indent=1)
