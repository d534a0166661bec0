"""LayerSpecs -> Keras module source + weights, through the Namer, lit() and jinja templates."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from ..ir import Model, Operator
from ..ops import ConversionError, LayerSpec, lookup
from ..passes import fake_quant_params, prepare
from .literals import Code, comment, lit
from .naming import Namer, sanitize

# Keras defaults left out of generated calls, so each line says only what differs.
DEFAULTS = {
    "strides": ((1, 1),),
    "dilation_rate": ((1, 1),),
    "padding": ("valid",),
    "use_bias": (True,),
    "depth_multiplier": (1,),
    "groups": (1,),
}
KWARG = re.compile(r"^[a-z_][a-z0-9_]*$")
CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass
class Generated:
    source: str
    weights: dict[str, np.ndarray]
    tensors: list[dict] = field(default_factory=list)  # TFLite tensor -> Keras layer, for compare


def _templates() -> jinja2.Environment:
    root = resources.files("tfl_rebuild").joinpath("templates")
    if not root.is_dir():  # editable install: the top-level templates/ beside the package
        root = Path(__file__).resolve().parents[2] / "templates"
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        finalize=_only_code,
        keep_trailing_newline=True,
        trim_blocks=True,
        autoescape=False,
    )


def _only_code(value):
    if isinstance(value, Code):
        return value
    raise TypeError(f"template got a raw {type(value).__name__}; values must go through lit()/Namer")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class _Emitter:
    def __init__(self, model: Model, fake_quant: bool):
        self.model = model
        self.ctx, self.ops = prepare(model)
        self.sg = self.ctx.subgraph
        self.namer = Namer()
        self.fake_quant = fake_quant
        self.var: dict[int, Code] = {}  # tensor id -> variable holding it
        self.body: list[Code] = []
        self.set_weights: list[Code] = []
        self.weights: dict[str, np.ndarray] = {}
        self.classes: set[str] = set()
        self.tensors: list[dict] = []

    def tensor_var(self, t: int) -> Code:
        t = self.ctx.resolve(t)
        if t not in self.var:
            raise ConversionError(f"tensor {self.sg.tensors[t].name!r} is used before it is computed")
        return self.var[t]

    def emit_inputs(self) -> list[Code]:
        names = []
        for t in self.sg.inputs:
            tensor = self.sg.tensors[t]
            v = self.namer.name(tensor.name, "input")
            shape = tuple(tensor.shape)
            self.body.append(Code(f"{v} = keras.Input(shape={lit(shape[1:])}, batch_size={lit(shape[0] if shape else 1)}, "
                                  f"name={lit(str(v))})"))
            self.var[t] = v
            names.append(v)
        return names

    def emit_op(self, op: Operator) -> None:
        specs = lookup(op, self.sg)(op, self.ctx)
        specs = list(specs) if isinstance(specs, list) else [specs]
        if self.fake_quant:
            specs = self._with_fake_quant(op, specs)
        main = next((self.sg.tensors[o].name for o in op.outputs if o >= 0), "")
        out_shape = list(self.sg.tensors[op.outputs[0]].shape) if op.outputs and op.outputs[0] >= 0 else []
        what = Code(op.opcode if op.opcode != "CUSTOM" else f"CUSTOM {comment(op.custom_code or '', 40)}")
        self.body.append(Code(f"# {what}  {comment(main)}  {lit(out_shape)}"))
        spec_var: dict[int, Code] = {}
        for spec in specs:
            outs = [o for o in spec.outputs]
            if outs:
                layer_name = self.namer.name(self.sg.tensors[outs[0]].name)
            else:
                layer_name = self.namer.name(f"{sanitize(main)}_{_snake(spec.layer)}")
            args = [self.tensor_var(r) if isinstance(r, int) else spec_var[id(r)] for r in spec.inputs]
            call = self._call(spec, layer_name, args)
            if len(outs) > 1:
                targets = [self.namer.name(self.sg.tensors[o].name) if k else layer_name for k, o in enumerate(outs)]
                self.body.append(Code(f"{', '.join(targets)} = {call}"))
                for k, (o, v) in enumerate(zip(outs, targets)):
                    self.var[o] = v
                    self.tensors.append(self._tensor_row(op, o, layer_name, k))
            else:
                self.body.append(Code(f"{layer_name} = {call}"))
                spec_var[id(spec)] = layer_name
                for o in outs:
                    self.var[o] = layer_name
                    self.tensors.append(self._tensor_row(op, o, layer_name, 0))
            if spec.weights:
                keys = []
                for wname, arr in spec.weights:
                    key = f"{layer_name}/{wname}"
                    self.weights[key] = np.asarray(arr)
                    keys.append(Code(f"w[{lit(key)}]"))
                self.set_weights.append(Code(f"model.get_layer({lit(str(layer_name))}).set_weights([{', '.join(keys)}])"))

    def _tensor_row(self, op: Operator, t: int, layer: str, index: int) -> dict:
        return {"tensor": t, "name": self.sg.tensors[t].name, "layer": str(layer), "output": index,
                "op_index": op.index, "op": op.key}

    def _call(self, spec: LayerSpec, layer_name: Code, args: list[Code]) -> Code:
        if not CLASS.match(spec.layer):
            raise ValueError(f"bad layer class {spec.layer!r}")
        kwargs = []
        for k, v in spec.kwargs.items():
            # Pooling layers' strides default to pool_size, not (1, 1): always written there.
            if not spec.custom and v in DEFAULTS.get(k, ()) and not (k == "strides" and "Pooling" in spec.layer):
                continue
            if not KWARG.match(k):
                raise ValueError(f"bad keyword {k!r}")
            kwargs.append(f"{k}={lit(v)}")
        kwargs.append(f"name={lit(str(layer_name))}")
        if spec.custom:
            self.classes.add(spec.layer)
            ctor = f"{spec.layer}({', '.join(kwargs)})"
        else:
            ctor = f"keras.layers.{spec.layer}({', '.join(kwargs)})"
        arg_text = f"[{', '.join(args)}]" if spec.call_list else ", ".join(args)
        return Code(f"{ctor}({arg_text})")

    def _with_fake_quant(self, op: Operator, specs: list[LayerSpec]) -> list[LayerSpec]:
        last = specs[-1]
        if len(last.outputs) != 1:
            return specs
        params = fake_quant_params(self.sg.tensors[last.outputs[0]])
        if params is None:
            return specs
        scale, zp, qmin, qmax = params
        outputs, last.outputs = last.outputs, ()
        return [*specs, LayerSpec("FakeQuant", {"scale": scale, "zero_point": zp, "qmin": qmin, "qmax": qmax},
                                  (last,), outputs, custom=True)]

    def emit_outputs(self) -> list[Code]:
        return [self.tensor_var(t) for t in self.sg.outputs]


def generate(model: Model, stem: str, fake_quant: bool | None = None) -> Generated:
    """Build the module source for `model`; its weights file is expected at `<stem>_weights.npz`."""
    from ..inspect import quantization_kind

    if fake_quant is None:
        fake_quant = quantization_kind(model) in ("full-int8", "int16x8")
    em = _Emitter(model, fake_quant)
    inputs = em.emit_inputs()
    for op in em.ops:
        em.emit_op(op)
    outputs = em.emit_outputs()
    classes = sorted(em.classes)
    env = _templates()
    class_src = [Code(env.get_template("layers/op_layer.py.j2").render().strip())] if classes else []
    class_src += [Code(env.get_template(f"layers/{_snake(c)}.py.j2").render().strip()) for c in classes]
    source = env.get_template("module.py.j2").render(
        version=Code(__version__),
        source=comment(Path(model.path).name or "model.tflite"),
        sha256=Code(model.sha256[:16]),
        weights_file=lit(f"{stem}_weights.npz"),
        classes=class_src,
        body=em.body,
        model_inputs=Code(inputs[0] if len(inputs) == 1 else f"[{', '.join(inputs)}]"),
        model_outputs=Code(outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]"),
        model_name=lit(sanitize(stem, "model")),
        set_weights=em.set_weights,
    )
    ast.parse(source)  # a template or emitter bug must never reach the user's disk
    return Generated(source, em.weights, em.tensors)
