"""Interpreters made ready to run (allocated, custom ops in segments), and their inputs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import RuntimeUnavailableError
from tfl_rebuild.native_logs import silenced
from tfl_rebuild.runtime.litert import interpreter_class


def make_interpreter(
    model_path: str | None = None,
    model_content: bytes | None = None,
    preserve_all_tensors: bool = False,
    num_threads: int | None = None,
    reference_kernels: bool = False,
):
    """An allocated interpreter, or a one-line error naming custom ops the runtime lacks.

    `reference_kernels` skips the default delegate (XNNPACK), whose fused kernels may round
    differently and whose internal tensors are not kept even with `preserve_all_tensors`.
    Within `isolated.session()` the interpreter runs in a child process that Ctrl-C can kill.
    """
    from tfl_rebuild.runtime import isolated

    if isolated.active():
        return isolated.make_remote(
            model_path=model_path,
            model_content=model_content,
            preserve_all_tensors=preserve_all_tensors,
            num_threads=num_threads,
            reference_kernels=reference_kernels,
        )
    Interpreter = interpreter_class()
    extra = {}
    if reference_kernels:
        resolver = sys.modules[Interpreter.__module__].OpResolverType
        extra["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with silenced():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" notice
            interp = Interpreter(
                model_path=model_path,
                model_content=model_content,
                experimental_preserve_all_tensors=preserve_all_tensors,
                num_threads=num_threads,
                **extra,
            )
            interp.allocate_tensors()
        try:  # the runtime's Python API decodes names as UTF-8; a file may hold other bytes
            interp.get_input_details(), interp.get_output_details()
        except UnicodeDecodeError:
            raise RuntimeUnavailableError(
                "the TFLite runtime cannot load this model: an input or output tensor name is not "
                "UTF-8 (its Python API cannot report the tensor)"
            ) from None
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        if not reference_kernels and "TfLiteXNNPackDelegate" in text:
            # XNNPACK takes a node it then cannot prepare (LiteRT 2.x: sparse FULLY_CONNECTED behind
            # DENSIFY): the built-in kernels run the model, and the interpreter says so.
            interp = make_interpreter(
                model_path, model_content, preserve_all_tensors, num_threads, reference_kernels=True
            )
            first = next((ln for ln in text.splitlines() if ln.strip()), text)
            interp.fallback_note = (
                f"XNNPACK cannot run this model ({first.strip()}); ran the built-in kernels"
            )
            return interp
        custom = sorted(set(re.findall(r"unresolved custom op: (\S+?)\.?\s", text + " ")))
        if custom and _has_references(custom):
            # Custom ops with a numpy reference (MediaPipe's): TFLite runs the rest, in segments.
            from tfl_rebuild.runtime.segmented import SegmentedInterpreter

            content = model_content if model_content is not None else Path(model_path).read_bytes()
            return SegmentedInterpreter(
                content,
                set(custom),
                reference_kernels=reference_kernels,
                num_threads=num_threads,
                preserve_all_tensors=preserve_all_tensors,
            )
        if custom:
            raise RuntimeUnavailableError(
                f"the TFLite runtime cannot run this model: custom op(s) {', '.join(custom)} are not built in"
            ) from None
        if "Select TensorFlow op" in text:  # the runtime's advice is for Android builds
            flex = sorted(set(re.findall(r"\((Flex\w+)\)", text))) or ["Flex"]
            raise RuntimeUnavailableError(
                f"the TFLite runtime cannot run select TensorFlow (Flex) ops: {', '.join(flex)} (its Python "
                "interpreter has no Flex delegate)"
            ) from None
        first = next((ln for ln in text.splitlines() if ln.strip()), text)
        raise RuntimeUnavailableError(f"the TFLite runtime cannot load this model: {first}") from None
    return interp


def _has_references(custom: list[str]) -> bool:
    from tfl_rebuild.runtime.reference import REFERENCES

    return all(c in REFERENCES for c in custom)


def random_input(detail: dict, rng: np.random.Generator, limit: int | None = None) -> np.ndarray:
    """A seeded input of the right shape/dtype: floats in [-1, 1); quantized integers over their
    whole range (the calibrated float range: int16's [-128, 127] alone would be ~0); indices in
    [0, limit) when `limit` (or the detail's "index_limit") is given (see `index_limits`); other
    integers over a small range; strings as short random lowercase words."""
    shape = tuple(int(d) if d > 0 else 1 for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "SUO":  # string tensors: short random lowercase words
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", np.uint8)
        words = [bytes(rng.choice(letters, int(rng.integers(1, 5)))) for _ in range(int(np.prod(shape)))]
        return np.array(words, dtype=np.bytes_).reshape(shape)
    info = np.iinfo(dtype)
    limit = limit if limit is not None else detail.get("index_limit")
    if limit is not None:
        return rng.integers(0, max(1, min(limit, info.max)), shape).astype(dtype)
    if (detail.get("quantization") or (0.0, 0))[0]:
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    lo, hi = max(info.min, -128), min(info.max, 127)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def random_inputs(interp, seed: int = 0, limits: list[int | None] | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    details = interp.get_input_details()
    return [random_input(d, rng, limits[k] if limits else None) for k, d in enumerate(details)]


# Ops that index a table with an integer tensor: op -> (indices slot, params slot).
INDEXING = {"GATHER": (1, 0), "GATHER_ND": (1, 0), "EMBEDDING_LOOKUP": (0, 1)}
# Ops whose integer tensor indexes an output of a given constant shape: op -> (indices slot, shape slot).
SCATTERING = {"SCATTER_ND": (0, 2), "SPARSE_TO_DENSE": (0, 1)}
INTEGER = frozenset(["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])


def _scatter_bound(indices, shape) -> int | None:
    """The smallest output dimension an index row of `indices` addresses, when `shape` is constant."""
    if shape.data is None or shape.data.size == 0:
        return None
    dims = [int(d) for d in np.asarray(shape.data).reshape(-1)]
    depth = indices.shape[-1] if len(indices.shape) >= 2 else 1
    size = min(dims[:depth], default=0)
    return size if size > 0 else None


def index_limits(subgraph) -> list[int | None]:
    """Per subgraph input: an exclusive bound for integer inputs that end up as gather / embedding /
    scatter indices (token ids, positions), so seeded inputs stay in the table; None for the other inputs.

    Follows integer tensors forward from the input (Keras' Embedding first maps negative ids with
    LESS / ADD / SELECT); the bound is the smallest table axis the indices reach."""
    tensors = subgraph.tensors
    limits: list[int | None] = []
    for start in subgraph.inputs:
        if tensors[start].dtype not in INTEGER or tensors[start].quantized:
            limits.append(None)
            continue
        reached, bound = {start}, None
        for op in subgraph.operators:
            if not reached.intersection(op.inputs):
                continue
            scatter = SCATTERING.get(op.opcode)
            if scatter and len(op.inputs) > max(scatter) and op.inputs[scatter[0]] in reached:
                size = _scatter_bound(tensors[op.inputs[scatter[0]]], tensors[op.inputs[scatter[1]]])
                if size:
                    bound = size if bound is None else min(bound, size)
                continue
            slots = INDEXING.get(op.opcode)
            if slots and len(op.inputs) > max(slots) and op.inputs[slots[0]] in reached:
                table = tensors[op.inputs[slots[1]]].shape
                if op.opcode == "GATHER":
                    axis = int(op.options.get("axis", 0)) % max(len(table), 1)
                    size = table[axis] if table else None
                else:
                    depth = tensors[op.inputs[slots[0]]].shape[-1] if op.opcode == "GATHER_ND" else 1
                    size = min(table[:depth], default=None)
                if size and size > 0:
                    bound = size if bound is None else min(bound, size)
                continue
            reached.update(o for o in op.outputs if o >= 0 and tensors[o].dtype in INTEGER)
        limits.append(bound)
    return limits


def set_inputs(interp, inputs: list[np.ndarray]) -> None:
    """Copy the inputs in, resizing (and reallocating) inputs whose shape changed."""
    for detail, value in zip(interp.get_input_details(), inputs):
        if tuple(detail["shape"]) != value.shape:
            interp.resize_tensor_input(detail["index"], value.shape)
            interp.allocate_tensors()
        interp.set_tensor(detail["index"], value)
    # Stateful ops (sequence LSTM / RNN state variables) would start from the previous run's state:
    # every run starts from the initial state instead, as the rebuilt Keras layers do.
    reset = getattr(interp, "reset_all_variables", None)
    if reset is not None:
        reset()


def run(interp, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """One inference; returns copies of every subgraph output, in output order."""
    set_inputs(interp, inputs)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
