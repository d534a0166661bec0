"""Which models `check` runs, the name each row shows, and the folder each keeps under --keep.

A row's name is the model's path relative to the PATH argument it was found under (`a/model.tflite`
below `check DIR`; a file given as PATH: its file name), qualified by that argument where two rows
would otherwise read the same. Its --keep folder is that path flattened into one safe name:
components joined by `__`, the `.tflite` suffix dropped, every character but ASCII letters, digits,
`-`, `_` and `.` made `_`, no leading dot (so never `.` or `..`), unique (case-insensitively, so
also on macOS): `a/model.tflite` -> `KEEP/a__model/`. Nothing is written outside KEEP.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tfl_rebuild.errors import InputError, TflRebuildError
from tfl_rebuild.text import printable

SUFFIX = ".tflite"
NAME_CHARS = 100  # a keep folder's name stays well under every file system's limit


@dataclass(frozen=True)
class Found:
    path: Path  # the file to read
    rel: str  # its path relative to the PATH argument it was found under (posix), as the file system has it

    @property
    def name(self) -> str:
        """The row's name: `rel` with control characters escaped (text.printable)."""
        return printable(self.rel)


def collect_models(paths: list[str]) -> list[Found]:
    """Files as given, directories as every *.tflite below them (sorted); one-line errors."""
    found: list[tuple[Path, str, str]] = []  # (path, relative to its argument, qualified by it)
    for p in paths:
        path = Path(p)
        if path.is_dir():
            models = sorted(m for m in path.rglob(f"*{SUFFIX}") if m.is_file())
            if not models:
                raise InputError(f"{printable(p)}: no .tflite files in this directory")
            for m in models:
                rel = m.relative_to(path).as_posix()
                found.append((m, rel, (PurePosixPath(path.as_posix()) / rel).as_posix()))
        elif path.is_file():
            found.append((path, path.name, path.as_posix()))
        else:
            raise InputError(f"{printable(p)}: no such file or directory")
    unique: dict[Path, tuple[Path, str, str]] = {}
    for entry in found:
        unique.setdefault(entry[0].resolve(), entry)
    entries = list(unique.values())
    count: dict[str, int] = {}
    for _, rel, _ in entries:
        count[rel] = count.get(rel, 0) + 1
    return [Found(m, rel if count[rel] == 1 else qualified) for m, rel, qualified in entries]


def as_found(model: Found | Path) -> Found:
    return model if isinstance(model, Found) else Found(Path(model), Path(model).name)


def safe_component(text: str) -> str:
    """One path component that is only itself: ASCII letters, digits, -, _ and . (others `_`), no
    leading dot (never `.`, `..` or hidden), never empty."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)
    stripped = safe.lstrip(".")
    return "_" * (len(safe) - len(stripped)) + stripped or "_"


def keep_name(rel: str) -> str:
    """The --keep folder of the model at `rel`: its components flattened into one safe name."""
    parts = [c for c in PurePosixPath(rel).parts if c not in ("/", "", ".", "..")]
    if parts and parts[-1].lower().endswith(SUFFIX):
        parts[-1] = parts[-1][: -len(SUFFIX)]
    name = "__".join(safe_component(c) for c in parts) or "_"
    if len(name) > NAME_CHARS:
        name = f"{name[: NAME_CHARS - 9]}_{hashlib.sha256(rel.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return name


def keep_names(models: list[Found]) -> list[str]:
    """One folder name per model under --keep (keep_name), numbered `_2`, `_3` where two would be
    the same; a number never takes a name another model has by itself."""
    bases = [keep_name(m.rel) for m in models]
    natural = {b.lower() for b in bases}
    taken: set[str] = set()
    names = []
    for base in bases:
        name, k = base, 1
        while name.lower() in taken or (name != base and name.lower() in natural):
            k += 1
            name = f"{base}_{k}"
        taken.add(name.lower())
        names.append(name)
    return names


def shapes_for(model, specs) -> tuple[str, ...]:
    """The --input-shape specs that fit this model (views.parse_input_shapes takes them); check runs
    many models, so a spec naming another model's input is left out here rather than refused."""
    from tfl_rebuild.runtime.views import parse_input_shapes

    fitting = []
    for spec in specs:
        try:
            parse_input_shapes(model, [spec])
        except InputError:
            continue
        fitting.append(spec)
    return tuple(fitting)


def unfit_input_shapes(models: list[Found], specs) -> list[str]:
    """The specs no model takes (a typo would otherwise change nothing, silently). Models that do
    not read are skipped here: their rows say why."""
    from tfl_rebuild.tflite.reader import read_model

    left = list(specs)
    for found in models:
        if not left:
            break
        try:
            model = read_model(str(found.path))
        except TflRebuildError:
            continue
        left = [s for s in left if not shapes_for(model, [s])]
    return left
