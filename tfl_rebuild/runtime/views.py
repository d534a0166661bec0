"""Views of a model: the same file with one signature's subgraph made the main one, or with the
dynamic dims of its main subgraph fixed to concrete sizes.

Every command works on subgraph 0 at static shapes. A view patches a copy of the file in place
(a few uint32 and int32 values; nothing moves, so weights and external buffers stay valid) and
reads it back, so `keras`, `compare`, `dump`, `coreml` and verification run on it unchanged:

- `signature_view`: the subgraph of the chosen signature swaps places with subgraph 0, and the
  signature list is cut to that one signature (its subgraph index set to 0).
- `state_view`: resource variables become inputs (their value at the start of a run) and
  outputs (at the end), and the variable ops go (new inputs / outputs vectors after the end).
- `fixed_shapes`: the inputs get the requested shapes (by default their stored shapes, which are
  where TensorFlow writes 1 for every dynamic dim), the TFLite runtime propagates them (one run,
  so data-dependent shapes are known too), and every tensor of subgraph 0 gets the shape the
  runtime gave it, as both its shape and its shape_signature.

No TensorFlow here: the runtime is imported lazily through `runtime.py`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError, TflRebuildError
from tfl_rebuild.text import shell_command
from tfl_rebuild.tflite import fb_patch
from tfl_rebuild.tflite.ir import Model, Tensor

_NO_SHAPE = ("string", "resource", "variant")


class ViewError(TflRebuildError):
    """The requested view of the model (signature, input shapes) cannot be made."""


@dataclass
class View:
    model: Model
    signature: str | None = None  # the signature rebuilt, when the model has several
    input_shapes: dict[str, list[int]] = field(default_factory=dict)  # dynamic input name -> shape used
    notes: list[str] = field(default_factory=list)  # what the view did, for the user

    def sidecar(self) -> dict:
        """What `for_module` needs to make the same view again (stored in `_tensors.json`)."""
        return {"signature": self.signature, "input_shapes": self.input_shapes}


def shape_text(dims) -> str:
    """[-1, 8, 8, 3] -> '?x8x8x3' (TFLite writes -1 for a dynamic dim)."""
    return "x".join("?" if d < 0 else str(d) for d in dims) or "scalar"


def dynamic_dims(t: Tensor) -> bool:
    """Whether the file marks some dim of `t` as dynamic (-1)."""
    sig = t.shape_signature
    return any(d < 0 for d in t.shape) or (sig is not None and any(d < 0 for d in sig))


def signature_of(t: Tensor) -> tuple[int, ...]:
    """The tensor's dims with -1 where they are dynamic."""
    sig = t.shape_signature
    return tuple(sig) if sig is not None and len(sig) == len(t.shape) else tuple(t.shape)


# -- signatures --------------------------------------------------------------------------------------


def signature_view(model: Model, key: str) -> Model:
    """The model with signature `key`'s subgraph as subgraph 0 (and only that signature)."""
    keys = [s.key for s in model.signatures]
    sig = next((s for s in model.signatures if s.key == key), None)
    if sig is None:
        listed = ", ".join(repr(k) for k in keys) if keys else "none"
        raise InputError(f"--signature {key!r}: the model has no such signature (signatures: {listed})")
    k = sig.subgraph_index
    for sg in model.subgraphs:
        for op in sg.operators:
            called = [
                v
                for name, v in op.options.items()
                if (name.endswith("subgraph_index") or name == "subgraph") and isinstance(v, int)
            ]
            if k in called or 0 in called:
                raise ViewError(
                    f"--signature {key!r}: its subgraph {k} (or subgraph 0) is also called by "
                    f"{op.key} (op {op.index} of subgraph {sg.index}); it cannot be rebuilt on its own"
                )
    p = fb_patch.Patch.of(model, refuse=ViewError)
    subs = p.subgraphs()
    sigs = p.vector(p.root(), fb_patch.Model.SIGNATURE_DEFS, "model", "signature defs vector")
    if sigs is None:
        raise ViewError(f"{p.name}: no signature list to patch")
    if k != 0:
        t0, tk = p.table(subs, 0, "subgraph 0"), p.table(subs, k, f"subgraph {k}")
        p.set_table(subs, 0, tk, "subgraphs vector")
        p.set_table(subs, k, t0, "subgraphs vector")
    j = keys.index(key)
    table = p.table(sigs, j, f"signature def {j}")
    if j != 0:
        p.set_table(sigs, 0, table, "signature defs vector")
    p.set_length(sigs, 1, "signature defs vector")  # only the chosen signature stays
    if k != 0:
        f = p.field(table, fb_patch.SignatureDef.SUBGRAPH_INDEX, f"signature def {j}")
        if f is None:
            raise ViewError(f"{p.name}: signature {key!r} stores no subgraph index to patch")
        p.set_uint32(f, 0, f"signature def {j} subgraph index")
    return _reread(model, p.data)


def _reread(original: Model, data: bytearray) -> Model:
    from tfl_rebuild.tflite.reader import read_model

    view = read_model(bytes(data))
    view = dataclasses.replace(view, path=original.path)
    view.__dict__["sha256"] = original.sha256  # the file's, as the generated header reports it
    return view


# -- state --------------------------------------------------------------------------------------------

VARIABLE_OPS = frozenset(["CALL_ONCE", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"])


def has_variables(model: Model) -> bool:
    return any(op.opcode in VARIABLE_OPS for op in model.main.operators)


def _variable(var_handle) -> str:
    """'container/shared_name': what makes two VAR_HANDLE ops (in any subgraph) one variable."""
    return f"{var_handle.options.get('container') or ''}/{var_handle.options.get('shared_name') or ''}"


def state_view(model: Model) -> tuple[Model, str]:
    """The model with its resource variables (streaming state, e.g. microWakeWord's ring buffers)
    made explicit: each variable's value at the start of a run becomes an extra input and its
    value at the end an extra output, after the model's own and in the same order, and the
    variable ops go (a read after an assign, or a second read, reads the tensor that holds the
    value then). One run of the view is one run of the model from the given state; feeding the
    state outputs back as the next inputs streams as the model does. Returns (view, note)."""
    sg = model.main
    handles: dict[int, str] = {}  # VAR_HANDLE output tensor -> variable name
    first_read: dict[str, int] = {}  # variable -> the tensor that becomes its state input
    current: dict[str, int] = {}  # variable -> the tensor holding its value at this point of the run
    assigned: set[str] = set()
    alias: dict[int, int] = {}  # a later READ_VARIABLE's result -> the tensor it equals

    def resolve(t: int) -> int:
        while t in alias:
            t = alias[t]
        return t

    for op in sg.operators:
        if op.opcode == "VAR_HANDLE":
            handles[op.outputs[0]] = _variable(op)
        elif op.opcode in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            var = handles.get(op.inputs[0]) if op.inputs else None
            if var is None:
                raise ViewError(
                    f"{op.key} op {op.index} uses a resource no VAR_HANDLE of subgraph 0 makes: "
                    "its state cannot be made an input"
                )
            if op.opcode == "ASSIGN_VARIABLE":
                current[var] = resolve(op.inputs[1])
                assigned.add(var)
            elif var in current:
                alias[op.outputs[0]] = current[var]
            else:
                first_read[var] = current[var] = op.outputs[0]
    names = list(dict.fromkeys([*first_read, *assigned]))
    state_in = [first_read[v] for v in names if v in first_read]
    state_out = [current[v] for v in names if v in assigned]
    outputs = [resolve(t) for t in sg.outputs]
    if set(state_in) & set(sg.inputs) or len({*outputs, *state_out}) != len(outputs) + len(state_out):
        raise ViewError(
            "a variable's value is also a model input or output, or two variables hold one tensor: "
            "the state cannot be made inputs and outputs of its own"
        )
    p = fb_patch.Patch.of(model, refuse=ViewError)
    table = p.table(p.subgraphs(), 0, "subgraph 0")
    for slot, values, what in (
        (fb_patch.SubGraph.INPUTS, [*sg.inputs, *state_in], "inputs"),
        (fb_patch.SubGraph.OUTPUTS, [*outputs, *state_out], "outputs"),
    ):
        f = p.field(table, slot, "subgraph 0")
        if f is None:
            raise ViewError(f"{p.name}: subgraph 0 has no {what} field to repoint")
        p.append_int32_vector(f, values, f"subgraph 0 {what} field")
    ops = p.vector(table, fb_patch.SubGraph.OPERATORS, "subgraph 0", "subgraph 0 operators vector")
    keep = [op for op in sg.operators if op.opcode not in VARIABLE_OPS]
    for op in keep:
        if any(t in alias for t in op.inputs):
            op_table = p.table(ops, op.index, f"operator {op.index}")
            vec = p.vector(
                op_table, fb_patch.Operator.INPUTS, f"operator {op.index}", f"operator {op.index} inputs"
            )
            p.set_int32s(vec, [resolve(t) if t >= 0 else t for t in op.inputs], f"operator {op.index} inputs")
    p.keep_tables(ops, [op.index for op in keep], "subgraph 0 operators vector")
    tensors = p.vector(table, fb_patch.SubGraph.TENSORS, "subgraph 0", "subgraph 0 tensors vector")
    for var, t in first_read.items():  # the state input is named after its variable, not its read op
        f = p.field(p.table(tensors, t, f"tensor {t}"), fb_patch.Tensor.NAME, f"tensor {t}")
        if f is not None and var.strip("/"):
            p.append_string(f, var.strip("/"), f"tensor {t} name")
    listed = ", ".join(
        f"{v.strip('/')!r} {shape_text(sg.tensors[first_read.get(v, current[v])].shape)}" for v in names[:4]
    ) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    same = len(state_in) == len(state_out) == len(names)
    note = (
        f"the model keeps {len(names)} state tensor(s) between runs in resource variables ({listed}): "
        f"the rebuild takes {len(state_in)} of them as inputs after the model's own and returns "
        f"{len(state_out)} new values as outputs after the model's own"
        + (", in the same order: feed them back to stream" if same else "")
        + _initial_state_text(model, names)
    )
    return _reread(model, p.data), note


def _initial_state_text(model: Model, names: list[str]) -> str:
    """'; the initial state is all zeros' when the CALL_ONCE init subgraph assigns zeros to every
    variable (streaming layers do), else where the initial values are."""
    from tfl_rebuild.tflite.weights import value

    init = next(
        (op.options.get("init_subgraph_index") for op in model.main.operators if op.opcode == "CALL_ONCE"),
        None,
    )
    if not isinstance(init, int) or not 0 <= init < len(model.subgraphs):
        return ""
    sg = model.subgraphs[init]
    handles = {op.outputs[0]: _variable(op) for op in sg.operators if op.opcode == "VAR_HANDLE"}
    zeros = set()
    for op in sg.operators:
        if (
            op.opcode == "ASSIGN_VARIABLE"
            and len(op.inputs) > 1
            and sg.tensors[op.inputs[1]].data is not None
        ):
            if not np.any(value(sg.tensors[op.inputs[1]])):  # dequantized: the zero point reads as 0
                zeros.add(handles.get(op.inputs[0]))
    if set(names) <= zeros:
        return f"; the initial state (subgraph {init}, run once) is all zeros"
    return f"; the initial state is what subgraph {init} (run once) assigns"


# -- input shapes -------------------------------------------------------------------------------------


def input_names(model: Model) -> dict[int, list[str]]:
    """Subgraph 0 input tensor -> the names a user may call it: tensor name, signature name."""
    sg = model.main
    names = {t: [sg.tensors[t].name] for t in sg.inputs}
    for s in model.signatures:
        if s.subgraph_index == 0:
            for name, t in s.inputs:
                if t in names and name not in names[t]:
                    names[t].append(name)
    return names


def parse_input_shapes(model: Model, specs: list[str] | tuple[str, ...]) -> dict[int, tuple[int, ...]]:
    """--input-shape values ('NAME=1,64,64,3', or '1,64,64,3' for a one-input model) -> tensor -> dims."""
    sg = model.main
    names = input_names(model)
    by_name = {n: t for t, ns in names.items() for n in ns}
    out: dict[int, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims_text = spec.rpartition("=")
        if not sep:
            if len(sg.inputs) != 1:
                raise InputError(
                    f"--input-shape {spec!r}: the model has {len(sg.inputs)} inputs; write NAME=D,D,..."
                )
            t = sg.inputs[0]
        elif name in by_name:
            t = by_name[name]
        else:
            raise InputError(
                f"--input-shape {spec!r}: the model has no input named {name!r} "
                f"(inputs: {', '.join(repr(ns[0]) for ns in names.values())})"
            )
        try:
            dims = tuple(int(d) for d in dims_text.split(","))
        except ValueError:
            raise InputError(
                f"--input-shape {spec!r}: {dims_text!r} is not a comma-separated list of sizes"
            ) from None
        tensor = sg.tensors[t]
        want = signature_of(tensor)
        if (
            len(dims) != len(want)
            or any(d < 1 for d in dims)
            or any(w >= 0 and w != d for w, d in zip(want, dims))
        ):
            raise InputError(
                f"--input-shape {spec!r}: input {tensor.name!r} has dims {shape_text(want)} "
                f"(? = dynamic); give {len(want)} positive sizes that keep the fixed ones"
            )
        out[t] = dims
    return out


def fixed_shapes(
    model: Model, shapes: dict[int, tuple[int, ...]] | None = None
) -> tuple[Model, dict[int, tuple]]:
    """The model with every tensor of subgraph 0 at the static shape the runtime gives it when the
    inputs have `shapes` (default: their stored shapes); also returns the input shapes used.
    Unchanged when nothing in subgraph 0 is dynamic and no shape is asked for."""
    sg = model.main
    shapes = dict(shapes or {})
    if not shapes and not any(
        dynamic_dims(t) for t in sg.tensors if t.data is None and t.dtype not in _NO_SHAPE
    ):
        return model, {}
    want = {t: shapes.get(t, tuple(max(d, 1) for d in sg.tensors[t].shape)) for t in sg.inputs}
    p = fb_patch.Patch.of(model)
    tables = _tensor_tables(p)
    for t, dims in want.items():
        _set_shape(p, tables[t], sg.tensors[t], dims)
    runtime_shapes = _runtime_shapes(model, bytes(p.data), want)
    for tensor in sg.tensors:
        dims = runtime_shapes.get(tensor.index)
        if (
            tensor.data is not None
            or tensor.dtype in _NO_SHAPE
            or dims is None
            or len(dims) != len(tensor.shape)
        ):
            continue
        if tuple(dims) != tuple(tensor.shape) or dynamic_dims(tensor):
            _set_shape(p, tables[tensor.index], tensor, dims)
    return _reread(model, p.data), want


def _tensor_tables(p: fb_patch.Patch) -> list[int]:
    sg = p.table(p.subgraphs(), 0, "subgraph 0")
    vec = p.vector(sg, fb_patch.SubGraph.TENSORS, "subgraph 0", "subgraph 0 tensors vector")
    if vec is None:
        return []
    return [p.table(vec, k, f"subgraph 0 tensor {k}") for k in range(vec.length)]


def _set_shape(p: fb_patch.Patch, table: int, tensor: Tensor, dims) -> None:
    where = f"subgraph 0 tensor {tensor.index}"
    for slot, what in (
        (fb_patch.Tensor.SHAPE, "shape"),
        (fb_patch.Tensor.SHAPE_SIGNATURE, "shape_signature"),
    ):
        vec = p.vector(table, slot, where, f"{where} {what}")
        if vec is None:
            continue
        if vec.length != len(dims):
            raise ViewError(
                f"{p.name}: tensor {tensor.name!r} has rank {vec.length} in the file but {len(dims)} at run time"
            )
        p.set_int32s(vec, dims, f"{where} {what}")


def _runtime_shapes(model: Model, content: bytes, inputs: dict[int, tuple]) -> dict[int, tuple[int, ...]]:
    """Tensor index -> dims, from one run of the runtime at these input shapes."""
    from tfl_rebuild.runtime.interpreter import index_limits, make_interpreter, random_inputs

    sg = model.main
    at = ", ".join(f"{sg.tensors[t].name!r} {shape_text(d)}" for t, d in inputs.items())
    dyn = [t for t in sg.inputs if dynamic_dims(sg.tensors[t])]
    what = f"the TFLite runtime cannot run the model with input(s) {at}"
    hint = ""
    if dyn:
        t = sg.tensors[dyn[0]]
        name = input_names(model)[dyn[0]][-1]  # the signature's name when there is one: shorter
        where = (
            f"its stored shape {shape_text(inputs[dyn[0]])}"
            if len(inputs) == 1 and tuple(inputs[dyn[0]]) == tuple(max(d, 1) for d in t.shape)
            else at
        )
        what = (
            f"input {t.name!r} has dynamic dims {shape_text(signature_of(t))} and the TFLite runtime cannot "
            f"run the model at {where}"
        )
        hint = (
            f"; give the shape to rebuild at: --input-shape {name}="
            f"{','.join('N' if d < 0 else str(d) for d in signature_of(t))}"
        )
    try:
        interp = make_interpreter(model_content=content, reference_kernels=True)
    except TflRebuildError as exc:
        reason = str(exc).removeprefix("the TFLite runtime cannot load this model: ")
        raise ViewError(f"{what} ({reason}){hint}") from None
    if not hasattr(interp, "get_tensor_details"):
        raise ViewError(
            "the model has dynamic shapes and custom ops the runtime runs in segments: "
            "its shapes cannot be fixed"
        )
    try:
        for k, value in enumerate(random_inputs(interp, 0, index_limits(sg))):
            interp.set_tensor(interp.get_input_details()[k]["index"], value)
        interp.invoke()
    except (ValueError, RuntimeError) as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        raise ViewError(f"{what} ({first}){hint}") from None
    return {
        d["index"]: tuple(int(v) for v in np.asarray(d["shape"]).reshape(-1))
        for d in interp.get_tensor_details()
    }


# -- what the commands call ----------------------------------------------------------------------------


def make_view(
    model: Model,
    signature: str | None = None,
    input_shapes: list[str] | tuple[str, ...] = (),
    fix_shapes: bool = True,
    explicit_state: bool = True,
) -> View:
    """The model as the rebuild sees it: one signature's subgraph first, its resource variables
    made inputs and outputs (unless explicit_state=False: `dump` runs the model as the runtime
    does), dynamic dims fixed (to `input_shapes`, else to the stored shapes; with
    fix_shapes=False only those asked for)."""
    view = View(model)
    if signature is not None:
        view.model = signature_view(model, signature)
        view.signature = signature
    elif len(model.signatures) > 1:
        main = next((s.key for s in model.signatures if s.subgraph_index == 0), None)
        others = [s.key for s in model.signatures if s.key != main]
        what = f"signature {main!r} (subgraph 0)" if main is not None else "subgraph 0"
        view.notes.append(
            f"the model has {len(model.signatures)} signatures; this rebuilds {what}; "
            + "keras "
            + ", ".join(shell_command(["--signature", k]) for k in others)
            + " rebuilds the other"
            + ("s" if len(others) > 1 else "")
        )
    if explicit_state and has_variables(view.model):
        view.model, note = state_view(view.model)
        view.notes.append(note)
    before = view.model
    asked = parse_input_shapes(before, list(input_shapes))
    if not (fix_shapes or asked):
        return view
    view.model, used = fixed_shapes(before, asked)
    sg = before.main
    if used and not asked:
        _refuse_empty(view.model, before)
    for t, dims in used.items():
        tensor = sg.tensors[t]
        if not dynamic_dims(tensor) and t not in asked:
            continue
        view.input_shapes[tensor.name] = list(dims)
        how = (
            "as asked (--input-shape)"
            if t in asked
            else "its stored shape (--input-shape NAME=D,D,... of keras or check for another)"
        )
        view.notes.append(
            f"input {tensor.name!r} has dynamic dims {shape_text(signature_of(tensor))}: "
            f"rebuilt at {shape_text(dims)}, {how}"
        )
    return view


def for_module(model: Model, py_path: str | Path) -> Model:
    """The view a generated module was built from (recorded in its `_tensors.json`)."""
    side = Path(py_path).with_name(f"{Path(py_path).stem}_tensors.json")
    try:
        saved = json.loads(side.read_text(encoding="utf-8")).get("view") or {}
    except (OSError, ValueError, AttributeError):
        saved = {}
    signature = saved.get("signature") if isinstance(saved.get("signature"), str) else None
    shapes = saved.get("input_shapes") if isinstance(saved.get("input_shapes"), dict) else {}
    specs = [
        f"{name}={','.join(str(int(d)) for d in dims)}"
        for name, dims in shapes.items()
        if isinstance(dims, list) and all(isinstance(d, int) for d in dims)
    ]
    return make_view(model, signature, specs).model


def _refuse_empty(fixed: Model, before: Model) -> None:
    """At the stored shape of a dynamic input (a placeholder: 1 for each ? dim) a computed tensor
    may come out empty, e.g. an STFT of a 1-sample waveform has no frame; nothing built at that
    shape means anything, so say which shape to ask for instead of failing inside Keras."""
    sg = fixed.main
    produced = {o for op in sg.operators for o in op.outputs}
    empty = next(
        (
            t
            for t in sg.tensors
            if t.index in produced and t.dtype.startswith(("float", "complex")) and 0 in t.shape
        ),
        None,
    )  # not int32: SPLIT_V of a shape vector leaves empty pieces
    if empty is not None:
        raise ViewError(
            f"at the stored input shape, tensor {empty.name!r} is empty ({shape_text(empty.shape)})"
            f"{dynamic_hint(before)}"
        )


def dynamic_hint(model: Model) -> str:
    """'; input 'x' has dynamic dims ?x?x?x3, stored as 1x1x1x3: --input-shape x=N,N,N,3 runs it at
    another shape' for the first dynamic input, '' when there is none (for runtime errors)."""
    sg = model.main
    dyn = [t for t in sg.inputs if dynamic_dims(sg.tensors[t])]
    if not dyn:
        return ""
    t = sg.tensors[dyn[0]]
    dims = ",".join("N" if d < 0 else str(d) for d in signature_of(t))
    return (
        f"; input {t.name!r} has dynamic dims {shape_text(signature_of(t))}, stored as {shape_text(t.shape)}: "
        f"--input-shape {input_names(model)[dyn[0]][-1]}={dims} runs it at another shape"
    )
