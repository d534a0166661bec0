"""Facts read off a model: its quantization kind, weights, parameters and summary (as data)."""

from __future__ import annotations

import math
from collections import Counter

from tfl_rebuild.tflite.ir import Model, Operator, Subgraph, Tensor

NON_DATA = ("string", "resource", "variant")


LOOKUPS = {"GATHER": 0, "EMBEDDING_LOOKUP": 1}  # op -> the slot of the table it reads rows of


def weight_tensors(sg: Subgraph) -> set[int]:
    """Constants, and what DENSIFY / DEQUANTIZE make of them (sparse or fp16 weights unpacked
    at run time), and rows looked up in them (dynamic-range quantization keeps an Embedding
    table int8: GATHER reads int8 rows, a DEQUANTIZE makes them float): weights, not activations."""
    weights = {t.index for t in sg.tensors if t.is_constant}
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
    consts = {t.dtype for t in tensors if t.is_constant}
    int_weights = {
        (sg.index, t.index)
        for sg in model.subgraphs
        for t in sg.tensors
        if t.is_constant and t.quantized and t.dtype in ("int8", "uint8", "int4")
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
            if t.is_constant and t.dtype not in NON_DATA:
                counts[t.dtype] += math.prod(t.shape)
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
    if t.is_constant:
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
    import json

    from tfl_rebuild.text import json_text

    return json_text(json.dumps(summarize(model), indent=1, ensure_ascii=False))


def activation_dtypes(model: Model) -> list[str]:
    """The integer types of the quantized activations (int8 / uint8 / int16), sorted."""
    dtypes = set()
    for sg in model.subgraphs:
        weights = weight_tensors(sg)  # once per subgraph, not once per tensor
        dtypes.update(t.dtype for t in sg.tensors if t.quantized and t.index not in weights)
    return sorted(dtypes)
