"""Namer: every identifier in generated code comes from here (sanitized, unique, never a keyword).

TFLite tensor names are TensorFlow op paths, often several fused into one ('model/bn/batchnorm/
add_1;model/conv/Conv2D;...'). A layer is named after the Keras layer scope in the first of them,
without the model-wide prefix and without trailing TensorFlow mechanics ('BiasAdd', 'batchnorm/
add_1'): 'model/conv2d_3/BiasAdd' -> conv2d_3, 'model/conv2d_3/Sigmoid' -> conv2d_3_sigmoid.
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
        "batchnorm",
        "bias_add",
        "concat",
        "const",
        "conv2d",
        "conv2d_transpose",
        "conv_transpose",
        "convolution",
        "depthwise",
        "fused_batch_norm_v",
        "identity",
        "mat_mul",
        "max_pool",
        "max_pool2d",
        "mean",
        "mul",
        "pad",
        "read_variable_op",
        "reshape",
        "resize",
        "resize_bilinear",
        "resize_nearest_neighbor",
        "squeeze",
        "sub",
        "tensordot",
        "truediv",
        "while",  # a recurrent layer's loop: 'lstm/while' names the LSTM
    }
)
# Name scopes TensorFlow opens inside one Keras layer ('bn/batchnorm/add_1', 'up/resize/ResizeBilinear').
INNER_SCOPES = frozenset({"batchnorm", "resize"})


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


def _path(raw: str, scope: tuple[str, ...]) -> tuple[list[str], bool]:
    """One name's path components without the model-wide scope (and whether it was there) and
    without an ':0' output index."""
    parts = [p for p in re.split(r"[/:]+", raw) if p]
    stripped = bool(scope) and len(parts) > len(scope) and tuple(parts[: len(scope)]) == scope
    if stripped:
        parts = parts[len(scope) :]
    if len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return parts, stripped


@functools.lru_cache(maxsize=4096)
def _key(part: str) -> str:
    return re.sub(r"[_0-9]+$", "", snake(part))


def _mechanics(part: str, scope: str) -> bool:
    """An op name that adds nothing to its scope: 'BiasAdd', or 'Relu6' under 'conv1_relu'."""
    letters = re.sub(r"[^a-z]", "", _key(part))
    return _key(part) in MECHANICS or (len(letters) > 2 and letters in re.sub(r"[^a-z]", "", scope.lower()))


def _layer_path(raw: str, scope: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(path, path without its op and TensorFlow's inner scopes) of the first fused name that
    names a layer: in 'm/bn/batchnorm/add_1;m/conv/Conv2D' that is 'm/conv'; else the first."""
    candidates = []
    for name in raw.split(";")[:16]:
        parts, stripped = _path(name, scope)
        short = list(parts)
        if len(short) > 1 and _mechanics(short[-1], short[-2]):
            short.pop()
        while len(short) > 1 and _key(short[-1]) in INNER_SCOPES:
            short.pop()
        candidates.append((parts, short))
        last = _key(short[-1]) if short else ""
        if len(parts) == 1:
            named = last not in MECHANICS
        else:  # a lone first component is the model's scope, unless that was stripped already
            named = last not in INNER_SCOPES and (len(short) > 1 or stripped)
        if named:
            return parts, short
    return candidates[0] if candidates else ([], [])


def phrases(raw: str, scope: tuple[str, ...] = ()) -> list[str]:
    """Name candidates for a tensor, best first: the layer scope, then with more of its path."""
    parts, short = _layer_path(raw, scope)
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


class Namer:
    def __init__(self, scope: tuple[str, ...] = ()) -> None:
        self.used: set[str] = set()
        self.scope = scope

    def name(self, raw: str, fallback: str = "t") -> Code:
        """A fresh identifier for a tensor name: more of its path, then a number, until unique."""
        return self._claim(identifier(p, fallback) for p in phrases(raw, self.scope))

    def base(self, raw: str, fallback: str = "t") -> str:
        """The identifier a tensor name would get, without claiming it (a prefix for helper steps)."""
        return identifier(phrases(raw, self.scope)[0], fallback)

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
