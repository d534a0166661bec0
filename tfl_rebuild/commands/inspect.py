"""`tfl-rebuild inspect`: what a model holds, as a rich report or one JSON document."""

from __future__ import annotations

from collections import Counter

from tfl_rebuild.tflite.analysis import (
    activation_dtypes,
    params_by_dtype,
    quantization_kind,
    state_variables,
    to_json,
)
from tfl_rebuild.tflite.ir import Model, Operator, Subgraph, Tensor

__all__ = ["print_report", "to_json"]


def _shape(t: Tensor) -> str:
    """'1x8x8x3', or with ? for the dims the file marks dynamic (-1 in shape_signature): '?x8x8x3'."""
    sig = t.shape_signature
    dims = sig if sig is not None and len(sig) == len(t.shape) and any(d < 0 for d in sig) else t.shape
    return "x".join("?" if d < 0 else str(d) for d in dims) or "scalar"


def _stored(t: Tensor) -> str:
    """'  (dynamic; stored as 1x1x1x3)' for a tensor with dynamic dims, else ''."""
    shown = _shape(t)
    return f"  (dynamic; stored as {'x'.join(map(str, t.shape)) or 'scalar'})" if "?" in shown else ""


def _inputs(sg: Subgraph, op: Operator) -> str:
    """Input shapes of an op; constants marked with *, omitted optionals with -."""
    return ", ".join(
        "-" if i < 0 else _shape(sg.tensors[i]) + ("*" if sg.tensors[i].is_constant else "")
        for i in op.inputs
    )


def _io_quant(t: Tensor) -> str:
    """'  (scale 0.0078 zp 128)' for a per-tensor quantized input or output, else ''."""
    if not t.quantized or t.quantization.per_channel:
        return ""
    return f"  (scale {t.quantization.scale[0]:.4g} zp {t.quantization.zero_point[0]})"


def print_report(model: Model, show_tensors: bool = False, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from tfl_rebuild.text import printable

    con = console or Console(highlight=False)
    e = lambda text: escape(printable(text))  # noqa: E731  model strings: no control characters raw
    params = params_by_dtype(model)
    total = sum(params.values())
    con.print(
        f"[bold]{e(model.name)}[/bold]  {model.size / 1e6:.2f} MB  schema v{model.version}"
        f"  sha256 {model.sha256[:12]}"
    )
    if model.description:
        con.print(f"description: {e(model.description)}")
    acts = activation_dtypes(model)
    kind = quantization_kind(model) + (f" (activations {', '.join(acts)})" if acts else "")
    con.print(
        f"quantization: [bold]{kind}[/bold]   params: {total:,} ("
        + ", ".join(f"{k} {v:,}" for k, v in params.items())
        + ")"
    )
    if model.min_runtime_version:
        con.print(f"min runtime version: {e(model.min_runtime_version)}")
    if model.info is not None and (model.info.name or model.info.description):
        con.print(f"metadata: {e(model.info.name)} {e(model.info.version)} — {e(model.info.description)}")
    if model.metadata:
        con.print("metadata entries: " + ", ".join(f"{e(k)} ({len(v)} B)" for k, v in model.metadata.items()))
    for s in model.signatures:
        ins = ", ".join(f"{e(n)}={t}" for n, t in s.inputs)
        outs = ", ".join(f"{e(n)}={t}" for n, t in s.outputs)
        con.print(f"signature {e(s.key)!r} (subgraph {s.subgraph_index}): inputs {ins}; outputs {outs}")
    variables = state_variables(model)
    if variables:
        shown = ", ".join(e(repr(v)) for v in variables[:4]) + (
            f" and {len(variables) - 4} more" if len(variables) > 4 else ""
        )
        con.print(
            f"state: {len(variables)} resource variable(s) kept between runs ({shown}); keras / check "
            "rebuild them as extra inputs and outputs"
        )

    for sg in model.subgraphs:
        con.print()
        con.print(
            f"[bold]subgraph {sg.index}[/bold] {e(sg.name)}: {len(sg.operators)} ops, {len(sg.tensors)} tensors"
        )
        for label, ids in (("input", sg.inputs), ("output", sg.outputs)):
            for i in ids:
                t = sg.tensors[i]
                con.print(f"  {label} {i}: {e(t.name)}  {_shape(t)} {t.dtype}{_io_quant(t)}{_stored(t)}")
        if any("?" in _shape(sg.tensors[i]) for i in sg.inputs) and sg.index == 0:
            con.print(
                "  ? = dynamic dim (-1 in shape_signature); keras / check rebuild at the stored shape, "
                "or at another with --input-shape NAME=D,D,..."
            )
        ops = Table("#", "op", "output", "shape", "inputs", box=None, pad_edge=False)
        for op in sg.operators:
            out = sg.tensors[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None
            ops.add_row(
                str(op.index),
                e(op.key),
                e(out.name) if out else "-",
                f"{_shape(out)} {out.dtype}" if out else "-",
                _inputs(sg, op),
            )
        con.print(ops)
        hist = Table("op", "count", box=None, pad_edge=False)
        for name, n in Counter(op.key for op in sg.operators).most_common():
            hist.add_row(e(name), str(n))
        con.print(hist)
        if show_tensors:
            tt = Table("#", "name", "shape", "dtype", "kind", "quantization", box=None, pad_edge=False)
            for t in sg.tensors:
                kind = "const" if t.is_constant else ("variable" if t.is_variable else "")
                if t.sparsity is not None:
                    kind += " sparse"
                q = ""
                if t.quantized:
                    qs = t.quantization
                    q = (
                        f"scale {qs.scale[0]:.4g} zp {qs.zero_point[0]}"
                        if not qs.per_channel
                        else f"{qs.scale.size} channels (dim {qs.quantized_dimension})"
                    )
                tt.add_row(str(t.index), e(t.name), _shape(t), t.dtype, kind, q)
            con.print(tt)
