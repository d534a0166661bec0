"""Two TFLite encodings of one network, layer by layer: where does B (int8, fp16, dynamic-range)
lose what A (usually float) computes?

A and B run once each on the same inputs (seeded random by default), on the built-in kernels, with
every intermediate tensor exposed (outputter). Their activations are paired (`pairing`), quantized
values dequantized (`measure.to_float`), and each pair measured with A as the reference:
max abs / max rel error, cosine, mean error (B - A: a bias shows here), the error in LSBs of B's
scale for a quantized tensor, and the SQNR as TF's QuantizationDebugger defines it:
10 log10(sum(A^2) / sum((A - B)^2)) dB (inf when B equals A).

`first_divergence` is the first pair, in A's op order, whose SQNR falls below the threshold.
DEFAULT_SQNR_DB = 20 dB when either model is quantized or fp16: the error's power is 1% of the
signal's, its rms 10% of the signal's rms. An int8 tensor alone is ~35-50 dB (8 bits: 6.02 x 8 +
1.76 = 49.9 dB for a full-scale uniform signal, less the calibration range's headroom); a layer
under 20 dB has lost more than int8 rounding explains. Measured on the fixtures (random inputs):
every layer of int8 MobileNetV2 >= 25.1 dB, dynamic-range >= 26.9, fp16 >= 45.6, unet int8 >= 35.9;
the int8 transformer and se_net fall under it at their last FULLY_CONNECTED only (8.1, 13.7 dB).
FLOAT_SQNR_DB = 60 dB when both are float: the same float network on the same kernels agrees
exactly (inf); float32 rounding (2^-24 relative per step) stays far above 60 dB; while one conv
of float MobileNetV2 whose weights are scaled by 1.05 is at 25-31 dB.

`local` view: each pair also carries its op's input SQNR (the worst of the op's paired activation
inputs) and the drop from it to its own SQNR, i.e. how much error the op itself adds on top of
what it was fed (inf when its inputs are exact and its output is not). A rerun of B's op on A's
input values (a true layer-local measure) is not done here: the drop is read from the two runs.

Data only: no printing (`commands/compare_models.py` renders).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError
from tfl_rebuild.text import printable
from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.ir import Model
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.measure import F32_MAX, compare_arrays, lsb_of, to_float
from tfl_rebuild.verify.pairing import INPUT_OP, Pairing, op_inputs, pair_tensors, producers

REF_OP = "reference"  # PairRow.b_op when B is a file of external references (verify.external)
DEFAULT_SQNR_DB = 20.0
FLOAT_SQNR_DB = 60.0
# Local view: an op whose own added error lowers the SQNR by at least this much is a jump (6 dB:
# the op at least quadruples the error power it was fed, or doubles its rms).
DEFAULT_JUMP_DB = 6.0


@dataclass
class PairRow:
    """One paired activation: A's value is the reference, B's is measured against it. Against
    external references (`verify.external`), op / tensor are the TFLite side, b_tensor the
    reference's key (b_op REF_OP, b_op_index its position), and the reference is the signal."""

    op_index: int  # A's op (-1: a graph input)
    op: str
    tensor: str  # A's tensor name
    b_op_index: int
    b_op: str
    b_tensor: str
    how: str  # how the pair was made: exact | normalised | position
    shape: list[int]
    dtype_b: str
    max_abs: float
    max_rel: float
    cosine: float
    sqnr_db: float
    mean_error: float  # mean of B - A
    lsb: float | None  # max abs error in LSBs of B's scale (per-tensor quantized B), else None
    input_sqnr_db: float | None = None  # the worst SQNR among the op's paired activation inputs
    drop_db: float | None = None  # input_sqnr_db - sqnr_db: what the op itself adds
    layout: str | None = None  # external references: the transpose applied to the reference

    def where(self) -> str:
        """'op 17 CONV_2D 'name'' (the first ';'-part of the name), safe to print; against
        external references, then '= ref 'key''."""
        name = printable(short_name(self.tensor), 80)
        at = f"input {name!r}" if self.op_index < 0 else f"op {self.op_index} {printable(self.op)} {name!r}"
        return at + (f" = ref {printable(self.b_tensor, 80)!r}" if self.b_op == REF_OP else "")


def short_name(name: str) -> str:
    """The first of a ';'-fused tensor name's parts (what the layer was called)."""
    return name.split(";", 1)[0]


@dataclass
class CrossComparison:
    model_a: str
    model_b: str
    kind_a: str
    kind_b: str
    rows: list[PairRow]  # in A's op order
    threshold_db: float = DEFAULT_SQNR_DB
    jump_db: float = DEFAULT_JUMP_DB
    mode: str = "accumulated"  # or "local"
    inputs: str = ""  # where the inputs came from
    coverage: float = 1.0  # fraction of A's activations paired
    how: dict[str, int] = field(default_factory=dict)  # pairs per pairing step
    unpaired_a: list[str] = field(default_factory=list)
    unpaired_b: list[str] = field(default_factory=list)
    references: bool = False  # B is a file of external references (verify.external)

    @property
    def first_divergence(self) -> PairRow | None:
        """The first pair (A's op order) whose SQNR is below the threshold."""
        return next((r for r in self.rows if below(r.sqnr_db, self.threshold_db)), None)

    def is_jump(self, row: PairRow) -> bool:
        """The op's own error lowers the SQNR by `jump_db` or more and leaves it under the threshold."""
        return (
            row.drop_db is not None and row.drop_db >= self.jump_db and below(row.sqnr_db, self.threshold_db)
        )

    @property
    def jumps(self) -> list[PairRow]:
        """The ops whose own error jumps, largest drop first."""
        return sorted((r for r in self.rows if self.is_jump(r)), key=lambda r: -(r.drop_db or 0.0))

    @property
    def flagged(self) -> PairRow | None:
        """What the verdict names: the first divergence, or in local mode the largest jump."""
        if self.mode == "local":
            return next(iter(self.jumps), None)
        return self.first_divergence

    def verdict(self) -> str:
        if self.mode == "local":
            jumps = self.jumps
            if not jumps:
                return f"no divergence: no op adds {self.jump_db:g} dB of error below SQNR {self.threshold_db:g} dB"
            r = jumps[0]
            more = f"; {len(jumps) - 1} more jump(s)" if len(jumps) > 1 else ""
            return (
                f"largest jump at {r.where()} (SQNR {db(r.input_sqnr_db)} -> {db(r.sqnr_db)} dB, "
                f"drop {db(r.drop_db)} dB){more}"
            )
        r = self.first_divergence
        if r is None:
            worst = min((row.sqnr_db for row in self.rows), default=math.inf)
            return f"no divergence: every pair's SQNR >= {self.threshold_db:g} dB (lowest {db(worst)} dB)"
        return f"first divergence at {r.where()} (SQNR {db(r.sqnr_db)} dB)"

    def to_dict(self) -> dict:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "kind_a": self.kind_a,
            "kind_b": self.kind_b,
            "references": self.references,
            "mode": self.mode,
            "inputs": self.inputs,
            "sqnr_threshold_db": self.threshold_db,
            "jump_db": self.jump_db,
            "verdict": self.verdict(),
            "first_divergence": _index(self.rows, self.first_divergence),
            "jumps": [_index(self.rows, r) for r in self.jumps],
            "pairing": {
                "coverage": self.coverage,
                "pairs": self.how,
                "unpaired_a": self.unpaired_a,
                "unpaired_b": self.unpaired_b,
            },
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        """JSON as `compare` writes it: inf SQNR as Infinity (Python's json reads it back)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=True)


def _index(rows: list[PairRow], row: PairRow | None) -> int | None:
    return None if row is None else next(k for k, r in enumerate(rows) if r is row)


def below(value: float, threshold: float) -> bool:
    return not math.isnan(value) and value < threshold


def db(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return ("-inf" if value < 0 else "inf") if math.isinf(value) else f"{value:.1f}"


# -- measures -----------------------------------------------------------------------------------------


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum(ref^2) / sum((ref - got)^2)) over the values finite in both; inf when equal,
    -inf when they differ by a non-finite amount or ref is all zeros and got is not."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    if ref.shape != got.shape:
        return -math.inf
    ok_r, ok_g = np.abs(ref) < F32_MAX, np.abs(got) < F32_MAX  # False for inf and NaN
    if (ok_r != ok_g).any():
        return -math.inf
    ref, got = ref[ok_r], got[ok_r]
    noise = float(np.sum((ref - got) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(ref**2))
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


def mean_error(ref: np.ndarray, got: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    keep = (np.abs(ref) < F32_MAX) & (np.abs(got) < F32_MAX)
    return float(np.mean(got[keep] - ref[keep])) if keep.any() else 0.0


def metrics(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float, float, float]:
    """(max abs, max rel, cosine, SQNR dB, mean error) of `got` against `ref` (same size)."""
    ref = np.asarray(ref).reshape(-1)
    got = np.asarray(got).reshape(-1)
    ref = ref if ref.dtype.kind in "fc" else ref.astype(np.float64)
    got = got if got.dtype.kind in "fc" else got.astype(np.float64)
    max_abs, max_rel, cos = compare_arrays(ref, got)
    return max_abs, max_rel, cos, sqnr_db(ref, got), mean_error(ref, got)


def default_threshold(kind_a: str, kind_b: str) -> float:
    """FLOAT_SQNR_DB when both models are float, else DEFAULT_SQNR_DB (see the module docstring)."""
    return FLOAT_SQNR_DB if kind_a == kind_b == "float" else DEFAULT_SQNR_DB


def drop(inp: float | None, out: float) -> float | None:
    if inp is None or math.isnan(out):
        return None
    if math.isinf(inp) and math.isinf(out) and (inp > 0) == (out > 0):
        return 0.0
    return inp - out


# -- running ------------------------------------------------------------------------------------------


def _float_value(value: np.ndarray, detail: dict) -> np.ndarray:
    """A quantized input's value in float (its scale and zero point); other values unchanged."""
    scale, zero = (detail.get("quantization") or (0.0, 0))[:2]
    if scale and value.dtype.kind in "iu":
        return ((value.astype(np.float64) - zero) * scale).astype(np.float32)
    return value


def _match_details(da: list[dict], db_: list[dict]) -> list[int]:
    """For each of A's inputs, the position of B's input it feeds: by name, else in order."""
    if len(da) != len(db_):
        raise InputError(f"model A has {len(da)} input(s) and model B {len(db_)}: not the same network")
    names_b = [d["name"] for d in db_]
    if sorted(d["name"] for d in da) == sorted(names_b):
        return [names_b.index(d["name"]) for d in da]
    return list(range(len(da)))


def shared_inputs(
    da: list[dict], db_: list[dict], inputs=None, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(A's inputs, B's inputs), the same values in each model's input types.

    Random (seeded): drawn in float wherever one of the two models takes a float input, so a
    quantized input of the other gets that float input quantized with its own scale and zero
    point. Given `inputs` are A's (None, one array, a list in A's input order, or {name: array});
    B gets them in float (dequantized with A's scale if A's input is quantized), then in its type.
    """
    from tfl_rebuild.runtime.inputs import conform, from_arrays
    from tfl_rebuild.runtime.interpreter import random_input

    order = _match_details(da, db_)
    if inputs is None:
        rng = np.random.default_rng(seed)
        values = []
        for a, k in zip(da, order):
            b = db_[k]
            a_float, b_float = np.dtype(a["dtype"]).kind == "f", np.dtype(b["dtype"]).kind == "f"
            src = b if b_float and not a_float else a
            values.append(_float_value(random_input(src, rng), src))
        va = [conform(v, a, f"random(seed={seed})") for v, a in zip(values, da)]
    else:
        va = from_arrays(inputs, da, seed)
        values = [_float_value(v, a) for v, a in zip(va, da)]
    vb: list = [None] * len(db_)
    for v, k in zip(values, order):
        vb[k] = conform(np.asarray(v), db_[k], f"model A's input {db_[k]['name']!r}")
    return va, vb


def floats(model: Model, dumper, values: list[np.ndarray]) -> dict[int, np.ndarray]:
    """One run: tensor index -> float value, for every dumped op output and every graph input."""
    sg = model.main
    result = dumper.run(values, copy=True)
    out = {
        e.tensor_index: to_float(sg.tensors[e.tensor_index], np.asarray(result[k]))
        for k, e in result.entries.items()
    }
    for d, v in zip(dumper.input_details, values):
        out[int(d["index"])] = to_float(sg.tensors[int(d["index"])], np.asarray(v))
    return out


def measure_pairs(
    a: Model, b: Model, pairing: Pairing, values_a: dict[int, np.ndarray], values_b: dict[int, np.ndarray]
) -> list[PairRow]:
    """A row per pair whose two values are both known, with the op's input SQNR and drop."""
    rows: list[PairRow] = []
    by_a: dict[int, PairRow] = {}
    paired = {p.a.index for p in pairing.pairs}
    producer = producers(a.main)
    for p in pairing.pairs:
        if p.a.index not in values_a or p.b.index not in values_b:
            continue
        ref, got = values_a[p.a.index], values_b[p.b.index]
        if np.size(ref) != np.size(got):
            continue
        max_abs, max_rel, cos, sqnr, mean = metrics(ref, got)
        scale = lsb_of(b.main.tensors[p.b.index])
        row = PairRow(
            p.a.op_index,
            p.a.op,
            p.a.name,
            p.b.op_index,
            p.b.op,
            p.b.name,
            p.how,
            list(p.a.shape),
            p.b.dtype,
            max_abs,
            max_rel,
            cos,
            sqnr,
            mean,
            max_abs / scale if scale else None,
        )
        if p.a.op_index >= 0:
            ins = [by_a[t].sqnr_db for t in op_inputs(a, p.a.op_index, paired, 0, producer) if t in by_a]
            if ins:
                row.input_sqnr_db = min(ins)
                row.drop_db = drop(row.input_sqnr_db, row.sqnr_db)
        by_a[p.a.index] = row
        rows.append(row)
    return rows


def compare_models(
    path_a: str | Model,
    path_b: str | Model,
    inputs=None,
    seed: int = 0,
    threshold_db: float | None = None,
    local: bool = False,
    jump_db: float = DEFAULT_JUMP_DB,
) -> CrossComparison:
    """Run A and B once each on the same inputs and measure every paired activation (see the
    module docstring). `inputs` are A's (see `shared_inputs`); None: random from `seed`.
    `threshold_db` None: `default_threshold` of the two models' quantization kinds."""
    from tfl_rebuild.runtime.outputter import Dumper, prepare

    a = path_a if isinstance(path_a, Model) else read_model(path_a)
    b = path_b if isinstance(path_b, Model) else read_model(path_b)
    pairing = pair_tensors(a, b)
    dump_a, dump_b = Dumper(prepare(a)), Dumper(prepare(b))
    va, vb = shared_inputs(dump_a.input_details, dump_b.input_details, inputs, seed)
    rows = measure_pairs(a, b, pairing, floats(a, dump_a, va), floats(b, dump_b, vb))
    kind_a, kind_b = quantization_kind(a), quantization_kind(b)
    return CrossComparison(
        Path(a.path).name if a.path else "A",
        Path(b.path).name if b.path else "B",
        kind_a,
        kind_b,
        rows,
        default_threshold(kind_a, kind_b) if threshold_db is None else threshold_db,
        jump_db,
        "local" if local else "accumulated",
        f"random(seed={seed})" if inputs is None else "given",
        pairing.coverage,
        pairing.counts(),
        [r.name for r in pairing.unpaired_a],
        [r.name for r in pairing.unpaired_b],
    )


__all__ = ["INPUT_OP", "CrossComparison", "PairRow", "compare_models", "sqnr_db"]
