"""The intermediate-tensor outputter: byte patching, selection, and values against the runtime.

The reference for every dumped tensor is the runtime itself with `experimental_preserve_all_tensors`
on the built-in kernels (conftest.interpreter): same inputs, exact equality.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import (
    interpreter,
    invoke,
    model_params,
    require_corpus,
    require_fixture,
    require_model,
)
from flatbuf import Op, Signature, T, build_model

from tfl_rebuild.errors import InputError, ModelFormatError, RuntimeUnavailableError
from tfl_rebuild.runtime import outputter
from tfl_rebuild.tflite import fb_patch
from tfl_rebuild.tflite.reader import read_model

W = np.array([0.5, -1.0, 2.0, 3.25], np.float32)


def chain_model(external: bool = False, names=("x", "w", "a", "b", "y"), two_inputs: bool = False) -> bytes:
    """x -> ADD w -> a -> TANH -> b -> MUL (w or a second input z) -> y."""
    tensors = [
        T(names[0], [1, 4]),
        T(names[1], [4], data=W, external=external),
        T(names[2], [1, 4]),
        T(names[3], [1, 4]),
        T(names[4], [1, 4]),
    ]
    if two_inputs:
        tensors.append(T("z", [1, 4]))
    act = {"fused_activation_function": "NONE"}
    return build_model(
        tensors,
        [
            Op("ADD", [0, 1], [2], options=act),
            Op("TANH", [2], [3]),
            Op("MUL", [3, 5 if two_inputs else 1], [4], options=act),
        ],
        inputs=[0, 5] if two_inputs else [0],
        outputs=[4],
    )


def outputs_field(blob: bytes, subgraph: int = 0) -> int:
    return outputter._outputs_field(fb_patch.Buffer(blob, "test"), subgraph)


def runnable(path, xnnpack: bool = False):
    """Skip, with the runtime's reason, models it cannot run (custom ops; XNNPACK has a few)."""
    from tfl_rebuild.runtime import interpreter as runtime

    require_model(path)
    try:
        interp = runtime.make_interpreter(model_path=str(path), reference_kernels=not xnnpack)
    except RuntimeUnavailableError as exc:
        pytest.skip(f"{path.name}: {exc}")
    if getattr(interp, "segments", None):  # tests/runtime/test_segmented.py covers those runs
        pytest.skip(f"{path.name}: the runtime lacks custom ops {sorted(interp.missing)}, run in segments")
    return path


# -- patching the bytes ---------------------------------------------------------------------------


def test_patch_puts_original_outputs_first_and_parses():
    blob = chain_model()
    m = read_model(blob)
    patched = outputter.patch_outputs(m, [2, 3, 4, 2])
    assert read_model(patched).main.outputs == (4, 2, 3)  # original first, deduplicated
    assert len(patched) % 4 == 0


def test_patch_changes_only_the_outputs_field():
    blob = chain_model()
    field = outputs_field(blob)
    patched = outputter.patch_outputs(read_model(blob), [2, 3])
    changed = [i for i in range(len(blob)) if blob[i] != patched[i]]
    assert changed and all(field <= i < field + 4 for i in changed)
    start = struct.unpack_from("<I", patched, field)[0] + field
    assert start >= len(blob) and start % 4 == 0
    assert struct.unpack_from("<4i", patched, start) == (3, 4, 2, 3)


def test_patch_keeps_external_buffers_valid():
    blob = chain_model(external=True)
    m = read_model(blob)
    assert m.external_buffers
    p = read_model(outputter.patch_outputs(m, [2, 3]))
    assert p.external_buffers and p.main.outputs == (4, 2, 3)
    np.testing.assert_array_equal(p.main.tensors[1].data, W)
    d = outputter.dump(blob, np.ones((1, 4), np.float32))
    np.testing.assert_allclose(d["y"], np.tanh(1 + W)[None] * W, rtol=1e-6)


def test_signature_defs_are_left_alone():
    act = {"fused_activation_function": "NONE"}
    blob = build_model(
        [T("x", [1, 4]), T("w", [4], data=W), T("a", [1, 4]), T("y", [1, 4])],
        [Op("ADD", [0, 1], [2], options=act), Op("TANH", [2], [3])],
        inputs=[0],
        outputs=[3],
        signatures=[Signature("serving_default", {"in": 0}, {"out": 3})],
    )
    p = outputter.prepare(blob)
    patched = interpreter(p.content)
    assert [int(o["index"]) for o in patched.get_output_details()] == [3, 2]
    assert patched.get_signature_list() == {"serving_default": {"inputs": ["in"], "outputs": ["out"]}}
    d = outputter.Dumper(p).run(np.zeros((1, 4), np.float32))
    np.testing.assert_allclose(d["y"], np.tanh(W)[None], rtol=1e-6)


def _set_outputs_slot(blob: bytes, value: int | None = None, vtable_size: int | None = None) -> bytes:
    """The SubGraph with its outputs slot zeroed, or its vtable cut short before it.

    Vtables are shared between same-shaped tables, so the SubGraph gets its own copy, appended
    at the end (a table's soffset may point forward).
    """
    buf = fb_patch.Buffer(blob, "test")
    table = buf.table(buf.subgraphs(), 0, "")
    vtable = table - buf.read("<i", table, "")
    size = buf.read("<H", vtable, "")
    out = bytearray(blob) + bytes(-len(blob) % 4)
    new = len(out)
    out += blob[vtable : vtable + size]
    struct.pack_into("<i", out, table, table - new)
    if value is not None:
        struct.pack_into("<H", out, new + 4 + 2 * fb_patch.SubGraph.OUTPUTS, value)
    if vtable_size is not None:
        struct.pack_into("<H", out, new, vtable_size)
    return bytes(out)


@pytest.mark.parametrize("how", ["field absent", "vtable too short"])
def test_patch_refuses_a_subgraph_without_outputs_field(how):
    blob = chain_model()
    hacked = (
        _set_outputs_slot(blob, value=0) if how == "field absent" else _set_outputs_slot(blob, vtable_size=8)
    )
    m = read_model(blob)
    object.__setattr__(m, "_storage", hacked)  # same IR, bytes without the field
    with pytest.raises(outputter.PatchError, match="no outputs field"):
        outputter.patch_outputs(m, [2])


def test_patch_refuses_past_the_flatbuffer_limit(monkeypatch):
    monkeypatch.setattr(fb_patch, "FLATBUFFER_LIMIT", 100)
    with pytest.raises(outputter.PatchError, match="2 GB"):
        outputter.patch_outputs(read_model(chain_model(external=True)), [2])


@pytest.mark.parametrize(
    "blob", [b"\xf0\xff\xff\x00TFL3", b"\x08\x00\x00\x00TFL3\xff\xff\xff\x7f"], ids=["root", "vtable"]
)
def test_outputs_field_is_bounds_checked(blob):
    with pytest.raises(ModelFormatError):
        outputs_field(blob)


# -- selection ------------------------------------------------------------------------------------


def test_default_selection_is_every_op_output_in_op_order():
    entries = outputter.select_tensors(read_model(chain_model()))
    assert [(e.key, e.op_index, e.op_type) for e in entries] == [
        ("a", 0, "ADD"),
        ("b", 1, "TANH"),
        ("y", 2, "MUL"),
    ]


def test_select_regex_and_ops():
    m = read_model(chain_model())
    assert [e.key for e in outputter.select_tensors(m, select="^[ab]$")] == ["a", "b"]
    assert [e.key for e in outputter.select_tensors(m, ops=["tanh", "MUL"])] == ["b", "y"]
    assert [e.key for e in outputter.select_tensors(m, select="y", ops=["ADD"])] == []


def test_bad_regex_and_empty_selection_are_input_errors():
    with pytest.raises(InputError, match="regular expression"):
        outputter.prepare(chain_model(), select="(")
    with pytest.raises(InputError, match="no operator output matches"):
        outputter.prepare(chain_model(), ops=["CONV_2D"])


def test_duplicate_and_empty_names_get_unique_keys():
    d = outputter.dump(chain_model(names=("x", "w", "t", "t", "")))
    assert list(d) == ["t", "t@3", "@4"]
    assert d.entries["t@3"].tensor_index == 3


def test_static_tensors_are_outputs_of_constant_only_ops():
    tensors = [T("x", [4]), T("w", [4], data=W), T("wt", [4]), T("y", [4])]
    blob = build_model(
        tensors,
        [Op("TANH", [1], [2]), Op("ADD", [0, 2], [3], options={"fused_activation_function": "NONE"})],
        inputs=[0],
        outputs=[3],
    )
    m = read_model(blob)
    assert outputter.static_tensors(m) == {2}
    p = outputter.prepare(m, xnnpack=True)
    assert [e.key for e in p.entries] == ["y"] and [e.key for e in p.skipped] == ["wt"]


# -- the Python API -------------------------------------------------------------------------------


def test_dump_api_values_and_inputs():
    x = np.array([[0.1, 0.2, -0.3, 0.0]], np.float32)
    d = outputter.dump(chain_model(), x)
    assert list(d) == ["a", "b", "y"]
    np.testing.assert_allclose(d["a"], x + W, rtol=1e-6)
    np.testing.assert_allclose(d["b"], np.tanh(x + W), rtol=1e-6)
    np.testing.assert_array_equal(d.inputs["x"], x)
    assert d.entries["b"].op_type == "TANH" and d.entries["b"].op_index == 1
    same = outputter.dump(chain_model(), {"x": x[0]})  # by name, batch dimension added
    assert all(np.array_equal(d[k], same[k]) for k in d)


def test_dump_api_multi_input():
    x, z = np.ones((1, 4), np.float32), np.full((1, 4), 2.0, np.float32)
    d = outputter.dump(chain_model(two_inputs=True), {"z": z, "x": x})
    np.testing.assert_allclose(d["y"], np.tanh(1 + W)[None] * 2, rtol=1e-6)
    with pytest.raises(InputError, match="named"):
        outputter.dump(chain_model(two_inputs=True), {"x": x})


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((1, 5), np.float32),
        np.ones((2, 4), np.float32),
        np.array([["a"] * 4]),
        [np.ones((1, 4), np.float32)] * 2,
    ],
    ids=["shape", "batch", "strings", "count"],
)
def test_dump_api_bad_inputs(bad):
    with pytest.raises(InputError):
        outputter.dump(chain_model(), bad)


def test_dumper_runs_repeatedly_with_fresh_arrays():
    dumper = outputter.Dumper(outputter.prepare(chain_model()))
    first = dumper.run(np.zeros((1, 4), np.float32))
    kept = first["b"].copy()
    dumper.run(np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(first["b"], kept)  # get_tensor copies: not overwritten by run 2
    views = dumper.run(np.zeros((1, 4), np.float32), copy=False)
    assert all(np.array_equal(views[k], first[k]) for k in first)
    with pytest.raises(RuntimeError, match="still referenced"):  # they would be overwritten
        dumper.run(np.ones((1, 4), np.float32))
    del views
    assert dumper.run(np.ones((1, 4), np.float32), copy=False)["b"][0, 0] == pytest.approx(np.tanh(1.5))


def test_dump_arrays_are_views_that_keep_their_interpreter_alive():
    import gc

    x = np.full((1, 4), 0.5, np.float32)
    d = outputter.dump(chain_model(), x)
    b = d["b"]
    assert not b.flags.owndata
    del d
    gc.collect()
    junk = [outputter.dump(chain_model(), -x) for _ in range(3)]  # would reuse freed memory
    np.testing.assert_allclose(b, np.tanh(x + W), rtol=1e-6)
    del junk


def test_dequantize_per_tensor_and_per_channel():
    from tfl_rebuild.tflite.ir import Quantization

    e = outputter.DumpEntry(
        "q", 0, "q", 0, "X", "int8", Quantization(np.array([0.5, 2.0], np.float32), np.array([1, -1]), 1)
    )
    q = np.array([[3, 3], [-1, -1]], np.int8)
    np.testing.assert_array_equal(e.dequantize(q), [[1.0, 8.0], [-1.0, 0.0]])
    assert e.dequantize(np.zeros(2, np.float32)) is None


def test_quantized_fixture_dequantizes_with_its_params():
    path = require_fixture("mobilenet_v2_int8")
    d = outputter.dump(path)
    quantized = [k for k, e in d.entries.items() if e.quantization is not None and d[k].dtype.kind in "iu"]
    assert quantized
    for k in quantized[:10]:
        q = d.entries[k].quantization
        want = (d[k].astype(np.float32) - np.float32(q.zero_point[0])) * np.float32(q.scale[0])
        np.testing.assert_array_equal(d.entries[k].dequantize(d[k]), want)


# -- every model: against preserve_all_tensors ----------------------------------------------------


@pytest.mark.parametrize("path", model_params())
def test_every_dumped_tensor_equals_preserve_all_tensors(path):
    runnable(path)
    d = outputter.dump(path, seed=1)
    ref = interpreter(path, preserve_all_tensors=True)
    invoke(ref, list(d.inputs.values()))
    assert len(d) == len(outputter.select_tensors(read_model(path)))
    for key, value in d.items():
        want = _written(ref, read_model(path), d.entries[key].tensor_index)
        if want is None:
            continue
        assert value.dtype == want.dtype and value.shape == want.shape, key
        np.testing.assert_array_equal(value, want, err_msg=f"{key} (op {d.entries[key].op_index})")


def _written(interp, model, index: int):
    """The runtime's value of a tensor, or None for a WHILE output nothing reads (a loop-invariant
    pass-through): the runtime leaves those unwritten (null, or stale arena memory), while the
    patched model makes them outputs and so gets their values."""
    sg = model.main
    unread = index not in sg.outputs and not any(index in op.inputs for op in sg.operators)
    if unread and any(op.opcode == "WHILE" and index in op.outputs for op in sg.operators):
        return None
    return interp.get_tensor(index)


@pytest.mark.parametrize("path", model_params())
def test_patched_model_parses_runs_and_keeps_original_outputs(path):
    runnable(path)
    p = outputter.prepare(path)
    m = read_model(p.content)
    want = list(dict.fromkeys([*p.model.main.outputs, *(e.tensor_index for e in p.entries)]))
    assert list(m.main.outputs) == want
    assert len(m.main.operators) == len(p.model.main.operators)
    plain, patched = interpreter(path), interpreter(p.content)
    assert [int(o["index"]) for o in patched.get_output_details()] == want
    x = list(outputter.dump(path, seed=2).inputs.values())
    invoke(plain, x)
    invoke(patched, x)
    for o in plain.get_output_details():
        np.testing.assert_array_equal(patched.get_tensor(o["index"]), plain.get_tensor(o["index"]))


@pytest.mark.parametrize("path", model_params())
def test_xnnpack_mode(path):
    """With XNNPACK: every dumped tensor equals what preserve_all_tensors returns under the same
    delegate, the original outputs stay bit-identical to the unpatched model's, and constant-only
    tensors (which XNNPACK never writes) are left out."""
    import warnings

    from tfl_rebuild.runtime import interpreter as runtime

    runnable(path, xnnpack=True)
    p = outputter.prepare(path, xnnpack=True)
    d = outputter.Dumper(p).run(seed=3)
    x = list(d.inputs.values())
    assert not {e.tensor_index for e in p.entries} & outputter.static_tensors(p.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keep = runtime.make_interpreter(model_path=str(path), preserve_all_tensors=True)
    runtime.run(keep, x)
    for key, value in d.items():
        want = _written(keep, p.model, d.entries[key].tensor_index)
        if want is not None:
            np.testing.assert_array_equal(value, want, err_msg=key)
    plain = runtime.make_interpreter(model_path=str(path))
    for o, value in zip(plain.get_output_details(), runtime.run(plain, x)):
        hit = [k for k, e in d.entries.items() if e.tensor_index == o["index"]]
        if hit:
            np.testing.assert_array_equal(d[hit[0]], value)


@pytest.mark.parametrize("path", model_params())
def test_xnnpack_values_are_computed_not_stale(path):
    """A tensor XNNPACK did not write would read as zeros or stale memory in both runs above.
    Against the built-in kernels it is then off by its whole range, while real values differ
    only by float reassociation: measured at most ~3e-3 of a tensor's range (pose_landmark_full,
    random input, errors grow with depth). Quantized and hybrid models use different integer
    arithmetic in XNNPACK (several quantization steps apart), so only float models are checked."""
    runnable(path, xnnpack=True)
    model = read_model(path)
    if any(t.dtype in ("int8", "uint8", "int16") for t in model.main.tensors):
        pytest.skip(
            f"{path.name} is quantized: XNNPACK's integer arithmetic differs from the built-in kernels"
        )
    d = outputter.dump(model, seed=3, xnnpack=True)
    try:
        ref = outputter.dump(model, d.inputs)
    except RuntimeUnavailableError as exc:
        pytest.skip(f"no built-in reference: {exc}")
    for key, value in d.items():
        want = ref[key].astype(np.float64)
        span = float(np.max(np.abs(want))) if want.size else 0.0
        err = float(np.max(np.abs(value - want))) if want.size else 0.0
        assert err <= 1e-2 * span + 1e-6, f"{key}: off by {err:.3g} of {span:.3g}"


@pytest.mark.corpus
def test_mediapipe_custom_ops_dump_through_segments():
    """The runtime lacks the MediaPipe transform ops: their outputs come from the numpy references."""
    path = require_corpus("face_landmark_with_attention")
    m = read_model(path)
    result = outputter.dump(path)
    custom = [op for op in m.main.operators if op.opcode == "CUSTOM"]
    assert {op.custom_code for op in custom} >= {"Landmarks2TransformMatrix", "TransformTensorBilinear"}
    for op in custom:
        name = m.main.tensors[op.outputs[0]].name
        assert name in result and np.isfinite(result[name]).all(), name


def test_unknown_custom_op_is_named():
    blob = build_model(
        [T("x", [2]), T("y", [2])], [Op("CUSTOM", [0], [1], custom_code="NoSuchOp")], inputs=[0], outputs=[1]
    )
    with pytest.raises(RuntimeUnavailableError, match="NoSuchOp"):
        outputter.dump(blob)


# -- file names -----------------------------------------------------------------------------------


def test_no_runtime_imported_at_module_level():
    import subprocess
    import sys

    code = (
        "import sys, tfl_rebuild.runtime.outputter, tfl_rebuild.runtime.inputs; "
        "print(sorted(m for m in ('tensorflow', 'ai_edge_litert', 'keras', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
