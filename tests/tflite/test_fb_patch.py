"""fb_patch: field slots match the schema, and every read and write is bounds-checked."""

from __future__ import annotations

import pytest
from flatbuf import Signature, T, _slot, build_model

from tfl_rebuild.errors import ModelFormatError, TflRebuildError
from tfl_rebuild.tflite import fb_patch


@pytest.mark.parametrize(
    "table, slot, accessor",
    [
        ("Model", "SUBGRAPHS", "Subgraphs"),
        ("Model", "SIGNATURE_DEFS", "SignatureDefs"),
        ("SubGraph", "TENSORS", "Tensors"),
        ("SubGraph", "INPUTS", "Inputs"),
        ("SubGraph", "OUTPUTS", "Outputs"),
        ("SubGraph", "OPERATORS", "Operators"),
        ("Operator", "INPUTS", "Inputs"),
        ("Tensor", "SHAPE", "Shape"),
        ("Tensor", "NAME", "Name"),
        ("Tensor", "SHAPE_SIGNATURE", "ShapeSignature"),
        ("SignatureDef", "SUBGRAPH_INDEX", "SubgraphIndex"),
    ],
)
def test_slots_match_the_generated_accessors(table, slot, accessor):
    import importlib

    cls = getattr(importlib.import_module(f"tflite.{table}"), table)
    assert 4 + 2 * getattr(getattr(fb_patch, table), slot) == _slot(cls, accessor)


def _blob() -> bytes:
    return build_model(
        [T("x", [1, 4]), T("y", [1, 4])],
        [],
        inputs=[0],
        outputs=[1],
        signatures=[Signature("serving_default", {"in": 0}, {"out": 1})],
    )


def test_reads_walk_the_model():
    buf = fb_patch.Buffer(_blob(), "m")
    sg = buf.table(buf.subgraphs(), 0, "subgraph 0")
    tensors = buf.vector(sg, fb_patch.SubGraph.TENSORS, "subgraph 0", "tensors")
    assert tensors.length == 2
    t1 = buf.table(tensors, 1, "tensor 1")
    shape = buf.vector(t1, fb_patch.Tensor.SHAPE, "tensor 1", "shape")
    assert [buf.read("<i", shape.first + 4 * k, "") for k in range(shape.length)] == [1, 4]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda b: b.read("<I", len(b.data) - 2, "x"), "x at byte"),
        (lambda b: b.read("<I", -4, "x"), "x at byte -4 lies outside the file"),
        (lambda b: b.field(len(b.data), 0, "t"), "t table at byte"),
        (lambda b: b.table(b.subgraphs(), 5, "subgraph 5"), "subgraph 5 is not in the 1-element vector"),
        (lambda b: b.check_aligned(6, "f"), "f at byte 6 is misaligned"),
    ],
)
def test_reads_are_bounds_checked(call, words):
    with pytest.raises(ModelFormatError, match=words):
        call(fb_patch.Buffer(_blob(), "m"))


def test_writes_are_bounds_checked_and_refuse_backward_offsets():
    class Refused(TflRebuildError):
        pass

    p = fb_patch.Patch(_blob(), "m", refuse=Refused)
    subs = p.subgraphs()
    with pytest.raises(ModelFormatError, match="lies outside the file"):
        p.set_uint32(len(p.data) - 1, 0, "x")
    with pytest.raises(Refused, match="cannot repoint the subgraphs vector element"):
        p.set_table(subs, 0, subs.first, "subgraphs vector")
    with pytest.raises(ModelFormatError, match="cannot grow"):
        p.set_length(subs, 2, "subgraphs vector")
    tensors = p.vector(p.table(subs, 0, "subgraph 0"), fb_patch.SubGraph.TENSORS, "subgraph 0", "tensors")
    shape = p.vector(p.table(tensors, 0, "tensor 0"), fb_patch.Tensor.SHAPE, "tensor 0", "shape")
    with pytest.raises(ModelFormatError, match="shape has 2 elements, not 1"):
        p.set_int32s(shape, [1], "shape")
    p.set_int32s(shape, [3, 5], "shape")
    assert [p.read("<i", shape.first + 4 * k, "") for k in range(2)] == [3, 5]
