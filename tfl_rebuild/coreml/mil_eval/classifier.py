"""The classifier MIL op."""

from __future__ import annotations

import numpy as np

from tfl_rebuild.coreml.mil_eval.core import op


@op("classify")
def _classify(a):
    """(label, probabilities): the probability vector stands in for Core ML's label->prob dict."""
    probs = a.probabilities
    classes = a.op.inputs["classes"].val
    labels = list(getattr(classes, "ls", classes))
    flat = probs.reshape(-1)
    return labels[int(np.argmax(flat))], probs
