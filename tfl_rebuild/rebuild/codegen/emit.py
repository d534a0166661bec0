"""LayerSpecs -> Keras module source + weights, through the Namer, lit() and jinja templates."""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np

from tfl_rebuild import __version__
from tfl_rebuild.rebuild.codegen.defaults import KERAS_DEFAULTS, is_default, signature_defaults
from tfl_rebuild.rebuild.codegen.layout import BODY_INDENT, STEP, WIDTH, call
from tfl_rebuild.rebuild.codegen.literals import Code, display, lit, shell_command
from tfl_rebuild.rebuild.codegen.naming import Namer, model_scope, sanitize, snake
from tfl_rebuild.rebuild.ops import ConversionError, LayerSpec, lookup
from tfl_rebuild.rebuild.ops.sequence import SubgraphRef
from tfl_rebuild.rebuild.passes.pipeline import fake_quant_params, prepare
from tfl_rebuild.tflite.ir import Model, Operator
from tfl_rebuild.tflite.kernel_rounding import fake_quant_rounding

KWARG = re.compile(r"^[a-z_][a-z0-9_]*$")
CLASS = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass
class Generated:
    source: str
    weights: dict[str, np.ndarray]
    tensors: list[dict] = field(default_factory=list)  # TFLite tensor -> Keras layer, for compare


@functools.cache  # one environment per process: its templates are compiled once
def _templates() -> jinja2.Environment:
    root = resources.files("tfl_rebuild.rebuild").joinpath("templates")
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


@functools.cache
def _class_template(name: str) -> str:
    """The rendered source of a custom layer class (templates/layers/<snake_name>.py.j2)."""
    return _templates().get_template(f"layers/{snake(name)}.py.j2").render().strip()


# Input dtypes a keras.Input states; float (and quantized, rebuilt in float) inputs use the default.
INPUT_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


class _Emitter:
    def __init__(self, model: Model, fake_quant: bool, subgraph: int = 0):
        self.model = model
        self.ctx, self.ops = prepare(model, subgraph, keep_quantize=fake_quant)
        self.sg = self.ctx.subgraph
        self.namer = Namer(
            model_scope(self.sg.tensors[t].name for op in self.ops for t in op.outputs if t >= 0)
        )
        # Tensors something reads: an output nothing reads is unpacked into `_`.
        self.used = {self.ctx.resolve(i) for op in self.ops for i in op.inputs if i >= 0}
        self.used |= {self.ctx.resolve(t) for t in self.sg.outputs}
        self.fake_quant = fake_quant
        self.var: dict[int, Code] = {}  # tensor id -> variable holding it
        self.body: list[Code] = []
        self.layer_weights: list[tuple[str, list[str]]] = []  # (layer, weight names), in build order
        self.weights: dict[str, np.ndarray] = {}
        self.classes: set[str] = set()
        self.tensors: list[dict] = []
        # Subgraphs called by control flow: index -> (function name, source); see subgraphs.py.
        self.functions: dict[int, tuple[Code, Code | None]] = {}

    def tensor_var(self, t: int) -> Code:
        t = self.ctx.resolve(t)
        if t not in self.var or self.var[t] == "_":
            raise ConversionError(f"tensor {self.sg.tensors[t].name!r} is used before it is computed")
        return self.var[t]

    def emit_inputs(self) -> list[Code]:
        names = []
        for t in self.sg.inputs:
            tensor = self.sg.tensors[t]
            v = self.namer.name(tensor.name, "input")
            shape = tuple(tensor.shape)
            kwargs = [("shape", shape[1:]), ("batch_size", shape[0] if shape else 1)]
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
        main = next((self.sg.tensors[o].name for o in op.outputs if o >= 0), "")
        self.body.append(self._op_comment(op, main))
        # With fake quantization the op's layer is named after its tensor, the rounding step after it.
        fq = specs[-1] if self.fake_quant and len(specs) > n_specs else None
        spec_var: dict[int, Code] = {}
        for spec in specs:
            outs = [o for o in spec.outputs]
            if fq is not None and spec is fq:
                layer_name = self.namer.derived(spec_var[id(spec.inputs[0])], "quant")
            elif outs:
                layer_name = self.namer.name(self.sg.tensors[outs[0]].name)
            elif fq is not None and spec is fq.inputs[0]:
                layer_name = self.namer.name(self.sg.tensors[fq.outputs[0]].name)
            else:  # a helper step of the op (Flatten before Dense, ...)
                layer_name = self.namer.derived(self.namer.base(main), snake(spec.layer))
            args = [self.tensor_var(r) if isinstance(r, int) else spec_var[id(r)] for r in spec.inputs]
            targets = [layer_name]
            if len(outs) > 1:
                targets += [self.namer.name(self.sg.tensors[o].name) for o in outs[1:]]
                targets = [v if o in self.used else Code("_") for o, v in zip(outs, targets)]
            self.body += self._call(spec, layer_name, args, ", ".join(targets))
            spec_var[id(spec)] = layer_name
            for k, o in enumerate(outs):
                self.var[o] = targets[k]
                self.tensors.append(self._tensor_row(op, o, layer_name, k))
            if spec.weights:
                for wname, arr in spec.weights:
                    self.weights[f"{layer_name}/{wname}"] = np.asarray(arr)
                self.layer_weights.append((layer_name, [wname for wname, _ in spec.weights]))

    def _op_comment(self, op: Operator, main: str) -> Code:
        """'# CONV_2D model/conv1/Relu6 -> [1, 16, 16, 8]': the op and its (first fused) tensor name."""
        what = op.opcode if op.opcode != "CUSTOM" else f"CUSTOM {display(op.custom_code or '', 40)}"
        if op.options.get("silu"):  # passes.fuse_silu: the MUL by the input is part of it
            what = "LOGISTIC + MUL"
        if op.opcode == "STABLEHLO_COMPOSITE" and isinstance(op.options.get("name"), str):
            what = f"STABLEHLO_COMPOSITE {display(op.options['name'], 40)}"
        shape = list(self.sg.tensors[op.outputs[0]].shape) if op.outputs and op.outputs[0] >= 0 else []
        return Code(f"# {what} {display(main.split(';')[0])} -> {lit(shape)}")

    def _tensor_row(self, op: Operator, t: int, layer: str, index: int) -> dict:
        return {
            "tensor": t,
            "name": self.sg.tensors[t].name,
            "layer": str(layer),
            "output": index,
            "op_index": op.index,
            "op": op.key,
        }

    def _call(self, spec: LayerSpec, layer_name: Code, args: list[Code], target: str) -> list[Code]:
        """`target = Layer(kwarg=value, ..., name=...)(args)`, leaving out the class's defaults."""
        if not CLASS.match(spec.layer):
            raise ValueError(f"bad layer class {spec.layer!r}")
        if spec.custom:
            self.classes.add(spec.layer)
            defaults = signature_defaults(_class_template(spec.layer), spec.layer)
        else:
            defaults = KERAS_DEFAULTS.get(spec.layer, {})
        kwargs: list[tuple[str, object]] = []
        for k, v in spec.kwargs.items():
            if not KWARG.match(k):
                raise ValueError(f"bad keyword {k!r}")
            if isinstance(v, SubgraphRef):  # another subgraph, built by its own function
                from tfl_rebuild.rebuild.codegen.subgraphs import subgraph_call

                kwargs.append((k, subgraph_call(self, v.index)))
                continue
            if not is_default(defaults, k, v, spec.kwargs):
                kwargs.append((k, v))
        kwargs.append(("name", str(layer_name)))
        ctor = spec.layer if spec.custom else f"keras.layers.{spec.layer}"
        arg_text = f"[{', '.join(args)}]" if spec.call_list else ", ".join(args)
        return call(f"{target} = {ctor}", kwargs, f"({arg_text})")

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


def set_weights_lines(layer_weights: list[tuple[str, list[str]]]) -> list[Code]:
    """A table of each layer's weight names and one loop that loads them from the .npz, where the
    arrays are keyed "<layer>/<weight>" (a call per layer took three lines each on big models)."""
    if not layer_weights:
        return []
    lines = [
        Code('# Each layer\'s weights, in set_weights order; the .npz holds them as "<layer>/<weight>".'),
        Code("layer_weights = {"),
    ]
    for layer, names in layer_weights:
        entry = f"{STEP}{lit(layer)}: {lit(names)},"
        if BODY_INDENT + len(entry) <= WIDTH:
            lines.append(Code(entry))
        else:
            lines += [
                Code(f"{STEP}{lit(layer)}: ["),
                *(Code(f"{STEP * 2}{lit(n)},") for n in names),
                Code(f"{STEP}],"),
            ]
    return lines + [
        Code("}"),
        Code("for layer_name, weight_names in layer_weights.items():"),
        Code(
            f"{STEP}model.get_layer(layer_name).set_weights("
            '[w[f"{layer_name}/{key}"] for key in weight_names])'
        ),
    ]


def _rebuild_command(
    model: Model,
    stem: str,
    fake_quant: bool | None,
    default_fake_quant: bool,
    view_options: tuple[str, ...] = (),
) -> Code:
    """The command that writes this module again (run where the model is; DIR: this file's directory)."""
    source = Path(model.path).name or "model.tflite"
    words = ["tfl-rebuild", "keras", source, "-o"]
    options = list(view_options)
    if stem != sanitize(Path(source).stem, "model"):
        options += ["--name", stem]
    if fake_quant is not None and fake_quant != default_fake_quant:
        options.append("--fake-quant" if fake_quant else "--no-fake-quant")
    return Code(f"{shell_command(words)} DIR{' ' + shell_command(options) if options else ''}")


def quantized_io_notes(model: Model, image_hint: bool = False) -> list[str]:
    """What a quantized model input or output means here: the rebuild computes in float."""
    sg = model.main
    notes = []
    for label, ids, verb in (("input", sg.inputs, "takes"), ("output", sg.outputs, "returns")):
        for t in ids:
            tensor = sg.tensors[t]
            params = fake_quant_params(tensor)
            if params is None:
                continue
            scale, zp = params[0], params[1]
            q = f"(q - {zp})" if zp > 0 else (f"(q + {-zp})" if zp < 0 else "q")
            note = (
                f"TFLite {label} {tensor.name!r} is {tensor.dtype} (scale {scale:.6g}, zero point {zp}); "
                f"this model {verb} its float value {q} * {scale:.6g}"
            )
            if image_hint and label == "input" and len(tensor.shape) == 4 and tensor.shape[-1] in (1, 3):
                note += (
                    f" (Core ML raw pixels: --image-input {tensor.name} --scale {scale:.6g} "
                    f"--bias {-zp * scale:.6g})"
                )
            notes.append(note)
    return notes


def variable_tensor_notes(model: Model) -> list[str]:
    """Fused recurrent ops keep their state in variable tensors, which the TFLite runtime carries
    from one invocation to the next until reset_all_variables(); the rebuild, as its verification
    (runtime.set_inputs resets them), starts every call from the zero state."""
    sg = model.main
    ops = [
        op
        for op in sg.operators
        if any(
            0 <= i < len(sg.tensors) and sg.tensors[i].is_variable and sg.tensors[i].data is None
            for i in op.inputs
        )
    ]
    if not ops:
        return []
    kinds = ", ".join(dict.fromkeys(str(display(op.key, 40)) for op in ops))  # a custom code is the model's
    return [
        f"TFLite keeps the state of {len(ops)} op(s) ({kinds}) in variable tensors from one invocation to the "
        "next until reset_all_variables(); this model, as its verification, starts every call from the zero "
        "state"
    ]


def _note_lines(notes: list[str]) -> list[Code]:
    """Notes as comment lines; each note is one line of text (model strings in it are repr()-escaped)."""
    import textwrap

    lines = []
    for note in notes:
        if not note.isprintable():
            raise ValueError("a note must be one printable line")
        lines += [
            Code(f"# {part}") for part in textwrap.wrap(f"Note: {note}", WIDTH - 2, subsequent_indent="  ")
        ]
    return lines


def generate(
    model: Model,
    stem: str,
    fake_quant: bool | None = None,
    view_options: tuple[str, ...] = (),
    notes: list[str] | tuple[str, ...] = (),
) -> Generated:
    """Build the module source for `model`; its weights file is expected at `<stem>_weights.npz`.

    view_options: the --signature / --input-shape words that made `model` (see views.py), for the
    rebuild command in the header; notes: what the view did, written as comments under it."""
    from tfl_rebuild.commands.inspect import quantization_kind

    default_fake_quant = quantization_kind(model) in ("full-int8", "int16x8")
    em = _Emitter(model, default_fake_quant if fake_quant is None else fake_quant)
    inputs = em.emit_inputs()
    n_input_lines = len(em.body)
    for op in em.ops:
        em.emit_op(op)
    outputs = em.emit_outputs()
    classes = sorted(em.classes)
    env = _templates()
    class_src = [Code(env.get_template("layers/op_layer.py.j2").render().strip())] if classes else []
    class_src += [Code(_class_template(c)) for c in classes]
    model_inputs = Code(inputs[0] if len(inputs) == 1 else f"[{', '.join(inputs)}]")
    model_outputs = Code(outputs[0] if len(outputs) == 1 else f"[{', '.join(outputs)}]")
    source = env.get_template("module.py.j2").render(
        version=Code(__version__),
        source=display(Path(model.path).name or "model.tflite"),
        sha256=Code(model.sha256[:16]),
        rebuild=_rebuild_command(model, stem, fake_quant, default_fake_quant, tuple(view_options)),
        notes=_note_lines([*notes, *quantized_io_notes(model), *variable_tensor_notes(model)]),
        weights_path=call(
            "WEIGHTS_PATH = os.path.join",
            [(None, Code("os.path.dirname(os.path.abspath(__file__))")), (None, f"{stem}_weights.npz")],
            indent=0,
        ),
        classes=class_src,
        inputs=em.body[:n_input_lines],
        body=em.body[n_input_lines:],
        model_call=call(
            "model = keras.Model",
            [(None, model_inputs), (None, model_outputs), ("name", sanitize(stem, "model"))],
        ),
        set_weights=set_weights_lines(em.layer_weights),
        load_weights=bool(em.layer_weights or em.functions),  # an unused `w` would fail lint
        functions=[source for _, source in em.functions.values()],
    )
    ast.parse(source)  # a template or emitter bug must never reach the user's disk
    return Generated(source, em.weights, em.tensors)
