"""Hostile names cannot put code into the generated module.

A crafted model (tests/flatbuf.py; CONV_2D, RELU, ADD with a constant, residual ADD) whose tensor
names, description and file name carry quotes, newlines, comment and escape characters, keywords,
builtins, dunders, bidi controls, line separators, emoji, injection attempts, template syntax and
10,000-character strings is rebuilt; the module must be exactly the statements a benign twin (same
graph, names t0, t1, ...) gets, with every model string only inside string literals or repr-escaped
one-line comments. Then it runs and matches the TFLite runtime.
"""

from __future__ import annotations

import ast
import builtins
import copy
import io
import json
import keyword
import re
import tokenize
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import interpreter, invoke
from flatbuf import Op, T, build_model
from hypothesis import given, settings
from hypothesis import strategies as st
from keras_weights import arrays_of

from tfl_rebuild.commands.pipeline import write_generated
from tfl_rebuild.rebuild.codegen.literals import Code, comment, lit
from tfl_rebuild.rebuild.codegen.naming import MAX_LEN, RESERVED, Namer, sanitize
from tfl_rebuild.rebuild.loader import check_weights
from tfl_rebuild.tflite.reader import read_model

# Activation tensor names, one tensor each (they name layers, variables and op comments).
HOSTILE = {
    "quotes": 'it\'s "quoted"',
    "newlines": "line1\nline2\r\nline3\x0bline4\x0cline5\x1cline6\x85line7",
    "hash": "# not a comment",
    "backslashes": "back\\slash\\",
    "keyword-class": "class",
    "keyword-import": "import",
    "keyword-lambda": "lambda",
    "builtin-print": "print",
    "builtin-eval": "eval",
    "dunder-import": "__import__",
    "dunder-class": "__class__",
    "dunder-builtins": "__builtins__",
    "bidi": "\u202eevil\u202c \u200fmark\u200e \u2066iso\u2069",
    "line-separators": "para\u2028graph\u2029end",
    "emoji": "emoji 🙂🔥",
    "injection": '"); import os; os.system("x',
    "injection-single": "'); import os; os.system('x",
    "triple-quotes": '""" \'\'\' """',
    "jinja": "{{ raw }}{% if 1 %}{# c #}",
    "long": "x" * 10_000,
    "long-injection": '"); os.system("x' * 700,
    "reserved-keras": "keras",
    "reserved-np": "np",
    "reserved-w": "w",
    "reserved-model": "model",
    "reserved-weights-path": "WEIGHTS",
    "class-name": "BinaryOp",
    "soft-keyword": "match",
    "constant-none": "None",
    "digits": "123",
    "empty": "",
    "duplicate-class": "class",
    "nul": "nul\x00byte",
    "not-utf8": b"\xff\xfe not utf-8",
    "path": "a/b:c;d/e",
}
INPUT_NAME = "input'\"\n# x = 1"
# Constant operands (conv weights, ADD constants): their names only reach the weights, never code.
CONST_NAMES = ['w"); import os; #', "b\n\u2028", "__import__('os')", "c" * 10_000]
DESCRIPTION = '"""; import os; os.system("x")\n# \u2028 {{ x }}'
FILE_NAMES = {
    "plain": "model.tflite",
    "hostile": 'it\'s "q" #\n\u2028\u202e🙂 \\ $(x) `y`.tflite',
    "long": "n" * 240 + ".tflite",
}
# The template's own names: every other identifier comes from the Namer.
TEMPLATE_NAMES = {
    "os",
    "keras",
    "np",
    "model",
    "build_model",
    "weights_path",
    "WEIGHTS",
    "__file__",
}
DANGEROUS = {
    "eval",
    "exec",
    "compile",
    "__import__",
    "open",
    "print",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
    "exit",
    "quit",
    "system",
    "popen",
    "remove",
    "rmdir",
}
ACT = {"fused_activation_function": "NONE"}


def crafted(
    names: list[str | bytes], input_name: str | bytes, const_names: list[str | bytes], description: str
) -> bytes:
    """x -> CONV_2D -> then per name: RELU, ADD constant, ADD residual (cycling); one tensor per name."""
    rng = np.random.default_rng(0)
    consts = iter(const_names * len(names))
    tensors = [T(input_name, [1, 4, 4, 2])]

    def tensor(t: T) -> int:
        tensors.append(t)
        return len(tensors) - 1

    w = tensor(T(next(consts), [3, 1, 1, 2], data=rng.normal(size=(3, 1, 1, 2)).astype(np.float32)))
    b = tensor(T(next(consts), [3], data=rng.normal(size=3).astype(np.float32)))
    prev = earlier = tensor(T("conv", [1, 4, 4, 3]))
    ops = [Op("CONV_2D", [0, w, b], [prev], options={"padding": "SAME", "stride_w": 1, "stride_h": 1, **ACT})]
    for k, name in enumerate(names):
        out = tensor(T(name, [1, 4, 4, 3]))
        if k % 3 == 0:
            ops.append(Op("RELU", [prev], [out]))
        elif k % 3 == 1:
            c = tensor(T(next(consts), [3], data=rng.normal(size=3).astype(np.float32)))
            ops.append(Op("ADD", [prev, c], [out], options=ACT))
        else:
            ops.append(Op("ADD", [prev, earlier], [out], options=ACT))
        earlier, prev = prev, out
    return build_model(tensors, ops, inputs=[0], outputs=[prev], description=description)


def hostile_blob() -> bytes:
    return crafted(list(HOSTILE.values()), INPUT_NAME, CONST_NAMES, DESCRIPTION)


def benign_blob() -> bytes:
    return crafted([f"t{k}" for k in range(len(HOSTILE))], "x", ["c0", "c1", "c2", "c3"], "benign")


def rebuild(directory: Path, file_name: str, blob: bytes) -> tuple[Path, str]:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name
    path.write_bytes(blob)
    _, py, _ = write_generated(str(path), str(directory / "out"))
    return path, py.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    return rebuild(tmp_path_factory.mktemp("benign"), "model.tflite", benign_blob())[1]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """file name -> (model path, generated source), for each FILE_NAMES entry."""
    root = tmp_path_factory.mktemp("hostile")
    return {key: rebuild(root / key, name, hostile_blob()) for key, name in FILE_NAMES.items()}


FILE_PARAMS = [pytest.param(k, id=f"file-{k}") for k in FILE_NAMES]


# --- the AST is exactly the intended statements ------------------------------------------------------


class _Blind(ast.NodeTransformer):
    """Forget identifiers and string values: what is left is the shape of the code."""

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant("_"), node) if isinstance(node.value, str) else node


def skeleton(source: str) -> str:
    return ast.dump(_Blind().visit(copy.deepcopy(ast.parse(source))))


@pytest.mark.parametrize("file_key", FILE_PARAMS)
def test_same_code_as_benign_twin(hostile, benign, file_key):
    _, source = hostile[file_key]
    assert skeleton(source) == skeleton(benign)


@pytest.mark.parametrize("file_key", FILE_PARAMS)
def test_only_the_modules_own_imports(hostile, file_key):
    tree = ast.parse(hostile[file_key][1])
    imports = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert imports == ["import os", "import keras", "import numpy as np"]


@pytest.mark.parametrize("file_key", FILE_PARAMS)
def test_no_dangerous_names_or_calls(hostile, file_key):
    tree = ast.parse(hostile[file_key][1])
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & DANGEROUS
    assert not attrs & DANGEROUS
    os_uses = sorted(
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "os"
    )
    assert set(os_uses) == {"os.path"}


def test_top_level_statements(hostile):
    tree = ast.parse(hostile["hostile"][1])
    kinds = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            kinds.append("docstring")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            kinds.append("import")
        elif isinstance(node, ast.Assign):
            kinds.append(f"assign {ast.unparse(node.targets[0])}")
        elif isinstance(node, ast.ClassDef):
            kinds.append(f"class {node.name}")
        elif isinstance(node, ast.FunctionDef):
            kinds.append(f"def {node.name}")
        else:
            kinds.append(type(node).__name__)
    assert kinds == [
        "docstring",
        "import",
        "import",
        "import",
        "assign WEIGHTS",
        "class OpLayer",
        "class BinaryOp",  # only ADDs: no BINARY_OPS table (templates.class_source)
        "def build_model",
    ]


LOAD_WEIGHTS = "if weights_path:\n    model.load_weights(weights_path)"


def _statement_kind(stmt: ast.stmt, classes: set[str]) -> str:
    """Name the form of one build_model statement, or say what is unexpected about it."""
    text = ast.unparse(stmt)
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        value = stmt.value
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "keras.Input" and not value.args:
            return "input"
        if (
            isinstance(value, ast.Call)
            and ast.unparse(value.func) == "keras.Model"
            and stmt.targets[0].id == "model"
        ):
            return "model"
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Call):
            ctor = ast.unparse(value.func.func)
            if not (re.fullmatch(r"keras\.layers\.[A-Z][A-Za-z0-9]*", ctor) or ctor in classes):
                return f"unexpected constructor: {text[:200]}"
            if not all(isinstance(a, (ast.Name, ast.List)) for a in value.args):
                return f"unexpected layer input: {text[:200]}"
            if not all(_is_plain(k.value) for k in value.func.keywords) or value.func.args:
                return f"unexpected layer argument: {text[:200]}"
            return "layer"
    if isinstance(stmt, ast.If) and text == LOAD_WEIGHTS:
        return "load weights"
    if isinstance(stmt, ast.Return) and text == "return model":
        return "return"
    return f"unexpected: {text[:200]}"


def _is_plain(node: ast.expr) -> bool:
    """A literal: what lit() writes."""
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def test_build_model_statements(hostile):
    tree = ast.parse(hostile["hostile"][1])
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert ast.unparse(fn.args) == "weights_path=WEIGHTS"
    kinds = [_statement_kind(s, classes) for s in fn.body]
    ops = 1 + len(HOSTILE)
    assert kinds == ["input"] + ["layer"] * ops + ["model", "load weights", "return"]


# --- model strings: only in literals and comments ----------------------------------------------------


def _tokens(source: str):
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def test_identifiers_are_sanitized(hostile):
    source = hostile["hostile"][1]
    tree = ast.parse(source)
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    local = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    generated = local - {"model"}
    assert len(generated) == 1 + 1 + len(HOSTILE)  # input, conv, one per hostile name: all distinct
    bad = [
        name
        for name in sorted(generated)
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name)
        or len(name) > MAX_LEN + 8  # + "t_", "_", a "_<n>" suffix
        or name in TEMPLATE_NAMES
        or hasattr(builtins, name)
        or keyword.issoftkeyword(name)
    ]
    assert bad == []
    assert [t for t in _tokens(source) if t.type == tokenize.NAME and not t.string.isascii()] == []


def test_injection_text_only_in_strings_and_comments(hostile):
    source = hostile["hostile"][1]
    code = [t for t in _tokens(source) if t.type not in (tokenize.STRING, tokenize.COMMENT)]
    assert [t for t in code if "system" in t.string or '"' in t.string or "'" in t.string] == []


def test_no_invisible_or_line_breaking_characters(hostile):
    source = hostile["hostile"][1]
    bad = sorted(
        {
            f"U+{ord(c):04X}"
            for c in source
            if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co")
        }
    )
    assert bad == []
    assert source.splitlines() == source.split("\n")[:-1]
    assert max(len(line) for line in source.splitlines()) < 400


def test_op_comments_give_op_and_shape_only(hostile):
    """'# ADD -> [1, 4]': the layer's name says which one it is, so no tensor name (model text)
    reaches a comment, and the comments follow the ops one to one."""
    path, source = hostile["hostile"]
    sg = read_model(path).main
    shown = []
    for tok in _tokens(source):
        m = (
            re.fullmatch(r"# ([A-Z_0-9]+) -> (\[[0-9, ]*\])", tok.string)
            if tok.type == tokenize.COMMENT
            else None
        )
        if m:
            shown.append(m.group(1))
    assert shown == [op.opcode for op in sg.operators]


def test_header_shows_the_escaped_file_name(hostile):
    path, source = hostile["hostile"]
    first = source.splitlines()[0]
    assert first.startswith("# Generated by tfl-rebuild ") and repr(path.name) in first


def test_sidecar_keeps_exact_tensor_names(hostile):
    path, _ = hostile["hostile"]
    sidecar = next((path.parent / "out").glob("*_tensors.json"))
    rows = json.loads(sidecar.read_text(encoding="utf-8"))["tensors"]
    sg = read_model(path).main
    assert [r["name"] for r in rows] == [sg.tensors[op.outputs[0]].name for op in sg.operators]
    # The crafted names really reached the model (the not-UTF-8 one reads with replacement characters).
    assert [r["name"] for r in rows[1:]] == [
        v if isinstance(v, str) else v.decode("utf-8", "replace") for v in HOSTILE.values()
    ]


def test_weight_keys_are_sanitized(hostile):
    path, _ = hostile["hostile"]
    py = next((path.parent / "out").glob("*.py"))
    keys = list(arrays_of(py))
    assert keys and all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*/[a-z_]+", k) for k in keys), keys
    # Keras names the file's groups by layer class and position: no model string reaches it
    datasets = check_weights(next((path.parent / "out").glob("*.weights.h5")))
    assert datasets and all(re.fullmatch(r"(layers/[a-z0-9_]+/)+vars/[0-9]+", d) for d in datasets), datasets


# --- file names --------------------------------------------------------------------------------------


TRIPLE_QUOTE_FILE = 'x"""; import os; os.system("x"); """.tflite'


def test_file_name_with_triple_quotes_cannot_inject(tmp_path, benign):
    _, source = rebuild(tmp_path, TRIPLE_QUOTE_FILE, benign_blob())
    tree = ast.parse(source)
    calls = sorted(ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call))
    assert "os.system" not in calls
    assert skeleton(source) == skeleton(benign)


# --- the generated module runs -----------------------------------------------------------------------


def test_hostile_module_runs_and_matches_tflite(hostile):
    from tfl_rebuild.rebuild.loader import load_module, run_keras

    path, _ = hostile["hostile"]
    py = next((path.parent / "out").glob("*.py"))
    model = load_module(py).build_model()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 4, 4, 2)).astype(np.float32)
    interp = interpreter(path)
    invoke(interp, [x])
    want = interp.get_tensor(interp.get_output_details()[0]["index"])
    (got,) = run_keras(model, [x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.ptp(want) > 0.1  # not a constant output


# --- the building blocks, on arbitrary text ----------------------------------------------------------

TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from([v for v in HOSTILE.values() if isinstance(v, str)]),
)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_sanitize_gives_a_safe_identifier(raw):
    name = sanitize(raw)
    assert name.isascii() and name.isidentifier()
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", name)
    assert len(name) <= MAX_LEN + 3  # "t_" before a leading digit, "_" after a keyword
    assert not keyword.iskeyword(name) and not keyword.issoftkeyword(name)
    assert name not in RESERVED and not hasattr(builtins, name)


@settings(max_examples=100, deadline=None)
@given(st.lists(TEXT, max_size=30))
def test_namer_never_repeats(raws):
    namer = Namer()
    names = [namer.name(r) for r in raws]
    assert len(set(names)) == len(names)


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_comment_is_one_line_and_round_trips(text):
    body = comment(text)
    line = f"# {body}"
    assert [t.type for t in _tokens(line)] == [tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER]
    assert line.splitlines() == [line]
    value = ast.literal_eval(body)
    assert value == text if len(text) <= 80 else value == text[:77] + "..."


PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple),
    max_leaves=12,
)


def _same_value(written, value) -> bool:
    """Equal, except that a float32 value may come back as its shortest float32 spelling."""
    if isinstance(value, (list, tuple)):
        return (
            type(written) is type(value)
            and len(written) == len(value)
            and all(_same_value(a, b) for a, b in zip(written, value))
        )
    if isinstance(value, float) and written != value:
        return float(np.float32(value)) == value and np.float32(written) == np.float32(value)
    return type(written) is type(value) and written == value


@settings(max_examples=300, deadline=None)
@given(PLAIN)
def test_lit_round_trips_plain_values(value):
    code = lit(value)
    assert isinstance(code, Code)
    assert _same_value(ast.literal_eval(code), value)
    assert code.splitlines() == [code] or code == ""


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        b"bytes",
        {"a": 1},
        {1, 2},
        object(),
        np.zeros(2),
        [1, object()],
        Path("x"),
        1j,
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "bytes",
        "dict",
        "set",
        "object",
        "ndarray",
        "nested-object",
        "path",
        "complex",
    ],
)
def test_lit_refuses_anything_else(value):
    with pytest.raises((TypeError, ValueError)):
        lit(value)


def test_templates_refuse_raw_strings():
    import jinja2

    from tfl_rebuild.rebuild.codegen.templates import environment as _templates

    env = _templates()
    assert env.from_string("{{ x }}").render(x=Code("ok")) == "ok"
    with pytest.raises(TypeError):
        env.from_string("{{ x }}").render(x="raw")
    with pytest.raises((TypeError, jinja2.UndefinedError)):  # StrictUndefined: a missing value is an error
        env.from_string("{{ y }}").render()
