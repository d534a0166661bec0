"""Expose every intermediate tensor of a model as a subgraph output, so one run returns them all.

The usual way (tflite_tensor_outputter) rewrites the first output index and rebuilds an
interpreter once per tensor. Here the model bytes are patched once: a new outputs vector (the
original outputs first, then the selected tensors) is appended at the end of the file and the
SubGraph's `outputs` field is repointed to it. Nothing else moves, so weights (and external
buffers, whose offsets are absolute) stay valid and a 50 MB model is patched in milliseconds.

No TensorFlow here: the runtime is imported lazily through `runtime.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from tfl_rebuild.errors import InputError, RuntimeUnavailableError, TflRebuildError
from tfl_rebuild.tflite import fb_patch
from tfl_rebuild.tflite.ir import Model, Quantization
from tfl_rebuild.tflite.reader import read_model

# Dtypes the runtime cannot hand back as a plain numpy array (or only as pickled objects).
_NOT_DUMPABLE = frozenset(["string", "resource", "variant", "int4", "bfloat16"])


class PatchError(TflRebuildError):
    """The model cannot be patched to expose its intermediate tensors."""


@dataclass(frozen=True)
class DumpEntry:
    """Where one dumped tensor comes from."""

    key: str  # key in the dump dict: the tensor name, made unique
    tensor_index: int
    name: str
    op_index: int
    op_type: str  # builtin name or custom code
    dtype: str
    quantization: Quantization | None = None

    def dequantize(self, value: np.ndarray) -> np.ndarray | None:
        """Float values of a quantized tensor (per-tensor or per-channel); None if not quantized."""
        q = self.quantization
        if q is None or q.scale.size == 0 or value.dtype.kind not in "iu":
            return None
        scale, zp = q.scale.astype(np.float32), q.zero_point.astype(np.float32)
        if q.scale.size > 1 and value.ndim > q.quantized_dimension:
            shape = [1] * value.ndim
            shape[q.quantized_dimension] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return ((value.astype(np.float32) - zp) * scale).astype(np.float32)


class TensorDump(dict):
    """Tensor name -> array for every dumped tensor, in op order; `entries` says where each comes from."""

    def __init__(
        self,
        values: Mapping[str, np.ndarray],
        entries: Mapping[str, DumpEntry],
        inputs: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__(values)
        self.entries = dict(entries)
        self.inputs = dict(inputs or {})  # input name -> the value the run used


# -- selection ------------------------------------------------------------------------------------


def select_tensors(
    model: Model, select: str | None = None, ops: Iterable[str] | None = None, subgraph: int = 0
) -> list[DumpEntry]:
    """Operator outputs of one subgraph, in execution order, optionally filtered.

    `select` is a regex searched in tensor names; `ops` are op types (builtin names or custom
    codes, case-insensitive). Tensors the runtime cannot return as arrays (string, resource,
    variant) and variable tensors are skipped.
    """
    try:
        pattern = re.compile(select) if select else None
    except re.error as exc:
        raise InputError(f"--select {select!r} is not a valid regular expression: {exc}") from None
    wanted_ops = {o.strip().upper() for o in ops or () if o.strip()} or None
    sg = model.subgraphs[subgraph]
    entries, seen, keys = [], set(), set()
    for op in sg.operators:
        if wanted_ops and op.key.upper() not in wanted_ops and op.opcode.upper() not in wanted_ops:
            continue
        for t in op.outputs:
            if t < 0 or t in seen:
                continue
            tensor = sg.tensors[t]
            if tensor.dtype in _NOT_DUMPABLE or tensor.is_variable or tensor.is_constant:
                continue
            if pattern and not pattern.search(tensor.name):
                continue
            seen.add(t)
            key = tensor.name or f"@{t}"
            if key in keys:  # a name twice (or one like "x@8" already taken): index, then a count
                key, k = f"{tensor.name}@{t}", 1
                while key in keys:
                    key, k = f"{tensor.name}@{t}#{k}", k + 1
            keys.add(key)
            entries.append(
                DumpEntry(key, t, tensor.name, op.index, op.key, tensor.dtype, tensor.quantization)
            )
    return entries


# -- patching -------------------------------------------------------------------------------------


def _outputs_field(buf: fb_patch.Buffer, subgraph: int) -> int:
    """Position of the uoffset that points SubGraph[subgraph] at its outputs vector."""
    subs = buf.subgraphs()
    if not 0 <= subgraph < subs.length:
        raise PatchError(f"{buf.name}: subgraph {subgraph} does not exist (model has {subs.length})")
    table = buf.table(subs, subgraph, f"subgraph {subgraph}")
    field = buf.field(table, fb_patch.SubGraph.OUTPUTS, f"subgraph {subgraph}")
    if field is None:
        raise PatchError(
            f"{buf.name}: subgraph {subgraph} has no outputs field in its table to repoint; "
            "this model cannot be patched in place"
        )
    buf.check_aligned(field, f"subgraph {subgraph} outputs field")
    buf.vector_at(field, f"subgraph {subgraph} outputs vector")
    return field


def patch_pieces(model: Model, tensor_indices: Iterable[int], subgraph: int = 0) -> list:
    """The patched model as buffers to concatenate (or write in turn): no copy of the weights.

    Subgraph outputs become original outputs + `tensor_indices` (deduplicated). Everything up to
    the end of the original file is byte-identical except the 4-byte outputs field; the new
    vector follows, 4-byte aligned. External buffers keep their absolute offsets.
    """
    buf = fb_patch.Buffer.of(model)
    sg = model.subgraphs[subgraph]
    outputs = list(dict.fromkeys([*sg.outputs, *tensor_indices]))
    for t in outputs:
        if not 0 <= t < len(sg.tensors):
            raise PatchError(f"{buf.name}: tensor index {t} is out of range (0..{len(sg.tensors) - 1})")
    field = _outputs_field(buf, subgraph)
    pieces = buf.appended_vector(field, outputs, f"subgraph {subgraph} outputs field")
    end = sum(map(len, pieces))
    if end > fb_patch.FLATBUFFER_LIMIT:
        raise PatchError(
            f"{buf.name}: the patched model would end at byte {end}, past the 2 GB a flatbuffer offset may reach"
            + (" (its external buffers fill that space)" if model.external_buffers else "")
        )
    return pieces


def patch_outputs(model: Model, tensor_indices: Iterable[int], subgraph: int = 0) -> bytes:
    """`patch_pieces` joined into the bytes an interpreter loads (one copy of the file)."""
    return b"".join(patch_pieces(model, tensor_indices, subgraph))


# -- running --------------------------------------------------------------------------------------


def static_tensors(model: Model, subgraph: int = 0) -> set[int]:
    """Operator outputs computed from constants only (e.g. DEQUANTIZE of fp16 weights).

    XNNPACK folds such ops into its own packed weights and never writes their output tensors,
    so with that delegate they read back as zeros or stale memory: they are left out there.
    """
    sg = model.subgraphs[subgraph]
    static = {t.index for t in sg.tensors if t.is_constant}
    derived: set[int] = set()
    for op in sg.operators:
        ins = [i for i in op.inputs if i >= 0]
        if ins and all(i in static for i in ins):
            outs = {o for o in op.outputs if o >= 0}
            static |= outs
            derived |= outs
    return derived


@dataclass
class PatchedModel:
    model: Model
    entries: list[DumpEntry]  # the dumped tensors, in op order
    skipped: list[DumpEntry]  # selected but left out (see `static_tensors`)
    pieces: list  # the patched .tflite as buffers (see `patch_pieces`)
    xnnpack: bool = False

    @cached_property
    def content(self) -> bytes:
        """The patched .tflite bytes (built on first use: a copy of the whole file)."""
        return b"".join(self.pieces)

    def write(self, f) -> None:
        for piece in self.pieces:
            f.write(piece)


def prepare(
    model: str | bytes | Model,
    select: str | None = None,
    ops: Iterable[str] | None = None,
    *,
    xnnpack: bool = False,
) -> PatchedModel:
    """Read (if needed), select and patch: no runtime needed."""
    m = model if isinstance(model, Model) else read_model(model)
    ops = list(ops or ())
    entries = select_tensors(m, select, ops)
    skipped = []
    if xnnpack:
        static = static_tensors(m)
        skipped = [e for e in entries if e.tensor_index in static]
        entries = [e for e in entries if e.tensor_index not in static]
    if not entries:
        what = " and ".join(
            filter(None, [select and f"--select {select!r}", ops and f"--ops {','.join(ops)}"])
        )
        raise InputError(
            f"no operator output matches {what}" if what else "the model has no operator outputs to dump"
        )
    return PatchedModel(m, entries, skipped, patch_pieces(m, [e.tensor_index for e in entries]), xnnpack)


class Dumper:
    """A patched model loaded in the runtime; each `run` is one invoke returning every tensor."""

    def __init__(self, patched: PatchedModel, num_threads: int | None = None):
        from tfl_rebuild.runtime import interpreter as runtime

        self.patched = patched
        try:
            self.interpreter = runtime.make_interpreter(
                model_content=patched.content, reference_kernels=not patched.xnnpack, num_threads=num_threads
            )
        except RuntimeUnavailableError as exc:
            if patched.xnnpack or "custom op" not in str(exc) or not _xnnpack_runs(patched.model):
                raise
            # XNNPACK implements a few MediaPipe custom ops (e.g. Convolution2DTransposeBias).
            raise RuntimeUnavailableError(f"{exc}; the XNNPACK delegate runs them: use --xnnpack") from None
        exposed = {int(d["index"]) for d in self.interpreter.get_output_details()}
        missing = [e.name for e in patched.entries if e.tensor_index not in exposed]
        if missing:  # the runtime ignored part of the patch: say so rather than dump garbage
            raise PatchError(
                f"the runtime did not expose {len(missing)} patched outputs, e.g. {missing[0]!r}"
            )

    @property
    def input_details(self) -> list[dict]:
        """The runtime's input details; token-id inputs carry "index_limit" (random ids stay in the table)."""
        from tfl_rebuild.runtime.interpreter import index_limits

        limits = index_limits(self.patched.model.main)
        return [
            {**d, "index_limit": n} if n else d for d, n in zip(self.interpreter.get_input_details(), limits)
        ]

    @property
    def runtime_name(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        module = getattr(self.interpreter, "runtime_module", type(self.interpreter).__module__).split(".")[0]
        dist = {"ai_edge_litert": "ai-edge-litert"}.get(module, module)
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            return dist

    def run(self, inputs=None, seed: int = 0, copy: bool = True) -> TensorDump:
        """One invoke. With `copy=False` the arrays are views into the interpreter's memory
        (graph outputs are never reused within a run): no copy, and they keep the interpreter
        alive; the runtime refuses to run again while any of them is referenced."""
        from tfl_rebuild.runtime import interpreter as runtime
        from tfl_rebuild.runtime.inputs import from_arrays

        if not getattr(self.interpreter, "_safe_to_run", lambda: True)():  # the runtime's check, our words
            raise RuntimeError("arrays of an earlier run(copy=False) are still referenced; drop them first")
        details = self.input_details
        values = from_arrays(inputs, details, seed)
        try:
            runtime.set_inputs(self.interpreter, values)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"the runtime refused the inputs: {_first_line(exc)}") from None
        try:
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise RuntimeUnavailableError(
                f"the TFLite runtime failed running the model: {_first_line(exc)}"
            ) from None
        entries = self.patched.entries
        interp = self.interpreter
        get = interp.get_tensor if copy else lambda i: np.asarray(_Keep(interp.tensor(i)(), interp))
        arrays = {e.key: get(e.tensor_index) for e in entries}
        return TensorDump(
            arrays, {e.key: e for e in entries}, {d["name"]: v for d, v in zip(details, values)}
        )


class _Keep:
    """The base of a view into an interpreter's memory. The runtime's own views hold only its C++
    wrapper, while the model bytes that wrapper reads are held by the Python interpreter: keep both."""

    def __init__(self, view: np.ndarray, interpreter):
        self.__array_interface__ = view.__array_interface__
        self._view, self._interpreter = view, interpreter


def _xnnpack_runs(model: Model) -> bool:
    from tfl_rebuild.runtime import interpreter as runtime

    try:
        runtime.make_interpreter(model_content=bytes(model._storage))
    except RuntimeUnavailableError:
        return False
    return True


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)


def dump(
    model: str | bytes | Model,
    inputs=None,
    *,
    select: str | None = None,
    ops: Iterable[str] | None = None,
    seed: int = 0,
    xnnpack: bool = False,
    num_threads: int | None = None,
) -> TensorDump:
    """Every selected intermediate tensor from one run: {tensor name: array}, in op order.

    `inputs`: None (random, from `seed`), one array, a list in input order, or {input name: array}.
    By default the runtime's built-in kernels run (no XNNPACK): the reference values, and every
    tensor is computed. `result.entries[name]` gives tensor index, op index and op type.
    """
    # The interpreter runs once and lives as long as the arrays: views, no copy.
    return Dumper(prepare(model, select, ops, xnnpack=xnnpack), num_threads).run(inputs, seed, copy=False)
