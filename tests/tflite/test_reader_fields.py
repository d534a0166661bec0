"""The reader reads the core tables of schema.fbs by field id with struct: each id must be the one
the `tflite` package's generated accessors use, and on real models both must read the same values."""

from __future__ import annotations

import inspect as pyinspect
import re

import numpy as np
import pytest
import tflite
from conftest import model_params, require_model

from tfl_rebuild.tflite.reader import _F, read_model

# (reader's field-id class, generated class, {field id name: generated accessor})
FIELDS = [
    (
        _F.Model,
        "Model",
        {
            "VERSION": "Version",
            "OPERATOR_CODES": "OperatorCodesLength",
            "SUBGRAPHS": "SubgraphsLength",
            "DESCRIPTION": "Description",
            "BUFFERS": "BuffersLength",
            "METADATA": "MetadataLength",
            "SIGNATURE_DEFS": "SignatureDefsLength",
        },
    ),
    (
        _F.OperatorCode,
        "OperatorCode",
        {
            "DEPRECATED_BUILTIN_CODE": "DeprecatedBuiltinCode",
            "CUSTOM_CODE": "CustomCode",
            "VERSION": "Version",
            "BUILTIN_CODE": "BuiltinCode",
        },
    ),
    (_F.Buffer, "Buffer", {"DATA": "DataLength", "OFFSET": "Offset", "SIZE": "Size"}),
    (_F.Metadata, "Metadata", {"NAME": "Name", "BUFFER": "Buffer"}),
    (
        _F.SubGraph,
        "SubGraph",
        {
            "TENSORS": "TensorsLength",
            "INPUTS": "InputsLength",
            "OUTPUTS": "OutputsLength",
            "OPERATORS": "OperatorsLength",
            "NAME": "Name",
        },
    ),
    (
        _F.Tensor,
        "Tensor",
        {
            "SHAPE": "ShapeLength",
            "TYPE": "Type",
            "BUFFER": "Buffer",
            "NAME": "Name",
            "QUANTIZATION": "Quantization",
            "IS_VARIABLE": "IsVariable",
            "SPARSITY": "Sparsity",
            "SHAPE_SIGNATURE": "ShapeSignatureLength",
        },
    ),
    (
        _F.Quantization,
        "QuantizationParameters",
        {
            "MIN": "MinLength",
            "MAX": "MaxLength",
            "SCALE": "ScaleLength",
            "ZERO_POINT": "ZeroPointLength",
            "QUANTIZED_DIMENSION": "QuantizedDimension",
        },
    ),
    (
        _F.Operator,
        "Operator",
        {
            "OPCODE_INDEX": "OpcodeIndex",
            "INPUTS": "InputsLength",
            "OUTPUTS": "OutputsLength",
            "BUILTIN_OPTIONS_TYPE": "BuiltinOptionsType",
            "BUILTIN_OPTIONS": "BuiltinOptions",
            "CUSTOM_OPTIONS": "CustomOptionsLength",
            "INTERMEDIATES": "IntermediatesLength",
            "LARGE_CUSTOM_OPTIONS_OFFSET": "LargeCustomOptionsOffset",
            "LARGE_CUSTOM_OPTIONS_SIZE": "LargeCustomOptionsSize",
            "BUILTIN_OPTIONS_2_TYPE": "BuiltinOptions2Type",
            "BUILTIN_OPTIONS_2": "BuiltinOptions2",
        },
    ),
    (
        _F.SignatureDef,
        "SignatureDef",
        {
            "INPUTS": "InputsLength",
            "OUTPUTS": "OutputsLength",
            "SIGNATURE_KEY": "SignatureKey",
            "SUBGRAPH_INDEX": "SubgraphIndex",
        },
    ),
    (_F.TensorMap, "TensorMap", {"NAME": "Name", "TENSOR_INDEX": "TensorIndex"}),
    (
        _F.Sparsity,
        "SparsityParameters",
        {
            "TRAVERSAL_ORDER": "TraversalOrderLength",
            "BLOCK_MAP": "BlockMapLength",
            "DIM_METADATA": "DimMetadataLength",
        },
    ),
    (
        _F.DimensionMetadata,
        "DimensionMetadata",
        {
            "FORMAT": "Format",
            "DENSE_SIZE": "DenseSize",
            "SEGMENTS_TYPE": "ArraySegmentsType",
            "SEGMENTS": "ArraySegments",
            "INDICES_TYPE": "ArrayIndicesType",
            "INDICES": "ArrayIndices",
        },
    ),
]


def _vtable_offset(cls_name: str, accessor: str) -> int:
    cls = getattr(tflite, cls_name)
    source = pyinspect.getsource(getattr(cls, accessor))
    return int(re.search(r"\._tab\.Offset\((\d+)\)", source).group(1))


@pytest.mark.parametrize("ids, cls_name, accessors", FIELDS, ids=[f[1] for f in FIELDS])
def test_field_ids_are_the_generated_accessors(ids, cls_name, accessors):
    wrong = {
        name: (getattr(ids, name), (_vtable_offset(cls_name, acc) - 4) // 2)
        for name, acc in accessors.items()
        if 4 + 2 * getattr(ids, name) != _vtable_offset(cls_name, acc)
    }
    assert not wrong, f"{cls_name}: field id (reader, generated) {wrong}"


def _ints(obj, field: str) -> tuple[int, ...]:
    n = getattr(obj, f"{field}Length")()
    return tuple(int(v) for v in getattr(obj, f"{field}AsNumpy")()) if n else ()


@pytest.mark.parametrize("path", model_params())
def test_reader_reads_what_the_generated_accessors_read(path):
    raw = require_model(path).read_bytes()
    fb = tflite.Model.GetRootAs(raw, 0)
    model = read_model(path)
    assert model.version == fb.Version() and model.description == (fb.Description() or b"").decode()
    assert len(model.subgraphs) == fb.SubgraphsLength()
    codes = [fb.OperatorCodes(i) for i in range(fb.OperatorCodesLength())]
    for s, sg in enumerate(model.subgraphs):
        fsg = fb.Subgraphs(s)
        assert (sg.inputs, sg.outputs) == (_ints(fsg, "Inputs"), _ints(fsg, "Outputs"))
        assert len(sg.tensors) == fsg.TensorsLength() and len(sg.operators) == fsg.OperatorsLength()
        for t in sg.tensors:
            ft = fsg.Tensors(t.index)
            assert (t.name, t.shape, t.buffer, t.is_variable) == (
                ft.Name().decode("utf-8", "replace"),
                _ints(ft, "Shape"),
                ft.Buffer(),
                ft.IsVariable(),
            ), t.index
            assert (t.shape_signature or ()) == _ints(ft, "ShapeSignature"), t.index
            fq = ft.Quantization()
            n_scales = fq.ScaleLength() if fq is not None else 0
            assert (t.quantization.scale.size if t.quantization else 0) == n_scales, t.index
            if n_scales:
                assert np.array_equal(t.quantization.scale, fq.ScaleAsNumpy()), t.index
            fdata = fb.Buffers(t.buffer).DataAsNumpy() if fb.Buffers(t.buffer).DataLength() else None
            if fdata is not None:
                assert t.is_constant and t.data.tobytes() == fdata.tobytes(), t.index
            assert (t.sparsity is not None) == (ft.Sparsity() is not None), t.index
        for op in sg.operators:
            fop = fsg.Operators(op.index)
            code = codes[fop.OpcodeIndex()]
            assert max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == getattr(
                tflite.BuiltinOperator, op.opcode, -1
            ) or op.opcode.startswith("BUILTIN_"), op.index
            assert (op.inputs, op.outputs, op.intermediates) == (
                _ints(fop, "Inputs"),
                _ints(fop, "Outputs"),
                _ints(fop, "Intermediates"),
            ), op.index
            assert op.custom_options == (
                fop.CustomOptionsAsNumpy().tobytes() if fop.CustomOptionsLength() else b""
            ), op.index
    for j, sig in enumerate(model.signatures):
        fsd = fb.SignatureDefs(j)
        assert (sig.key, sig.subgraph_index) == (fsd.SignatureKey().decode(), fsd.SubgraphIndex())
        assert sig.inputs == tuple(
            (fsd.Inputs(k).Name().decode(), fsd.Inputs(k).TensorIndex()) for k in range(fsd.InputsLength())
        )
