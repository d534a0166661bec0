"""Mixed precision (`coreml --precision mixed`) and TFLite vs Core ML op by op (`compare M M.mlpackage`).

The float16 failures are real ones: a masked MultiHeadAttention whose -1e9 mask constant is -inf
in float16 (a query that may see no key then gets a softmax of -inf's: NaN), and a square that
overflows float16. Every check compares the converted program (numpy MIL evaluator) with TFLite.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tfl_rebuild.cli import main
from tfl_rebuild.coreml import check as cc
from tfl_rebuild.coreml import convert as cm
from tfl_rebuild.coreml import mixed
from tfl_rebuild.coreml.precision import ALL_OPS, Fp16Selector, fp16_share

pytest.importorskip("coremltools")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def masked_mha(tmp_path_factory):
    """x [4, 8] attends to kv [2, 8] under a float mask (> 0: may attend): with 2 keys a quarter of
    the seeded queries see none, which float32 softmaxes to uniform and float16 to NaN."""

    class ToBool(keras.layers.Layer):
        def call(self, t):
            return keras.ops.greater(t, 0.0)

    keras.utils.set_random_seed(3)
    x = keras.Input((4, 8), name="x")
    kv = keras.Input((2, 8), name="kv")
    mask = keras.Input((4, 2), name="mask")
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, kv, attention_mask=ToBool()(mask))
    model = keras.Model([x, kv, mask], keras.layers.Dense(3)(att))
    path = tmp_path_factory.mktemp("mha") / "masked_mha.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _run(args):
    return CliRunner().invoke(main, args, env=ENV)


def test_compare_names_the_op_that_makes_masked_attention_nan_in_float16(masked_mha, tmp_path):
    package = tmp_path / "mha16.mlpackage"
    done = _run(["coreml", str(masked_mha), "-o", str(package), "--precision", "float16"])
    assert done.exit_code == 1 and "NaN first made by MIL op softmax" in done.output, done.output
    result = _run(["compare", str(masked_mha), str(package), "--json", "-"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output[result.output.index("{") :])
    assert doc["nan_origins"][0].startswith("softmax "), doc["nan_origins"]
    assert "softmax" in doc["nan_origins"][0] and "(layer " in doc["nan_origins"][0]
    rows = doc["rows"]
    first = rows[doc["first_divergence"]]
    # the mask's select is where float16 first breaks (-1e9 is -inf), the softmax follows
    assert first["op"] == "SELECT_V2", first
    ops = [r["op"] for r in rows]
    assert "SOFTMAX" in ops and ops.index("SOFTMAX") > ops.index("SELECT_V2")
    before = rows[: doc["first_divergence"]]
    assert before and all(r["sqnr_db"] > 40 for r in before), before  # float16 holds up to there
    assert doc["pairing"]["coverage"] >= 0.6, doc["pairing"]


def test_compare_on_the_users_inputs_finds_the_nan_only_where_a_query_sees_no_key(masked_mha, tmp_path):
    """`-i` feeds both runs: the mask the user gives decides whether float16 makes NaN."""
    from tfl_rebuild.runtime.interpreter import make_interpreter

    package = tmp_path / "mha16.mlpackage"
    _run(["coreml", str(masked_mha), "-o", str(package), "--precision", "float16", "--no-check"])
    details = make_interpreter(str(masked_mha)).get_input_details()
    rng = np.random.default_rng(5)
    arrays = {d["name"]: rng.uniform(-1, 1, d["shape"]).astype(np.float32) for d in details}
    mask = next(n for n in arrays if "mask" in n)
    docs = {}
    for label, value in (("open", 1.0), ("shut", -1.0)):  # every key allowed, or none
        arrays[mask][...] = value
        np.savez(tmp_path / f"{label}.npz", **arrays)
        result = _run(
            ["compare", str(masked_mha), str(package), "-i", str(tmp_path / f"{label}.npz"), "--json", "-"]
        )
        docs[label] = json.loads(result.output[result.output.index("{") :])
    assert docs["open"]["inputs"] == "given" and not docs["open"]["nan_origins"], docs["open"]
    assert docs["shut"]["nan_origins"][0].startswith("softmax "), docs["shut"]
    np.savez(tmp_path / "batch2.npz", **{n: np.concatenate([a, a]) for n, a in arrays.items()})
    refused = _run(["compare", str(masked_mha), str(package), "-i", str(tmp_path / "batch2.npz")])
    assert refused.exit_code == 2 and "mha16.mlpackage takes [1, " in refused.output, refused.output


def test_compare_of_a_float32_package_finds_no_divergence(masked_mha, tmp_path):
    package = tmp_path / "mha32.mlpackage"
    assert _run(["coreml", str(masked_mha), "-o", str(package), "--precision", "float32"]).exit_code == 0
    result = _run(["compare", str(masked_mha), str(package)])
    assert result.exit_code == 0, result.output
    assert "Core ML fp32" in result.output and "no divergence" in result.output.splitlines()[-1]


def test_mixed_keeps_the_masked_attention_ops_in_float32(masked_mha, tmp_path):
    out = tmp_path / "mha_mixed.mlpackage"
    report = tmp_path / "mixed.json"
    result = _run(["coreml", str(masked_mha), "-o", str(out), "--precision", "mixed", "--json", str(report)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["precision"] == "mixed" and doc["check"]["report"]["ok"], doc["check"]
    assert doc["float16_check_that_failed"]["nan_origins"], doc
    kept = doc["mixed"]["fp32_ops"]
    assert kept and any("softmax" in n.lower() for n in kept), kept
    share = float(doc["mixed"]["fp16_share"].split()[1].rstrip("%")) / 100
    assert share >= 0.9, doc["mixed"]
    assert f"mixed {share:.0%} fp16" in result.output


def test_compare_refuses_what_is_not_an_ml_program(masked_mha, tmp_path):
    bogus = tmp_path / "x.mlpackage"
    bogus.mkdir()
    result = _run(["compare", str(masked_mha), str(bogus)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output


def test_mixed_keeps_an_overflowing_square_in_float32(tmp_path):
    """y = (1000 x)^2 - (1000 x)^2 + x: the square overflows float16, the sub makes NaN of it."""
    from flatbuf import Op, T, build_model

    from tfl_rebuild.commands.pipeline import write_generated
    from tfl_rebuild.rebuild.loader import load_module

    act = {"fused_activation_function": "NONE"}
    blob = build_model(
        [
            T("x", [1, 8]),
            T("k", [8], data=np.full(8, 1000.0, np.float32)),
            T("a", [1, 8]),
            T("b", [1, 8]),
            T("d", [1, 8]),
            T("y", [1, 8]),
        ],
        [
            Op("MUL", [0, 1], [2], options=act),
            Op("MUL", [2, 2], [3], options=act),
            Op("SUB", [3, 3], [4], options=act),
            Op("ADD", [4, 0], [5], options=act),
        ],
        inputs=[0],
        outputs=[5],
    )
    path = tmp_path / "square.tflite"
    path.write_bytes(blob)
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    done = cc.convert_checked(keras_model, model, cm.Options(precision="mixed"))
    assert done.float16_failed is not None and not done.float16_failed.report.ok
    assert done.conv.options.precision == "mixed" and done.result.report.ok, done.result.report.outputs
    assert done.conv.fp32_kept and done.conv.fp16_ops >= 1, (done.conv.fp32_kept, done.conv.fp16_ops)
    why = done.mixed.why(done.conv.fp32_kept)
    assert any("overflows float16" in w or "NaN" in w for w in why), why


def test_mixed_refuses_a_neural_network():
    with pytest.raises(cm.CoreMLError, match="mlprogram"):
        cc.convert_checked(None, None, cm.Options(precision="mixed", format="neuralnetwork"))


# -- the pieces, on stand-ins -------------------------------------------------------------------------


def test_selector_counts_what_it_casts_and_skips_consts():
    sel = Fp16Selector(frozenset({"a_b"}))
    ops = [SimpleNamespace(name=n, op_type=t) for n, t in (("w", "const"), ("a/b", "conv"), ("c", "add"))]
    assert [sel(o) for o in ops] == [True, False, True]
    assert sel.counts() == (1, ["a_b"], [("a_b", "conv"), ("c", "add")])
    every = Fp16Selector(frozenset({ALL_OPS}))
    assert not every(ops[2]) and every.counts()[:2] == (0, ["c"])
    assert fp16_share(199, 1) == 0.99 and fp16_share(0, 0) == 1.0  # floored: never 100% with one left


def _risks(n):
    return [mixed.OpRisk(f"op{k}", "add", rel=1e-3 / (k + 1), op=f"p{k}") for k in range(n)]


def _search(fits, n: int = 40, passes=lambda conv: (True, "result"), risks=None, error=None):
    """The search over stand-ins: `fits(kept program names)` says whether a set simulates within the
    bar (at rel 0.005), or `error(kept)` gives its simulated error; the bar is 0.01."""
    tried = []

    def convert(keep):
        tried.append(keep)
        return SimpleNamespace(fp16_ops=n - len(keep), fp32_kept=sorted(keep), keep=keep)

    error = error or (lambda kept: 0.005 if fits(kept) else 0.1)
    found = mixed.search(risks or _risks(n), convert, passes, error=error, target=0.01)
    return found, tried


def test_search_converts_only_the_smallest_set_simulated_within_the_bar():
    found, tried = _search(lambda kept: {"p0", "p1", "p2", "p3", "p4"} <= kept)
    assert tried == [frozenset(f"op{k}" for k in range(5))] and found.result == "result"
    assert [a.fp32 for a in found.attempts] == [5] and found.attempts[0].share == 0.87
    assert [k for k, _ in found.simulated] == [1, 2, 3, 4, 5]  # the scan stops at the first fit


def test_search_takes_a_small_set_that_fits_where_larger_ones_do_not():
    """Roundings cancel: the error is not monotonic in k, so no bisection can be trusted."""
    found, _ = _search(lambda kept: len(kept) == 3 or len(kept) >= 12)
    assert len(found.conv.fp32_kept) == 3


def test_search_finds_the_smallest_set_between_grid_steps():
    found, tried = _search(lambda kept: len(kept) >= 18)  # the grid steps 16 -> 20
    assert [len(t) for t in tried][0] == 18 and len(found.conv.fp32_kept) == 18


def test_search_asks_for_more_headroom_when_the_check_disagrees():
    """The check's inputs are not the simulation's: a set just within the bar there can fail the check."""
    steps = {4: 0.009, 5: 0.009, 6: 0.009, 7: 0.004, 8: 0.004, 9: 0.004}

    def error(kept):
        return steps.get(len(kept), 0.1 if len(kept) < 4 else 0.002)

    found, tried = _search(None, error=error, passes=lambda conv: (len(conv.keep) >= 10, "r"))
    assert [len(t) for t in tried] == [4, 7, 10] and len(found.conv.fp32_kept) == 10
    found, tried = _search(None, error=error, passes=lambda conv: (len(conv.keep) >= 7, "r"))
    assert [len(t) for t in tried] == [4, 7] and len(found.conv.fp32_kept) == 7


def test_search_starts_with_every_op_that_overflows():
    risks = _risks(10) + [mixed.OpRisk("big", "mul", overflow=True, op="pbig")]
    found, tried = _search(lambda kept: "pbig" in kept, n=11, risks=risks)
    assert tried == [frozenset({"big"})] and found.conv.fp32_kept == ["big"]


def test_search_gives_up_past_half_the_ops():
    found, tried = _search(lambda kept: len(kept) >= 30)
    assert found.conv is None and not tried and max(k for k, _ in found.simulated) == 20
    assert mixed.failed_line(found).endswith("simulated within the bar (closest: 1 ops, rel >= 0.1)")
    refused, _ = _search(None, error=lambda kept: 0.04 / len(kept), passes=lambda conv: (False, "r"))
    assert mixed.failed_line(refused).endswith("within the bar failed the check (4, 8, 16 ops in float32)")
    assert mixed.grid(1, 40) == [*range(1, 17), 20, 25, 31, 38]


def test_compare_refuses_a_package_made_from_another_model(masked_mha, tmp_path):
    from flatbuf import Op, T, build_model

    package = tmp_path / "mha32.mlpackage"
    assert _run(["coreml", str(masked_mha), "-o", str(package), "--precision", "float32"]).exit_code == 0
    other = tmp_path / "other.tflite"
    other.write_bytes(
        build_model(
            [T("x", [1, 8]), T("y", [1, 8])],
            [Op("RELU", [0], [1])],
            inputs=[0],
            outputs=[1],
        )
    )
    result = _run(["compare", str(other), str(package)])
    assert result.exit_code == 2 and "converted from another .tflite" in result.output, result.output
