"""Subgraphs called by control flow (WHILE cond/body, IF then/else): each becomes its own
`build_<name>(w)` function in the generated module, returning a keras.Model over the subgraph's
inputs; the loop / branch layer of the calling op runs that model.

All emitters of one module share the Namer (so layer names and weight keys are unique across
functions), the weights, the custom classes and the function table.
"""

from __future__ import annotations

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.rebuild.codegen.emit import _Emitter, _templates, set_weights_lines
from tfl_rebuild.rebuild.codegen.literals import Code, comment, lit
from tfl_rebuild.rebuild.codegen.naming import sanitize
from tfl_rebuild.rebuild.ops import ConversionError
from tfl_rebuild.tflite.ir import Model


class SubgraphEmitter(_Emitter):
    """An emitter for one called subgraph: inputs keep their exact shape (scalars included, no
    batch axis added) and dtype, since the calling op passes tensors of exactly that form."""

    def __init__(self, parent: _Emitter, index: int):
        super().__init__(parent.model, parent.fake_quant, subgraph=index)
        self.namer, self.weights, self.classes = parent.namer, parent.weights, parent.classes
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
            self.body.append(
                Code(
                    f"{v} = keras.Input(batch_shape={lit(tuple(tensor.shape))}, dtype={lit(dtype)}, "
                    f"name={lit(str(v))})"
                )
            )
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


def subgraph_call(em: _Emitter, index: int) -> Code:
    """The expression `build_<name>(w)` for subgraph `index`, emitting its function on first use."""
    model: Model = em.model
    if not 0 < index < len(model.subgraphs):
        raise ConversionError(
            f"control flow refers to subgraph {index}, but the model has {len(model.subgraphs)}"
        )
    if index in em.functions:
        name, source = em.functions[index]
        if source is None:
            raise ConversionError(f"subgraph {model.subgraphs[index].name!r} calls itself")
        return Code(f"{name}(w)")
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
        _templates()
        .get_template("subgraph.py.j2")
        .render(
            name=name,
            index=lit(index),
            what=comment(sg.name or f"subgraph {index}"),
            body=sub.body,
            inputs=Code(f"[{', '.join(inputs)}]"),
            outputs=Code(f"[{', '.join(outputs)}]"),
            model_name=lit(str(name).removeprefix("build_")),
            set_weights=set_weights_lines(sub.layer_weights),
        )
    )
    em.functions[index] = (name, Code(source.strip()))
    return Code(f"{name}(w)")
