"""`tfl-rebuild coreml`: conversion through the generated Keras model, checked against TFLite.

Every fixture whose Keras rebuild verifies converts (float16, the default) and passes the MIL check.
Corpus models (marked `corpus`; 4-16 s each to convert and check) convert at float32, the strict
check: rel <= 1e-4 or twice the runtime's noise. On macOS the check runs Core ML itself (`macos`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import CORPUS_DIR, fixture_params, require_fixture, require_model

from tfl_rebuild.cli import main
from tfl_rebuild.commands import coreml as coreml_job
from tfl_rebuild.commands.pipeline import rebuild_and_verify, write_generated
from tfl_rebuild.coreml import check as cc
from tfl_rebuild.coreml import convert as cm
from tfl_rebuild.coreml import mil_eval
from tfl_rebuild.errors import InputError, RuntimeUnavailableError, UnsupportedOpError
from tfl_rebuild.rebuild.loader import load_module
from tfl_rebuild.tflite.ir import ModelInfo, TensorInfo

ct = pytest.importorskip("coremltools")
pytest.importorskip("tensorflow")

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


def corpus_cases() -> list:
    paths = sorted(CORPUS_DIR.glob("*.tflite")) or [CORPUS_DIR / "face_detection_short_range.tflite"]
    return [pytest.param(p, id=p.stem, marks=pytest.mark.corpus) for p in paths]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """path -> (Model, Keras model, verify Report or None), generated once per module."""
    cache: dict = {}

    def get(path: Path):
        if path not in cache:
            out = tmp_path_factory.mktemp(path.stem)
            try:
                r = rebuild_and_verify(str(path), str(out), stream=False)
            except UnsupportedOpError as exc:
                pytest.skip(f"{path.name}: no Keras rebuild ({exc})")
            if isinstance(r.verify_error, RuntimeUnavailableError):
                pytest.skip(f"{path.name}: {r.verify_error}")
            if r.verify_error is not None:
                raise r.verify_error
            model, keras_model, report, py = r.model, r.keras_model, r.report, r.py
            cache[path] = (model, keras_model, report, py)
        return cache[path]

    return get


def converted_and_checked(rebuilt, path: Path, precision: str):
    model, keras_model, report, _ = rebuilt(path)
    if not report.ok:
        pytest.skip(f"{path.name}: the Keras rebuild does not verify, so there is nothing to convert")
    conv = cm.convert(keras_model, model, cm.Options(precision=precision))
    result = cc.check(model, conv, keras_model)
    assert not isinstance(result, cc.NotChecked), result
    rows = {o.name: f"max rel {o.max_rel:.3g}" for o in result.report.outputs}
    assert result.report.ok, rows
    assert result.report.kind == f"Core ML {precision} mlprogram"
    return conv, result


@pytest.mark.parametrize("path", fixture_params())
def test_fixture_converts_and_checks(rebuilt, path):
    conv, result = converted_and_checked(rebuilt, path, "float16")
    assert all(o.input_sensitive for o in result.report.outputs)
    assert conv.mlmodel.get_spec().WhichOneof("Type") == "mlProgram"


@pytest.mark.parametrize("path", corpus_cases())
def test_corpus_converts_and_checks_float32(rebuilt, path):
    require_model(path)
    converted_and_checked(rebuilt, path, "float32")


@pytest.mark.corpus
def test_float16_precision_loss_is_caught(rebuilt):
    """pose_landmark_full's activations lose too much in float16 (its heatmap moves by ~0.3 rel):
    the check must say so, not pass it."""
    path = require_model(CORPUS_DIR / "pose_landmark_full.tflite")
    model, keras_model, report, _ = rebuilt(path)
    assert report.ok
    conv = cm.convert(keras_model, model, cm.Options(precision="float16"))
    result = cc.check(model, conv, keras_model)
    assert not result.report.ok


@pytest.mark.corpus
def test_auto_precision_falls_back_to_float32_where_float16_drifts(rebuilt):
    path = require_model(CORPUS_DIR / "pose_landmark_full.tflite")
    model, keras_model, _, _ = rebuilt(path)
    done = cc.convert_checked(keras_model, model, cm.Options(precision="auto"))
    assert done.float16_failed is not None and not done.float16_failed.report.ok
    # mixed precision is tried first, but no set of at most half the ops in float32 simulates within
    # the bar: any 20 consecutive ops of the first 160 in float16 move the segmentation output by
    # rel 0.01 to 0.17 (it moves rel 2.3e-3 between TFLite's own kernels)
    assert done.mixed is not None and done.mixed.conv is None and done.mixed.simulated
    assert min(rel for _, rel in done.mixed.simulated) > cc.FP16_REL_TOL
    assert done.conv.options.precision == "float32"
    assert done.result.report.ok and done.result.report.kind == "Core ML float32 mlprogram"


def test_auto_precision_keeps_float16_where_it_passes(rebuilt):
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    done = cc.convert_checked(keras_model, model, cm.Options(precision="auto"))
    assert done.float16_failed is None and done.conv.options.precision == "float16"
    assert done.result.report.ok
    unchecked = cc.convert_checked(keras_model, model, cm.Options(precision="auto"), do_check=False)
    assert unchecked.result is None and unchecked.conv.options.precision == "float16"


def test_auto_precision_wants_float16_to_pass_without_the_fp16_weights_allowance(rebuilt):
    """Random-weight MobileNetV2 passes float16 only because its fp16-rounded weights alone move the
    logits ~1.5e-2: auto does not take that as evidence, and converts with mixed precision that
    passes without the allowance, or float32."""
    path = require_fixture("mobilenet_v2_float")
    model, keras_model, _, _ = rebuilt(path)
    done = cc.convert_checked(keras_model, model, cm.Options(precision="auto"))
    assert done.float16_failed is not None and done.float16_failed.report.ok
    assert done.float16_failed.weight_allowance_used == [model.main.tensors[model.main.outputs[0]].name]
    assert "within only what fp16 weights alone make" in cc.float16_reason(done.float16_failed)
    assert done.result.report.ok and not done.result.weight_allowance_used
    if done.conv.options.precision == "mixed":  # a few ops in float32 bring it under the bar itself
        assert done.conv.fp32_kept and done.conv.fp16_ops > len(done.conv.fp32_kept), done.conv.fp32_kept
    else:
        assert done.conv.options.precision == "float32" and done.mixed.conv is None


def test_float16_judges_tiny_outputs_on_its_absolute_resolution(tmp_path, monkeypatch):
    """y = x * 3e-6 lies below float16's smallest normal (6.1e-5): float16 holds it to ~3% of its
    value, which is its resolution there, not a conversion error; a 100x error there still fails."""
    from flatbuf import Op, T, build_model

    blob = build_model(
        [T("x", [1, 8]), T("k", [8], data=np.full(8, 3e-6, np.float32)), T("y", [1, 8])],
        [Op("MUL", [0, 1], [2], options={"fused_activation_function": "NONE"})],
        inputs=[0],
        outputs=[2],
    )
    path = tmp_path / "tiny.tflite"
    path.write_bytes(blob)
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    conv = cm.convert(keras_model, model, cm.Options(precision="float16"))
    result = cc.check(model, conv, keras_model)
    out = result.report.outputs[0]
    assert out.max_abs > 1e-2 * 3e-6  # the plain rel error (vs max |y| ~3e-6) is over the 1e-2 bar
    assert result.report.ok, out
    mul = mil_eval.OPS["mul"]
    monkeypatch.setitem(mil_eval.OPS, "mul", lambda a: mul(a) * np.float32(100.0))
    assert not cc.check(model, conv, keras_model).report.ok


def test_float16_nan_names_the_op_that_made_it(tmp_path):
    """b = (1000 x)^2 overflows float16 and b - b is inf - inf: the check names the MIL op that made
    the first NaN (the sub), not the ops that only passed it on."""
    from flatbuf import Op, T, build_model

    act = {"fused_activation_function": "NONE"}
    blob = build_model(
        [
            T("x", [1, 8]),
            T("k", [8], data=np.full(8, 1000.0, np.float32)),
            T("a", [1, 8]),
            T("b", [1, 8]),
            T("d", [1, 8]),
            T("y", [1, 8]),
        ],
        [
            Op("MUL", [0, 1], [2], options=act),
            Op("MUL", [2, 2], [3], options=act),
            Op("SUB", [3, 3], [4], options=act),
            Op("ADD", [4, 0], [5], options=act),
        ],
        inputs=[0],
        outputs=[5],
    )
    path = tmp_path / "nan.tflite"
    path.write_bytes(blob)
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision="float16")), keras_model)
    assert not result.report.ok
    assert result.nan_origins and result.nan_origins[0].startswith("sub "), result.nan_origins
    assert (
        cc.check(
            model, cm.convert(keras_model, model, cm.Options(precision="float32")), keras_model
        ).nan_origins
        == []
    )


def test_float16_tolerance_admits_what_fp16_weights_alone_do(rebuilt):
    """Random-weight MobileNetV2's logits move by ~1.5e-2 of their range when its float32 weights
    are rounded to fp16 (Keras, fp32 activations): the check admits twice that, and says so."""
    path = require_fixture("mobilenet_v2_float")
    _, result = converted_and_checked(rebuilt, path, "float16")
    assert result.weight_effect[0] > 1e-3
    fp16_model = require_fixture("mobilenet_v2_fp16")  # weights already fp16: no allowance
    _, result16 = converted_and_checked(rebuilt, fp16_model, "float16")
    assert result16.weight_effect == [0.0]


# --- the check fails when it should ---------------------------------------------------------


def test_check_fails_on_a_one_percent_error_in_one_layer(rebuilt, monkeypatch):
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    conv = cm.convert(keras_model, model, cm.Options(precision="float32"))
    assert cc.check(model, conv, keras_model).report.ok
    linear = mil_eval.OPS["linear"]
    monkeypatch.setitem(mil_eval.OPS, "linear", lambda a: linear(a) * np.float32(1.01))
    assert not cc.check(model, conv, keras_model).report.ok


def test_image_input_check_follows_the_color_layout(rebuilt, monkeypatch):
    path = require_fixture("ops_zoo")
    model, keras_model, _, _ = rebuilt(path)
    image = cm.ImageInput("image", scale=1 / 127.5, bias=[-1.0], color_layout="BGR")
    conv = cm.convert(keras_model, model, cm.Options(precision="float32", image=image))
    spec = conv.mlmodel.get_spec()
    assert (
        spec.description.input[0].type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.BGR
    )
    assert cc.check(model, conv, keras_model).report.ok
    # Core ML hands the program BGR planes; fed RGB planes instead, the numbers must go wrong.
    monkeypatch.setattr(cc, "_image_planes", lambda rgb, img: np.ascontiguousarray(rgb.transpose(0, 3, 1, 2)))
    assert not cc.check(model, conv, keras_model).report.ok


def test_classifier_checks_its_probabilities(rebuilt):
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    labels = [f"digit {i}" for i in range(10)]
    conv = cm.convert(keras_model, model, cm.Options(class_labels=labels))
    spec = conv.mlmodel.get_spec()
    assert spec.description.predictedFeatureName == "classLabel"
    assert "classify" in mil_eval.op_types(conv.program)
    assert cc.check(model, conv, keras_model).report.ok


def test_flexible_input_shape(rebuilt):
    path = require_fixture("mobilenet_v2_float")  # fully convolutional up to its global pooling
    model, keras_model, _, _ = rebuilt(path)
    opts = cm.Options(shapes={"keras_tensor": [1, (64, 256), (64, 320), 3]})
    conv = cm.convert(keras_model, model, opts)
    shape = conv.mlmodel.get_spec().description.input[0].type.multiArrayType
    ranges = [(r.lowerBound, r.upperBound) for r in shape.shapeRange.sizeRanges]
    assert ranges == [(1, 1), (64, 256), (64, 320), (3, 3)]
    assert conv.shapes == [(1, 96, 96, 3)]  # the TFLite shape is in range: the default and the check's
    assert cc.check(model, conv, keras_model).report.ok


def test_flexible_shape_the_keras_model_cannot_take_is_one_line(rebuilt):
    path = require_fixture("ops_zoo")  # its UpSampling2D needs static spatial dimensions
    model, keras_model, _, _ = rebuilt(path)
    with pytest.raises(cm.CoreMLError, match=r"^cannot trace the Keras model with input shapes [^\n]*$"):
        cm.convert(keras_model, model, cm.Options(shapes={"image": [1, (16, 64), (16, 64), 3]}))


def test_unknown_mil_op_is_not_checked(rebuilt, monkeypatch):
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    conv = cm.convert(keras_model, model, cm.Options())
    monkeypatch.delitem(mil_eval.OPS, "linear")
    result = cc.check(model, conv, keras_model)
    assert isinstance(result, cc.NotChecked)
    assert result.reason == "unknown MIL ops linear"


@pytest.mark.macos
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predicts only on macOS")
def test_coreml_predict_matches_tflite(rebuilt):  # pragma: no cover (macOS)
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    conv = cm.convert(keras_model, model, cm.Options())
    assert cc.check(model, conv, keras_model, use_coreml=True).report.ok


# --- metadata, names, writing ---------------------------------------------------------------


def test_metadata_is_carried(rebuilt):
    path = require_fixture("mnist")
    model, keras_model, _, _ = rebuilt(path)
    conv = cm.convert(keras_model, model, cm.Options())
    info = ModelInfo(
        name="Digits",
        description="Reads handwritten digits.",
        version="v2",
        author="A. Author",
        license="Apache-2.0",
        inputs=(TensorInfo("image", "28x28 grey image"),),
        outputs=(TensorInfo("probs", "digit probabilities"),),
    )
    fake = SimpleNamespace(info=info, sha256="ab" * 32)
    cm.set_metadata(conv.mlmodel, fake, path, conv)
    spec = conv.mlmodel.get_spec()
    meta = spec.description.metadata
    assert (meta.shortDescription, meta.author, meta.license, meta.versionString) == (
        "Digits - Reads handwritten digits.",
        "A. Author",
        "Apache-2.0",
        "v2",
    )
    assert spec.description.input[0].shortDescription == "28x28 grey image"
    assert spec.description.output[0].shortDescription == "digit probabilities"
    assert meta.userDefined["tfl_rebuild.source_sha256"] == "ab" * 32
    assert meta.userDefined["tfl_rebuild.version"] == cm.__version__


def test_feature_names():
    assert cm.feature_name("serving_default_input_1:0", "input") == "serving_default_input_1"
    assert cm.feature_name("model/conv 1;x", "output") == "model_conv_1_x"
    assert cm.feature_name("0abc", "input") == "input_0abc"
    assert cm.feature_name("::", "output") == "output"


@pytest.mark.parametrize(
    "spec,want",
    [
        ("image=1,224,224,3", ("image", [1, 224, 224, 3])),
        ("x=1,64:512,64:512,3", ("x", [1, (64, 512), (64, 512), 3])),
        ("a=b=1,8:", ("a=b", [1, (8, -1)])),
    ],
)
def test_parse_shape(spec, want):
    assert cm.parse_shape(spec) == want


@pytest.mark.parametrize("spec", ["1,2,3", "x=1,a,3", "x=1,5:2", "x="])
def test_parse_shape_rejects(spec):
    with pytest.raises(cm.CoreMLError):
        cm.parse_shape(spec)


class FakeModel:
    def __init__(self, fail: bool = False):
        self.fail = fail

    def save(self, path):
        Path(path).mkdir()
        (Path(path) / "Manifest.json").write_text("{}")
        if self.fail:
            raise OSError("disk full")


def test_save_atomic_replaces_and_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "m.mlpackage"
    target.mkdir()
    (target / "old").write_text("old")
    cm.save_atomic(FakeModel(), target)
    assert sorted(p.name for p in target.iterdir()) == ["Manifest.json"]
    with pytest.raises(OSError):
        cm.save_atomic(FakeModel(fail=True), target)
    assert sorted(p.name for p in target.iterdir()) == ["Manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]  # no temporaries


# --- preflight and conversion errors ----------------------------------------------------------

ODD_MODULE = """
import keras
import tensorflow as tf


class Odd(keras.layers.Layer):
    def __init__(self, fn, **kwargs):
        super().__init__(**kwargs)
        self.fn = fn

    def call(self, x):
        return getattr(tf.math, self.fn)(x)


def build_model(weights_path=None):
    x = keras.Input(shape=(4,), batch_size=1, name="x")
    y = Odd("erfinv", name="inverse_erf")(x)
    z = Odd("lgamma", name="log_gamma")(keras.layers.ReLU(name="relu")(y))
    return keras.Model(x, z)
"""


def test_ct_patches_each_name_their_upstream_bug_and_install_once():
    from coremltools.converters.mil.frontend.tensorflow.tf_op_registry import _TF_OPS_REGISTRY

    from tfl_rebuild.coreml import ct_patches

    names = [p.name for p in ct_patches.PATCHES]
    assert len(names) == len(set(names)) >= 5
    assert all(p.works_around and "\n" not in p.works_around for p in ct_patches.PATCHES)
    ct_patches.apply()
    cast = _TF_OPS_REGISTRY["Cast"]
    ct_patches.apply()  # a second call installs nothing again
    assert _TF_OPS_REGISTRY["Cast"] is cast and "Erfc" in _TF_OPS_REGISTRY


def test_unsupported_ops_listed_before_converting(tmp_path):
    py = tmp_path / "odd.py"
    py.write_text(ODD_MODULE)
    keras_model = load_module(py).build_model()
    with pytest.raises(UnsupportedOpError) as err:
        cm.convert(keras_model, None, cm.Options())
    msg = str(err.value)
    assert "\n" not in msg
    assert "Erfinv (layer 'inverse_erf')" in msg and "Lgamma (layer 'log_gamma')" in msg


def test_conversion_error_is_one_line(rebuilt, monkeypatch):
    path = require_fixture("add_one")
    model, keras_model, _, _ = rebuilt(path)

    def boom(*args, **kwargs):
        raise AssertionError("deep inside coremltools\nTraceback ...")

    monkeypatch.setattr(ct, "convert", boom)
    with pytest.raises(
        cm.CoreMLError,
        match=r"^coremltools could not convert the model: "
        r"AssertionError: deep inside coremltools$",
    ):
        cm.convert(keras_model, model, cm.Options())


# --- the command --------------------------------------------------------------------------------


def coreml_cli(*args: str):
    result = CliRunner().invoke(main, ["coreml", *args], env=ENV)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_cli_tflite_to_checked_mlpackage(tmp_path):
    path = require_fixture("mnist")
    out = tmp_path / "out" / "mnist.mlpackage"
    result = coreml_cli(str(path), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "verification vs TFLite (Core ML float16 mlprogram model" in result.output
    assert f"wrote {out}" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["mnist.mlpackage"]
    meta = ct.models.MLModel(str(out), skip_model_load=True).user_defined_metadata
    assert meta["tfl_rebuild.source"] == "mnist.tflite"


def copy_generated(rebuilt, path: Path, dest: Path, with_tflite: bool) -> Path:
    src = rebuilt(path)[3]
    for suffix in (".py", ".weights.h5", "_tensors.json"):
        (dest / f"{path.stem}{suffix}").write_bytes(src.with_name(f"{path.stem}{suffix}").read_bytes())
    if with_tflite:
        (dest / path.name).write_bytes(path.read_bytes())
    return dest / f"{path.stem}.py"


def test_cli_generated_module_with_sidecar(rebuilt, tmp_path):
    py = copy_generated(rebuilt, require_fixture("mnist"), tmp_path, with_tflite=True)
    out = tmp_path / "m.mlpackage"
    result = coreml_cli(str(py), "-o", str(out), "--precision", "float32")
    assert result.exit_code == 0, result.output
    assert "Core ML float32 mlprogram" in result.output
    assert "verification vs TFLite (float model" not in result.output  # a given module is not re-verified


def test_cli_generated_module_with_tflite_option(rebuilt, tmp_path):
    path = require_fixture("mnist")
    py = copy_generated(rebuilt, path, tmp_path, with_tflite=False)
    result = coreml_cli(str(py), "-o", str(tmp_path / "m.mlpackage"), "--tflite", str(path))
    assert result.exit_code == 0, result.output
    assert "Core ML float16 mlprogram" in result.output


def test_cli_generated_module_moved_alone_finds_its_tflite(rebuilt, tmp_path):
    """The sidecar records the source by relative and absolute path (and sha256)."""
    py = copy_generated(rebuilt, require_fixture("mnist"), tmp_path, with_tflite=False)
    result = coreml_cli(str(py), "-o", str(tmp_path / "m.mlpackage"))
    assert result.exit_code == 0, result.output
    assert "Core ML float16 mlprogram" in result.output


def test_cli_generated_module_whose_tflite_is_gone_or_changed(rebuilt, tmp_path):
    py = copy_generated(rebuilt, require_fixture("mnist"), tmp_path, with_tflite=True)
    side = py.with_name("mnist_tensors.json")
    doc = json.loads(side.read_text())
    doc["source"] = {**doc["source"], "relative": "mnist.tflite", "absolute": str(tmp_path / "gone.tflite")}
    side.write_text(json.dumps(doc))
    (tmp_path / "mnist.tflite").write_bytes(require_fixture("add_one").read_bytes())
    out = tmp_path / "m.mlpackage"
    result = coreml_cli(str(py), "-o", str(out))
    assert result.exit_code == 2
    assert "changed since mnist.py was generated from it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "mnist.tflite").unlink()
    result = coreml_cli(str(py), "-o", str(out))
    assert result.exit_code == 2 and "which is gone" in result.stderr, result.output
    result = coreml_cli(str(py), "-o", str(out), "--no-check")
    assert result.exit_code == 0, result.output
    assert out.is_dir()


def test_cli_neuralnetwork(tmp_path):
    path = require_fixture("mnist")
    out = tmp_path / "mnist.mlmodel"
    result = coreml_cli(str(path), "-o", str(out), "--format", "neuralnetwork")
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert ct.models.MLModel(str(out), skip_model_load=True).get_spec().WhichOneof("Type") == "neuralNetwork"


@pytest.mark.parametrize(
    "args,message",
    [
        (["-o", "x.mlmodel"], "an ML program is saved as .mlpackage"),
        (["-o", "x.mlpackage", "--input-shape", "nope=1,2"], "no input named 'nope'"),
        (["-o", "x.mlpackage", "--input-shape", "keras_tensor=1,28"], "2 dimensions given, the input has 3"),
        (
            ["-o", "x.mlpackage", "--class-labels", "LABELS"],
            "--class-labels: 2 labels, but output Identity has 10",
        ),
        (["-o", "x.mlpackage", "--image-input", "keras_tensor"], "needs an input of shape [1, H, W, 3]"),
        (["-o", "x.mlpackage", "--image-input", "nosuch"], "no input named 'nosuch'"),
        (["-o", "x.mlpackage", "--minimum-deployment-target", "iOS99"], "'iOS99'; one of"),
    ],
)
def test_cli_bad_options_are_one_line(tmp_path, args, message, monkeypatch):
    import tfl_rebuild.commands.pipeline as pipeline

    if "--image-input" not in args or "nosuch" in args:  # checked against the model before rebuilding
        monkeypatch.setattr(pipeline, "rebuild_and_verify", lambda *a, **k: pytest.fail("rebuilt first"))
    path = require_fixture("mnist")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    args = [str(labels) if a == "LABELS" else str(tmp_path / a) if a.startswith("x.") else a for a in args]
    result = coreml_cli(str(path), *args, "--no-check")
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not list(tmp_path.glob("x.*"))


def test_sidecar_names_the_tflite(tmp_path):
    (tmp_path / "m.py").write_text("")
    (tmp_path / "m.tflite").write_bytes(b"")
    (tmp_path / "m_tensors.json").write_text(json.dumps({"model": "m.tflite"}))
    assert coreml_job.resolve_source(str(tmp_path / "m.py"), None) == (
        tmp_path / "m.py",
        tmp_path / "m.tflite",
    )
    (tmp_path / "m_tensors.json").write_text(json.dumps({"model": "../elsewhere.tflite"}))
    with pytest.raises(InputError, match="records no source model"):
        coreml_job.resolve_source(str(tmp_path / "m.py"), None)


def test_ports_take_signature_names_then_tensor_names():
    tensors = [
        SimpleNamespace(name=n) for n in ("serving_default_image:0", "StatefulPartitionedCall:0", "aux/out")
    ]
    sig = SimpleNamespace(subgraph_index=0, inputs=(("image", 0),), outputs=(("scores", 1),))
    model = SimpleNamespace(
        main=SimpleNamespace(inputs=(0,), outputs=(1, 2), tensors=tensors), signatures=(sig,)
    )
    ins, outs = cm.io_ports(model, None)
    assert [(p.name, p.trace_name, p.tflite_name) for p in ins] == [
        ("image", "input_0", "serving_default_image:0")
    ]
    assert [p.name for p in outs] == ["scores", "aux_out"]


def test_cli_json_result(tmp_path):
    out = tmp_path / "m.mlpackage"
    result = coreml_cli(str(require_fixture("mnist")), "-o", str(out), "--json", "-")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["path"] == str(out) and doc["precision"] in ("float16", "float32")
    assert doc["check"]["checked"] is True and doc["check"]["report"]["ok"] is True
    assert doc["keras_verification"]["ok"] is True


def test_mixed_simulation_tracks_the_converted_float16_program(rebuilt):
    """The mixed search trusts numpy's simulation of float16 to pick which sets to convert: with
    every op in float16 it must land where the converted float16 program does (mobilenet_v2_float:
    rel 0.0213 both), with none at 0."""
    from tfl_rebuild.coreml import mixed
    from tfl_rebuild.coreml.mil_eval import evaluate
    from tfl_rebuild.coreml.precision import ALL_OPS

    model, keras_model, _, _ = rebuilt(require_fixture("mobilenet_v2_float"))
    conv32 = cm.convert(keras_model, model, cm.Options(precision="mixed", fp32_ops=frozenset({ALL_OPS})))
    conv16 = cm.convert(keras_model, model, cm.Options(precision="float16"))
    feeds = [cc.program_inputs(conv32, f) for f in cc.seeded_feeds(model, conv32, 2)]
    sim = mixed.Simulator(conv32.program, feeds)
    assert sim.error(lambda name: False) == 0.0
    simulated = sim.error(lambda name: True)
    actual = 0.0
    for feed, ref in zip(feeds, sim.refs):
        got = evaluate(conv16.program, feed)
        actual = max(actual, *(mixed._rel(np.asarray(ref[n]), np.asarray(got[n])) for n in sim.outs))
    assert 1e-3 < simulated and abs(simulated - actual) <= 0.1 * actual, (simulated, actual)


def _lstm_chained_from_states():
    """An LSTM started from another's h and c (WHILE reading two outputs of a WHILE), and an LSTM
    behind a Masking layer (its loop gathers the bool mask step by step)."""
    import keras

    keras.utils.set_random_seed(4)
    x = keras.Input((6, 3), batch_size=1)
    seq, h, c = keras.layers.LSTM(5, return_sequences=True, return_state=True)(x)
    y = keras.layers.LSTM(5)(seq, initial_state=[h, c])
    masked = keras.layers.LSTM(4)(keras.layers.Masking(0.0)(x))
    return keras.Model(x, [y, h, masked])


def test_loops_reading_loops_and_masks_convert_and_check(tmp_path):
    """coremltools' TF2 control-flow rewrite gave the second LSTM one of h and c twice (or failed),
    and MIL's gather refused the bool mask: both convert now (ct_patches), checked against TFLite."""
    import tensorflow as tf

    path = tmp_path / "lstm_states.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(_lstm_chained_from_states()).convert())
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    assert "WhileLoop(" in py.read_text(encoding="utf-8")  # the loops stay loops
    result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision="float32")), keras_model)
    assert result.report.ok, [(o.name, o.max_rel) for o in result.report.outputs]


def test_gather_one_slice_per_row_converts_and_checks(tmp_path):
    """tf.gather(..., batch_dims=1) with one index per row: BatchGather stacked rank-0 slices, which
    MIL's concat cannot join; each row now takes a slice of one and the stack is reshaped."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 6, 5), tf.float32)])
    def f(x):
        rows = x[0]
        return tf.gather(rows, tf.argmax(rows, axis=1, output_type=tf.int32), axis=1, batch_dims=1)

    path = tmp_path / "per_row.tflite"
    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    )
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    assert "BatchGather(" in py.read_text(encoding="utf-8")
    result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision="float32")), keras_model)
    assert result.report.ok, [(o.name, o.max_rel) for o in result.report.outputs]


def test_op_reading_a_tensor_and_its_transpose_converts_and_checks(tmp_path):
    """concat(v, transpose(v), transpose(x)): coremltools' reduce_transposes moved transpose(v) onto
    both of the concat's edges from v, so Core ML returned transpose(v) twice (rel 1.96, no error)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((1, 16, 16, 3), tf.float32)])
    def f(x):
        flipped = tf.image.flip_left_right(x)
        return tf.concat([flipped, tf.image.rot90(x, 1), tf.image.transpose(x)], -1)

    path = tmp_path / "flips.tflite"
    path.write_bytes(
        tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    )
    model, py, weights = write_generated(str(path), str(tmp_path))
    keras_model = load_module(py).build_model(str(weights))
    result = cc.check(model, cm.convert(keras_model, model, cm.Options(precision="float32")), keras_model)
    assert result.report.ok, [(o.name, o.max_rel) for o in result.report.outputs]
