"""TFLite_Detection_PostProcess (SSD): box decoding + fast NMS, checked against the TFLite runtime.

The runtime leaves output slots past num_detections unwritten (stale memory), so each case keeps
the score threshold low enough that all max_detections slots fill on verify's random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from flatbuf import Op, T, build_model
from flatbuffers import flexbuffers


def ssd_model(
    n: int,
    classes: int,
    max_detections: int,
    iou: float,
    scales=(10.0, 10.0, 5.0, 5.0),
    background: bool = True,
    **extra,
) -> bytes:
    rng = np.random.default_rng(n)
    anchors = np.concatenate([rng.uniform(0.1, 0.9, size=(n, 2)), rng.uniform(0.05, 0.3, size=(n, 2))], 1)
    options = {
        "max_detections": max_detections,
        "max_classes_per_detection": 1,
        "detections_per_class": 100,
        "use_regular_nms": False,
        "nms_score_threshold": -0.5,
        "nms_iou_threshold": iou,
        "num_classes": classes,
        "y_scale": scales[0],
        "x_scale": scales[1],
        "h_scale": scales[2],
        "w_scale": scales[3],
        **extra,
    }
    width = classes + (1 if background else 0)
    tensors = [
        T("raw_outputs/box_encodings", [1, n, 4]),
        T("raw_outputs/class_predictions", [1, n, width]),
        T("anchors", [n, 4], data=anchors.astype(np.float32)),
        T("detection_boxes", [1, max_detections, 4]),
        T("detection_classes", [1, max_detections]),
        T("detection_scores", [1, max_detections]),
        T("num_detections", [1]),
    ]
    op = Op(
        "CUSTOM",
        [0, 1, 2],
        [3, 4, 5, 6],
        custom_code="TFLite_Detection_PostProcess",
        custom_options=bytes(flexbuffers.Dumps(options)),
    )
    return build_model(tensors, [op], inputs=[0, 1], outputs=[3, 4, 5, 6])


CASES = {
    "ssd-like": dict(n=40, classes=3, max_detections=6, iou=0.5),
    "tight-iou": dict(n=60, classes=5, max_detections=10, iou=0.2),
    "loose-iou": dict(n=30, classes=2, max_detections=8, iou=0.8),
    "no-background": dict(n=40, classes=4, max_detections=5, iou=0.5, background=False),
    "unit-scales": dict(n=40, classes=3, max_detections=6, iou=0.5, scales=(1.0, 1.0, 1.0, 1.0)),
    "regular-nms": dict(
        n=40, classes=3, max_detections=8, iou=0.5, use_regular_nms=True, detections_per_class=4
    ),
    "regular-nms-tight-iou": dict(
        n=30, classes=2, max_detections=6, iou=0.3, use_regular_nms=True, detections_per_class=5
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_detection_postprocess(tfl, case):
    report = tfl.check(
        tfl.crafted(ssd_model(**CASES[case])), "TFLite_Detection_PostProcess", input_sensitive=False
    )
    by_name = {o.name: o for o in report.outputs}
    assert by_name["detection_boxes"].input_sensitive and by_name["detection_scores"].input_sensitive


def test_several_classes_per_detection_is_refused(tmp_path):
    from tfl_rebuild.errors import TflRebuildError
    from tfl_rebuild.rebuild.codegen.emit import generate
    from tfl_rebuild.tflite.reader import read_model

    path = tmp_path / "ssd.tflite"
    path.write_bytes(ssd_model(n=20, classes=3, max_detections=4, iou=0.5, max_classes_per_detection=2))
    with pytest.raises(
        TflRebuildError,
        match=r"several classes per detection.*boxes \[1, 4, 4\].*box encodings "
        r"'raw_outputs/box_encodings' \[1, 20, 4\]",
    ):
        generate(read_model(str(path)), "ssd")
