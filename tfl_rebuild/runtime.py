"""The one place that picks the TFLite runtime: LiteRT when installed, else tf.lite.

Both expose the same `Interpreter` API. LiteRT imports in a fraction of TensorFlow's time.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from .errors import RuntimeUnavailableError


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            import tensorflow as tf
        except ImportError:
            raise RuntimeUnavailableError(
                "running a model needs ai-edge-litert or tensorflow: pip install 'tfl-rebuild[litert]'"
            ) from None
        Interpreter = tf.lite.Interpreter
    return Interpreter


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
    """
    Interpreter = interpreter_class()
    extra = {}
    if reference_kernels:
        resolver = sys.modules[Interpreter.__module__].OpResolverType
        extra["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(
            model_path=model_path,
            model_content=model_content,
            experimental_preserve_all_tensors=preserve_all_tensors,
            num_threads=num_threads,
            **extra,
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        text = str(exc)
        custom = sorted(set(re.findall(r"unresolved custom op: (\S+?)\.?\s", text + " ")))
        if custom and _has_references(custom):
            # Custom ops with a numpy reference (MediaPipe's): TFLite runs the rest, in segments.
            from .segmented import SegmentedInterpreter

            content = model_content if model_content is not None else Path(model_path).read_bytes()
            return SegmentedInterpreter(content, set(custom), reference_kernels=reference_kernels,
                                        num_threads=num_threads, preserve_all_tensors=preserve_all_tensors)
        if custom:
            raise RuntimeUnavailableError(
                f"the TFLite runtime cannot run this model: custom op(s) {', '.join(custom)} are not built in"
            ) from None
        first = next((ln for ln in text.splitlines() if ln.strip()), text)
        raise RuntimeUnavailableError(f"the TFLite runtime cannot load this model: {first}") from None
    return interp


def _has_references(custom: list[str]) -> bool:
    from .reference_ops import REFERENCES

    return all(c in REFERENCES for c in custom)


def random_input(detail: dict, rng: np.random.Generator) -> np.ndarray:
    """A seeded input of the right shape/dtype: floats in [-1, 1), integers over a small range."""
    shape = tuple(int(d) if d > 0 else 1 for d in detail["shape"])
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -128), min(info.max, 127)
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def random_inputs(interp, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_input(d, rng) for d in interp.get_input_details()]


def set_inputs(interp, inputs: list[np.ndarray]) -> None:
    """Copy the inputs in, resizing (and reallocating) inputs whose shape changed."""
    for detail, value in zip(interp.get_input_details(), inputs):
        if tuple(detail["shape"]) != value.shape:
            interp.resize_tensor_input(detail["index"], value.shape)
            interp.allocate_tensors()
        interp.set_tensor(detail["index"], value)


def run(interp, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """One inference; returns copies of every subgraph output, in output order."""
    set_inputs(interp, inputs)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]
