"""Operators -> lines of Keras source: one Emitter per (sub)graph, sharing one Namer.

Subgraphs called by control flow (WHILE cond/body, IF then/else) each become their own
`build_<name>()` function returning a keras.Model over the subgraph's inputs; the loop / branch
layer of the calling op runs that model. All emitters of one module share the Namer (layer names
and weight keys stay unique across functions), the weights, the custom classes and the functions.
"""

from __future__ import annotations

import re

import numpy as np

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.rebuild.codegen.constants import inline_small_constant, short_kwargs
from tfl_rebuild.rebuild.codegen.defaults import KERAS_DEFAULTS, is_default, signature_defaults
from tfl_rebuild.rebuild.codegen.layout import call
from tfl_rebuild.rebuild.codegen.literals import Code, comment, display, lit
from tfl_rebuild.rebuild.codegen.naming import Namer, keras3_scopes, model_scope, sanitize, snake
from tfl_rebuild.rebuild.codegen.templates import class_template, environment
from tfl_rebuild.rebuild.ops import ConversionError, LayerSpec, lookup
from tfl_rebuild.rebuild.ops.registry import InnerLayer
from tfl_rebuild.rebuild.ops.sequence import SubgraphRef
from tfl_rebuild.rebuild.passes.batch_axis import fixed_batch_reason
from tfl_rebuild.rebuild.passes.pipeline import prepare
from tfl_rebuild.rebuild.passes.quantize import fake_quant_params
from tfl_rebuild.tflite.ir import Model, Operator
from tfl_rebuild.tflite.kernel_rounding import fake_quant_rounding

KWARG = re.compile(r"^[a-z_][a-z0-9_]*$")
CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*$")


# Signature and tensor names that only number a tensor (Keras 3's 'output_0', 'keras_tensor_3'),
# with the prefix TensorFlow gives a signature's input tensors.
NUMBERING = re.compile(r"^(output|input|keras_tensor|args|inputs|outputs)(_\d+)?$")
SERVING = re.compile(r"^serving_default_|:\d+$")
# TensorFlow's names for a function's results: they say nothing about the layer.
CALL_RESULT = re.compile(r"^(StatefulPartitionedCall|PartitionedCall|Identity)(_\d+)?(:\d+)?$")

# Input dtypes a keras.Input states; float (and quantized, rebuilt in float) inputs use the default.
INPUT_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


class Emitter:
    def __init__(self, model: Model, fake_quant: bool, subgraph: int = 0):
        self.model = model
        self.ctx, self.ops = prepare(model, subgraph, keep_quantize=fake_quant)
        self.sg = self.ctx.subgraph
        # Op outputs and weights: a model whose outputs are 'Identity' has its scope in the weights.
        names = [
            self.sg.tensors[t].name
            for op in self.ops
            for t in (*op.outputs, *(i for i in op.inputs if i >= 0 and self.ctx.is_const(i)))
            if t >= 0
        ]
        scope = model_scope(names)
        self.namer = Namer(scope, keras3_scopes(names, scope))
        self.io_names = self._signature_names(subgraph)
        # Tensors something reads: an output nothing reads is unpacked into `_`.
        self.used = {self.ctx.resolve(i) for op in self.ops for i in op.inputs if i >= 0}
        self.used |= {self.ctx.resolve(t) for t in self.sg.outputs}
        self.fake_quant = fake_quant
        self.var: dict[int, Code] = {}  # tensor id -> variable holding it
        self.body: list[Code] = []
        self.layer_weights: list[tuple[str, list[str]]] = []  # (layer, weight names), in build order
        self.weights: dict[str, np.ndarray] = {}
        self.classes: set[str] = set()
        self.class_uses: dict[str, set[str]] = {}  # class -> the string arguments its calls pass
        self.tensors: list[dict] = []
        # Subgraphs called by control flow: index -> (function name, source); see subgraphs.py.
        self.functions: dict[int, tuple[Code, Code | None]] = {}
        self.fixed_batch: str | None = None  # why the batch stays 1 (emit_inputs), None: any batch

    def tensor_var(self, t: int) -> Code:
        t = self.ctx.resolve(t)
        if t not in self.var or self.var[t] == "_":
            if self.ctx.is_const(t):  # an op on constants alone that folding left (it could not compute it)
                raise ConversionError(
                    f"tensor {self.sg.tensors[t].name!r} is a constant where its op's converter takes "
                    "a computed tensor"
                )
            raise ConversionError(f"tensor {self.sg.tensors[t].name!r} is used before it is computed")
        return self.var[t]

    def _signature_names(self, subgraph: int) -> dict[int, str]:
        """Tensor id -> the name the model's signature gives an input or output, where it names
        something (not only numbers it), for the layer computing it (inputs: for keras.Input)."""
        names: dict[int, str] = {}
        for sig in self.model.signatures:
            if sig.subgraph_index == subgraph:
                for name, t in (*sig.inputs, *sig.outputs):
                    if isinstance(name, str) and not NUMBERING.match(name):
                        names.setdefault(t, name)
        for t in self.sg.inputs:  # no signature: the tensor's name ('serving_default_image:0')
            bare = SERVING.sub("", self.sg.tensors[t].name) if t not in names else ""
            if bare and not NUMBERING.match(bare) and "/" not in bare and ";" not in bare:
                names[t] = bare
        return names

    def _raw_name(self, op: Operator, t: int) -> str:
        """The text a layer computing tensor `t` of `op` is named from: the signature's name of a
        model output; else, when the tensor's name is several fused ones or TensorFlow's 'Identity'
        / 'StatefulPartitionedCall:0', the name of the op's largest constant, its kernel, which
        carries the op's own layer scope ('model/conv2d/Conv2D'), unless a lift chose the tensor
        for its scope (then its first fused name); else the tensor's name."""
        if t in self.io_names:
            return self.io_names[t]
        name = self.sg.tensors[t].name
        call_result = bool(CALL_RESULT.match(name.split(";")[0]))
        if (
            ";" in name
            and not call_result
            and t == op.options.get("name_tensor")
            and "lifted_from" in op.options
        ):
            # chosen by the lift for its layer scope (".../multi_head_attention/Mul;...")
            return name.split(";")[0]
        if ";" in name or call_result:  # the converter fuses the names of every op folded in
            consts = [self.sg.tensors[i] for i in op.inputs if i >= 0 and self.ctx.is_const(i)]
            # The largest first: a kernel, not a conv's output shape or a bias.
            for const in sorted(consts, key=lambda c: -int(np.prod(c.shape))):
                if "/" in const.name.split(";")[0]:
                    return const.name
        return "output" if call_result else name

    def emit_inputs(self) -> list[Code]:
        """keras.Input per model input: any batch when passes.batch_axis traces it through the graph,
        else batch_size=1 and `fixed_batch` says why (a note in the header)."""
        self.fixed_batch = fixed_batch_reason(self.ctx, self.ops)
        names = []
        single = len(self.sg.inputs) == 1
        for t in self.sg.inputs:
            tensor = self.sg.tensors[t]
            v = self.namer.name(self.io_names.get(t, "inputs" if single else "input"), "input")
            shape = tuple(tensor.shape)
            kwargs: list[tuple[str, object]] = [("shape", shape[1:])]
            if self.fixed_batch is not None:
                kwargs.append(("batch_size", shape[0] if shape else 1))
            if tensor.dtype in INPUT_DTYPES and not tensor.quantized:  # e.g. token ids, GATHER indices
                kwargs.append(("dtype", tensor.dtype))
            self.body += call(f"{v} = keras.Input", [*kwargs, ("name", str(v))])
            self.var[t] = v
            names.append(v)
        return names

    def emit_op(self, op: Operator) -> None:
        specs = self._requantize(op) if op.opcode == "QUANTIZE" else lookup(op, self.sg)(op, self.ctx)
        specs = list(specs) if isinstance(specs, list) else [specs]
        n_specs = len(specs)
        if self.fake_quant:
            specs = self._with_fake_quant(op, specs)
        main_t = next((o for o in op.outputs if o >= 0), -1)
        self.body.append(self._op_comment(op))
        # With fake quantization the op's layer is named after its tensor, the rounding step after it.
        fq = specs[-1] if self.fake_quant and len(specs) > n_specs else None
        spec_var: dict[int, Code] = {}
        for spec in specs:
            outs = [o for o in spec.outputs]
            raw = None  # the text the layer is named from, for its Keras name in the authors' spelling
            if fq is not None and spec is fq:
                layer_name = self.namer.derived(spec_var[id(spec.inputs[0])], "quant")
            elif outs:  # a lifted op may name the tensor whose name is its layer's (passes.lift)
                t = outs[0] if outs[0] in self.io_names else op.options.get("name_tensor", outs[0])
                raw = self._raw_name(op, t)
            elif spec.name_tensor is not None:  # a layer of a lifted stack (passes.lift_rnn)
                raw = self.sg.tensors[spec.name_tensor].name
            elif fq is not None and spec is fq.inputs[0]:
                raw = self._raw_name(op, fq.outputs[0])
            else:  # a helper step of the op (Flatten before Dense, ...)
                main = self._raw_name(op, main_t) if main_t >= 0 else ""
                layer_name = self.namer.derived(self.namer.base(main), snake(spec.layer))
            inline_small_constant(spec)
            short_kwargs(spec)
            if raw is not None:
                layer_name = self.namer.name(raw)
            keras_name = self.namer.keras_name(raw, layer_name) if raw is not None else str(layer_name)
            args = [self.tensor_var(r) if isinstance(r, int) else spec_var[id(r)] for r in spec.inputs]
            targets = [layer_name]
            if len(outs) > 1:
                targets += [self.namer.name(self.sg.tensors[o].name) for o in outs[1:]]
                targets = [v if o in self.used else Code("_") for o, v in zip(outs, targets)]
            self.body += self._call(spec, keras_name, args, ", ".join(targets))
            spec_var[id(spec)] = layer_name
            for k, o in enumerate(outs):
                self.var[o] = targets[k]
                self.tensors.append(self._tensor_row(op, o, keras_name, k))
            if spec.weights:
                for wname, arr in spec.weights:
                    self.weights[f"{keras_name}/{wname}"] = np.asarray(arr)
                self.layer_weights.append((keras_name, [wname for wname, _ in spec.weights]))

    def _op_comment(self, op: Operator) -> Code:
        """'# CONV_2D -> [1, 16, 16, 8]': the op (and what was fused or lifted into it) and its
        output shape; the layer's name below says which one it is."""
        what = op.opcode if op.opcode != "CUSTOM" else f"CUSTOM {display(op.custom_code or '', 40)}"
        if op.options.get("silu"):  # passes.fuse_silu: the MUL by the input is part of it
            what = "LOGISTIC + MUL"
        if op.options.get("keras_activation"):  # passes.lift: the activation op after it is part of it
            what = f"{what} + {display(op.options['keras_activation'], 20)}"
        parts = op.options.get("lifted_from")
        if parts:  # passes.lift: one Keras layer for the ops it was decomposed into
            what = f"{op.opcode} (from {' + '.join(parts) if len(parts) <= 3 else f'{len(parts)} ops'})"
        if op.opcode == "STABLEHLO_COMPOSITE" and isinstance(op.options.get("name"), str):
            what = f"STABLEHLO_COMPOSITE {display(op.options['name'], 40)}"
        shape = list(self.sg.tensors[op.outputs[0]].shape) if op.outputs and op.outputs[0] >= 0 else []
        return Code(f"# {what} -> {lit(shape)}")

    def _tensor_row(self, op: Operator, t: int, layer: str, index: int) -> dict:
        return {
            "tensor": t,
            "name": self.sg.tensors[t].name,
            "layer": str(layer),
            "output": index,
            "op_index": op.index,
            "op": op.key,
        }

    def _call(self, spec: LayerSpec, layer_name: str, args: list[Code], target: str) -> list[Code]:
        """`target = Layer(kwarg=value, ..., name=...)(args)`, leaving out the class's defaults."""
        if not CLASS.match(spec.layer):
            raise ValueError(f"bad layer class {spec.layer!r}")
        if spec.custom:
            self.classes.add(spec.layer)
            uses = self.class_uses.setdefault(spec.layer, set())
            uses.update(v for v in spec.kwargs.values() if isinstance(v, str))
            defaults = signature_defaults(class_template(spec.layer), spec.layer)
        else:
            defaults = KERAS_DEFAULTS.get(spec.layer, {})
        kwargs: list[tuple[str, object]] = []
        for k, v in spec.kwargs.items():
            if not KWARG.match(k):
                raise ValueError(f"bad keyword {k!r}")
            if isinstance(v, SubgraphRef):  # another subgraph, built by its own function
                kwargs.append((k, subgraph_call(self, v.index)))
                continue
            if isinstance(v, InnerLayer):  # a wrapped layer: Bidirectional(layer=keras.layers.LSTM(...))
                kwargs.append((k, self._inner(v, f"{layer_name}_{v.layer.lower()}")))
                continue
            if not is_default(defaults, k, v, spec.kwargs):
                kwargs.append((k, v))
        kwargs.append(("name", str(layer_name)))
        ctor = spec.layer if spec.custom else f"keras.layers.{spec.layer}"
        arg_text = f"[{', '.join(args)}]" if spec.call_list else ", ".join(args)
        for k, v in spec.call_kwargs.items():
            if not KWARG.match(k):
                raise ValueError(f"bad keyword {k!r}")
            arg_text += f", {k}={lit(v)}"
        return call(f"{target} = {ctor}", kwargs, f"({arg_text})")

    def _inner(self, inner: InnerLayer, name: str) -> Code:
        """`keras.layers.<Class>(k=v, ..., name=...)` on one line, leaving out the class's defaults.
        Named, so that Bidirectional's forward_/backward_ copies (and their weights file paths) do
        not depend on how many layers the process made before."""
        if not CLASS.match(inner.layer) or not all(KWARG.match(k) for k in inner.kwargs):
            raise ValueError(f"bad inner layer {inner.layer!r}")
        defaults = KERAS_DEFAULTS.get(inner.layer, {})
        args = [
            f"{k}={lit(v)}" for k, v in inner.kwargs.items() if not is_default(defaults, k, v, inner.kwargs)
        ]
        args.append(f"name={lit(name)}")
        return Code(f"keras.layers.{inner.layer}({', '.join(args)})")

    def _requantize(self, op: Operator) -> LayerSpec:
        """A QUANTIZE that prepare() kept (fake-quant rebuilds): round onto its output's grid."""
        scale, zp, qmin, qmax = fake_quant_params(self.sg.tensors[op.outputs[0]])
        kwargs = {"scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax, **self._rounding(op)}
        return LayerSpec("FakeQuant", kwargs, (op.inputs[0],), op.outputs, custom=True)

    def _rounding(self, op: Operator) -> dict:
        """FakeQuant's `ties` / `shift` for the kernel of `op` (see kernel_rounding.py)."""
        count = None
        if op.opcode == "MEAN" and len(op.inputs) > 1 and self.ctx.is_const(op.inputs[1]):
            shape = self.ctx.shape(op.inputs[0])
            axes = (
                {int(a) % len(shape) for a in np.asarray(self.ctx.const(op.inputs[1])).reshape(-1)}
                if shape
                else ()
            )
            count = int(np.prod([shape[a] for a in axes]))
        return fake_quant_rounding(self.sg, op, count)

    def _with_fake_quant(self, op: Operator, specs: list[LayerSpec]) -> list[LayerSpec]:
        last = specs[-1]
        if len(last.outputs) != 1 or last.layer == "FakeQuant":
            return specs
        params = fake_quant_params(self.sg.tensors[last.outputs[0]])
        if params is None:
            return specs
        scale, zp, qmin, qmax = params
        outputs, last.outputs = last.outputs, ()
        kwargs = {"scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax, **self._rounding(op)}
        return [*specs, LayerSpec("FakeQuant", kwargs, (last,), outputs, custom=True)]

    def emit_outputs(self) -> list[Code]:
        return [self.tensor_var(t) for t in self.sg.outputs]


class SubgraphEmitter(Emitter):
    """An emitter for one called subgraph: inputs keep their exact shape (scalars included, no
    batch axis added) and dtype, since the calling op passes tensors of exactly that form."""

    def __init__(self, parent: Emitter, index: int):
        super().__init__(parent.model, parent.fake_quant, subgraph=index)
        self.namer, self.weights, self.classes = parent.namer, parent.weights, parent.classes
        self.layer_weights = parent.layer_weights  # one list: the weights file holds every subgraph's
        self.class_uses = parent.class_uses
        self.functions = parent.functions

    def emit_inputs(self) -> list[Code]:
        names = []
        for t in self.sg.inputs:
            tensor = self.sg.tensors[t]
            if tensor.dtype not in ("float32", "float16", "int32", "int64", "bool", "int8", "uint8", "int16"):
                raise ConversionError(
                    f"subgraph {self.sg.name!r}: input of type {tensor.dtype} is not supported"
                )
            dtype = "float32" if tensor.quantized or tensor.dtype == "float16" else tensor.dtype
            v = self.namer.name(tensor.name, "input")
            kwargs = [("batch_shape", tuple(tensor.shape)), ("dtype", dtype), ("name", str(v))]
            self.body += call(f"{v} = keras.Input", kwargs)
            self.var[t] = v
            names.append(v)
        return names

    def emit_outputs(self) -> list[Code]:
        for t in self.sg.outputs:
            if self.ctx.is_const(t):
                raise ConversionError(
                    f"subgraph {self.sg.name!r}: constant output {self.sg.tensors[t].name!r}"
                )
        return super().emit_outputs()


def subgraph_call(em: Emitter, index: int) -> Code:
    """The expression `build_<name>()` for subgraph `index`, emitting its function on first use."""
    model: Model = em.model
    if not 0 < index < len(model.subgraphs):
        raise ConversionError(
            f"control flow refers to subgraph {index}, but the model has {len(model.subgraphs)}"
        )
    if index in em.functions:
        name, source = em.functions[index]
        if source is None:
            raise ConversionError(f"subgraph {model.subgraphs[index].name!r} calls itself")
        return Code(f"{name}()")
    sg = model.subgraphs[index]
    name = em.namer.name(f"build_{sanitize(sg.name, 'subgraph')}")
    em.functions[index] = (name, None)  # in progress: a cycle back here is an error
    sub = SubgraphEmitter(em, index)
    inputs = sub.emit_inputs()
    if not inputs:
        raise ConversionError(f"subgraph {sg.name!r} has no inputs")
    try:
        for op in sub.ops:
            sub.emit_op(op)
    except TflRebuildError as e:
        raise type(e)(f"in subgraph {sg.name!r}: {e}") from None
    outputs = sub.emit_outputs()
    source = (
        environment()
        .get_template("subgraph.py.j2")
        .render(
            name=name,
            index=lit(index),
            what=comment(sg.name or f"subgraph {index}"),
            body=sub.body,
            model_call=call(
                "model = keras.Model",
                [
                    (None, Code(f"[{', '.join(inputs)}]")),
                    (None, Code(f"[{', '.join(outputs)}]")),
                    ("name", str(name).removeprefix("build_")),
                ],
            ),
        )
    )
    em.functions[index] = (name, Code(source.strip()))
    return Code(f"{name}()")
