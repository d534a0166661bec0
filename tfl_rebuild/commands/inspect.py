"""`tfl-rebuild inspect`: what a model holds, as a rich report or one JSON document."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from tfl_rebuild.tflite.ir import Model, Operator, Subgraph, Tensor

NON_DATA = ("string", "resource", "variant")


LOOKUPS = {"GATHER": 0, "EMBEDDING_LOOKUP": 1}  # op -> the slot of the table it reads rows of


def weight_tensors(sg: Subgraph) -> set[int]:
    """Constants, and what DENSIFY / DEQUANTIZE make of them (sparse or fp16 weights unpacked
    at run time), and rows looked up in them (dynamic-range quantization keeps an Embedding
    table int8: GATHER reads int8 rows, a DEQUANTIZE makes them float): weights, not activations."""
    weights = {t.index for t in sg.tensors if t.data is not None}
    for op in sg.operators:
        if op.opcode in ("DENSIFY", "DEQUANTIZE") and op.inputs and op.inputs[0] in weights:
            weights.update(o for o in op.outputs if o >= 0)
        elif (
            op.opcode in LOOKUPS
            and len(op.inputs) > LOOKUPS[op.opcode]
            and op.inputs[LOOKUPS[op.opcode]] in weights
        ):
            weights.update(o for o in op.outputs if o >= 0)
    return weights


def quantization_kind(model: Model) -> str:
    """float | fp16 | weight-only | dynamic-range | full-int8 | int16x8, judged from activations
    then weights. weight-only: every int8 / uint8 / int4 weight is read by a DEQUANTIZE alone (as
    ai-edge-quantizer's weight-only recipe writes them), so every kernel computes in float;
    dynamic-range: some op reads quantized weights itself (a hybrid kernel)."""
    tensors = [t for sg in model.subgraphs for t in sg.tensors]
    weights = {(sg.index, i) for sg in model.subgraphs for i in weight_tensors(sg)}
    acts = {
        t.dtype
        for sg in model.subgraphs
        for t in sg.tensors
        if (sg.index, t.index) not in weights and t.quantized
    }
    if "int16" in acts:
        return "int16x8"
    if acts & {"int8", "uint8"}:
        return "full-int8"
    consts = {t.dtype for t in tensors if t.data is not None}
    int_weights = {
        (sg.index, t.index)
        for sg in model.subgraphs
        for t in sg.tensors
        if t.data is not None and t.quantized and t.dtype in ("int8", "uint8", "int4")
    }
    if int_weights:
        readers = {
            op.opcode
            for sg in model.subgraphs
            for op in sg.operators
            if any((sg.index, i) in int_weights for i in op.inputs)
        }
        return "weight-only" if readers == {"DEQUANTIZE"} else "dynamic-range"
    if "float16" in consts:
        return "fp16"
    return "float"


def params_by_dtype(model: Model) -> dict[str, int]:
    counts: Counter = Counter()
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.data is not None and t.dtype not in NON_DATA:
                counts[t.dtype] += int(np.prod(t.shape, dtype=np.int64))
    return dict(sorted(counts.items()))


def tensor_doc(t: Tensor) -> dict:
    doc = {"index": t.index, "name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    if t.shape_signature and list(t.shape_signature) != list(t.shape):
        doc["shape_signature"] = list(t.shape_signature)
    if t.quantized:
        q = t.quantization
        doc["quantization"] = (
            q.to_dict()
            if q.scale.size <= 8
            else {"channels": int(q.scale.size), "quantized_dimension": q.quantized_dimension}
        )
    if t.data is not None:
        doc["constant"] = True
        doc["bytes"] = t.nbytes
    if t.sparsity is not None:
        doc["sparse"] = True
    if t.is_variable:
        doc["variable"] = True
    return doc


def op_doc(sg: Subgraph, op: Operator) -> dict:
    def io(ids):
        return [
            None
            if i < 0
            else {
                "tensor": i,
                "name": sg.tensors[i].name,
                "shape": list(sg.tensors[i].shape),
                "dtype": sg.tensors[i].dtype,
            }
            for i in ids
        ]

    doc = {
        "index": op.index,
        "op": op.key,
        "version": op.version,
        "inputs": io(op.inputs),
        "outputs": io(op.outputs),
    }
    if op.options:
        doc["options"] = op.options
    if op.custom_options:
        doc["custom_options_bytes"] = len(op.custom_options)
    return doc


def summarize(model: Model, tensors: bool = True) -> dict:
    subgraphs = []
    for sg in model.subgraphs:
        entry = {
            "index": sg.index,
            "name": sg.name,
            "inputs": [tensor_doc(sg.tensors[i]) for i in sg.inputs],
            "outputs": [tensor_doc(sg.tensors[i]) for i in sg.outputs],
            "op_histogram": dict(Counter(op.key for op in sg.operators).most_common()),
            "operators": [op_doc(sg, op) for op in sg.operators],
        }
        if tensors:
            entry["tensors"] = [tensor_doc(t) for t in sg.tensors]
        subgraphs.append(entry)
    info = model.info
    return {
        "file": model.path,
        "size": model.size,
        "sha256": model.sha256,
        "schema_version": model.version,
        "description": model.description,
        "min_runtime_version": model.min_runtime_version,
        "quantization": quantization_kind(model),
        "activation_dtypes": activation_dtypes(model),
        "params_by_dtype": params_by_dtype(model),
        "external_buffers": model.external_buffers,
        "signatures": [
            {"key": s.key, "subgraph": s.subgraph_index, "inputs": dict(s.inputs), "outputs": dict(s.outputs)}
            for s in model.signatures
        ],
        "metadata": {name: len(blob) for name, blob in model.metadata.items()},
        "state_variables": state_variables(model),
        "model_info": None
        if info is None
        else {
            "name": info.name,
            "description": info.description,
            "version": info.version,
            "author": info.author,
            "license": info.license,
            "inputs": [vars(i) for i in info.inputs],
            "outputs": [vars(o) for o in info.outputs],
        },
        "subgraphs": subgraphs,
    }


def state_variables(model: Model) -> list[str]:
    """Names of the resource variables subgraph 0 keeps between runs (streaming state)."""
    return list(
        dict.fromkeys(
            op.options.get("shared_name") or "?" for op in model.main.operators if op.opcode == "VAR_HANDLE"
        )
    )


def to_json(model: Model) -> str:
    return json.dumps(summarize(model), indent=1, ensure_ascii=False)


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


def activation_dtypes(model: Model) -> list[str]:
    """The integer types of the quantized activations (int8 / uint8 / int16), sorted."""
    return sorted(
        {
            t.dtype
            for sg in model.subgraphs
            for t in sg.tensors
            if t.quantized and t.index not in weight_tensors(sg)
        }
    )


def print_report(model: Model, show_tensors: bool = False, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = console or Console(highlight=False)
    e = escape
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
