"""TFLite -> generated Keras -> Core ML (coremltools): conversion, names, metadata, atomic save.

coremltools has no TFLite frontend, so the generated Keras model is the bridge: traced into one
TensorFlow concrete function with the TFLite input shapes (or the user's RangeDims), then given to
`ct.convert` (its own Keras path traces a `None` batch, which breaks layers that read static shapes,
and names the inputs itself). TF ops coremltools lacks are listed all at once before converting;
errors coremltools raises become one line. `ct_patches` fixes coremltools, `check` the numbers.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild import __version__
from tfl_rebuild.coreml import ct_patches
from tfl_rebuild.coreml.precision import Fp16Selector, fp16_share
from tfl_rebuild.coreml.trace import trace, unsupported_tf_ops
from tfl_rebuild.errors import OutputError, RuntimeUnavailableError, TflRebuildError, UnsupportedOpError
from tfl_rebuild.tflite.ir import Model

TARGETS = (  # ct.target names
    *(f"iOS{v}" for v in range(13, 19)),
    "macOS10_15",
    *(f"macOS{v}" for v in range(11, 16)),
    *(f"watchOS{v}" for v in range(6, 12)),
    *(f"tvOS{v}" for v in range(13, 19)),
)


class CoreMLError(TflRebuildError):
    """coremltools cannot convert the model, or the options do not fit it."""


# --- options ----------------------------------------------------------------------------------

Dim = int | tuple[int, int]  # fixed size, or (lower, upper) with upper -1 for unbounded


@dataclass
class ImageInput:
    name: str
    scale: float = 1.0
    bias: list[float] = field(default_factory=lambda: [0.0])
    color_layout: str = "RGB"  # RGB | BGR; a 1-channel input is grayscale


@dataclass
class Options:
    format: str = "mlprogram"  # mlprogram | neuralnetwork
    target: str | None = None  # ct.target name; None: coremltools' lowest for the format
    precision: str = "float16"  # float16 | float32 | mixed (| auto: coreml_check.convert_checked decides)
    fp32_ops: frozenset[str] = frozenset()  # mixed: the MIL ops (fp32 program names) kept in float32
    image: ImageInput | None = None
    class_labels: list[str] | None = None
    shapes: dict[str, list[Dim]] = field(default_factory=dict)  # input name -> dims


def parse_shape(spec: str) -> tuple[str, list[Dim]]:
    """'NAME=1,64:512,64:512,3' -> ('NAME', [1, (64, 512), (64, 512), 3]); 'a:' is unbounded."""
    name, sep, dims = spec.rpartition("=")
    if not sep or not name:
        raise CoreMLError(f"--input-shape {spec!r}: expected NAME=D,D,... (D a size or LOW:HIGH)")
    out: list[Dim] = []
    for part in dims.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d*)\s*)?", part)
        if not m:
            raise CoreMLError(f"--input-shape {spec!r}: {part!r} is not a size or LOW:HIGH range")
        lo = int(m.group(1))
        if m.group(2) is None:
            out.append(lo)
        else:
            hi = int(m.group(2)) if m.group(2) else -1
            if lo < 1 or (hi != -1 and hi < lo):
                raise CoreMLError(f"--input-shape {spec!r}: bad range {part.strip()!r}")
            out.append((lo, hi))
    return name, out


def read_labels(path: str) -> list[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CoreMLError(f"--class-labels {path}: cannot read ({exc.__class__.__name__})") from None
    labels = [ln.strip() for ln in lines if ln.strip()]
    if not labels:
        raise CoreMLError(f"--class-labels {path}: no labels (one per line)")
    return labels


# --- names ------------------------------------------------------------------------------------


def feature_name(raw: str, fallback: str) -> str:
    """A Core ML feature name from a TFLite name: identifier characters only ('serving_default_x:0' -> ...)."""
    text = re.sub(r":\d+$", "", raw)
    text = re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_")
    if not text:
        return fallback
    return text if text[0].isalpha() else f"{fallback}_{text}"


def _unique(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for n in names:
        cand, k = n, 1
        while cand in seen:
            k += 1
            cand = f"{n}_{k}"
        seen.add(cand)
        out.append(cand)
    return out


@dataclass
class Port:
    """One model input or output: its Core ML name, the TFLite tensor, the trace's name for it."""

    name: str
    trace_name: str
    tensor_index: int | None = None
    tflite_name: str = ""


def io_ports(model: Model | None, keras_model) -> tuple[list[Port], list[Port]]:
    """Inputs and outputs in TFLite order, named by the signature, else by tensor name."""
    if model is None:
        ins = [Port(feature_name(t.name, "input"), f"input_{k}") for k, t in enumerate(keras_model.inputs)]
        outs = [Port(f"output_{k}", "") for k in range(len(keras_model.outputs))]
        return _renamed(ins), _renamed(outs)
    sg = model.main
    sig = next((s for s in model.signatures if s.subgraph_index == 0), None)
    sig_in = {i: n for n, i in sig.inputs} if sig else {}
    sig_out = {i: n for n, i in sig.outputs} if sig else {}
    ins = [
        Port(feature_name(sig_in.get(i, sg.tensors[i].name), "input"), f"input_{k}", i, sg.tensors[i].name)
        for k, i in enumerate(sg.inputs)
    ]
    outs = [
        Port(feature_name(sig_out.get(i, sg.tensors[i].name), "output"), "", i, sg.tensors[i].name)
        for i in sg.outputs
    ]
    return _renamed(ins), _renamed(outs)


def _renamed(ports: list[Port]) -> list[Port]:
    for p, n in zip(ports, _unique([p.name for p in ports])):
        p.name = n
    return ports


# --- conversion -------------------------------------------------------------------------------


@dataclass
class Converted:
    mlmodel: object  # ct.models.MLModel
    program: object  # the MIL Program coremltools produced (names are the trace's)
    inputs: list[Port]
    outputs: list[Port]
    shapes: list[tuple[int, ...]]  # default input shapes (what the check feeds)
    image: ImageInput | None
    options: Options
    seconds: float = 0.0
    fp16_ops: int = 0  # mixed: ops coremltools' float16 pass was asked about and cast
    fp32_kept: list[str] = field(default_factory=list)  # mixed: those it kept in float32
    asked: list[tuple[str, str]] = field(default_factory=list)  # mixed: (name, type) as the pass saw them

    def precision_text(self) -> str:
        """'float16', 'float32', or 'mixed 97% fp16' (the share of the ops coremltools could cast)."""
        if self.options.precision != "mixed":
            return self.options.precision
        return f"mixed {fp16_share(self.fp16_ops, len(self.fp32_kept)):.0%} fp16"


def quiet_coremltools() -> None:
    """coremltools logs a version warning, missing-native-lib notes and progress bars: noise here."""
    import logging
    import warnings

    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"coremltools(\.|$)")


def _import_ct():
    quiet_coremltools()
    try:
        import coremltools as ct
    except ImportError:
        raise RuntimeUnavailableError(
            "converting to Core ML needs coremltools: pip install 'tfl-rebuild[coreml]'"
        ) from None
    return ct


def _input_dims(keras_model, k: int, port: Port, opts: Options) -> list[Dim]:
    base = _static_shape(keras_model.inputs[k])
    dims = opts.shapes.get(port.name) or opts.shapes.get(port.tflite_name)
    if dims is None:
        return base
    if len(dims) != len(base):
        raise CoreMLError(
            f"--input-shape {port.name}: {len(dims)} dimensions given, the input has {len(base)}"
        )
    return dims


def _static_shape(keras_input) -> list[int]:
    return [int(d) if d is not None else 1 for d in keras_input.shape]  # unknown dims (batch): 1


def _default_shape(dims: list[Dim], base: list[int]) -> tuple[int, ...]:
    out = []
    for d, b in zip(dims, base):
        if isinstance(d, tuple):
            lo, hi = d
            out.append(b if lo <= b and (hi == -1 or b <= hi) else lo)
        else:
            out.append(d)
    return tuple(out)


def convert(keras_model, model: Model | None, opts: Options) -> Converted:
    if opts.precision not in ("float16", "float32", "mixed"):
        raise ValueError(
            f"convert() takes float16, float32 or mixed, not {opts.precision!r} (auto: convert_checked)"
        )
    if opts.precision == "mixed" and opts.format != "mlprogram":
        raise CoreMLError(
            "--precision mixed needs --format mlprogram (a neural network has no per-op precision)"
        )
    ct = _import_ct()
    ct_patches.apply()  # before the TF op lookup below: it registers TF ops coremltools lacks
    inputs, outputs = io_ports(model, keras_model)
    _check_option_names(opts, inputs)
    dims = [_input_dims(keras_model, k, p, opts) for k, p in enumerate(inputs)]
    base = [_static_shape(i) for i in keras_model.inputs]
    shapes = [_default_shape(d, b) for d, b in zip(dims, base)]
    try:
        cf = trace(keras_model, [p.trace_name for p in inputs], dims)
    except Exception as exc:  # a generated layer that cannot take a flexible dimension, say
        raise CoreMLError(
            f"cannot trace the Keras model with input shapes {dims}: {_one_line(exc)}"
        ) from None
    bad = unsupported_tf_ops(cf, [layer.name for layer in keras_model.layers])
    if bad:
        listed = "; ".join(
            f"{op} (layer {', '.join(repr(n) for n in layers)})" for op, layers in sorted(bad.items())
        )
        raise UnsupportedOpError(f"Core ML cannot take {len(bad)} op type(s) of this model: {listed}")
    for p, t in zip(outputs, cf.outputs):
        p.trace_name = t.name.split(":")[0]

    mlprogram = opts.format == "mlprogram"
    ct_inputs = [
        _ct_input(ct, keras_model, k, p, d, s, opts) for k, (p, d, s) in enumerate(zip(inputs, dims, shapes))
    ]
    ct_outputs = (
        [ct.TensorType(name=p.trace_name, **({"dtype": np.float32} if mlprogram else {})) for p in outputs]
        if mlprogram
        else None
    )
    # coremltools fuses x * a + b into batch_norm(mean 0, variance 1, epsilon 1e-5), scaling the
    # result by 1/sqrt(1 + 1e-5): a 5e-6 error per such layer that grows to ~1e-4 downstream.
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes({"common::fuse_elementwise_to_batchnorm"})
    kwargs = {
        "convert_to": opts.format,
        "inputs": ct_inputs,
        "outputs": ct_outputs,
        "pass_pipeline": pipeline,
    }
    if opts.target:
        kwargs["minimum_deployment_target"] = getattr(ct.target, opts.target)
    selector = Fp16Selector(opts.fp32_ops) if opts.precision == "mixed" else None
    if mlprogram and selector is not None:
        kwargs["compute_precision"] = ct.transform.FP16ComputePrecision(op_selector=selector)
    elif mlprogram:
        kwargs["compute_precision"] = (
            ct.precision.FLOAT16 if opts.precision == "float16" else ct.precision.FLOAT32
        )
    if opts.class_labels:
        n = int(keras_model.outputs[0].shape[-1] or 0)
        if n != len(opts.class_labels):
            raise CoreMLError(
                f"--class-labels: {len(opts.class_labels)} labels, but output {outputs[0].name} "
                f"has {n} classes"
            )
        kwargs["classifier_config"] = ct.ClassifierConfig(
            opts.class_labels, predicted_probabilities_output=outputs[0].trace_name
        )
    start = time.perf_counter()
    try:
        mlmodel = ct.convert([cf], source="tensorflow", **kwargs)
        program = mlmodel._mil_program  # the Program behind the spec (names are the trace's)
        if not mlprogram and opts.precision == "float16":
            mlmodel = _fp16_weights(mlmodel)
    except TflRebuildError:
        raise
    except Exception as exc:  # coremltools raises anything from ValueError to AssertionError
        raise CoreMLError(f"coremltools could not convert the model: {_one_line(exc)}") from None
    seconds = time.perf_counter() - start
    mlmodel = _rename(ct, mlmodel, inputs, outputs)
    conv = Converted(mlmodel, program, inputs, outputs, shapes, opts.image, opts, seconds)
    if selector is not None:
        conv.fp16_ops, conv.fp32_kept, conv.asked = selector.counts()
    return conv


def check_options(opts: Options, model: Model) -> None:
    """The options that name the model's inputs and outputs, checked against it before any work:
    --image-input / --input-shape names, and the --class-labels count (the first output's last dim)."""
    inputs, outputs = io_ports(model, None)
    _check_option_names(opts, inputs)
    for port in inputs:
        dims = opts.shapes.get(port.name) or opts.shapes.get(port.tflite_name)
        rank = len(model.main.tensors[port.tensor_index].shape)
        if dims is not None and len(dims) != rank:
            raise CoreMLError(
                f"--input-shape {port.name}: {len(dims)} dimensions given, the input has {rank}"
            )
    if opts.class_labels and outputs:
        shape = model.main.tensors[outputs[0].tensor_index].shape
        n = int(shape[-1]) if len(shape) else 0
        if n != len(opts.class_labels):
            raise CoreMLError(
                f"--class-labels: {len(opts.class_labels)} labels, but output {outputs[0].name} has {n} classes"
            )


def _check_option_names(opts: Options, inputs: list[Port]) -> None:
    known = {p.name for p in inputs} | {p.tflite_name for p in inputs}
    names = ", ".join(p.name for p in inputs)
    for name in list(opts.shapes) + ([opts.image.name] if opts.image else []):
        if name not in known:
            raise CoreMLError(f"no input named {name!r}; the inputs are: {names}")


def _ct_input(ct, keras_model, k: int, port: Port, dims: list[Dim], default: tuple[int, ...], opts: Options):
    flexible = any(isinstance(d, tuple) for d in dims)
    if flexible:
        shape = ct.Shape(
            [
                ct.RangeDim(lower_bound=d[0], upper_bound=d[1], default=s) if isinstance(d, tuple) else d
                for d, s in zip(dims, default)
            ]
        )
    else:
        shape = default
    img = opts.image
    if img and img.name in (port.name, port.tflite_name):
        if len(default) != 4 or default[-1] not in (1, 3):
            raise CoreMLError(
                f"--image-input {img.name}: needs an input of shape [1, H, W, 3] or [1, H, W, 1], "
                f"not {list(default)}"
            )
        gray = default[-1] == 1
        bias = img.bias * (1 if gray else 3) if len(img.bias) == 1 else img.bias
        if len(bias) != default[-1]:
            raise CoreMLError(f"--bias: give 1 or {default[-1]} values for {img.name}")
        layout = ct.colorlayout.GRAYSCALE if gray else getattr(ct.colorlayout, img.color_layout)
        return ct.ImageType(
            name=port.trace_name,
            shape=shape,
            scale=img.scale,
            bias=bias[0] if gray else list(bias),
            color_layout=layout,
            channel_first=False,
        )
    dtype = np.float32 if np.dtype(keras_model.inputs[k].dtype).kind == "f" else np.int32
    return ct.TensorType(name=port.trace_name, shape=shape, dtype=dtype)


def _fp16_weights(mlmodel):
    """A neural network's float16 precision: its weights stored as fp16 (compute stays fp32)."""
    import contextlib
    import io

    from coremltools.models.neural_network import quantization_utils

    with contextlib.redirect_stdout(io.StringIO()):  # it prints one line per layer
        return quantization_utils.quantize_weights(mlmodel, nbits=16)


def _rename(ct, mlmodel, inputs: list[Port], outputs: list[Port]):
    spec = mlmodel.get_spec()
    present = {o.name for o in spec.description.output} | {i.name for i in spec.description.input}
    changed = False
    for p in inputs + outputs:
        if p.trace_name in present and p.trace_name != p.name:
            ct.utils.rename_feature(spec, p.trace_name, p.name)
            changed = True
    if not changed:
        return mlmodel
    weights_dir = mlmodel.weights_dir if spec.WhichOneof("Type") == "mlProgram" else None
    # Only macOS can load (compile) a model; elsewhere loading would just warn.
    return ct.models.MLModel(spec, weights_dir=weights_dir, skip_model_load=sys.platform != "darwin")


def _one_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


# --- metadata ---------------------------------------------------------------------------------


def set_metadata(mlmodel, model: Model | None, source: Path, converted: Converted) -> None:
    """TFLite metadata (name, description, author, version, license, port descriptions) -> Core ML."""
    info = model.info if model is not None else None
    description = " - ".join(x for x in ((info.name, info.description) if info else ()) if x)
    mlmodel.short_description = description or f"Converted from {source.name} by tfl-rebuild"
    if info and info.author:
        mlmodel.author = info.author
    if info and info.license:
        mlmodel.license = info.license
    if info and info.version:
        mlmodel.version = info.version
    spec_names = {f.name for f in mlmodel.get_spec().description.input} | {
        f.name for f in mlmodel.get_spec().description.output
    }
    for kind, ports, infos, descriptions in (
        ("input", converted.inputs, info.inputs if info else (), mlmodel.input_description),
        ("output", converted.outputs, info.outputs if info else (), mlmodel.output_description),
    ):
        for k, p in enumerate(ports):
            if p.name in spec_names:
                text = infos[k].description if k < len(infos) else ""
                descriptions[p.name] = text or (f"TFLite {kind} {p.tflite_name!r}" if p.tflite_name else kind)
    meta = mlmodel.user_defined_metadata
    meta["tfl_rebuild.version"] = __version__
    meta["tfl_rebuild.source"] = source.name
    if model is not None:
        meta["tfl_rebuild.source_sha256"] = model.sha256
        if info and info.name:
            meta["tflite.name"] = info.name


# --- writing ----------------------------------------------------------------------------------


def save_atomic(mlmodel, path: str | os.PathLike) -> Path:
    """Save into a temporary sibling, then rename into place: never a half-written package."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staged = tmp / target.name
        mlmodel.save(str(staged))
        if target.is_dir() and not target.is_symlink():
            old = tmp / "previous"
            os.rename(target, old)  # a directory cannot be replaced in one step
            os.rename(staged, target)
        else:
            os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def check_output(path: str) -> None:
    """Refuse, before the conversion, a target `save_atomic` cannot (or must not) replace: a symlink,
    a file where a package (a directory) goes, a directory that is not a package we wrote."""
    target = Path(path)
    if target.is_symlink():
        raise OutputError(f"-o {path}: is a symbolic link; give a new path or remove the link")
    if target.suffix == ".mlpackage" and target.exists() and not target.is_dir():
        raise OutputError(f"-o {path}: is a file, but a .mlpackage is a directory")
    if target.suffix == ".mlmodel" and target.is_dir():
        raise OutputError(f"-o {path}: is a directory, but a .mlmodel is a file")
    if target.is_dir() and not (target / "Manifest.json").is_file():
        raise OutputError(f"-o {path}: is a directory that is not a .mlpackage: not replacing it")


def check_extension(path: str, fmt: str) -> None:
    want = ".mlpackage" if fmt == "mlprogram" else (".mlmodel", ".mlpackage")
    if not path.endswith(want):
        raise CoreMLError(
            f"-o {path}: an {'ML program' if fmt == 'mlprogram' else 'neural network'} "
            f"is saved as {' or '.join(want) if isinstance(want, tuple) else want}"
        )
