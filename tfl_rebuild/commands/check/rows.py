"""What `check` knows about one model: the options, each stage's outcome, the row."""

from __future__ import annotations

from dataclasses import dataclass, field

from tfl_rebuild.errors import TflRebuildError

DEFAULT_TIMEOUT = 1800.0  # seconds per model; the largest corpus models need minutes on a busy CPU
REASON_CHARS = 300

# Stage statuses. A stage passes only when it was checked and matched (or the user asked to skip it).
PASSED = {"verified", "checked"}
UNCHECKED = {"built", "converted"}  # what --no-verify leaves; passes only under --no-verify
SKIPPED = "skipped"


@dataclass
class Options:
    verify: bool = True
    coreml: bool = True
    precision: str = "auto"
    timeout: float = DEFAULT_TIMEOUT
    # --input-shape specs; each applies to the models it fits (an input of that name, or the one input)
    input_shapes: tuple[str, ...] = ()
    # --backends: Keras backends the rebuild is also verified on, each in its worker (a column each)
    backends: tuple[str, ...] = ()


@dataclass
class Stage:
    status: str = "-"  # "-": not reached
    max_rel: float | None = None
    lsb: float | None = None  # quantized outputs: max error in LSB of the output scale
    seconds: float = 0.0
    reason: str = ""
    precision: str | None = None  # Core ML: the compute precision converted with
    note: str = ""  # what a passing stage still has to say (Keras: the signature / input shapes rebuilt;
    # Core ML: why float16 was not kept)


@dataclass
class Row:
    path: str  # the file read
    name: str  # what the table shows: the path relative to the PATH it was found under (discover.py)
    outcome: str = "fail"  # pass | fail | error (unreadable) | crash | timeout
    ops: int | None = None
    params: int | None = None
    quantization: str | None = None
    unsupported: list[dict] = field(default_factory=list)  # {"op": "custom Foo" | "BAR v2", "count": n}
    conversion_errors: list[str] = field(default_factory=list)
    keras: Stage = field(default_factory=Stage)
    coreml: Stage = field(default_factory=Stage)
    backends: dict[str, Stage] = field(default_factory=dict)  # --backends: one stage each
    seconds: float = 0.0
    reason: str = ""  # the first failure, one line

    @classmethod
    def from_dict(cls, d: dict) -> Row:
        d = dict(d)
        d["keras"], d["coreml"] = Stage(**d["keras"]), Stage(**d["coreml"])
        d["backends"] = {b: Stage(**st) for b, st in d.get("backends", {}).items()}
        return cls(**d)


def one_line(exc: BaseException | str) -> str:
    """The first non-empty line of an error, prefixed with its type unless it is one of ours."""
    text = exc if isinstance(exc, str) else str(exc)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not isinstance(exc, (str, TflRebuildError)):
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 3] + "..."


def passes(row: Row, opts: Options) -> bool:
    ok = PASSED if opts.verify else PASSED | UNCHECKED
    return (
        row.keras.status in ok
        and (row.coreml.status in ok or (not opts.coreml and row.coreml.status == SKIPPED))
        and all(row.backends.get(b, Stage()).status in ok for b in opts.backends)
    )


def first_reason(row: Row) -> str:
    for name, stage in (("Keras", row.keras), ("Core ML", row.coreml), *row.backends.items()):
        if stage.status not in PASSED | UNCHECKED | {SKIPPED}:
            return f"{name}: {stage.reason or stage.status}"
    return row.reason
