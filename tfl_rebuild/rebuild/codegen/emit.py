"""LayerSpecs -> Keras module source + weights, through the Namer, lit() and jinja templates."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild import __version__
from tfl_rebuild.rebuild.codegen.emitter import Emitter, set_weights_lines
from tfl_rebuild.rebuild.codegen.layout import WIDTH, call
from tfl_rebuild.rebuild.codegen.literals import Code, display, shell_command
from tfl_rebuild.rebuild.codegen.naming import sanitize
from tfl_rebuild.rebuild.codegen.templates import class_source, environment
from tfl_rebuild.rebuild.passes.quantize import fake_quant_params
from tfl_rebuild.tflite.ir import Model


@dataclass
class Generated:
    source: str
    weights: dict[str, np.ndarray]
    tensors: list[dict] = field(default_factory=list)  # TFLite tensor -> Keras layer, for compare


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
    from tfl_rebuild.tflite.analysis import quantization_kind

    default_fake_quant = quantization_kind(model) in ("full-int8", "int16x8")
    em = Emitter(model, default_fake_quant if fake_quant is None else fake_quant)
    inputs = em.emit_inputs()
    n_input_lines = len(em.body)
    for op in em.ops:
        em.emit_op(op)
    outputs = em.emit_outputs()
    classes = sorted(em.classes)
    env = environment()
    class_src = [Code(env.get_template("layers/op_layer.py.j2").render().strip())] if classes else []
    package = sanitize(stem, "model")
    class_src += [Code(class_source(c, frozenset(em.class_uses.get(c, ())), package)) for c in classes]
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
