"""`tfl-rebuild compare`: every TFLite intermediate tensor against the Keras layer built for it.

Runs of the patched model (outputter) give all TFLite tensors; one run of the Keras model gives
the rebuild's. They are paired through the `<stem>_tensors.json` sidecar that `keras` writes and
listed in topological (op) order, judged by `measure.tolerance`, the same definition `keras`
verification uses:

- default (accumulated): the Keras model runs from the model inputs, against the runtime users
  run (XNNPACK); each tensor admits twice the runtime's own noise on it (XNNPACK vs built-in
  kernels), as verify's outputs do.
- `--local`: every layer is fed TFLite's own input tensors (built-in kernels), so each row is the
  error of that layer alone: a wrong layer stands out from error that merely accumulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError, TflRebuildError
from tfl_rebuild.rebuild.loader import build, load_module, read_sidecar, sidecar_for, to_numpy
from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.layer_check import (
    closest_local,
    dumped_floats,
    float32_rounding_rel,
    hybrid_local_outputs,
    local_outputs,
    present,
    tensor_dumper,
)
from tfl_rebuild.verify.measure import (
    NOISE_FACTOR,
    Tolerance,
    compare_arrays,
    is_hybrid,
    kind_text,
    to_float,
    tolerance,
)


@dataclass
class Row:
    op_index: int
    op: str
    tensor: str
    shape: list[int]
    max_abs: float
    max_rel: float
    cosine: float
    lsb: float | None  # max abs error in LSBs of the tensor's scale (quantized tensors of int8 models)
    noise: float  # TFLite's own XNNPACK vs built-in gap on this tensor, in the bar's unit (0 in --local)
    ok: bool
    of_bar: float = 0.0  # the error in units of its own bar (LSB or rel, noise allowance included): ok <= 1


@dataclass
class Comparison:
    model: str
    kind: str
    tolerance: str
    rows: list[Row]
    mode: str = "accumulated"  # or "local"

    @property
    def first_divergence(self) -> Row | None:
        return next((r for r in self.rows if not r.ok), None)

    def verdict(self) -> str:
        bad = self.first_divergence
        if bad is None:
            return f"all {len(self.rows)} tensors within tolerance ({self.tolerance})"
        err = f"{bad.lsb:.1f} LSB" if bad.lsb is not None else f"rel {bad.max_rel:.1e}"
        return f"first divergence at op {bad.op_index} {bad.op} {bad.tensor!r} ({err})"


def _runs(model: Model, inputs, seed: int) -> tuple[dict | None, dict | None, list[np.ndarray]]:
    """(built-in kernels' tensors, XNNPACK's tensors, the inputs used): one run each, either
    None when that runtime cannot load the model (never both)."""
    from tfl_rebuild.runtime.inputs import from_arrays

    runs: dict[bool, dict | None] = {}
    values = inputs
    errors = []
    for xnnpack in (False, True):
        try:
            dumper = tensor_dumper(model, xnnpack=xnnpack)
        except TflRebuildError as exc:
            runs[xnnpack] = None
            errors.append(exc)
            continue
        values = from_arrays(values, dumper.input_details, seed)  # random on the first run only
        runs[xnnpack] = dumped_floats(model, dumper, values)
    if runs[False] is None and runs[True] is None:
        raise errors[0]
    return runs[False], runs[True], values


def compare(model_path: str, py_path: str, inputs=None, seed: int = 0, local: bool = False) -> Comparison:
    from tfl_rebuild.native_logs import preload_tensorflow

    preload_tensorflow()
    import keras

    from tfl_rebuild.runtime.views import for_module

    py = Path(py_path)
    model: Model = for_module(read_model(model_path), py)  # the signature / input shapes it was built for
    mapping = read_sidecar(py)
    if mapping is None:
        raise InputError(
            f"{sidecar_for(py)}: missing; it is written by `tfl-rebuild keras` beside the module"
        )
    keras_model = build(load_module(py))
    mapping = present(mapping, keras_model)
    builtin, xnnpack, values = _runs(model, inputs, seed)
    hybrid_runs: list = []
    sg = model.main
    feed = [to_float(sg.tensors[i], np.asarray(v)) for i, v in zip(sg.inputs, values)]
    if local:
        reference = builtin if builtin is not None else xnnpack
        got = local_outputs(keras_model, mapping, feed, reference)
        hybrid_runs = hybrid_local_outputs(model, keras_model, mapping, feed, reference)
    else:
        reference = xnnpack if xnnpack is not None else builtin
        pairs = [m for m in mapping if m["tensor"] in reference]
        outputs = []
        for m in pairs:
            out = keras_model.get_layer(m["layer"]).output
            outputs.append(out[m["output"]] if isinstance(out, (list, tuple)) else out)
        # The same input structure as the call below (a list for one input makes Keras warn).
        probe = keras.Model(keras_model.inputs if len(feed) > 1 else keras_model.inputs[0], outputs)
        values_out = probe(feed if len(feed) > 1 else feed[0], training=False)
        values_out = values_out if isinstance(values_out, (list, tuple)) else [values_out]
        got = {m["tensor"]: to_numpy(v, keras) for m, v in zip(pairs, values_out)}

    kind = quantization_kind(model)
    rows = []
    for m in mapping:
        t = m["tensor"]
        if t not in reference or t not in got:
            continue
        tensor = sg.tensors[t]
        tol = tolerance(
            kind,
            tensor,
            local=local,
            hybrid=local and kind == "dynamic-range" and is_hybrid(model, m["op_index"]),
        )
        if (
            local and tol.unit == "rel"
        ):  # as verify's layer-local check: float32's own rounding of a cancelling sum
            tol = Tolerance(
                "rel", max(tol.bar, float32_rounding_rel(model, m["op_index"], reference, reference[t]))
            )
        value = closest_local(model, m["op_index"], t, reference, got, hybrid_runs) if local else got[t]
        max_abs, max_rel, cos = compare_arrays(reference[t], value)
        noise = 0.0
        if not local and builtin is not None and xnnpack is not None and t in builtin and t in xnnpack:
            gap, gap_rel, _ = compare_arrays(xnnpack[t], builtin[t])
            noise = tol.error(gap, gap_rel)
        lsb = max_abs / tol.lsb if tol.unit == "LSB" else None
        rows.append(
            Row(
                m["op_index"],
                m["op"],
                tensor.name,
                list(tensor.shape),
                max_abs,
                max_rel,
                cos,
                lsb,
                noise,
                tol.allows(tol.error(max_abs, max_rel), noise),
                tol.error(max_abs, max_rel) / max(tol.bar, NOISE_FACTOR * noise),
            )
        )
    rows.sort(key=lambda r: r.op_index)
    if local:
        tol_text = f"layer-local, {kind_text(kind, local=True)}"
    else:
        tol_text = f"{kind_text(kind)}, or 2 x runtime noise"
    return Comparison(Path(model_path).name, kind, tol_text, rows, "local" if local else "accumulated")
