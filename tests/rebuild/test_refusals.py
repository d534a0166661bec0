"""Models we refuse, clearly: SSD post-processing with several classes per detection, select TF
(Flex) ops, ops on complex tensors.

`tfl-rebuild keras` must exit 2 with one line that says what the op computes or needs, and
where to cut the model instead; nothing is written.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from flatbuf import Op, T, build_model

from tfl_rebuild.cli import main

ENV = {"COLUMNS": "250", "TF_CPP_MIN_LOG_LEVEL": "3"}


def refuse(tmp_path, blob: bytes) -> str:
    model = tmp_path / "model.tflite"
    model.write_bytes(blob)
    result = CliRunner().invoke(main, ["keras", str(model), "-o", str(tmp_path / "out")], env=ENV)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    return lines[0]


def ssd_model(max_detections: int = 10) -> bytes:
    """Two classes per detection on the fast path: the variant that is not rebuilt
    (tests/rebuild/ops/test_detection.py rebuilds the others)."""
    from flatbuffers import flexbuffers

    options = flexbuffers.Dumps(
        {
            "max_detections": max_detections,
            "max_classes_per_detection": 2,
            "use_regular_nms": False,
            "nms_score_threshold": 0.3,
            "nms_iou_threshold": 0.5,
            "num_classes": 2,
        }
    )
    anchors = np.random.default_rng(0).uniform(size=(12, 4)).astype(np.float32)
    tensors = [
        T("raw_outputs/box_encodings", [1, 12, 4]),
        T("raw_outputs/class_predictions", [1, 12, 3]),
        T("anchors", [12, 4], data=anchors),
        T("TFLite_Detection_PostProcess", [1, max_detections, 4]),
        T("TFLite_Detection_PostProcess:1", [1, max_detections]),
        T("TFLite_Detection_PostProcess:2", [1, max_detections]),
        T("TFLite_Detection_PostProcess:3", [1]),
    ]
    ops = [
        Op(
            "CUSTOM",
            [0, 1, 2],
            [3, 4, 5, 6],
            custom_code="TFLite_Detection_PostProcess",
            custom_options=bytes(options),
        )
    ]
    return build_model(tensors, ops, inputs=[0, 1], outputs=[3, 4, 5, 6])


def test_detection_postprocess_several_classes(tmp_path):
    line = refuse(tmp_path, ssd_model())
    for part in (
        "TFLite_Detection_PostProcess",
        "non-max suppression (several classes per detection)",
        "boxes [1, 10, 4]",
        "ymin, xmin, ymax, xmax",
        "classes [1, 10]",
        "scores [1, 10]",
        "num_detections [1]",
        "'raw_outputs/box_encodings' [1, 12, 4]",
        "'raw_outputs/class_predictions' [1, 12, 3]",
        "'anchors' [12, 4]",
    ):
        assert part in line, f"{part!r} missing from: {line}"


def flex_model(codes: list[str]) -> bytes:
    tensors = [T("x", [1, 4])] + [T(f"y{k}", [1, 4]) for k in range(len(codes))]
    ops = [Op("CUSTOM", [k], [k + 1], custom_code=code) for k, code in enumerate(codes)]
    return build_model(tensors, ops, inputs=[0], outputs=[len(codes)])


@pytest.mark.parametrize(
    "codes",
    [["FlexRFFT"], ["FlexErf", "FlexMatrixBandPart"], ["FlexA", "FlexB", "FlexA"]],
    ids=["one", "two", "repeated"],
)
def test_flex_ops_named(tmp_path, codes):
    line = refuse(tmp_path, flex_model(codes))
    assert "select TensorFlow ops (Flex)" in line and "select-ops runtime" in line
    for k, code in enumerate(codes):
        assert f"'{code}' (op {k})" in line, line


def test_flex_after_a_builtin_still_names_all(tmp_path):
    tensors = [T("x", [1, 4]), T("r", [1, 4]), T("y", [1, 4]), T("z", [1, 4])]
    ops = [
        Op("CUSTOM", [0], [1], custom_code="FlexSoftplus"),
        Op("RELU", [1], [2]),
        Op("CUSTOM", [2], [3], custom_code="FlexErf"),
    ]
    line = refuse(tmp_path, build_model(tensors, ops, inputs=[0], outputs=[3]))
    assert "'FlexSoftplus' (op 0)" in line and "'FlexErf' (op 2)" in line


def test_hostile_flex_name_stays_one_line(tmp_path):
    line = refuse(tmp_path, flex_model(["Flex\nimport os\n#"]))
    assert "\\nimport os" in line


def test_op_on_complex_tensor(tmp_path):
    tensors = [
        T("x", [1, 1, 8]),
        T("fft_length", [2], "int32", data=np.array([1, 8], np.int32)),
        T("spectrum", [1, 1, 5], "complex64"),
        T("squared", [1, 1, 5], "complex64"),
        T("y", [1, 1, 5]),
    ]
    ops = [
        Op("RFFT2D", [0, 1], [2]),
        Op("MUL", [2, 2], [3], options={"fused_activation_function": "NONE"}),
        Op("COMPLEX_ABS", [3], [4]),
    ]
    line = refuse(tmp_path, build_model(tensors, ops, inputs=[0], outputs=[4]))
    assert "MUL op 1 on complex tensor 'spectrum'" in line
