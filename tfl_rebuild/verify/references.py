"""Reference activations from another framework (PyTorch forward hooks, ONNX Runtime): loading
them, the user's map of names, and the layouts they may come in.

A refs file is an .npz, or a folder of .npy files, one array per layer, in execution order (the
order a forward hook records them; a folder's files are taken in name order, so number them).
Arrays whose key names a model input (its tensor name, its signature name, or the name without
TF's `serving_default_` / `:0`) are that input's value: `compare` feeds them to the model.
Loading allows no pickles and no array inflating past MAX_REF_BYTES.

`--map` names pairs: a .json file {ref key: TFLite tensor name}, or a sed-style substitution
`s/PATTERN/REPLACEMENT/` turning a ref key into a tensor name (Python `re`, `\\1` groups; any
delimiter that neither part holds: `s|a/b|c|`).

Layouts: a reference may be NCHW where TFLite is NHWC (rank 4) or NCL where TFLite is NLC (rank 3),
and either side may carry extra size-1 dimensions (`(1, 17, 64)` against FULLY_CONNECTED's
`(17, 64)`). `layouts(ref_shape, tflite_shape)` lists the transposes that make the shapes agree.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError
from tfl_rebuild.runtime.inputs import _npy_claim

MAX_REF_BYTES = 1 << 30  # one array, as its .npy header or its zip entry declares it
# name -> permutation taking a reference's axes to TFLite's.
TRANSPOSES = {
    4: (("NCHW->NHWC", (0, 2, 3, 1)), ("NHWC->NCHW", (0, 3, 1, 2))),
    3: (("NCL->NLC", (0, 2, 1)),),
}
AS_IS = "as is"


def is_references(path: str) -> bool:
    """A file (.npz) or folder of reference activations (what `compare`'s second argument may be)."""
    return path.lower().endswith(".npz") or Path(path).is_dir()


def load_refs(path: str) -> list[tuple[str, np.ndarray]]:
    """(key, array) in the file's order: an .npz, or a folder of .npy files (sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".npy" and f.is_file())
        if not files:
            raise InputError(f"{path}: a folder of references holds no .npy file")
        return [(f.stem, _npy(f)) for f in files]
    if not p.exists():
        raise InputError(f"{path}: no such file")
    try:
        if not zipfile.is_zipfile(p):  # else np.load reads an .npy or a pickle by its content
            raise InputError(f"{path}: not an .npz file (references are an .npz or a folder of .npy files)")
        with np.load(p, allow_pickle=False) as z:
            for info in z.zip.infolist():
                if info.file_size > MAX_REF_BYTES:
                    raise InputError(f"{path}[{info.filename}]: inflates to {info.file_size} bytes")
            refs = [(k, z[k]) for k in z.files]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    if not refs:
        raise InputError(f"{path}: holds no array")
    return [(k, _numeric(v, f"{path}[{k}]")) for k, v in refs]


def _npy(path: Path) -> np.ndarray:
    try:
        if _npy_claim(str(path)) > MAX_REF_BYTES:
            raise InputError(f"{path}: its header claims more than {MAX_REF_BYTES} bytes")
        return _numeric(np.load(path, allow_pickle=False), str(path))
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({str(exc).splitlines()[0]})") from None


def _numeric(value: np.ndarray, where: str) -> np.ndarray:
    if value.dtype.kind not in "biuf":
        raise InputError(f"{where}: a reference must hold numbers, not {value.dtype}")
    return value


def plain_name(name: str) -> str:
    """A tensor name without TF's signature decorations: `serving_default_x:0` -> `x`."""
    name = re.sub(r":\d+$", "", name)
    return name[len("serving_default_") :] if name.startswith("serving_default_") else name


def normalise(name: str) -> str:
    """Lower case, any run of separators ('.', '/', ':', ...) as one '/', ONNX's `_output_N`
    dropped: `/blocks/blocks.0/attn/Softmax_output_0` -> `blocks/blocks/0/attn/softmax`."""
    name = re.sub(r"_output_\d+$", "", plain_name(name))
    return re.sub(r"[^0-9a-z]+", "/", name.lower()).strip("/")


# -- the map ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NameMap:
    """--map: explicit {ref key: tensor name}, or a substitution from ref keys to tensor names."""

    table: dict[str, str] | None = None
    pattern: re.Pattern | None = None
    replacement: str = ""
    text: str = ""

    def target(self, key: str) -> str | None:
        if self.table is not None:
            return self.table.get(key)
        if self.pattern is not None and self.pattern.search(key):
            try:
                return self.pattern.sub(self.replacement, key)
            except (re.error, IndexError) as exc:
                raise InputError(f"--map {self.text!r}: {exc}") from None
        return None


def parse_map(text: str | None) -> NameMap | None:
    """A .json file of {ref key: tensor name}, or `s/PATTERN/REPLACEMENT/` (any delimiter)."""
    if not text:
        return None
    if text.endswith(".json") or Path(text).is_file():
        try:
            table = json.loads(Path(text).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"--map {text}: not a readable JSON file ({str(exc).splitlines()[0]})") from None
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise InputError(f"--map {text}: must be one JSON object of {{ref key: tensor name}} strings")
        return NameMap(table=table, text=text)
    if len(text) >= 4 and text[0] == "s" and not text[1].isalnum() and text.count(text[1]) == 3:
        _, pattern, replacement, flags = text.split(text[1])
        if flags:
            raise InputError(f"--map {text!r}: nothing may follow the last {text[1]!r}")
        try:
            return NameMap(pattern=re.compile(pattern), replacement=replacement, text=text)
        except re.error as exc:
            raise InputError(f"--map {text!r}: bad pattern ({exc})") from None
    raise InputError(f"--map {text!r}: give a .json file or a substitution s/PATTERN/REPLACEMENT/")


# -- layouts ------------------------------------------------------------------------------------------


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(int(d) for d in shape if int(d) != 1)


def layouts(ref_shape, tflite_shape) -> list[tuple[str, tuple[int, ...] | None]]:
    """(layout name, permutation or None) that turn a reference of `ref_shape` into
    `tflite_shape` (size-1 dimensions aside); as-is first."""
    want = _squeezed(tflite_shape)
    if int(np.prod(ref_shape)) != int(np.prod(tflite_shape)):
        return []
    out: list[tuple[str, tuple[int, ...] | None]] = []
    if _squeezed(ref_shape) == want:
        out.append((AS_IS, None))
    for name, perm in TRANSPOSES.get(len(ref_shape), ()):
        moved = tuple(ref_shape[k] for k in perm)
        if _squeezed(moved) == want:  # also when the shape is the same: the values decide
            out.append((name, perm))
    return out


def arrange(value: np.ndarray, perm: tuple[int, ...] | None, shape) -> np.ndarray:
    """The reference in TFLite's layout and shape."""
    value = np.asarray(value)
    if perm is not None:
        value = np.transpose(value, perm)
    return np.ascontiguousarray(value).reshape(tuple(int(d) for d in shape))


def model_inputs(
    refs: list[tuple[str, np.ndarray]], details: list[dict], signature_names: dict[int, str]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """{input name: value in the input's layout} for the refs that name a model input, and a
    note per input ('input' from refs['input'], NCHW->NHWC)."""
    by_key = {k: v for k, v in refs}
    values: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for d in details:
        names = [d["name"], plain_name(d["name"]), signature_names.get(int(d["index"]), "")]
        key = next((n for n in names if n and n in by_key), None)
        if key is None:
            continue
        value = by_key[key]
        options = layouts(value.shape, d["shape"])
        if not options:
            raise InputError(
                f"refs[{key!r}] has shape {list(value.shape)}, the model input {d['name']!r} {list(d['shape'])}"
            )
        name, perm = options[0]
        values[d["name"]] = arrange(value, perm, d["shape"])
        notes.append(f"{d['name']!r} from refs[{key!r}]" + ("" if perm is None else f" ({name})"))
    return values, notes
