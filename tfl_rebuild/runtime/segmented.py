"""Run a model whose custom ops the TFLite runtime lacks: TFLite for the rest, numpy for those ops.

The operators are cut into segments: maximal runs the runtime can execute, and single custom ops
with a numpy reference (runtime/reference.py). Each runtime segment is the model itself with subgraph
0's inputs, outputs and operator list replaced (re-packed through the runtime's own flatbuffer
object API; the weights a segment does not read are dropped from its copy). Values flow between
segments by tensor index, so every tensor keeps its identity and the result reads like one
interpreter: `SegmentedInterpreter` has the `Interpreter` methods verify/compare/dump use.

Tensors computed from constants only (DEQUANTIZE of fp16 weights) are never passed between
segments: XNNPACK does not write them. A segment recomputes the ones it reads; the numpy ops get
them from one run of those ops on the built-in kernels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tfl_rebuild.errors import RuntimeUnavailableError
from tfl_rebuild.runtime.reference import REFERENCES, OpCall, run_reference
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.tflite.reader import read_model

_UNRESOLVED = re.compile(r"unresolved custom op: (\S+?)\.?\s")
# MediaPipe ops LiteRT's XNNPACK delegate implements (for some attributes); the built-in kernels have none.
_XNNPACK_CUSTOM = frozenset({"Convolution2DTransposeBias", "MaxPoolingWithArgmax2D", "MaxUnpooling2D"})


def unresolved_custom_ops(message: str) -> list[str]:
    """Custom op codes a runtime error message says are not registered."""
    return sorted(set(_UNRESOLVED.findall(message + " ")))


@dataclass
class _Segment:
    ops: list[int]  # operator indices, in execution order
    numpy: bool  # one custom op run by its reference
    inputs: list[int]  # tensors fed in (values from earlier segments or model inputs)
    outputs: list[int]  # tensors read back
    interpreter: object = None


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


class SegmentedInterpreter:
    """An allocated-interpreter look-alike for a model with custom ops the runtime lacks."""

    def __init__(
        self,
        content: bytes,
        missing: set[str],
        *,
        reference_kernels: bool = False,
        num_threads: int | None = None,
        preserve_all_tensors: bool = False,
    ):
        self.model: Model = read_model(content)
        # The runtime names one missing op per failure: presume the rest, learn what is left (see below).
        codes = {op.custom_code for op in self.model.main.operators if op.opcode == "CUSTOM"} & set(
            REFERENCES
        )
        self.missing = set(missing) | (codes if reference_kernels else codes - _XNNPACK_CUSTOM)
        self._kernels = dict(reference_kernels=reference_kernels, num_threads=num_threads)
        self._preserve = preserve_all_tensors
        sg = self.model.main
        no_ref = sorted(self.missing - set(REFERENCES))
        if no_ref:
            raise RuntimeUnavailableError(
                f"the TFLite runtime cannot run this model: custom op(s) {', '.join(no_ref)} are not built in"
            )
        if (
            len(self.model.subgraphs) > 1
            or self.model.external_buffers
            or any(t.is_variable for t in sg.tensors)
        ):
            raise RuntimeUnavailableError(
                f"the TFLite runtime lacks custom op(s) {', '.join(sorted(self.missing))}, and a model with "
                "several subgraphs, variables or external buffers cannot be run in segments"
            )
        self._producer = {t: op.index for op in sg.operators for t in op.outputs if t >= 0}
        self._static = self._static_tensors()
        self._object_model = _schema().ModelT.InitFromPackedBuf(bytes(self.model._storage), 0)
        for _ in range(len(sg.operators) + 1):  # each retry learns one more op the runtime lacks
            self.segments = self._plan()
            learned = self._load_segments()
            if not learned:
                break
            self.missing |= learned
        self._static_values = self._run_static()
        self._values: dict[int, np.ndarray] = {}
        self._inputs: dict[int, np.ndarray] = {}

    # -- planning -------------------------------------------------------------------------------

    def _static_tensors(self) -> set[int]:
        sg = self.model.main
        static = {t.index for t in sg.tensors if t.is_constant}
        derived = set()
        for op in sg.operators:
            ins = [i for i in op.inputs if i >= 0]
            if ins and all(i in static for i in ins) and not self._is_numpy(op.index):
                outs = {o for o in op.outputs if o >= 0}
                static |= outs
                derived |= outs
        return derived

    def _is_numpy(self, index: int) -> bool:
        op = self.model.main.operators[index]
        return op.opcode == "CUSTOM" and op.custom_code in self.missing

    def _with_static_producers(self, ops: list[int]) -> list[int]:
        """`ops` plus the ops computing the static tensors they read, in model order."""
        sg = self.model.main
        need, todo = set(ops), list(ops)
        while todo:
            for t in sg.operators[todo.pop()].inputs:
                p = self._producer.get(t)
                if t in self._static and p is not None and p not in need:
                    need.add(p)
                    todo.append(p)
        return sorted(need)

    def _plan(self) -> list[_Segment]:
        sg = self.model.main
        runs: list[tuple[list[int], bool]] = []
        for op in sg.operators:
            numpy_op = self._is_numpy(op.index)
            if numpy_op or not runs or runs[-1][1]:
                runs.append(([op.index], numpy_op))
            else:
                runs[-1][0].append(op.index)
        wanted = set(sg.outputs)
        segments: list[_Segment] = []
        for k, (ops, numpy_op) in enumerate(runs):
            if not numpy_op:
                ops = self._with_static_producers(ops)
            produced = {t for i in ops for t in sg.operators[i].outputs if t >= 0}
            later = {t for ops2, _ in runs[k + 1 :] for i in ops2 for t in sg.operators[i].inputs}
            reads = [
                t
                for i in ops
                for t in sg.operators[i].inputs
                if t >= 0 and t not in produced and not sg.tensors[t].is_constant
            ]
            if not numpy_op:
                reads = [t for t in reads if t not in self._static]
            keep = wanted | later if not self._preserve else produced
            outputs = [
                t
                for i in ops
                for t in sg.operators[i].outputs
                if t >= 0 and (numpy_op or (t in keep and t not in self._static) or t in wanted)
            ]
            segments.append(_Segment(ops, numpy_op, list(dict.fromkeys(reads)), list(dict.fromkeys(outputs))))
        return segments

    # -- runtime segments -----------------------------------------------------------------------

    def _pack(self, ops: list[int], inputs: list[int], outputs: list[int]) -> bytes:
        import flatbuffers

        m = self._object_model
        sg = m.subgraphs[0]
        used = {
            self.model.main.tensors[t].buffer
            for i in ops
            for t in self.model.main.operators[i].inputs
            if t >= 0
        }
        saved = (sg.inputs, sg.outputs, sg.operators, [b.data for b in m.buffers], m.signatureDefs)
        try:
            sg.inputs, sg.outputs = list(inputs), list(outputs)
            sg.operators = [saved[2][i] for i in ops]
            m.signatureDefs = None  # signatures name the original inputs and outputs
            keep = used | {md.buffer for md in m.metadata or []}
            for k, b in enumerate(m.buffers):
                if k not in keep and b.data is not None:
                    b.data = None
            builder = flatbuffers.Builder(1024)
            builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
            return bytes(builder.Output())
        finally:
            sg.inputs, sg.outputs, sg.operators, datas, m.signatureDefs = saved
            for b, d in zip(m.buffers, datas):
                b.data = d

    def single_op_model(self, index: int) -> bytes:
        """The model cut down to operator `index` (plus the ops computing its constant-only inputs):
        its non-constant inputs in, its outputs out. To run one op alone, e.g. where the runtime has it."""
        sg = self.model.main
        op = sg.operators[index]
        ins = [
            t
            for t in dict.fromkeys(op.inputs)
            if t >= 0 and not sg.tensors[t].is_constant and t not in self._static
        ]
        return self._pack(self._with_static_producers([index]), ins, [t for t in op.outputs if t >= 0])

    def _interpreter(self, content: bytes, reference_kernels: bool | None = None):
        """A raw runtime interpreter; the set of custom ops it lacks if that is why it failed."""
        import sys

        from tfl_rebuild.runtime.litert import interpreter_class

        Interpreter = interpreter_class()
        extra = {}
        if self._kernels["reference_kernels"] if reference_kernels is None else reference_kernels:
            resolver = sys.modules[Interpreter.__module__].OpResolverType
            extra["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = Interpreter(model_content=content, num_threads=self._kernels["num_threads"], **extra)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            lacking = set(unresolved_custom_ops(str(exc)))
            if lacking - self.missing:
                return lacking - self.missing
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            raise RuntimeUnavailableError(
                f"the TFLite runtime cannot load a segment of this model: {first}"
            ) from None
        return interp

    def _load_segments(self) -> set[str]:
        for seg in self.segments:
            if seg.numpy:
                continue
            interp = self._interpreter(self._pack(seg.ops, seg.inputs, seg.outputs))
            if isinstance(interp, set):
                if interp - set(REFERENCES):
                    raise RuntimeUnavailableError(
                        "the TFLite runtime cannot run this model: custom op(s) "
                        f"{', '.join(sorted(interp - set(REFERENCES)))} are not built in"
                    )
                return interp
            seg.interpreter = interp
        return set()

    def _run_static(self) -> dict[int, np.ndarray]:
        """Values of the static tensors the numpy ops read, from the built-in kernels (written)."""
        sg = self.model.main
        needed = [
            t
            for seg in self.segments
            if seg.numpy
            for i in seg.ops
            for t in sg.operators[i].inputs
            if t in self._static
        ]
        if not needed:
            return {}
        ops = self._with_static_producers([self._producer[t] for t in needed])
        interp = self._interpreter(self._pack(ops, [], list(dict.fromkeys(needed))), reference_kernels=True)
        if isinstance(interp, set):
            raise RuntimeUnavailableError(
                f"constants of this model need custom op(s) {', '.join(sorted(interp))}"
            )
        interp.invoke()
        return {d["index"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}

    # -- the Interpreter API ----------------------------------------------------------------------

    def _detail(self, t: int) -> dict:
        tensor = self.model.main.tensors[t]
        q = tensor.quantization
        scales = q.scale.astype(np.float32) if q is not None else np.zeros(0, np.float32)
        zps = q.zero_point.astype(np.int32) if q is not None else np.zeros(0, np.int32)
        shape = self._inputs[t].shape if t in self._inputs else tensor.shape
        return {
            "name": tensor.name,
            "index": t,
            "shape": np.array(shape, np.int32),
            "shape_signature": np.array(tensor.shape_signature or tensor.shape, np.int32),
            "dtype": np.dtype(tensor.dtype).type,
            "quantization": (float(scales[0]), int(zps[0])) if scales.size == 1 else (0.0, 0),
            "quantization_parameters": {
                "scales": scales,
                "zero_points": zps,
                "quantized_dimension": q.quantized_dimension if q is not None else 0,
            },
            "sparsity_parameters": {},
        }

    def get_input_details(self) -> list[dict]:
        return [self._detail(t) for t in self.model.main.inputs]

    def get_output_details(self) -> list[dict]:
        return [self._detail(t) for t in self.model.main.outputs]

    def allocate_tensors(self) -> None:
        pass

    def resize_tensor_input(self, index: int, shape, strict: bool = False) -> None:
        if tuple(int(d) for d in shape) != tuple(self.model.main.tensors[index].shape):
            raise ValueError("a model run in segments keeps its input shapes")

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        if index not in self.model.main.inputs:
            raise ValueError(f"tensor {index} is not an input")
        self._inputs[index] = np.array(value, copy=True)

    def get_tensor(self, index: int) -> np.ndarray:
        if index in self._values:
            return self._values[index].copy()
        if index in self._inputs:
            return self._inputs[index].copy()
        raise ValueError(f"tensor {index} was not computed by the segmented run")

    def tensor(self, index: int):
        return lambda: self.get_tensor(index)

    def invoke(self) -> None:
        sg = self.model.main
        missing = [sg.tensors[t].name for t in sg.inputs if t not in self._inputs]
        if missing:
            raise ValueError(f"input {missing[0]!r} was not set")
        values = dict(self._inputs)
        for seg in self.segments:
            if seg.numpy:
                values.update(self._run_numpy(seg.ops[0], values))
                continue
            interp = seg.interpreter
            for d in interp.get_input_details():
                if d["index"] not in values:
                    raise RuntimeUnavailableError(
                        f"tensor {sg.tensors[d['index']].name!r} is read before any op "
                        "writes it: this model cannot be run in segments"
                    )
                interp.set_tensor(d["index"], values[d["index"]].astype(d["dtype"], copy=False))
            interp.invoke()
            values.update(
                {d["index"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}
            )
        self._values = values

    def _run_numpy(self, index: int, values: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        sg = self.model.main
        op = sg.operators[index]
        ins = []
        for t in op.inputs:
            if t < 0:
                ins.append(None)
            elif t in values:
                ins.append(values[t])
            elif t in self._static_values:
                ins.append(self._static_values[t])
            else:
                ins.append(np.asarray(sg.tensors[t].data))
        call = OpCall(
            op.custom_code,
            op.version,
            bytes(op.custom_options),
            tuple(sg.tensors[t].shape if t >= 0 else () for t in op.inputs),
            tuple(sg.tensors[t].shape for t in op.outputs),
            f"{op.custom_code} op {index}",
        )
        outs = run_reference(call, ins)
        return {
            t: np.asarray(v, np.dtype(sg.tensors[t].dtype)).reshape(sg.tensors[t].shape)
            for t, v in zip(op.outputs, outs)
            if t >= 0
        }


def interpreter_for(content: bytes, missing: list[str], **kwargs) -> SegmentedInterpreter:
    """A segmented run of `content`, or the runtime's one-line refusal when an op has no reference."""
    return SegmentedInterpreter(content, set(missing), **kwargs)
