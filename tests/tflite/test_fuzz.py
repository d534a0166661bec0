"""Mutated models: read_model either parses or raises a TflRebuildError - nothing else, quickly,
without allocating much beyond the file's size; and what it parses, the weight and report code
can digest (again: a result or a TflRebuildError).

Mutations (Hypothesis, derandomized so CI is reproducible): bit flips, little-endian integers of
1/2/4 bytes (boundary values, sizes of the file, random) written at random offsets, truncation,
and splices (a chunk copied over, inserted at or deleted from another place). Offsets favour the
flatbuffer's structure (everything but the constant data), where a change means something.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from functools import cache

import numpy as np
import pytest
from conftest import CORPUS_DIR, FIXTURE_NAMES, FIXTURES_DIR, model_params
from flatbuf import Signature, model_metadata, simple_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfl_rebuild.errors import TflRebuildError
from tfl_rebuild.tflite.analysis import to_json
from tfl_rebuild.tflite.graph import build_graph, op_order
from tfl_rebuild.tflite.reader import read_model
from tfl_rebuild.tflite.weights import dequantize

# One parse of one mutated file may take this long, or 20x the unmutated seed's parse on this machine
# (whichever is larger: a loaded CI box slows both alike). Unmutated seeds take milliseconds to ~0.3 s.
TIME_BUDGET_S = 5.0
TIME_BUDGET_FACTOR = 20
MEMORY_SLACK = 10 << 20  # bytes allowed beyond 4x the file size


def memory_bound(size: int) -> int:
    return 4 * size + MEMORY_SLACK


def _crafted_external() -> bytes:
    return simple_model(weights=np.linspace(-2, 2, 64, dtype=np.float32), external=True)


def _crafted_metadata() -> bytes:
    meta = model_metadata(
        name="fuzz",
        description="seed",
        version="1",
        inputs=[("x", "in")],
        outputs=[("y", "out")],
        associated_files=["labels.txt"],
    )
    return simple_model(
        metadata={"TFLITE_METADATA": meta, "min_runtime_version": b"1.5.0" + b"\0" * 11},
        signatures=[Signature("serving_default", {"x": 0}, {"y": 2})],
    )


def _crafted_hostile() -> bytes:
    return simple_model(x_name="q\"'{{x}}\n", w_name=b"\xff\xfe", y_name="\x00\x01")


CRAFTED = {
    "crafted_external": _crafted_external,
    "crafted_metadata": _crafted_metadata,
    "crafted_hostile": _crafted_hostile,
}
# Examples per seed: the cheap seeds carry the bulk (>= 2,000 over fixtures + crafted in CI),
# the big ones fewer, as each parse costs ~10-100x more.
EXAMPLES = {
    "mobilenet_v2_float": 40,
    "mobilenet_v2_dynamic": 40,
    "mobilenet_v2_int8": 40,
    "mobilenet_v2_fp16": 40,
    "ops_zoo": 150,
}
DEFAULT_EXAMPLES = 250
CORPUS_SEEDS = {
    "hand_recrop": 40,
    "face_detection_short_range": 30,
    "face_detection_full_range_sparse": 30,
    "selfie_segmentation": 30,
}


def _seeds() -> list:
    params = [pytest.param(name, id=name) for name in CRAFTED]
    params += [pytest.param(p.stem, id=p.stem) for p in [FIXTURES_DIR / f"{n}.tflite" for n in FIXTURE_NAMES]]
    params += [pytest.param(f"corpus:{n}", id=n, marks=pytest.mark.corpus) for n in CORPUS_SEEDS]
    return params


def _expected_total() -> int:
    return sum(EXAMPLES.get(n, DEFAULT_EXAMPLES) for n in list(CRAFTED) + list(FIXTURE_NAMES))


@cache
def seed_bytes(name: str) -> bytes | None:
    if name in CRAFTED:
        return CRAFTED[name]()
    path = (
        CORPUS_DIR / f"{name[len('corpus:') :]}.tflite"
        if name.startswith("corpus:")
        else FIXTURES_DIR / f"{name}.tflite"
    )
    return path.read_bytes() if path.exists() else None


@cache
def hot_offsets(name: str) -> np.ndarray:
    """Offsets outside every constant's data: the flatbuffer tables, vectors and strings."""
    blob = seed_bytes(name)
    model = read_model(blob)
    mask = np.ones(len(blob), bool)
    base = np.frombuffer(blob, np.uint8).__array_interface__["data"][0]
    for sg in model.subgraphs:
        for t in sg.tensors:
            if t.data is not None and t.data.nbytes:
                start = t.data.__array_interface__["data"][0] - base
                mask[start : start + t.data.nbytes] = False
    return np.flatnonzero(mask)


INTERESTING = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFE,
    0xFFFFFFFF,
]


@st.composite
def mutated(draw, name: str) -> bytes:
    blob = seed_bytes(name)
    hot = hot_offsets(name)
    buf = bytearray(blob)

    def offset() -> int:
        size = len(buf)
        if hot.size and draw(st.integers(0, 9)) < 8:
            return min(int(hot[draw(st.integers(0, hot.size - 1))]), size - 1)
        return draw(st.integers(0, size - 1))

    for _ in range(draw(st.integers(1, 4))):
        if len(buf) < 2:
            break
        kind = draw(st.sampled_from(["flip", "int", "int", "int", "truncate", "splice"]))
        if kind == "flip":
            buf[offset()] ^= 1 << draw(st.integers(0, 7))
        elif kind == "int":
            width = draw(st.sampled_from([1, 2, 4]))
            size = len(buf)
            value = draw(
                st.one_of(
                    st.sampled_from(INTERESTING + [size, size - 1, size // 2, size // 4]),
                    st.integers(0, 2**32 - 1),
                )
            )
            at = min(offset(), size - width)
            if at >= 0:
                buf[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif kind == "truncate":
            del buf[draw(st.integers(0, len(buf) - 1)) :]
        else:
            src, dst = offset(), offset()
            chunk = bytes(buf[src : src + draw(st.integers(1, 64))])
            how = draw(st.sampled_from(["overwrite", "insert", "delete"]))
            if how == "overwrite":
                buf[dst : dst + len(chunk)] = chunk
            elif how == "insert":
                buf[dst:dst] = chunk
            else:
                del buf[dst : dst + len(chunk)]
    return bytes(buf)


MAX_EXERCISED_ELEMENTS = 1 << 24  # a mutated shape may legitimately densify to gigabytes: not the point here


def exercise(model) -> None:
    """What the commands do after parsing: every error must be a TflRebuildError."""
    for sg in model.subgraphs:
        for t in sg.tensors:
            if (
                t.data is not None
                and t.dtype not in ("string", "resource", "variant")
                and int(np.prod(t.shape, dtype=np.int64)) <= MAX_EXERCISED_ELEMENTS
            ):
                try:
                    dequantize(t)
                except TflRebuildError:
                    pass
        try:
            op_order(build_graph(sg))
        except TflRebuildError:
            pass
    json.loads(to_json(model))


def check_one(blob: bytes, budget_s: float = TIME_BUDGET_S) -> str:
    """Parse one mutated file under the time and memory budgets; 'ok' or 'error'."""
    message = None
    tracemalloc.start()  # traced for the parse only (tracing Hypothesis too would triple the run time)
    try:
        start = time.perf_counter()
        try:
            model = read_model(blob)
        except TflRebuildError as exc:
            message, model = str(exc), None
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message is None or ("\n" not in message and message.startswith("<bytes>: ")), message
    assert elapsed < budget_s, f"parse took {elapsed:.1f} s (budget {budget_s:.1f} s)"
    assert peak < memory_bound(len(blob)), f"parse allocated {peak / 1e6:.1f} MB for a {len(blob)}-byte file"
    if model is None:
        return "error"
    exercise(model)
    return "ok"


def _timed_parse(blob: bytes) -> float:
    tracemalloc.start()  # as in check_one: tracing slows parsing ~3x
    try:
        start = time.perf_counter()
        read_model(blob)
        return time.perf_counter() - start
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", _seeds())
def test_mutated_models_fail_cleanly(name):
    blob = seed_bytes(name)
    if blob is None:
        pytest.skip(f"seed {name} is not available (fixture not built / corpus not fetched)")
    baseline = min(_timed_parse(blob) for _ in range(2))  # the seed itself parses
    budget = max(TIME_BUDGET_S, TIME_BUDGET_FACTOR * baseline)
    n = EXAMPLES.get(name, CORPUS_SEEDS.get(name.removeprefix("corpus:"), DEFAULT_EXAMPLES))
    outcomes = {"ok": 0, "error": 0}

    @settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(name))
    def fuzz(blob):
        outcomes[check_one(blob, budget)] += 1

    fuzz()
    print(f"{name}: {outcomes}")
    # Hypothesis may stop early on a small search space, never on these.
    assert sum(outcomes.values()) >= n * 0.9, outcomes
    assert outcomes["error"] > 0, "no mutation was refused: the mutator is not reaching the structure"


def test_fixture_fuzz_reaches_two_thousand_cases():
    assert _expected_total() >= 2000


@pytest.mark.parametrize("path", model_params()[:1])
def test_unmutated_seed_passes_the_budgets(path):
    assert check_one(path.read_bytes()) == "ok"
