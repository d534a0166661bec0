"""`tfl-rebuild dump`: one run of the patched model, written out as one .npy per tensor,
index.json and summary.csv.

The output directory is checked before anything runs, and we touch only what is ours:
- a new directory is created with the mode any new directory gets (the umask's);
- in an existing one every file goes to a hidden temporary beside its target and replaces it only
  when all of them are written (index.json last); the directory itself is never moved or chmod-ed,
  so `-o .` works;
- the files an earlier dump's index.json lists (with the names a dump gives) are ours: replaced,
  or removed when this dump does not write them again. Anything else is never deleted or replaced;
  a directory holding other files is refused unless `--force` (write beside them).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import OutputError, RuntimeUnavailableError
from tfl_rebuild.fileio import atomic_output, writable_file
from tfl_rebuild.runtime.inputs import InputOptions
from tfl_rebuild.runtime.outputter import DumpEntry, PatchedModel, TensorDump
from tfl_rebuild.text import printable
from tfl_rebuild.tflite.ir import Model

DUMP_TOOL = "tfl-rebuild dump"
INDEX, SUMMARY = "index.json", "summary.csv"
# The names a dump gives its files: an index.json listing anything else does not make it ours.
_OUR_FILE = re.compile(r"(\d{4,}_[A-Za-z0-9_.-]+|input_\d+_[A-Za-z0-9_.-]+)\.npy")
_CSV_FIELDS = [
    "op_index",
    "op_type",
    "tensor_index",
    "tensor_name",
    "file",
    "shape",
    "dtype",
    "min",
    "max",
    "mean",
    "std",
    "nonfinite",
    "scale",
    "zero_point",
    "dequantized_file",
    "dq_min",
    "dq_max",
    "dq_mean",
    "dq_std",
]


# -- file names -------------------------------------------------------------------------------------


def sanitize(name: str, limit: int = 80) -> str:
    """A tensor name as a safe file name part: no separators, no dots in front, bounded length."""
    # Fused names read "out;in1;in2..." and run long: the first part names the tensor itself.
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.split(";")[0] or name).strip("._-")
    return safe[:limit].rstrip("._-") or "tensor"


def file_names(entries: Iterable[DumpEntry], n_ops: int) -> dict[str, str]:
    """Entry key -> '<op index, zero-padded>_<sanitized name>', unique even on case-blind disks
    (and never ending in '.dequant', the suffix of the dequantized companions)."""
    width = max(4, len(str(max(n_ops - 1, 0))))
    out, taken = {}, set()
    for e in entries:
        base = f"{e.op_index:0{width}d}_{sanitize(e.name)}"
        if base.lower().endswith(".dequant"):
            base += "_"
        stem, k = base, 0
        while stem.lower() in taken:
            k += 1
            stem = f"{base}_t{e.tensor_index}" + (f"_{k}" if k > 1 else "")
        taken.add(stem.lower())
        out[e.key] = stem
    return out


def input_file(i: int, name: str) -> str:
    return f"input_{i}_{sanitize(name)}.npy"


def stats(a: np.ndarray) -> dict[str, float | int | None]:
    """min/max/mean/std over the finite values, and how many are not finite. A complex tensor
    (RFFT2D's output) is summarised by its magnitude, as "of" says (its real part alone is half
    the story, and numpy would warn that the imaginary part was dropped)."""
    if np.iscomplexobj(a):
        return {**stats(np.abs(a)), "of": "magnitude"}
    values = a.astype(np.float64, copy=False).ravel()
    finite = np.isfinite(values)
    good = values if finite.all() else values[finite]
    if not good.size:
        return {"min": None, "max": None, "mean": None, "std": None, "nonfinite": int(values.size)}
    return {
        "min": float(good.min()),
        "max": float(good.max()),
        "mean": float(good.mean()),
        "std": float(good.std()),
        "nonfinite": int(values.size - good.size),
    }


# -- the output directory -------------------------------------------------------------------------


@dataclass
class OutDir:
    """What is in the output directory before we write: ours (an earlier dump's) and the rest."""

    path: Path
    exists: bool
    ours: set[str] = field(default_factory=set)  # files our earlier dump wrote (index.json included)
    foreign: list[str] = field(default_factory=list)  # everything else, never touched


def _earlier_dump(out: Path) -> set[str]:
    """The files an earlier dump's index.json lists that are still what it wrote: a plain name of
    ours, a regular file, and an .npy of the recorded shape and dtype. Empty without such an index."""
    try:
        index = json.loads((out / INDEX).read_text("utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(index, dict) or index.get("tool") != DUMP_TOOL:
        return set()
    ours = {n for n in (INDEX, SUMMARY) if (out / n).is_file() and not (out / n).is_symlink()}
    for key in ("inputs", "tensors"):
        for rec in index.get(key) or ():
            if not isinstance(rec, dict):
                continue
            for k in ("file", "dequantized_file"):
                name = rec.get(k)
                if isinstance(name, str) and _is_ours(out, name, rec, dequantized=k != "file"):
                    ours.add(name)
    return ours


def _is_ours(out: Path, name: str, rec: dict, dequantized: bool) -> bool:
    if not _OUR_FILE.fullmatch(name.removesuffix(".dequant.npy") + ".npy" if dequantized else name):
        return False
    path = out / name
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
    except (OSError, ValueError, SyntaxError, TypeError):
        return False
    want = "float32" if dequantized else rec.get("dtype")
    return list(shape) == rec.get("shape") and str(dtype) == want


def _probe(directory: Path) -> None:
    """Refuse a directory we cannot create files in (read-only, /proc, ...) before any work."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tfl-rebuild.", suffix=".probe", dir=directory)
    except OSError as exc:
        raise OutputError(f"{directory}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def check_outdir(path: str | Path, force: bool = False) -> OutDir:
    """Refuse, before the run, an output directory we cannot or may not write; say what is ours."""
    out = Path(path)
    if not out.exists() and not out.is_symlink():
        parent = out.parent
        while not parent.exists():  # the nearest existing ancestor must be a writable directory
            parent = parent.parent
        if not parent.is_dir():
            raise OutputError(f"{parent}: is a file, not a directory")
        _probe(parent)
        return OutDir(out, False)
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    try:
        present = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise OutputError(f"{out}: cannot list the directory ({exc.strerror or exc})") from None
    ours = _earlier_dump(out)
    foreign = [n for n in present if n not in ours]
    if foreign and not force:
        what = f"holds {len(foreign)} file(s) no earlier dump wrote, e.g. {printable(foreign[0], 80)!r}"
        raise OutputError(f"{out}: {what}; choose another -o, or --force to write beside them")
    _probe(out)
    return OutDir(out, True, ours, foreign)


def _refuse_clashes(target: OutDir, patched: PatchedModel, input_details: list[dict]) -> None:
    """With --force, before the run: no file this dump writes may replace one that is not ours."""
    if not target.foreign:
        return
    stems = file_names(patched.entries, len(patched.model.main.operators)).values()
    planned = {INDEX, SUMMARY, *(f"{s}{x}" for s in stems for x in (".npy", ".dequant.npy"))}
    planned.update(input_file(i, d["name"]) for i, d in enumerate(input_details))
    foreign = {n.lower(): n for n in target.foreign}  # a case-blind disk: 'A.npy' is 'a.npy'
    clash = sorted(foreign[n.lower()] for n in planned if n.lower() in foreign)
    if clash:
        raise OutputError(
            f"{target.path / clash[0]}: exists and is not from an earlier dump; this dump would replace "
            f"it{f' (and {len(clash) - 1} more)' if len(clash) > 1 else ''}: choose another -o"
        )


# -- writing --------------------------------------------------------------------------------------


class _Files:
    """Files written to hidden temporaries in `out`, renamed over their targets only by `commit`."""

    def __init__(self, target: OutDir):
        self.target, self.out = target, target.path
        self.made_dir = False
        self.foreign = {n.lower() for n in target.foreign}
        self.pending: dict[str, str] = {}  # final name -> temporary path

    def __enter__(self):
        if not self.target.exists:
            try:
                self.out.mkdir(parents=True)
            except OSError as exc:
                raise OutputError(
                    f"{self.out}: cannot create the directory ({exc.strerror or exc})"
                ) from None
            self.made_dir = True
        return self

    def path(self, name: str) -> str:
        if name in self.pending:
            raise AssertionError(f"{name} written twice")
        if name.lower() in self.foreign:
            raise OutputError(f"{self.out / name}: exists and is not from an earlier dump; not replaced")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.out)
        os.close(fd)
        self.pending[name] = tmp
        return tmp

    def save(self, name: str, value: np.ndarray) -> None:
        with open(self.path(name), "wb") as f:
            np.save(f, value, allow_pickle=False)

    def text(self, name: str, text: str) -> None:
        with open(self.path(name), "w", encoding="utf-8", newline="") as f:
            f.write(text)

    def commit(self) -> None:
        mask = os.umask(0)
        os.umask(mask)
        written = set(self.pending)
        for name in [*sorted(written - {INDEX}), *([INDEX] if INDEX in written else [])]:  # index last
            tmp = self.pending[name]
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; these are ordinary files
            os.replace(tmp, self.out / name)
            del self.pending[name]
        kept = {n.lower() for n in written}  # on a case-blind disk 'A.npy' may be the new 'a.npy'
        for stale in self.target.ours:
            if stale.lower() not in kept:
                (self.out / stale).unlink(missing_ok=True)  # ours, listed by our earlier index

    def __exit__(self, kind, exc, tb):
        for tmp in self.pending.values():
            Path(tmp).unlink(missing_ok=True)
        if kind is not None and self.made_dir:
            try:
                self.out.rmdir()  # ours, and empty again
            except OSError:
                pass
        return False


def write_dump(
    result: TensorDump,
    outdir: str | Path,
    *,
    model: Model,
    meta: Mapping | None = None,
    skipped: Iterable[DumpEntry] = (),
    progress: bool = False,
    force: bool = False,
) -> Path:
    """One .npy per tensor (+ .dequant.npy for quantized ones), inputs, index.json and summary.csv.

    Nothing replaces a file of an earlier dump until every new file is written, so an interrupted
    or failed dump leaves the directory as it was (see the module's notes)."""
    target = check_outdir(outdir, force)
    names = file_names(result.entries.values(), len(model.main.operators))
    records, rows, inputs = [], [], []
    with _Files(target) as files, _progress(progress, len(result) + len(result.inputs)) as advance:
        for i, (name, value) in enumerate(result.inputs.items()):
            file = input_file(i, name)
            files.save(file, value)
            inputs.append({"name": name, "file": file, "shape": list(value.shape), "dtype": str(value.dtype)})
            advance()
        for key, value in result.items():
            e = result.entries[key]
            rec = {
                "op_index": e.op_index,
                "op_type": e.op_type,
                "tensor_index": e.tensor_index,
                "name": e.name,
                "key": key,
                "file": f"{names[key]}.npy",
                "shape": list(value.shape),
                "dtype": str(value.dtype),
                "quantization": e.quantization.to_dict() if e.quantization is not None else None,
                "stats": stats(value),
            }
            files.save(rec["file"], value)
            deq = e.dequantize(value)
            if deq is not None:
                rec["dequantized_file"] = f"{names[key]}.dequant.npy"
                rec["dequantized_stats"] = stats(deq)
                files.save(rec["dequantized_file"], deq)
            records.append(rec)
            rows.append(_csv_row(rec))
            advance()
        index = {
            "tool": DUMP_TOOL,
            **(meta or {}),
            "model": Path(model.path).name if model.path else "",
            "sha256": model.sha256,
            "inputs": inputs,
            "tensors": records,
            "skipped": [
                {
                    "name": e.name,
                    "op_index": e.op_index,
                    "op_type": e.op_type,
                    "reason": "computed from constants only; XNNPACK does not write it",
                }
                for e in skipped
            ],
        }
        buf = io.StringIO()
        writer = csv.DictWriter(buf, _CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files.text(SUMMARY, buf.getvalue())
        files.text(INDEX, json.dumps(index, indent=1) + "\n")
        files.commit()
    return target.path


def _cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a quote in front."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_row(rec: dict) -> dict:
    q, s, d = rec["quantization"], rec["stats"], rec.get("dequantized_stats") or {}
    join = lambda v: ";".join(str(x) for x in v)  # noqa: E731
    return {
        "op_index": rec["op_index"],
        "op_type": _cell(rec["op_type"]),
        "tensor_index": rec["tensor_index"],
        "tensor_name": _cell(rec["name"]),
        "file": rec["file"],
        "shape": "x".join(map(str, rec["shape"])),
        "dtype": rec["dtype"],
        **{k: s[k] for k in ("min", "max", "mean", "std", "nonfinite")},
        "scale": join(q["scale"]) if q else "",
        "zero_point": join(q["zero_point"]) if q else "",
        "dequantized_file": rec.get("dequantized_file", ""),
        **{f"dq_{k}": d.get(k, "") for k in ("min", "max", "mean", "std")},
    }


class _progress:
    """A rich progress bar on stderr (or nothing); the context value advances it by one."""

    def __init__(self, show: bool, total: int):
        self.show, self.total, self.bar = show, total, None

    def __enter__(self):
        if not self.show:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("writing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task("write", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


# -- the command ----------------------------------------------------------------------------------


@dataclass
class Options:
    inputs: InputOptions = InputOptions()
    seed: int | None = None
    select: str | None = None
    ops: tuple[str, ...] = ()
    save_patched: str | None = None
    xnnpack: bool = False
    num_threads: int | None = None
    signature: str | None = None
    input_shapes: tuple[str, ...] = ()
    force: bool = False


def run(model_path: str, outdir: str | None, opts: Options, echo: Callable[..., None]) -> None:
    """The dump command: every output path checked first, then read, patch, run once, write.
    `echo(text, err=True)` shows a line to the user (on stderr unless err=False)."""
    from tfl_rebuild.rebuild.limits import check_sizes
    from tfl_rebuild.runtime import outputter
    from tfl_rebuild.runtime.views import make_view
    from tfl_rebuild.tflite.reader import read_model

    if outdir:
        check_outdir(outdir, opts.force)  # refuse before running, not after
    if opts.save_patched:
        writable_file(opts.save_patched)
        _probe(Path(opts.save_patched).parent)
    ops = [o for group in opts.ops for o in group.split(",")]
    view = read_model(model_path)
    if opts.signature or opts.input_shapes:
        view = make_view(
            view, opts.signature, opts.input_shapes, fix_shapes=False, explicit_state=False
        ).model
    check_sizes(view)  # a run allocates every tensor: refuse absurd shapes before it
    patched = outputter.prepare(view, opts.select, ops, xnnpack=opts.xnnpack)
    if opts.save_patched:
        with atomic_output(opts.save_patched) as f:
            patched.write(f)
        echo(
            f"wrote the patched model ({len(patched.entries)} tensors exposed) to {opts.save_patched}",
            err=True,
        )
    if not outdir:
        return
    _run_and_write(patched, view, outdir, opts, echo)


def _run_and_write(patched: PatchedModel, view: Model, outdir: str, opts: Options, echo) -> None:
    from tfl_rebuild.runtime import outputter
    from tfl_rebuild.runtime.views import dynamic_hint

    try:
        dumper = outputter.Dumper(patched, opts.num_threads)
    except RuntimeUnavailableError as exc:
        hint = dynamic_hint(view) if not opts.input_shapes else ""
        raise RuntimeUnavailableError(f"{exc}{hint}") from None
    _refuse_clashes(check_outdir(outdir, opts.force), patched, dumper.input_details)
    seed = opts.seed
    if not opts.inputs.specs and seed is None:
        seed = 0
        echo("no --input: using random inputs (--random 0)", err=True)
    notes: dict[str, str] = {}
    values, sources = opts.inputs.load(dumper.input_details, seed, notes)
    for name, did in notes.items():
        if opts.inputs.specs:  # what was done to a given file (resized, normalised, cast, ...)
            echo(f"input {printable(name)}: {printable(did)}", err=True)
    start = time.perf_counter()
    result = dumper.run(values, copy=False)  # written out before any other run
    ms = (time.perf_counter() - start) * 1e3
    if len(result) != len(patched.entries):  # a key collision would drop tensors silently
        raise AssertionError(f"{len(patched.entries)} tensors selected, {len(result)} returned")
    meta = {
        "runtime": dumper.runtime_name,
        "kernels": "xnnpack" if opts.xnnpack else "builtin",
        "input_sources": sources,
        "input_notes": notes,
        "run_ms": round(ms, 2),
    }
    write_dump(
        result,
        outdir,
        model=patched.model,
        meta=meta,
        skipped=patched.skipped,
        progress=sys.stderr.isatty(),
        force=opts.force,
    )
    note = (
        f"; left out {len(patched.skipped)} constant-only tensors XNNPACK does not write"
        if patched.skipped
        else ""
    )
    echo(f"dumped {len(result)} tensors from one run ({ms:.1f} ms) to {outdir}{note}", err=False)
