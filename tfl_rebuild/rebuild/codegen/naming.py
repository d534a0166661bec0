"""Namer: every identifier in generated code comes from here (sanitized, unique, never a keyword).

TFLite tensor names are TensorFlow op paths, often several fused into one ('model/bn/batchnorm/
add_1;model/conv/Conv2D;...'). A layer is named after the Keras layer scope of the op itself, not of
an activation or batch norm fused into it (in 'm/relu/Relu6;m/bn/batchnorm/add_1;m/conv/Conv2D' that
is 'conv'), without the model-wide prefix and trailing TensorFlow mechanics ('BiasAdd', 'batchnorm/
add_1'): 'model/conv2d_3/BiasAdd' -> conv2d_3, 'model/conv2d_3/Sigmoid' -> conv2d_3_sigmoid.

Keras 3 opens each layer's name scope twice when the converter traces it, and TensorFlow makes the
second one unique with a suffix: layer 'dense' runs as 'dense_1', 'dense_1' as 'dense_1_2', 'conv'
as 'conv_2' when 'conv_1' was taken. So in a model whose every layer scope (and the model's) ends in
'_<n>' (`keras3_scopes`), the last '_<n>' of each layer scope is dropped to give the authors' name.
"""

from __future__ import annotations

import builtins
import functools
import keyword
import os
import re
import unicodedata
from collections.abc import Iterable

from tfl_rebuild.rebuild.codegen.literals import Code

# Names the generated module itself uses.
RESERVED = frozenset(
    {
        "keras",
        "np",
        "os",
        "w",
        "model",
        "build_model",
        "weights_path",
        "WEIGHTS",
        "WEIGHTS_PATH",
        "self",
        "layer_weights",
        "layer_name",
        "weight_names",
        "key",
    }
)
MAX_LEN = 48
# TensorFlow op and scope names that say how a layer computes, not which layer it is (snake_case,
# trailing digits dropped: 'add_1' and 'depthwise1' are 'add' and 'depthwise').
MECHANICS = frozenset(
    {
        "add",
        "avg_pool",
        "batch_to_space_nd",  # a dilated convolution's output, in TensorFlow 1 style
        "batchnorm",
        "bias_add",
        "cast",
        "concat",
        "const",
        "conv2d",
        "conv2d_transpose",
        "conv_transpose",
        "convolution",
        "depthwise",
        "einsum",
        "expand_dims",
        "fused_batch_norm_v",
        "gather",
        "gather_v",
        "identity",
        "less",
        "mat_mul",
        "max_pool",
        "max_pool1d",
        "max_pool2d",
        "avg_pool1d",
        "mean",
        "mul",
        "neg",
        "pad",
        "read_variable_op",
        "reshape",
        "resize",
        "resize_bilinear",
        "resize_nearest_neighbor",
        "rsqrt",
        "space_to_batch_nd",
        "select_v",
        "squeeze",
        "strided_slice",
        "sub",
        "tensordot",
        "truediv",
        "while",  # a recurrent layer's loop: 'lstm/while' names the LSTM
    }
)
# Name scopes TensorFlow opens inside one Keras layer ('bn/batchnorm/add_1', 'up/resize/ResizeBilinear',
# 'conv1d/convolution/Squeeze', 'layer_normalization/moments/mean', 'sep/separable_conv2d/depthwise').
INNER_SCOPES = frozenset({"batchnorm", "resize", "convolution", "moments", "separable_conv2d"})
# Ops of a layer that a converter fuses into the op before it (keys as in MECHANICS): a fused
# tensor name is named after its other parts first ('relu/Relu6;bn/FusedBatchNormV3;conv/Conv2D'
# is the conv).
FUSED_AFTER = frozenset(
    {
        "relu",
        "leaky_relu",
        "elu",
        "selu",
        "sigmoid",
        "tanh",
        "gelu",
        "hard_sigmoid",
        "hard_swish",
        "clip_by_value",
        "batchnorm",
        "fused_batch_norm_v",
    }
)
# Converter internals spliced into names: MediaPipe's 'add_10__xeno_compat__1' is 'add_10', a
# folded DEQUANTIZE's 'conv2d/Conv2D_dequantize' is 'conv2d/Conv2D'.
INTERNAL = re.compile(r"(?<=[A-Za-z0-9])(__[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*__\d*|_dequantize\d*$)")
SUFFIX = re.compile(r"_\d+$")
KERAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")


@functools.lru_cache(maxsize=4096)
def snake(name: str) -> str:
    """CamelCase -> snake_case, keeping digit-letter groups whole: Conv2DTranspose -> conv2d_transpose."""
    name = name.replace("PReLU", "Prelu").replace("ReLU", "Relu")
    return re.sub(
        r"(?<=[a-z0-9])(?=[A-Z][a-z])|(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name
    ).lower()


def identifier(text: str, fallback: str = "t") -> str:
    """Any text -> a snake_case identifier that is safe to assign in the generated module."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))  # café -> cafe
    text = snake(re.sub(r"[^0-9A-Za-z]+", "_", text))  # any other character separates words
    text = re.sub(r"_+", "_", text).strip("_")
    if len(text) > MAX_LEN:  # cut at a word boundary when one is near
        cut = text.rfind("_", 0, MAX_LEN + 1)
        text = text[:cut] if cut >= MAX_LEN // 2 else text[:MAX_LEN].rstrip("_")
    if not text:
        text = fallback
    elif text[0].isdigit():
        text = f"{fallback}_{text}"
    if keyword.iskeyword(text) or keyword.issoftkeyword(text) or text in RESERVED or hasattr(builtins, text):
        text += "_"
    return text


def _path(raw: str, scope: tuple[str, ...], keras3: bool = False) -> tuple[list[str], bool]:
    """One name's path components without the model-wide scope (and whether it was there), without
    an ':0' output index and converter internals, and with Keras 3's scope suffixes dropped."""
    parts = [q for p in re.split(r"[/:]+", raw) if p and (q := INTERNAL.sub("", p) or p)]
    stripped = bool(scope) and len(parts) > len(scope) and tuple(parts[: len(scope)]) == scope
    if stripped:
        parts = parts[len(scope) :]
    if len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    if keras3 and stripped:  # every scope but the op's own name
        parts = [SUFFIX.sub("", p) or p for p in parts[:-1]] + parts[-1:]
    return parts, stripped


@functools.lru_cache(maxsize=4096)
def _key(part: str) -> str:
    return re.sub(r"[_0-9]+$", "", snake(part))


def _mechanics(part: str, scope: str) -> bool:
    """An op name that adds nothing to its scope: 'BiasAdd', or 'Relu6' under 'conv1_relu'."""
    letters = re.sub(r"[^a-z]", "", _key(part))
    return _key(part) in MECHANICS or (len(letters) > 2 and letters in re.sub(r"[^a-z]", "", scope.lower()))


def _layer_path(raw: str, scope: tuple[str, ...], keras3: bool = False) -> tuple[list[str], list[str]]:
    """(path, path without its op and TensorFlow's inner scopes) of the first fused name that names
    a layer, preferring one that is not a fused activation or batch norm: in 'm/relu/Relu6;m/bn/
    batchnorm/add_1;m/conv/Conv2D' that is 'm/conv'; else the first name."""
    candidates, named = [], []
    for name in raw.split(";")[:16]:
        parts, stripped = _path(name, scope, keras3)
        short = list(parts)
        if len(short) > 1 and _mechanics(short[-1], short[-2]):
            short.pop()
        # TensorFlow's scopes inside a layer: 'bn/batchnorm', 'dense/Tensordot' (of 'Tensordot/MatMul';
        # an op's scope is CamelCase, a layer 'conv2d_1' or 'add_1' is not one).
        while len(short) > 1 and (
            _key(short[-1]) in INNER_SCOPES or (short[-1][:1].isupper() and _key(short[-1]) in MECHANICS)
        ):
            short.pop()
        candidates.append((parts, short))
        last = _key(short[-1]) if short else ""
        if len(parts) == 1:
            names_layer = last not in MECHANICS
        else:  # a lone first component is the model's scope, unless that was stripped already
            names_layer = last not in INNER_SCOPES and (len(short) > 1 or stripped)
        if names_layer:
            fused = any(_key(p) in FUSED_AFTER for p in parts)
            if not fused:
                return parts, short
            named.append((parts, short))
    if named:
        return named[0]
    return candidates[0] if candidates else ([], [])


def phrases(raw: str, scope: tuple[str, ...] = (), keras3: bool = False) -> list[str]:
    """Name candidates for a tensor, best first: the layer scope, then with more of its path."""
    parts, short = _layer_path(raw, scope, keras3)
    candidates = []
    if len(short) < len(parts):  # the layer alone, with its op, with its parent scope, with both
        candidates += [short[-1], f"{short[-1]}_{parts[-1]}"]
    candidates += ["_".join(short[-2:]), "_".join(short[-2:] + parts[len(short) :][-1:]), "_".join(parts)]
    return list(dict.fromkeys(candidates))


def sanitize(raw: str, fallback: str = "t") -> str:
    """TFLite tensor name -> readable snake_case identifier, e.g. 'model/conv1/Relu6' -> 'conv1'."""
    return identifier(phrases(raw)[0], fallback)


def model_scope(names: Iterable[str]) -> tuple[str, ...]:
    """The leading path components every scoped tensor name shares ('sequential_1', ...)."""
    paths = [_path(n.split(";")[0], ())[0] for n in names if "/" in n.split(";")[0]]
    if len(paths) < 2:
        return ()
    # Every name keeps its layer and op ('scope/layer/op'), a 'scope/op' name at least its op.
    keep = min(len(p) - (2 if len(p) > 2 else 1) for p in paths)
    return tuple(os.path.commonprefix([p[:-1] for p in paths])[:keep])


def keras3_scopes(names: Iterable[str], scope: tuple[str, ...]) -> bool:
    """Whether the names carry Keras 3's doubled scopes: the model scope and every layer scope under
    it end in '_<n>' ('sequential_1/dense_1/MatMul', 'sequential_1/dense_1_2/MatMul')."""
    if not scope or not SUFFIX.search(scope[-1]):
        return False
    layers = 0
    for raw in names:
        for name in raw.split(";")[:16]:
            parts, stripped = _path(name, scope)
            if stripped and len(parts) > 1:
                if not SUFFIX.search(parts[0]):
                    return False
                layers += 1
    return layers > 0


class Namer:
    """Invariants: every name it hands out is a valid, non-reserved Python identifier of at most
    MAX_LEN (+ a number) characters, handed out once; the same calls in the same order give the
    same names; a name derives only from the text it is given (model strings cannot inject code)."""

    def __init__(self, scope: tuple[str, ...] = (), keras3: bool = False) -> None:
        self.used: set[str] = set()
        self.scope = scope
        self.keras3 = keras3

    def name(self, raw: str, fallback: str = "t") -> Code:
        """A fresh identifier for a tensor name: more of its path, then a number, until unique."""
        return self._claim(identifier(p, fallback) for p in phrases(raw, self.scope, self.keras3))

    def base(self, raw: str, fallback: str = "t") -> str:
        """The identifier a tensor name would get, without claiming it (a prefix for helper steps)."""
        return identifier(phrases(raw, self.scope, self.keras3)[0], fallback)

    def keras_name(self, raw: str, ident: str, fallback: str = "t") -> str:
        """The Keras layer name for the layer held in `ident` (from `name(raw)`): the authors'
        spelling ('Conv1', 'block_1_expand_BN') when `ident` is that text in snake case, else
        `ident`. Distinct identifiers give distinct names: a name maps back to its identifier."""
        for p in phrases(raw, self.scope, self.keras3):
            if identifier(p, fallback) == ident:
                return p if KERAS_NAME.match(p) else ident
        return ident

    def derived(self, base: str, suffix: str) -> Code:
        """A fresh identifier for a helper step of `base` (an identifier), e.g. conv1_flatten."""
        return self._claim([identifier(f"{base}_{suffix}")])

    def _claim(self, candidates: Iterable[str]) -> Code:
        first = None
        for c in candidates:  # lazily: most names are free at the first try
            first = first or c
            if c not in self.used:
                self.used.add(c)
                return Code(c)
        base, n = first, 1
        while f"{base}_{n}" in self.used:
            n += 1
        self.used.add(f"{base}_{n}")
        return Code(f"{base}_{n}")
