"""The generated Keras model as one TensorFlow concrete function, and the TF ops in it that
coremltools has no converter for (each with the Keras layers that made it)."""

from __future__ import annotations

import re

# TensorFlow ops of a traced Keras model that never reach coremltools' op converters.
_TF_BOOKKEEPING = {
    "NoOp",
    "ReadVariableOp",
    "VarHandleOp",
    "Placeholder",
    "Const",
    "Identity",
    "IdentityN",
    "StatefulPartitionedCall",
    "PartitionedCall",
}


def trace(keras_model, names: list[str], dims: list[list[int | tuple[int, int]]]):
    """One concrete function over the Keras model, its inputs named `names`: flexible dims (a range)
    are None, the outputs a list in order."""
    import tensorflow as tf

    specs = []
    for k, (name, d) in enumerate(zip(names, dims)):
        dtype = tf.as_dtype(keras_model.inputs[k].dtype)
        specs.append(tf.TensorSpec([None if isinstance(x, tuple) else x for x in d], dtype, name=name))

    @tf.function(input_signature=specs, autograph=False)
    def serve(*xs):
        out = keras_model(list(xs) if len(xs) > 1 else xs[0], training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    concrete = serve.get_concrete_function()
    _inline_xla_calls(concrete.graph)
    return concrete


def _inline_xla_calls(graph) -> None:
    """Clear _XlaMustCompile on calls, so TensorFlow inlines them and coremltools sees their ops.

    Keras' TF backend wraps some ops (a grouped Conv2D) in tf.function(jit_compile=True); inlining
    skips such a call and coremltools has no converter for StatefulPartitionedCall."""
    from tensorflow.core.framework import attr_value_pb2

    for op in graph.get_operations():
        if (
            op.type in ("StatefulPartitionedCall", "PartitionedCall")
            and "_XlaMustCompile" in op.node_def.attr
        ):
            op._set_attr("_XlaMustCompile", attr_value_pb2.AttrValue(b=False))


def unsupported_tf_ops(concrete_fn, layer_names: list[str]) -> dict[str, list[str]]:
    """{TF op type: [Keras layers]} for ops coremltools has no converter for (after ct_patches.apply())."""
    try:
        import coremltools.converters.mil.frontend.tensorflow2.ops  # noqa: F401  (registers the TF2 ops)
        from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY
    except ImportError:  # a coremltools that moved its registry: let the conversion report instead
        return {}
    graph_def = concrete_fn.graph.as_graph_def()
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    found: dict[str, list[str]] = {}
    for node in nodes:
        if node.op in _TF_BOOKKEEPING or node.op in _TF_OPS_REGISTRY:
            continue
        layer = _layer_of(node.name, layer_names)
        found.setdefault(node.op, [])
        if layer not in found[node.op]:
            found[node.op].append(layer)
    return found


def _layer_of(node_name: str, layer_names: list[str]) -> str:
    # Keras 3 scopes ops as "<model>_1/<layer>_1/<op>": match a path part to a layer name.
    names = set(layer_names)
    for part in node_name.split("/"):
        base = re.sub(r"_\d+$", "", part)
        if part in names:
            return part
        if base in names:
            return base
    return node_name
