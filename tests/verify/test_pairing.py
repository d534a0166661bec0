"""Pairing the tensors of two encodings of one network: by name, by normalised name (suffixes,
';'-fused parts, QUANTIZE/DEQUANTIZE wrappers), and by graph position when names say nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES_DIR, read_cached, require_fixture

from tfl_rebuild.tflite import fb_patch
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.pairing import name_parts, op_inputs, pair_tensors

USER = "user_models/"
PAIRS = [
    ("mobilenet_v2_float", "mobilenet_v2_int8"),
    ("mobilenet_v2_float", "mobilenet_v2_dynamic"),
    ("mobilenet_v2_float", "mobilenet_v2_fp16"),
    (USER + "transformer_float", USER + "transformer_int8"),
    (USER + "unet_float", USER + "unet_int8"),
    (USER + "se_net_float", USER + "se_net_int8"),
    (USER + "transformer_float", USER + "transformer_fp16"),
    (USER + "unet_float", USER + "unet_fp16"),
    (USER + "se_net_float", USER + "se_net_fp16"),
]


def fixture(name: str) -> Path:
    return require_fixture(name)


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{Path(a).name}-vs-{Path(b).name}" for a, b in PAIRS])
def test_pairs_most_tensors(a, b):
    pairing = pair_tensors(read_cached(fixture(a)), read_cached(fixture(b)))
    total = len(pairing.pairs) + len(pairing.unpaired_a)
    print(f"{Path(a).name} vs {Path(b).name}: {pairing.coverage:.1%} of {total} paired {pairing.counts()}")
    assert pairing.coverage >= 0.95, [r.name for r in pairing.unpaired_a]
    for p in pairing.pairs:  # every pair holds as many values, and the pairs follow A's op order
        assert p.a.size == p.b.size, (p.a.name, p.b.name)
    order = [p.a.op_index for p in pairing.pairs]
    assert order == sorted(order)


def test_fp16_weights_are_not_activations():
    """fp16's DEQUANTIZE of constant weights gives tensors named like activations: never paired."""
    fp16 = read_cached(fixture("mobilenet_v2_fp16"))
    pairing = pair_tensors(read_cached(fixture("mobilenet_v2_float")), fp16)
    assert all(p.b.op != "DEQUANTIZE" for p in pairing.pairs)
    assert pairing.coverage == 1.0 and not pairing.unpaired_b


def test_wrappers_stand_for_their_input():
    """The int8 transformer quantizes around a float NEG: the wrappers pair as the tensor they wrap."""
    pairing = pair_tensors(
        read_cached(fixture(USER + "transformer_float")), read_cached(fixture(USER + "transformer_int8"))
    )
    assert {w.op for w in pairing.wrappers_b} == {"QUANTIZE", "DEQUANTIZE"}
    assert not pairing.unpaired_b
    neg = next(p for p in pairing.pairs if p.a.op == "NEG")
    assert neg.b.op == "NEG"
    b_model = read_cached(fixture(USER + "transformer_int8"))
    after = next(op for op in b_model.main.operators if op.opcode == "SQUARED_DIFFERENCE")
    pairable = [p.b.index for p in pairing.pairs]
    assert set(op_inputs(b_model, after.index, pairable)) <= set(pairable)


def test_name_parts():
    assert name_parts("a/conv;a/bn/add_1;a/relu") == {"a/conv", "a/bn/add_1", "a/relu"}
    assert name_parts("model/dense/MatMul_int8") == {"model/dense/MatMul"}
    assert name_parts("x/y_dequantize") == name_parts("x/y/dequantize") == {"x/y"}


def renamed(path: Path, out: Path) -> Path:
    """A copy whose every tensor is called t<index>: names say nothing, positions must pair."""
    p = fb_patch.Patch(path.read_bytes(), path.name)
    sg = p.table(p.subgraphs(), 0, "subgraph 0")
    tensors = p.vector(sg, fb_patch.SubGraph.TENSORS, "subgraph 0", "tensors")
    for k in range(tensors.length):
        table = p.table(tensors, k, f"tensor {k}")
        field = p.field(table, fb_patch.Tensor.NAME, f"tensor {k}")
        if field is not None:
            p.append_string(field, f"t{k}", f"tensor {k} name")
    out.write_bytes(bytes(p.data))
    return out


ANONYMOUS = [
    ("mobilenet_v2_float", "mobilenet_v2_int8"),
    ("mobilenet_v2_float", "mobilenet_v2_fp16"),
    (USER + "transformer_float", USER + "transformer_int8"),
    (USER + "unet_float", USER + "unet_int8"),
]


@pytest.mark.parametrize("a,b", ANONYMOUS, ids=[Path(b).name for _, b in ANONYMOUS])
def test_positions_pair_without_names(a, b, tmp_path):
    float_model = read_cached(fixture(a))
    by_name = pair_tensors(float_model, read_cached(fixture(b))).by_a()
    anonymous = read_model(renamed(FIXTURES_DIR / f"{b}.tflite", tmp_path / "anonymous.tflite"))
    assert all(t.name.startswith("t") for t in anonymous.main.tensors)
    pairing = pair_tensors(float_model, anonymous)
    print(f"float vs renamed {b}: {pairing.coverage:.1%} paired {pairing.counts()}")
    assert pairing.coverage >= 0.95
    assert pairing.counts()["position"] >= len(pairing.pairs) - 1  # the graph input keeps no name either
    wrong = [p.a.name for p in pairing.pairs if by_name[p.a.index].b.index != p.b.index]
    assert not wrong, wrong[:3]


def test_identical_models_pair_exactly():
    m = read_cached(fixture("mobilenet_v2_int8"))
    pairing = pair_tensors(m, m)
    assert pairing.coverage == 1.0 and pairing.counts()["exact"] == len(pairing.pairs)
    assert all(p.a.index == p.b.index for p in pairing.pairs)
