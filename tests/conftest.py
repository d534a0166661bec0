"""Shared test helpers: where the models are, and how to run the TFLite runtime on them.

Fixture models (fixtures/*.tflite, committed; built by fixtures/make_fixtures.py) are discovered
at collection time, so parametrized tests run on whatever exists. A test that needs one named
fixture calls `require_fixture(name)`: it skips with the reason locally, but fails when the
environment variable CI is set, since CI has every fixture committed. Corpus models
(.corpus/, fetched by ../shared/corpus/fetch.sh) are marked `corpus` and skip when absent.

This directory is on sys.path (pytest's rootdir-less conftest import), so tests import
helpers as `from conftest import ...` and `from flatbuf import ...`.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parent) not in sys.path:  # also under --import-mode=importlib
    sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
FIXTURES_DIR = Path(os.environ.get("TFL_REBUILD_FIXTURES") or ROOT / "fixtures")
CORPUS_DIR = ROOT / ".corpus"
FETCH_HINT = "run ../shared/corpus/fetch.sh"

# What fixtures/make_fixtures.py writes (CI has all of them committed).
FIXTURE_NAMES = (
    "mnist",
    "add_one",
    "mul_w",
    "mobilenet_v2_float",
    "mobilenet_v2_dynamic",
    "mobilenet_v2_int8",
    "mobilenet_v2_fp16",
    "ops_zoo",
    "sparse_fc",
)
# Models of the MediaPipe corpus that carry custom ops the stock runtime cannot run.
CORPUS_CUSTOM_OPS = {
    "face_landmark_with_attention": "Landmarks2TransformMatrix",
    "selfie_segmentation": "Convolution2DTransposeBias",
    "selfie_segmentation_landscape": "Convolution2DTransposeBias",
}


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def fixture_files() -> list[Path]:
    return sorted(FIXTURES_DIR.glob("*.tflite"))


def corpus_files() -> list[Path]:
    return sorted(CORPUS_DIR.glob("*.tflite"))


def fixture_params() -> list:
    return [pytest.param(p, id=p.stem) for p in fixture_files()]


def corpus_params(names: list[str] | None = None) -> list:
    """Corpus models (all, or the named ones), each marked `corpus`; a named model that is
    missing still appears, and skips with the reason."""
    if names is None:
        paths = corpus_files()
    else:
        paths = [CORPUS_DIR / f"{n}.tflite" for n in names]
    return [pytest.param(p, id=p.stem, marks=pytest.mark.corpus) for p in paths]


def model_params() -> list:
    """Every fixture, then every corpus model."""
    return fixture_params() + corpus_params()


def require_fixture(name: str) -> Path:
    path = FIXTURES_DIR / f"{name}.tflite"
    if not path.exists():
        msg = f"fixture {name}.tflite is missing: run fixtures/make_fixtures.py --only {name}"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def require_model(path: Path) -> Path:
    """Skip (with the reason) a corpus model that has not been fetched."""
    if not path.exists():
        if path.parent == CORPUS_DIR:
            pytest.skip(f"{path.name} is not in .corpus/: {FETCH_HINT}")
        return require_fixture(path.stem)
    return path


def require_corpus(name: str) -> Path:
    return require_model(CORPUS_DIR / f"{name}.tflite")


@cache
def read_cached(path: Path):
    """read_model, once per path per test process (for tests that only look)."""
    from tfl_rebuild.tflite.reader import read_model

    return read_model(path)


def custom_op_reason(path: Path) -> str | None:
    op = CORPUS_CUSTOM_OPS.get(path.stem)
    return f"{path.name} has custom op {op}, which the stock TFLite runtime cannot run" if op else None


@cache
def interpreter_module():
    """LiteRT's interpreter module, else tf.lite (both are installed in CI)."""
    try:
        import ai_edge_litert.interpreter as mod
    except ImportError:
        import tensorflow as tf

        mod = tf.lite
    return mod


def interpreter(model: Path | str | bytes, allocate: bool = True, preserve_all_tensors: bool = False):
    """A TFLite interpreter on the reference kernels (no XNNPACK delegate, whose fused kernels
    replace the model's ops and drop intermediate tensors)."""
    import warnings

    mod = interpreter_module()
    resolver = getattr(mod, "OpResolverType", None) or mod.experimental.OpResolverType
    kwargs = {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    if isinstance(model, (bytes, bytearray)):
        kwargs["model_content"] = bytes(model)
    else:
        kwargs["model_path"] = str(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is for debugging
        interp = mod.Interpreter(experimental_preserve_all_tensors=preserve_all_tensors, **kwargs)
    if allocate:
        interp.allocate_tensors()
    return interp


def seeded_inputs(interp, seed: int = 0) -> list:
    import numpy as np

    gen = np.random.default_rng(seed)
    values = []
    for d in interp.get_input_details():
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(s) for s in d["shape"])
        if dtype.kind == "f":
            values.append(gen.uniform(-1, 1, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            values.append(gen.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype))
    return values


def invoke(interp, inputs) -> None:
    for d, v in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], v)
    interp.invoke()


def convert_keras(model, **options) -> bytes:
    """Convert a Keras model with tf.lite.TFLiteConverter (TensorFlow imported only here)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    for name, value in options.items():
        setattr(converter, name, value)
    return converter.convert()
