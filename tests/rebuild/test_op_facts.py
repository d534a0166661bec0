"""Facts about ops live in the registry (ops/): passes, folding and verification ask it.

The AST scan fails on a literal set / list / tuple / dict naming five or more ops anywhere in
tfl_rebuild/ outside rebuild/ops/: such a literal is an op fact kept apart from the registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import tflite
from flatbuf import Op, T, build_model

from tfl_rebuild.errors import UnsupportedOpError
from tfl_rebuild.rebuild.ops import REGISTRY, lookup, refused_ops, supported_ops
from tfl_rebuild.rebuild.ops.registry import (
    FOLDERS,
    REFUSED,
    TRAITS,
    Trait,
    has_trait,
    hybrid_input,
    never_rebuilt,
    ops_with,
    traits,
)
from tfl_rebuild.rebuild.passes import fold
from tfl_rebuild.tflite.ir import Operator
from tfl_rebuild.tflite.reader import read_model

PACKAGE = Path(__file__).resolve().parents[2] / "tfl_rebuild"
OPS = PACKAGE / "rebuild" / "ops"
LIMIT = 5  # op names in one literal


def _op_names() -> set[str]:
    """Every op name the registry knows (converters, custom codes, traits, refusals, folders) and
    every TFLite builtin."""
    names = {k for k in vars(tflite.BuiltinOperator) if k.isupper()}
    names |= {str(k[1]) if k[0] == "CUSTOM" else k[0] for k in REGISTRY}
    names |= {k if isinstance(k, str) else k[1] for k in TRAITS}
    return names | set(REFUSED) | set(FOLDERS)


def _op_literals(tree: ast.AST, names: set[str]) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Set, ast.List, ast.Tuple)):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [k for k in node.keys if k is not None]
        else:
            continue
        ops = [e.value for e in elements if isinstance(e, ast.Constant) and e.value in names]
        if len(ops) >= LIMIT:
            found.append((node.lineno, ops))
    return found


def test_no_op_lists_outside_the_registry():
    names = _op_names()
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} {ops}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if OPS not in path.parents
        for line, ops in _op_literals(ast.parse(path.read_text(encoding="utf-8")), names)
    ]
    assert not offenders, "op facts belong in the registry (rebuild/ops/):\n" + "\n".join(offenders)


def test_the_scan_sees_an_op_list():
    tree = ast.parse('X = frozenset(["ADD", "SUB", "MUL", "DIV", "RELU"])\nY = ("ADD", "SUB")')
    assert [ops for _, ops in _op_literals(tree, _op_names())] == [["ADD", "SUB", "MUL", "DIV", "RELU"]]


@pytest.mark.parametrize(
    "op, trait",
    [
        ("ADD", Trait.ELEMENTWISE),
        ("LOGISTIC", Trait.ELEMENTWISE),
        ("CAST", Trait.ELEMENTWISE),
        ("QUANTIZE", Trait.ELEMENTWISE),
        ("SOFTMAX", Trait.LAST_AXIS),
        ("RESHAPE", Trait.SHAPE_ONLY),
        ("CONV_2D", Trait.BATCH_PRESERVING),
        ("CONCATENATION", Trait.BATCH_PRESERVING),
        ("COMPLEX_ABS", Trait.COMPLEX_OK),
        ("EXPAND_DIMS", Trait.COMPLEX_OK),
        ("WHILE", Trait.SIDE_EFFECTS),
        ("VAR_HANDLE", Trait.STATEFUL),
        ("HASHTABLE_FIND", Trait.STATEFUL),
    ],
)
def test_traits_the_passes_rely_on(op, trait):
    assert has_trait(op, trait)


def test_traits_stay_apart():
    assert not has_trait("SOFTMAX", Trait.ELEMENTWISE) and not has_trait("BROADCAST_TO", Trait.ELEMENTWISE)
    assert not has_trait("HASHTABLE", Trait.SIDE_EFFECTS) and has_trait("READ_VARIABLE", Trait.SIDE_EFFECTS)
    assert ops_with(Trait.SHAPE_ONLY) == {"RESHAPE", "SQUEEZE", "EXPAND_DIMS"}


def test_a_custom_code_never_passes_for_a_builtin():
    op = Operator(index=0, opcode="CUSTOM", version=1, inputs=(), outputs=(), custom_code="RESHAPE")
    assert traits(op) == frozenset() and hybrid_input(op) is None
    assert traits(Operator(index=0, opcode="RESHAPE", version=1, inputs=(), outputs=())) == traits("RESHAPE")


def test_hybrid_input_slots():
    assert {
        op: hybrid_input(op) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")
    } == {
        "CONV_2D": 0,
        "DEPTHWISE_CONV_2D": 0,
        "FULLY_CONNECTED": 0,
        "BATCH_MATMUL": 0,
    }
    assert hybrid_input("ADD") is None


def test_folding_uses_the_registered_evaluator():
    op = Operator(index=0, opcode="ADD", version=1, inputs=(), outputs=(), options={})
    got = fold.evaluate(op, [np.array([1, 2], np.int32), np.array(3, np.int32)], (2,), "int32")
    assert got.tolist() == [4, 5]
    split = Operator(index=0, opcode="SPLIT", version=1, inputs=(), outputs=(), options={"num_splits": 1})
    values = [np.array(0, np.int32), np.array([1, 2], np.int32)]
    assert fold.evaluate(split, values, (2,), "int32") is None  # a multi-output evaluator
    assert [v.tolist() for v in fold.evaluate_multi(split, values, ["int32"])] == [[1, 2]]


def test_refused_ops_are_not_supported():
    supported = {name for name, _, _ in supported_ops()}
    refused = dict(refused_ops())
    for op in (
        "UNIQUE",
        "RANDOM_UNIFORM",
        "RANDOM_STANDARD_NORMAL",
        "MULTINOMIAL",
        "WHERE",
        "RANGE",
        "VAR_HANDLE",
    ):
        assert op in refused and op not in supported, op
        assert "{" not in refused[op], refused[op]
    assert not any(name in REFUSED for name, _ in REGISTRY)


def _model(opcode: str, inputs: int = 1) -> tuple:
    tensors = [T(f"x{k}", [4]) for k in range(inputs)] + [T("drawn", [4])]
    blob = build_model(
        tensors, [Op(opcode, list(range(inputs)), [inputs])], inputs=list(range(inputs)), outputs=[inputs]
    )
    model = read_model(blob)
    return model.main.operators[0], model.main


def test_a_refusal_says_why_naming_the_tensors():
    op, sg = _model("RANDOM_UNIFORM")
    with pytest.raises(UnsupportedOpError) as info:
        lookup(op, sg)
    assert str(info.value).startswith("RANDOM_UNIFORM op 0: 'drawn' is drawn at random by the runtime's own")
    assert str(never_rebuilt(op, sg)) == str(info.value)


def test_a_foldable_refusal_waits_for_folding():
    """WHERE of a constant folds in the passes: only `lookup` (after them) refuses it."""
    op, sg = _model("WHERE")
    assert never_rebuilt(op, sg) is None
    with pytest.raises(UnsupportedOpError, match="one row per true element of 'x0'"):
        lookup(op, sg)


def test_check_lists_every_refused_op_with_its_reason():
    from tfl_rebuild.commands.check.scan import scan_ops

    tensors = [T("x", [4]), T("noise", [4]), T("distinct", [4]), T("y", [4])]
    ops = [
        Op("RANDOM_UNIFORM", [0], [1]),
        Op("UNIQUE", [1], [2]),
        Op("ADD", [0, 2], [3], options={"fused_activation_function": "NONE"}),
    ]
    unsupported, _ = scan_ops(read_model(build_model(tensors, ops, inputs=[0], outputs=[3])))
    assert [(u["op"], u["count"]) for u in unsupported] == [("RANDOM_UNIFORM v1", 1), ("UNIQUE v1", 1)]
    assert "'noise' is drawn at random" in unsupported[0]["detail"]
    assert "'distinct' holds one element per distinct value of 'noise'" in unsupported[1]["detail"]
