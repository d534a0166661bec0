"""The streaming check of a model that keeps state in resource variables (views.state_view).

`verify` checks one run of the stateless view from random states. What a user does with the
rebuild is stream: start from the model's initial state and feed each run's state outputs back as
the next run's state inputs. Here the stateful model itself runs in TFLite over several steps (its
CALL_ONCE initializer sets the state), with the state it reads and writes exposed as outputs by
the outputter's patch, and the rebuild runs the same inputs from the same initial state on its own
state. Every step's outputs and states are compared; the bar admits, as end to end, twice the gap
between TFLite's own two kernel sets on the same stream (a state 1 LSB off is fed back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfl_rebuild.runtime.interpreter import index_limits, make_interpreter, random_inputs
from tfl_rebuild.runtime.outputter import patch_outputs
from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.verify.measure import NOISE_FACTOR, compare_arrays, to_float, tolerance

STEPS = 8


@dataclass
class StreamReport:
    steps: int
    worst_name: str  # the tensor (model output or state) furthest from TFLite over the steps
    error: float  # its error, in `unit`
    unit: str  # "LSB" or "rel"
    bar: float  # in `unit`, the noise allowance included
    ok: bool

    def text(self) -> str:
        err = f"{self.error:.2f} LSB" if self.unit == "LSB" else f"rel {self.error:.3g}"
        bar = f"{self.bar:.2f} LSB" if self.unit == "LSB" else f"rel {self.bar:.3g}"
        return (
            f"streamed {self.steps} runs from the initial state, the rebuild on its own fed-back state: "
            f"worst {self.worst_name!r} {err} (bar {bar})"
        )


def stream_check(original: Model, view: Model, keras_model, steps: int = STEPS) -> StreamReport | None:
    """None when the view has no state to stream (or its state outputs do not pair with its inputs)."""
    from tfl_rebuild.rebuild.loader import run_keras

    own_in, own_out = len(original.main.inputs), len(original.main.outputs)
    sg = view.main
    state_in, outputs = list(sg.inputs[own_in:]), list(sg.outputs)
    if not state_in or len(state_in) != len(outputs) - own_out:
        return None
    if any(
        tuple(original.main.tensors[a].shape) != tuple(sg.tensors[b].shape)
        for a, b in zip(original.main.inputs, sg.inputs)
    ):
        return None  # rebuilt at another input shape than the stateful model runs at
    content = patch_outputs(original, [*outputs, *state_in])
    fast, ref = (make_interpreter(model_content=content, reference_kernels=k) for k in (False, True))
    for interp in (fast, ref):
        interp.allocate_tensors()
    kind = quantization_kind(view)
    limits = index_limits(original.main)
    state = None
    errors = np.zeros(len(outputs))
    noise = np.zeros(len(outputs))
    for step in range(steps):
        inputs = random_inputs(fast, 1000 + step, limits)
        got_fast, got_ref = (_step(interp, inputs) for interp in (fast, ref))
        if state is None:  # the initializer's state, as the stateful model read it
            state = [to_float(sg.tensors[t], got_fast[t]) for t in state_in]
        feed = [to_float(sg.tensors[t], x) for t, x in zip(sg.inputs[:own_in], inputs)]
        got = run_keras(keras_model, [*feed, *state])
        state = got[own_out:]
        for k, t in enumerate(outputs):
            tol = tolerance(kind, sg.tensors[t])
            want = to_float(sg.tensors[t], got_fast[t])
            errors[k] = max(errors[k], tol.error(*compare_arrays(want, got[k].reshape(want.shape))[:2]))
            other = to_float(sg.tensors[t], got_ref[t])
            noise[k] = max(noise[k], tol.error(*compare_arrays(want, other)[:2]))
    tols = [tolerance(kind, sg.tensors[t]) for t in outputs]
    bars = [max(tol.bar, NOISE_FACTOR * n) for tol, n in zip(tols, noise)]
    oks = [tol.allows(e, n) for tol, e, n in zip(tols, errors, noise)]
    worst = int(np.argmax([e / b if b else e for e, b in zip(errors, bars)]))
    return StreamReport(
        steps,
        sg.tensors[outputs[worst]].name,
        float(errors[worst]),
        tols[worst].unit,
        float(bars[worst]),
        all(oks),
    )


def _step(interp, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
    # Not runtime.set_inputs: it resets the variable tensors before each run, and a stream keeps them.
    for detail, value in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return {d["index"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}
