"""External references: layouts, the map, loading, and the pairing on made-up activations (no
runtime: `pair_references` takes the TFLite values as a dict)."""

from __future__ import annotations

import numpy as np
import pytest

from tfl_rebuild.errors import InputError
from tfl_rebuild.verify.external import correlation, pair_references, rescaled
from tfl_rebuild.verify.pairing import TensorRef
from tfl_rebuild.verify.references import layouts, load_refs, normalise, parse_map, plain_name


def test_layouts():
    assert layouts((1, 64, 4, 4), (1, 4, 4, 64)) == [("NCHW->NHWC", (0, 2, 3, 1))]
    assert layouts((1, 8, 20), (1, 20, 8)) == [("NCL->NLC", (0, 2, 1))]
    assert layouts((1, 17, 64), (17, 64)) == [("as is", None)]
    assert [n for n, _ in layouts((1, 8, 8, 8), (1, 8, 8, 8))] == ["as is", "NCHW->NHWC", "NHWC->NCHW"]
    assert layouts((1, 8, 20), (1, 8, 21)) == []


def test_names():
    assert plain_name("serving_default_input:0") == "input"
    assert normalise("/blocks/blocks.0/attn/Softmax_output_0") == "blocks/blocks/0/attn/softmax"


def test_parse_map(tmp_path):
    m = parse_map(r"s|^blocks\.(\d+)\.fc$|model/dense_\1|")
    assert m.target("blocks.3.fc") == "model/dense_3" and m.target("head") is None
    path = tmp_path / "map.json"
    path.write_text('{"head": "StatefulPartitionedCall:0"}')
    assert parse_map(str(path)).target("head") == "StatefulPartitionedCall:0"
    for bad in ("nonsense", "s/a/b/c", "s/(/b/"):
        with pytest.raises(InputError):
            parse_map(bad)
    path.write_text('["a"]')
    with pytest.raises(InputError, match="JSON object"):
        parse_map(str(path))


def test_load_refs(tmp_path):
    np.savez(tmp_path / "r.npz", b=np.ones(2), a=np.zeros(3))
    assert [k for k, _ in load_refs(str(tmp_path / "r.npz"))] == ["b", "a"]  # the file's order
    folder = tmp_path / "dir"
    folder.mkdir()
    np.save(folder / "02_fc.npy", np.ones(2))
    np.save(folder / "01_conv.npy", np.zeros(3))
    assert [k for k, _ in load_refs(str(folder))] == ["01_conv", "02_fc"]
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "objdir").mkdir()
    (tmp_path / "obj.npy").rename(tmp_path / "objdir" / "obj.npy")
    with pytest.raises(InputError, match="not a readable .npy"):
        load_refs(str(tmp_path / "objdir"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not an .npz file"):
        load_refs(str(tmp_path / "junk.npz"))
    with pytest.raises(InputError, match="no such file"):
        load_refs(str(tmp_path / "missing.npz"))


def test_measures():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    assert correlation(x, 3 * x + 1) == pytest.approx(1.0)
    assert abs(correlation(x, rng.normal(size=500))) < 0.2
    assert rescaled(x, 0.5 * x)  # a folded constant: another tensor
    assert not rescaled(x, x + rng.normal(size=500) * 0.05)  # drift: not explained by a scale


def _model(rng):
    """Made-up activations of an NHWC conv net (input, conv, a copy of conv, relu, pool, fc)
    and the references a PyTorch hook would record (NCHW, with a pre-activation TFLite fused)."""
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    conv = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    relu = np.maximum(conv + 0.5, 0)
    pool = rng.normal(size=(1, 4, 4, 4)).astype(np.float32)
    seq = rng.normal(size=(1, 6, 10)).astype(np.float32)  # NCL
    fc = rng.normal(size=(1, 5)).astype(np.float32)
    refs = [("x", x), ("conv", conv), ("relu", relu), ("pool", pool), ("seq", seq), ("fc", fc)]
    nhwc = (0, 2, 3, 1)
    tensors = [  # (op, value in TFLite's layout)
        ("INPUT", x.transpose(nhwc)),
        ("CONV_2D", relu.transpose(nhwc)),  # conv + bias + relu fused: the pre-activation is gone
        ("MUL", 2 * relu.transpose(nhwc)),  # same shape, a scaled neighbour
        ("MAX_POOL_2D", pool.transpose(nhwc)),
        ("RESHAPE", seq.transpose(0, 2, 1)),
        ("FULLY_CONNECTED", fc + rng.normal(size=fc.shape).astype(np.float32) * 0.01),  # drifts
    ]
    acts = [TensorRef(k, f"t{k}", k - 1, op, tuple(v.shape), "float32") for k, (op, v) in enumerate(tensors)]
    return refs, acts, {k: v for k, (_, v) in enumerate(tensors)}


def test_pairs_by_order_with_layouts():
    refs, acts, values = _model(np.random.default_rng(1))
    pairing = pair_references(refs, acts, values)
    got = {p.key: (p.tensor.op, p.how, p.layout) for p in pairing.pairs}
    assert got == {
        "x": ("INPUT", "order", "NCHW->NHWC"),
        "relu": ("CONV_2D", "order", "NCHW->NHWC"),
        "pool": ("MAX_POOL_2D", "order", "NCHW->NHWC"),
        "seq": ("RESHAPE", "order", "NCL->NLC"),
        "fc": ("FULLY_CONNECTED", "order", "as is"),
    }
    assert pairing.unpaired_refs == ["conv"]  # fused away in TFLite: left out, not mispaired


def test_shuffled_or_reshaped_refs_do_not_pair():
    rng = np.random.default_rng(2)
    refs, acts, values = _model(rng)
    shuffled = [(k, rng.permutation(v.reshape(-1)).reshape(v.shape)) for k, v in refs]
    assert pair_references(shuffled, acts, values).pairs == []
    # NHWC values reshaped (not transposed) to NCHW: the shapes fit, the values do not
    reshaped = [(k, values[0].reshape(v.shape)) if k == "x" else (k, v) for k, v in refs]
    assert "x" not in {p.key for p in pair_references(reshaped, acts, values).pairs}


def test_map_and_names_first():
    refs, acts, values = _model(np.random.default_rng(3))
    acts[5] = TensorRef(6, "model/head/MatMul;model/head/BiasAdd", 4, "FULLY_CONNECTED", (1, 5), "float32")
    values[6] = values.pop(5)
    refs.append(("/model/head/MatMul_output_0", refs[-1][1]))
    pairing = pair_references(refs, acts, values, parse_map("s/^conv$/t2/"))
    got = {p.key: (p.tensor.index, p.how) for p in pairing.pairs}
    assert got["conv"] == (2, "map")  # the user's word wins, even over values
    assert got["/model/head/MatMul_output_0"] == (6, "name")
    assert "fc" not in got  # its tensor went to the name
