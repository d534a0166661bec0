"""A TFLite model against reference activations from another framework, layer by layer: where
does the PyTorch -> ONNX -> TF -> TFLite conversion drift?

The model runs once on the built-in kernels with every intermediate exposed (as `compare A B`),
on the inputs the refs file holds (`references.model_inputs`), else the given or seeded ones. Each
reference is paired with one TFLite activation, in three steps, each pair saying how it was made:

1. "map": `--map` names the tensor (its full name, a ';'-part of it, or that normalised);
2. "name": the key, normalised, is a normalised ';'-part of a tensor name, or its tail at a '/'
   (ONNX Runtime's `/blocks/blocks.0/attn/Softmax_output_0` finds `.../blocks/blocks.0/attn/Softmax`);
3. "order": the rest by order and shape: refs in execution order against the activations in op
   order, aligned (longest common subsequence) over the pairs whose shapes agree in some layout
   AND whose values agree: after the layout's transpose, Pearson correlation >= MIN_CORRELATION,
   SQNR >= MIN_SQNR_DB, and not a scaled copy (`rescaled`). A forward hook also records tensors
   TFLite never holds (a conv's output before its fused BatchNorm and ReLU, a GELU whose 0.5 went
   into the next layer's weights); such refs stay unpaired instead of pairing with a neighbour
   of the same shape, and among candidates the alignment takes the closest values. Unrelated
   values (a shuffled refs file) do not pair. So a layer off by more than MIN_SQNR_DB is listed
   unpaired, not flagged: name it with --map to see its row.

Where a shape agrees in more than one layout (NCHW 1x8x8x8), the values pick the layout. Rows are
in TFLite's op order with the reference as the signal: SQNR, max abs / rel, cosine, mean error and
LSB as `cross.measure`; `layout` says which transpose was applied. Data only (no printing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfl_rebuild.tflite.analysis import quantization_kind
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.verify.cross import (
    DEFAULT_JUMP_DB,
    REF_OP,
    CrossComparison,
    PairRow,
    default_threshold,
    drop,
    floats,
    metrics,
    sqnr_db,
)
from tfl_rebuild.verify.measure import lsb_of
from tfl_rebuild.verify.pairing import TensorRef, activations, name_parts, op_inputs, producers
from tfl_rebuild.verify.references import (
    AS_IS,
    NameMap,
    arrange,
    layouts,
    load_refs,
    model_inputs,
    normalise,
    parse_map,
    plain_name,
)

MIN_CORRELATION = 0.5  # order step: values that correlate less are not the same layer
MIN_SQNR_DB = 10.0  # order step: an error rms over 32% of the signal's is another tensor's value
# order step: a candidate this much below the reference's best candidate is not it (a LayerNorm's
# output would pair with its own MUL step at 18 dB when a reshaped copy took the ADD at 135 dB).
DOMINANCE_DB = 20.0
SAMPLE = 1 << 14  # order step: score candidates on about this many values of each
HOW = ("map", "name", "order")


@dataclass(frozen=True)
class RefPair:
    position: int  # the reference's index in the refs file
    key: str
    tensor: TensorRef
    how: str  # map | name | order
    layout: str  # AS_IS or a transpose (references.TRANSPOSES)
    perm: tuple[int, ...] | None


@dataclass
class RefPairing:
    pairs: list[RefPair]  # in TFLite's op order
    unpaired_refs: list[str]
    unpaired_tensors: list[TensorRef]

    @property
    def coverage(self) -> float:
        """The fraction of the references that found a TFLite tensor."""
        total = len(self.pairs) + len(self.unpaired_refs)
        return len(self.pairs) / total if total else 1.0

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(HOW, 0)
        for p in self.pairs:
            out[p.how] += 1
        return out


def _norm(x: np.ndarray) -> float:
    """The 2-norm without BLAS (a threaded dot on a busy machine costs 100x the arithmetic)."""
    return math.sqrt(float(np.sum(x * x)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays' values (1.0 for two equal constants, 0.0 for a constant
    against a varying one or any non-finite value)."""
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    na, nb = _norm(a), _norm(b)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.sum(a * b)) / (na * nb)


def closeness(ref: np.ndarray, got: np.ndarray) -> float:
    """1 / (1 + ||got - ref|| / ||ref||): 1.0 for equal arrays, 0.5 for an error as large as ref."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    norm = _norm(ref)
    err = _norm(got - ref)
    return 1.0 / (1.0 + err / norm) if norm > 0 else (1.0 if err == 0 else 0.0)


def rescaled(ref: np.ndarray, got: np.ndarray) -> bool:
    """`got` is (almost exactly) a * ref + b with (a, b) away from (1, 0): a tensor the converter
    scaled or shifted (GELU's 0.5 folded into the next layer's weights), not this layer with
    rounding or drift, whose error no scale and shift explain. The fit must remove 99% of the
    error's power and the error be over 1e-3 of the reference's norm."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    got = np.asarray(got, np.float64).reshape(-1)
    if ref.size < 2 or not (np.isfinite(ref).all() and np.isfinite(got).all()):
        return False
    err = _norm(got - ref)
    if err <= 1e-3 * _norm(ref):
        return False
    centred = ref - ref.mean()
    var = float(np.sum(centred * centred))
    a = float(np.sum(centred * (got - got.mean()))) / var if var > 0 else 1.0  # least squares
    b = float(got.mean()) - a * float(ref.mean())
    return _norm(got - (a * ref + b)) < 0.1 * err


def _best_layout(
    ref: np.ndarray, t: TensorRef, values: dict[int, np.ndarray], strict: bool = False, cache=None
):
    """(score, layout, perm, SQNR dB) of the layout that makes `ref` most like tensor `t`: score
    is correlation + closeness (0 when the value is unknown); None when no layout fits the shapes,
    or (`strict`: the order step) none has correlation >= MIN_CORRELATION and SQNR >= MIN_SQNR_DB
    without being `rescaled`. `cache`: a dict for the reference's arranged samples (one
    transpose per reference, layout and shape, not per candidate)."""
    options = layouts(ref.shape, t.shape)
    if not options:
        return None
    got = values.get(t.index)
    if got is None:
        return None if strict else (0.0, *options[0], math.nan)
    got = np.asarray(got).reshape(-1)
    step = max(1, got.size // SAMPLE)  # the order step scores many candidates: a strided sample
    scored = []
    for name, perm in options:
        key = (id(ref), perm, t.shape, step)
        if cache is not None and key in cache:
            mine = cache[key]
        else:
            mine = arrange(ref, perm, t.shape).reshape(-1)[:: step if strict else 1]
            if cache is not None:
                cache[key] = mine
        r, g = (mine, got[::step]) if strict else (mine, got)
        corr, sqnr = correlation(r, g), sqnr_db(r, g)
        if strict and (corr < MIN_CORRELATION or sqnr < MIN_SQNR_DB or rescaled(r, g)):
            continue
        scored.append((corr + closeness(r, g), name, perm, sqnr))
    return max(scored, key=lambda s: s[0]) if scored else None  # the first (as is) on a tie


def _named(target: str, acts: list[TensorRef], tail: bool) -> list[TensorRef]:
    """Activations called `target`: the full name, a ';'-part, or normalised (and with `tail`,
    a normalised part ending in '/' + target, when target has two components or more)."""
    want = normalise(target)
    found = []
    for t in acts:
        parts = name_parts(t.name) | {plain_name(t.name)}
        if target == t.name or target in parts:
            found.append(t)
            continue
        norms = {normalise(p) for p in parts}
        if want in norms or (tail and "/" in want and any(n.endswith("/" + want) for n in norms)):
            found.append(t)
    return found


def pair_references(
    refs: list[tuple[str, np.ndarray]],
    acts: list[TensorRef],
    values: dict[int, np.ndarray],
    name_map: NameMap | None = None,
) -> RefPairing:
    """Pair each reference with a TFLite activation (see the module docstring)."""
    from tfl_rebuild.errors import InputError

    paired: dict[int, RefPair] = {}  # ref position -> pair
    taken: set[int] = set()

    def take(pos: int, t: TensorRef, how: str, scored) -> None:
        paired[pos] = RefPair(pos, refs[pos][0], t, how, scored[1], scored[2])
        taken.add(t.index)

    if name_map is not None:
        unknown = sorted(set(name_map.table or ()) - {key for key, _ in refs})
        if unknown:
            raise InputError(f"--map names no reference {unknown[0]!r} ({len(unknown)} unknown key(s))")
        for pos, (key, ref) in enumerate(refs):
            target = name_map.target(key)
            if target is None:
                continue
            found = [t for t in _named(target, acts, tail=False) if t.index not in taken]
            fits = [(s, t) for t in found if (s := _best_layout(ref, t, values)) is not None]
            if fits:
                score, t = max(fits, key=lambda st: st[0][0])
                take(pos, t, "map", score)
            elif name_map.table is not None:  # an explicit map that names nothing is a typo
                what = "no tensor" if not found else f"no tensor of a shape like {list(ref.shape)}"
                raise InputError(f"--map: refs[{key!r}] -> {target!r}: the model has {what} of that name")
    for pos, (key, ref) in enumerate(refs):
        if pos in paired:
            continue
        for t in _named(key, acts, tail=True):
            if t.index not in taken and (score := _best_layout(ref, t, values)) is not None:
                take(pos, t, "name", score)
                break
    _by_order(refs, acts, values, paired, taken, take)
    pairs = sorted(paired.values(), key=lambda p: (p.tensor.op_index, p.position))
    return RefPairing(
        pairs,
        [key for pos, (key, _) in enumerate(refs) if pos not in paired],
        [t for t in acts if t.index not in taken],
    )


def _by_order(refs, acts, values, paired, taken, take) -> None:
    """Longest common subsequence of the free refs and free activations, a cell scoring
    1 + correlation + closeness where shapes agree and values agree (see `_best_layout`), and
    within DOMINANCE_DB of the reference's best candidate."""
    free_r = [pos for pos in range(len(refs)) if pos not in paired]
    free_t = [t for t in acts if t.index not in taken]
    if not free_r or not free_t:
        return
    n, m = len(free_r), len(free_t)
    cells: dict[tuple[int, int], tuple] = {}
    cache: dict = {}
    for i, pos in enumerate(free_r):
        ref = refs[pos][1]
        for j, t in enumerate(free_t):
            if t.size != ref.size:
                continue
            scored = _best_layout(ref, t, values, strict=True, cache=cache)
            if scored is not None:
                cells[i, j] = scored
    best_db: dict[int, float] = {}
    for (i, _), scored in cells.items():
        best_db[i] = max(best_db.get(i, -math.inf), scored[3])
    cells = {ij: c for ij, c in cells.items() if c[3] >= best_db[ij[0]] - DOMINANCE_DB}
    best = np.zeros((n + 1, m + 1))
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            here = best[i - 1, j - 1] + 1.0 + cells[i - 1, j - 1][0] if (i - 1, j - 1) in cells else -1.0
            best[i, j] = max(best[i - 1, j], best[i, j - 1], here)
    i, j = n, m
    while i > 0 and j > 0:  # on a tie the earliest tensor (the op that computes it, not a copy)
        if best[i, j] == best[i, j - 1]:
            j -= 1
        elif (i - 1, j - 1) in cells and best[i, j] == best[i - 1, j - 1] + 1.0 + cells[i - 1, j - 1][0]:
            take(free_r[i - 1], free_t[j - 1], "order", cells[i - 1, j - 1])
            i, j = i - 1, j - 1
        else:
            i -= 1


def _inputs_from_refs(model, refs, details: list[dict], seed: int) -> tuple[dict | None, str]:
    """{input name: value} from the refs that name a model input (seeded random for the others),
    and where they came from; (None, ...) when the refs hold none (random inputs then)."""
    from tfl_rebuild.runtime.interpreter import random_input

    sig = model.signatures[0] if model.signatures else None
    found, notes = model_inputs(refs, details, {index: name for name, index in sig.inputs} if sig else {})
    if not found:
        return None, f"random(seed={seed}): the refs hold no model input"
    rng = np.random.default_rng(seed)
    missing = [d["name"] for d in details if d["name"] not in found]
    values = {d["name"]: found[d["name"]] if d["name"] in found else random_input(d, rng) for d in details}
    return values, "refs: " + ", ".join(notes) + (f"; random(seed={seed}): {missing}" if missing else "")


def compare_references(
    model_path: str,
    refs_path: str,
    name_map: str | None = None,
    inputs=None,
    seed: int = 0,
    threshold_db: float | None = None,
    local: bool = False,
    jump_db: float = DEFAULT_JUMP_DB,
) -> CrossComparison:
    """Run the model once and measure it against the references (see the module docstring).
    `inputs`: the model's (None, an array, a list or {name: array}); None: the refs' own inputs,
    else seeded random."""
    from tfl_rebuild.runtime.inputs import from_arrays
    from tfl_rebuild.runtime.outputter import Dumper, prepare

    model = read_model(model_path)
    refs = load_refs(refs_path)
    mapping = parse_map(name_map)
    dumper = Dumper(prepare(model))
    details = dumper.input_details
    source = "given"
    if inputs is None:
        inputs, source = _inputs_from_refs(model, refs, details, seed)
    values = floats(model, dumper, from_arrays(inputs, details, seed))
    acts = activations(model)
    pairing = pair_references(refs, acts, values, mapping)
    by_key = dict(refs)
    rows, by_tensor = [], {}
    producer, pairable = producers(model.main), {p.tensor.index for p in pairing.pairs}
    for p in pairing.pairs:
        t = p.tensor
        if t.index not in values:
            continue
        ref = arrange(by_key[p.key], p.perm, t.shape)
        got = values[t.index]
        max_abs, max_rel, cos, sqnr, mean = metrics(ref, got)
        scale = lsb_of(model.main.tensors[t.index])
        row = PairRow(
            t.op_index, t.op, t.name, p.position, REF_OP, p.key, p.how, list(t.shape), t.dtype,
            max_abs, max_rel, cos, sqnr, mean, max_abs / scale if scale else None, layout=p.layout,
        )  # fmt: skip
        if t.op_index >= 0:
            ins = [
                by_tensor[i].sqnr_db
                for i in op_inputs(model, t.op_index, pairable, 0, producer)
                if i in by_tensor
            ]
            if ins:
                row.input_sqnr_db = min(ins)
                row.drop_db = drop(row.input_sqnr_db, row.sqnr_db)
        by_tensor[t.index] = row
        rows.append(row)
    kind = quantization_kind(model)
    return CrossComparison(
        Path(model_path).name,
        Path(refs_path).name,
        kind,
        REF_OP,
        rows,
        default_threshold(kind, "float") if threshold_db is None else threshold_db,
        jump_db,
        "local" if local else "accumulated",
        source,
        pairing.coverage,
        pairing.counts(),
        [t.name for t in pairing.unpaired_tensors],
        pairing.unpaired_refs,
        references=True,
    )


__all__ = ["AS_IS", "RefPairing", "compare_references", "pair_references"]
