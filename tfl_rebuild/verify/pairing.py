"""Which tensor of model B is which tensor of model A: two encodings of the same network.

A float model and its int8, dynamic-range or fp16 conversion share most tensor names, but not all:
the converter adds QUANTIZE / DEQUANTIZE wrappers, suffixes (`_int8`, `_dequantize`), and fuses
names with ';'. Tensors are paired in three steps, each pair saying how it was made:

1. "exact": the same name (and the same number of elements);
2. "normalised": any ';'-part of the names equal once the converter's suffixes are stripped, or a
   wrapper's name (the output of QUANTIZE / DEQUANTIZE of X stands for X); the most shared parts
   win, then the nearest relative position in the op order;
3. "position": the rest by graph position: the two op sequences (without QUANTIZE / DEQUANTIZE)
   aligned as (op type, output shapes) tokens with difflib's SequenceMatcher; outputs of aligned
   ops pair when both are still free and hold as many elements.

Pairable tensors are the activations: graph inputs and operator outputs, without constants, the
outputs of ops computed from constants only (fp16 weights behind DEQUANTIZE) and the
QUANTIZE / DEQUANTIZE wrappers of another activation (listed in `wrappers_a` / `wrappers_b`).
Data only: no printing, no runtime.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tfl_rebuild.tflite.ir import Model, Subgraph

WRAPPERS = frozenset(["QUANTIZE", "DEQUANTIZE"])
# Suffixes the converter adds to a tensor's name when it quantizes or dequantizes it.
SUFFIXES = ("_dequantize", "/dequantize", "_quantize", "/quantize", "_int8", "_uint8", "_int16", "_fp16")
# Dtypes the runtime cannot hand back as arrays (as the outputter's selection).
_NOT_DUMPABLE = frozenset(["string", "resource", "variant", "int4", "bfloat16"])
INPUT_OP = "INPUT"  # the op of a graph input


@dataclass(frozen=True)
class TensorRef:
    """One activation of one model (main subgraph)."""

    index: int  # tensor index
    name: str
    op_index: int  # the op that produces it; -1 for a graph input
    op: str  # that op's type (builtin name or custom code), INPUT_OP for a graph input
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class Pair:
    a: TensorRef
    b: TensorRef
    how: str  # "exact" | "normalised" | "position"


@dataclass
class Pairing:
    pairs: list[Pair]  # in A's op order
    unpaired_a: list[TensorRef]
    unpaired_b: list[TensorRef]
    wrappers_a: list[TensorRef] = field(default_factory=list)  # QUANTIZE/DEQUANTIZE outputs of A
    wrappers_b: list[TensorRef] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """The fraction of A's pairable tensors that found a partner in B."""
        total = len(self.pairs) + len(self.unpaired_a)
        return len(self.pairs) / total if total else 1.0

    def counts(self) -> dict[str, int]:
        """How many pairs each step made."""
        out = {"exact": 0, "normalised": 0, "position": 0}
        for p in self.pairs:
            out[p.how] += 1
        return out

    def by_a(self) -> dict[int, Pair]:
        """A's tensor index -> its pair."""
        return {p.a.index: p for p in self.pairs}


def name_parts(name: str) -> frozenset[str]:
    """The ';'-fused parts of a tensor name with the converter's suffixes stripped."""
    parts = set()
    for part in name.split(";"):
        part = part.strip()
        stripped = True
        while stripped:
            stripped = False
            for suffix in SUFFIXES:
                if part.endswith(suffix) and len(part) > len(suffix):
                    part, stripped = part[: -len(suffix)], True
        if part:
            parts.add(part)
    return frozenset(parts)


@dataclass
class _Side:
    """A model's activations: pairable ones in op order, wrappers, and aliases (wrapper names)."""

    sg: Subgraph
    refs: list[TensorRef]
    wrappers: list[TensorRef]
    aliases: dict[int, list[str]]  # tensor index -> names of the wrappers that stand for it
    order: dict[int, float]  # tensor index -> relative position in [0, 1]


def _static(sg: Subgraph) -> set[int]:
    """Constants and the outputs of ops whose inputs are all static."""
    static = {t.index for t in sg.tensors if t.is_constant}
    for op in sg.operators:
        ins = [i for i in op.inputs if i >= 0]
        if ins and all(i in static for i in ins):
            static.update(o for o in op.outputs if o >= 0)
    return static


def _side(model: Model, subgraph: int = 0) -> _Side:
    sg = model.subgraphs[subgraph]
    static = _static(sg)
    refs: list[TensorRef] = []
    wrappers: list[TensorRef] = []
    source: dict[int, int] = {}  # wrapper tensor -> the activation it stands for
    seen: set[int] = set()

    def ok(t: int) -> bool:
        tensor = sg.tensors[t]
        return t not in static and not tensor.is_variable and tensor.dtype not in _NOT_DUMPABLE

    for t in sg.inputs:
        if t >= 0 and t not in seen and ok(t):
            seen.add(t)
            tensor = sg.tensors[t]
            refs.append(TensorRef(t, tensor.name, -1, INPUT_OP, tuple(tensor.shape), tensor.dtype))
    for op in sg.operators:
        for t in op.outputs:
            if t < 0 or t in seen or not ok(t):
                continue
            seen.add(t)
            tensor = sg.tensors[t]
            ref = TensorRef(t, tensor.name, op.index, op.key, tuple(tensor.shape), tensor.dtype)
            x = op.inputs[0] if op.inputs else -1
            if op.opcode in WRAPPERS and x >= 0 and x in seen:
                source[t] = source.get(x, x)
                wrappers.append(ref)
            else:
                refs.append(ref)
    aliases: dict[int, list[str]] = {}
    for w in wrappers:
        aliases.setdefault(source[w.index], []).append(w.name)
    n = max(len(refs) - 1, 1)
    order = {r.index: k / n for k, r in enumerate(refs)}
    return _Side(sg, refs, wrappers, aliases, order)


def activations(model: Model, subgraph: int = 0) -> list[TensorRef]:
    """The pairable activations of a model in op order (graph inputs first), wrappers aside."""
    return _side(model, subgraph).refs


def _exact(a: _Side, b: _Side, paired: dict[int, tuple[int, str]]) -> None:
    by_name: dict[str, list[TensorRef]] = {}
    for r in b.refs:
        by_name.setdefault(r.name, []).append(r)
    taken: set[int] = set()
    for r in a.refs:
        for cand in by_name.get(r.name, ()):
            if cand.index not in taken and cand.size == r.size:
                paired[r.index] = (cand.index, "exact")
                taken.add(cand.index)
                break


def _normalised(a: _Side, b: _Side, paired: dict[int, tuple[int, str]]) -> None:
    taken = {bi for bi, _ in paired.values()}
    free_a = [r for r in a.refs if r.index not in paired]
    free_b = [r for r in b.refs if r.index not in taken]
    if not free_a or not free_b:
        return

    def parts(side: _Side, r: TensorRef) -> frozenset[str]:
        out = name_parts(r.name)
        for alias in side.aliases.get(r.index, ()):
            out |= name_parts(alias)
        return out

    index: dict[str, list[TensorRef]] = {}
    for r in free_b:
        for p in parts(b, r):
            index.setdefault(p, []).append(r)
    candidates = []
    for r in free_a:
        pa = parts(a, r)
        shared: dict[int, tuple[int, TensorRef]] = {}
        for p in pa:
            for c in index.get(p, ()):
                if c.size == r.size:
                    n, _ = shared.get(c.index, (0, c))
                    shared[c.index] = (n + 1, c)
        for n, c in shared.values():
            candidates.append((-n, abs(a.order[r.index] - b.order[c.index]), r.index, c.index))
    candidates.sort()
    used_b: set[int] = set()
    for _, _, ai, bi in candidates:
        if ai in paired or bi in used_b:
            continue
        paired[ai] = (bi, "normalised")
        used_b.add(bi)


def _tokens(side: _Side) -> tuple[list[tuple], list[list[TensorRef]]]:
    """One token per op with pairable outputs (graph inputs count as one op): (op type, shapes)."""
    groups: dict[int, list[TensorRef]] = {}
    for r in side.refs:
        groups.setdefault(r.op_index, []).append(r)
    ops = sorted(groups)
    outs = [groups[k] for k in ops]
    return [(group[0].op, tuple(r.shape for r in group)) for group in outs], outs


def _position(a: _Side, b: _Side, paired: dict[int, tuple[int, str]]) -> None:
    ta, outs_a = _tokens(a)
    tb, outs_b = _tokens(b)
    taken = {bi for bi, _ in paired.values()}
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for ga, gb in zip(outs_a[i1:i2], outs_b[j1:j2]):
                if len(ga) != len(gb):
                    continue
                for ra, rb in zip(ga, gb):
                    if ra.index in paired or rb.index in taken or ra.size != rb.size:
                        continue
                    if tag == "replace" and ra.shape != rb.shape:
                        continue
                    paired[ra.index] = (rb.index, "position")
                    taken.add(rb.index)


def pair_tensors(a: Model, b: Model, subgraph: int = 0) -> Pairing:
    """Pair the activations of `a` and `b` (see the module docstring); pairs in A's op order."""
    sa, sb = _side(a, subgraph), _side(b, subgraph)
    paired: dict[int, tuple[int, str]] = {}  # A tensor -> (B tensor, how)
    _exact(sa, sb, paired)
    _normalised(sa, sb, paired)
    _position(sa, sb, paired)
    b_refs = {r.index: r for r in sb.refs}
    pairs = [Pair(r, b_refs[paired[r.index][0]], paired[r.index][1]) for r in sa.refs if r.index in paired]
    used = {p.b.index for p in pairs}
    return Pairing(
        pairs,
        [r for r in sa.refs if r.index not in paired],
        [r for r in sb.refs if r.index not in used],
        sa.wrappers,
        sb.wrappers,
    )


def producers(sg: Subgraph) -> dict:
    """Tensor index -> the operator that writes it."""
    return {t: op for op in sg.operators for t in op.outputs if t >= 0}


def op_inputs(
    model: Model, op_index: int, pairable: Iterable[int], subgraph: int = 0, producer: dict | None = None
) -> list[int]:
    """The activations among an op's inputs (tensor indices in `pairable`), looking through
    QUANTIZE / DEQUANTIZE wrappers to the tensor they wrap. `producer`: `producers(subgraph)`,
    when asking for many ops."""
    sg = model.subgraphs[subgraph]
    keep = set(pairable)
    producer = producers(sg) if producer is None else producer
    found = []
    for t in sg.operators[op_index].inputs:
        seen = set()
        while t >= 0 and t not in keep and t in producer and producer[t].opcode in WRAPPERS:
            if t in seen:
                break
            seen.add(t)
            t = producer[t].inputs[0] if producer[t].inputs else -1
        if t in keep and t not in found:
            found.append(t)
    return found
