"""Model inputs from what a user has at hand: .npy / .npz arrays, image files, or a random seed.

Every value is checked against the interpreter's input details (shape, dtype) so a wrong file is a
one-line `InputError`, never a runtime crash. Images follow TFLite's label_image example: resize to
the input size, then `(pixel - mean) / std` for float inputs (default mean = std = 127.5, i.e.
[-1, 1]), raw pixels for uint8 inputs. Pillow is imported only when an image is read.

Nothing is changed without a word: an integer array given to a float input is refused unless the
caller passes `cast=True` (the command's `--cast`), and `load_inputs(..., notes={})` fills, per
input name, one line of what was done to the value (resized, normalized, cast, quantized, a batch
dimension added), for the command to print and to write into index.json.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import InputError, RuntimeUnavailableError

IMAGE_SUFFIXES = frozenset(
    [".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"]
)
# What a file may hold before we allocate it (a header or a zip entry can claim terabytes):
# an input's own size times 8 (float64 for float32, int64 for int8), else (dynamic dims) 1 GiB.
SIZE_FACTOR = 8
DYNAMIC_INPUT_BYTES = 1 << 30
MAX_IMAGE_PIXELS = 64_000_000  # decoded images (PNG bombs: a small file, a huge bitmap)


@dataclass(frozen=True)
class ImageOptions:
    mean: tuple[float, ...] | None = None  # one value, or one per channel
    std: tuple[float, ...] | None = None
    scale: float | None = None  # x * scale instead of x / std (e.g. 1/255)
    bgr: bool = False

    @property
    def given(self) -> bool:
        return self.mean is not None or self.std is not None or self.scale is not None


@dataclass(frozen=True)
class InputOptions:
    """What a command was told about its inputs: files (`-i [NAME=]FILE`), how images are
    normalised, and whether integer arrays may be cast to a float input (`--cast`)."""

    specs: tuple[str, ...] = ()
    image: ImageOptions = ImageOptions()
    cast: bool = False

    def load(
        self, details: Sequence[dict], seed: int | None, notes: dict[str, str] | None = None
    ) -> tuple[list[np.ndarray], list[str]]:
        return load_inputs(self.specs, details, seed=seed, image=self.image, cast=self.cast, notes=notes)


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    """'127.5' or '123.7,116.3,103.5' -> floats; None stays None."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{what} {text!r} is not a number or a comma-separated list of numbers") from None
    if not all(np.isfinite(values)):
        raise InputError(f"{what} {text!r} must be finite")
    return values


# -- matching values to inputs ----------------------------------------------------------------------


def _names(details: Sequence[dict]) -> list[str]:
    return [d["name"] for d in details]


def resolve_specs(specs: Sequence[str], details: Sequence[dict]) -> list[tuple[str | None, str]]:
    """`--input` values -> (input name or None, file path); `name=file` only when name is an input."""
    names = set(_names(details))
    out = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if sep and name in names:
            out.append((name, path))
        elif sep and not Path(spec).exists():
            raise InputError(
                f"--input {spec!r}: the model has no input named {name!r} (inputs: {', '.join(sorted(names))})"
            )
        else:
            out.append((None, spec))
    return out


def load_inputs(
    specs: Sequence[str],
    details: Sequence[dict],
    *,
    seed: int | None = None,
    image: ImageOptions = ImageOptions(),
    cast: bool = False,
    notes: dict[str, str] | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """One array per model input, in input order, and where each came from.

    Inputs named by no spec are random (seeded) when `seed` is given, else an error. An integer
    or bool array for a float input is an InputError naming `--cast`, unless `cast`. When
    `notes` is a dict, it gets {input name: what was done to its value} for every input.
    """
    names = _names(details)
    by_name = {d["name"]: d for d in details}
    values: dict[str, tuple[np.ndarray, str]] = {}

    def assign(name: str, value: np.ndarray, source: str, did: list[str] | None = None) -> None:
        if name in values:
            raise InputError(f"input {name!r} is given twice ({values[name][1]} and {source})")
        did = did if did is not None else []
        values[name] = (conform(value, by_name[name], source, cast=cast, did=did), source)
        if notes is not None:
            notes[name] = f"{source}: {', '.join(did) or 'as given'}"

    for name, path in resolve_specs(specs, details):
        if Path(path).suffix.lower() == ".npz":
            limit = max(max_bytes(by_name[n]) for n in ([name] if name else names))
            for target, (key, arr) in _npz_for(path, name, names, limit).items():
                assign(target, arr, f"{path}[{key}]")
            continue
        if name is None:
            if len(names) > 1:
                raise InputError(
                    f"the model has {len(names)} inputs ({', '.join(names)}): name each one, --input NAME={path}"
                )
            name = names[0]
        did: list[str] = []
        assign(name, load_file(path, by_name[name], image, did), path, did)

    missing = [n for n in names if n not in values]
    if missing and seed is None:
        raise InputError(
            f"no value for input(s) {', '.join(missing)}: pass --input NAME=FILE or --random SEED"
        )
    if missing:
        rng = np.random.default_rng(seed)
        randoms = [_random(d, rng) for d in details]  # drawn for all: --random alone = runtime.random_inputs
        for n, r in zip(names, randoms):
            if n not in values and notes is not None:
                notes[n] = f"random(seed={seed}): {'x'.join(map(str, r.shape)) or 'scalar'} {r.dtype}"
            values.setdefault(n, (r, f"random(seed={seed})"))
    return [values[n][0] for n in names], [values[n][1] for n in names]


def from_arrays(inputs, details: Sequence[dict], seed: int = 0) -> list[np.ndarray]:
    """Python-API inputs (None, one array, a list in input order, or {name: array}) -> checked list."""
    names = _names(details)
    if inputs is None:
        rng = np.random.default_rng(seed)
        return [_random(d, rng) for d in details]
    if isinstance(inputs, Mapping):
        if set(inputs) != set(names):
            raise InputError(f"inputs must be named {names}, got {sorted(inputs)}")
        inputs = [inputs[n] for n in names]
    elif isinstance(inputs, np.ndarray):
        inputs = [inputs]
    inputs = list(inputs)
    if len(inputs) != len(details):
        raise InputError(f"the model takes {len(details)} input(s) ({', '.join(names)}), got {len(inputs)}")
    return [conform(np.asarray(v), d, f"input {i}") for i, (v, d) in enumerate(zip(inputs, details))]


def _random(detail: dict, rng: np.random.Generator) -> np.ndarray:
    from tfl_rebuild.runtime.interpreter import random_input  # runtime imports no TensorFlow at module level

    return random_input(detail, rng)


# -- files ------------------------------------------------------------------------------------------


def _open_error(path: str, exc: Exception) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return InputError(f"{path}: is a directory, not an input file")
    return InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})")


def max_bytes(detail: dict) -> int:
    """The most bytes a file may hold for this input (see SIZE_FACTOR)."""
    sig = [int(v) for v in detail.get("shape_signature", detail["shape"])]
    if any(d < 0 for d in sig) or not len(detail["shape"]) == len(sig):
        return DYNAMIC_INPUT_BYTES
    n = 1
    for d in detail["shape"]:
        n *= max(int(d), 1)
    try:
        size = np.dtype(detail["dtype"]).itemsize or 8
    except TypeError:
        size = 8
    return max(n * size * SIZE_FACTOR, 1 << 16)


def _too_big(path: str, what: str, nbytes: int, limit: int) -> InputError:
    return InputError(
        f"{path}: {what} {nbytes} bytes, more than the model's input can take ({limit} bytes at most)"
    )


def _npz_for(
    path: str, name: str | None, names: list[str], limit: int = DYNAMIC_INPUT_BYTES
) -> dict[str, tuple[str, np.ndarray]]:
    """Input name -> (.npz key, array): matched by key, or the only array for a single target."""
    try:
        with np.load(path, allow_pickle=False) as z:
            for info in z.zip.infolist():  # the sizes the zip declares: it never inflates past them
                if info.file_size > limit:
                    raise _too_big(f"{path}[{info.filename}]", "inflates to", info.file_size, limit)
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    except OSError as exc:
        raise _open_error(path, exc) from None
    only = next(iter(arrays.items())) if len(arrays) == 1 else None
    if name is not None:
        if name in arrays:
            return {name: (name, arrays[name])}
        if only:
            return {name: only}
        raise InputError(f"{path}: has no array named {name!r} (arrays: {', '.join(sorted(arrays))})")
    if len(names) == 1 and only:
        return {names[0]: only}
    unknown = sorted(set(arrays) - set(names))
    if unknown or not arrays:
        raise InputError(
            f"{path}: array(s) {', '.join(unknown) or '(none)'} match no model input (inputs: {', '.join(names)})"
        )
    return {k: (k, v) for k, v in arrays.items()}


def load_file(
    path: str, detail: dict, image: ImageOptions = ImageOptions(), did: list[str] | None = None
) -> np.ndarray:
    """One input value from an .npy file or an image file (not yet conformed); what was done to
    an image is appended to `did`."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return load_image(path, detail, image, did)
    if suffix != ".npy":
        raise InputError(
            f"{path}: unknown input file type; use .npy, .npz or an image ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":  # else np.load guesses pickle and blames allow_pickle
            raise InputError(f"{path}: not a readable .npy file (no NUMPY header)")
        claimed = _npy_claim(path)
        if claimed > max_bytes(detail):
            raise _too_big(path, "its header claims", claimed, max_bytes(detail))
        value = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    except OSError as exc:
        raise _open_error(path, exc) from None
    return value


def _npy_claim(path: str) -> int:
    """The bytes an .npy header says its array holds (read before anything is allocated)."""
    with open(path, "rb") as f:
        fmt = np.lib.format
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read(f)  # ValueError when malformed
    n = 1
    for d in shape:
        n *= int(d)
    return n * dtype.itemsize


def _image_hw_c(detail: dict) -> tuple[int, int, int]:
    shape = [int(v) for v in detail["shape"]]
    sig = [int(v) for v in detail.get("shape_signature", shape)]
    sig = sig if len(sig) == len(shape) else shape
    if len(sig) == 4 and sig[0] in (1, -1) and shape[3] in (1, 3, 4):
        return sig[1], sig[2], shape[3]
    if len(sig) == 3 and shape[2] in (1, 3, 4):
        return sig[0], sig[1], shape[2]
    raise InputError(f"input {detail['name']!r} has shape {shape}, not an NHWC image with 1, 3 or 4 channels")


def load_image(
    path: str, detail: dict, opts: ImageOptions = ImageOptions(), did: list[str] | None = None
) -> np.ndarray:
    """An image resized (bilinear) to the input's height/width and normalized for its dtype; each
    step taken is appended to `did` ('resized 640x480 -> 224x224 (bilinear)', ...)."""
    did = did if did is not None else []
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise RuntimeUnavailableError("reading image inputs needs Pillow: pip install pillow") from None
    import warnings

    h, w, c = _image_hw_c(detail)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below
            img = Image.open(path)
    except FileNotFoundError as exc:
        raise _open_error(path, exc) from None
    except Image.DecompressionBombError:
        raise InputError(f"{path}: the image is larger than {MAX_IMAGE_PIXELS} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    if img.width * img.height > MAX_IMAGE_PIXELS:
        img.close()
        raise InputError(
            f"{path}: the image has {img.width} x {img.height} pixels, more than {MAX_IMAGE_PIXELS}"
        )
    try:
        with img:
            mode = {1: "L", 3: "RGB", 4: "RGBA"}[c]
            if img.mode != mode:
                did.append(f"{img.mode} -> {mode}")
            img = img.convert(mode)
            size = (w if w > 0 else img.width, h if h > 0 else img.height)
            if img.size != size:
                did.append(f"resized {img.width}x{img.height} -> {size[0]}x{size[1]} (WxH, bilinear)")
                img = img.resize(size, Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8).reshape(size[1], size[0], c)
    except FileNotFoundError as exc:
        raise _open_error(path, exc) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    if opts.bgr and c >= 3:
        pixels = np.concatenate([pixels[..., 2::-1], pixels[..., 3:]], axis=-1)
        did.append("channels as BGR")
    pixels = pixels[None] if len(detail["shape"]) == 4 else pixels
    return normalize(pixels, detail, opts, path, did)


def _nums(v) -> str:
    return ",".join(f"{float(x):g}" for x in np.atleast_1d(v))


def normalize(
    pixels: np.ndarray, detail: dict, opts: ImageOptions, source: str, did: list[str] | None = None
) -> np.ndarray:
    did = did if did is not None else []
    dtype = np.dtype(detail["dtype"])
    c = pixels.shape[-1]
    if dtype.kind in "iu" and not opts.given:
        # label_image feeds raw pixels to uint8 models; int8 models take the same values shifted.
        if dtype == np.uint8:
            did.append("raw pixels (uint8)")
            return pixels
        did.append(f"pixel - 128 as {dtype}")
        return (pixels.astype(np.int16) - 128).astype(dtype)
    for what, v in (("--mean", opts.mean), ("--std", opts.std)):
        if v is not None and len(v) not in (1, c):
            raise InputError(f"{what} has {len(v)} values but {source} has {c} channels")
    if opts.scale is not None and opts.std is not None:
        raise InputError("--scale and --std both set the divisor: use one")
    default = 0.0 if opts.scale is not None else 127.5
    mean = np.asarray(opts.mean if opts.mean is not None else (default,), np.float32)
    if opts.scale is not None:
        values = (pixels.astype(np.float32) - mean) * np.float32(opts.scale)
        did.append(f"(pixel - {_nums(mean)}) * {opts.scale:g}")
    else:
        std = np.asarray(opts.std if opts.std is not None else (127.5,), np.float32)
        if not np.all(std):
            raise InputError("--std must not be zero")
        values = (pixels.astype(np.float32) - mean) / std
        did.append(f"(pixel - {_nums(mean)}) / {_nums(std)}")
    return values  # conform() casts floats, and quantizes them for quantized integer inputs


# -- checking ---------------------------------------------------------------------------------------


def conform(
    value: np.ndarray, detail: dict, source: str, cast: bool = True, did: list[str] | None = None
) -> np.ndarray:
    """`value` in the input's dtype and shape, or an InputError saying what does not fit.

    A missing batch dimension of 1 is added; float values for a quantized integer input are
    quantized with its scale and zero point; other dtype changes must not lose values. Integer
    or bool values for a float input are refused unless `cast` (raw 0..255 pixels would reach a
    model that wants [-1, 1] without a word). What was done is appended to `did`.
    """
    did = did if did is not None else []
    name = detail["name"]
    want = np.dtype(detail["dtype"])
    shape = [int(v) for v in detail["shape"]]
    sig = [int(v) for v in detail.get("shape_signature", shape)]
    sig = sig if len(sig) == len(shape) else shape

    def fits(shape) -> bool:
        return len(shape) == len(sig) and all(s in (-1, v) for s, v in zip(sig, shape))

    if not fits(value.shape):
        if fits((1, *value.shape)):
            value = value[None]
            did.append("added a batch dimension of 1")
        else:
            raise InputError(
                f"input {name!r} expects shape {sig} {want}, got {list(value.shape)} {value.dtype} from {source}"
            )
    if value.dtype == want:
        return np.ascontiguousarray(value)
    if want.kind == "S" and value.dtype.kind in "SU":  # string inputs: any byte or text strings
        return np.char.encode(value, "utf-8") if value.dtype.kind == "U" else np.ascontiguousarray(value)
    bad = f"input {name!r} expects {want}, got {value.dtype} from {source}"
    if value.dtype.kind not in "biuf" or want.kind not in "biuf":
        raise InputError(bad)
    if want.kind == "f":
        if value.dtype.kind in "biu" and not cast:
            raise InputError(
                f"{bad}: pass --cast to convert the values as they are (e.g. 200 -> 200.0), or save "
                f"them as {want} scaled as the model expects"
            )
        did.append(f"cast {value.dtype} -> {want}")
        return np.ascontiguousarray(value.astype(want))
    if value.dtype.kind == "f":
        scale, zero = (detail.get("quantization") or (0.0, 0))[:2]
        if not scale:
            raise InputError(bad + " (and the input is not quantized, so floats cannot be converted)")
        info = np.iinfo(want)
        q = np.round(value.astype(np.float64) / scale + zero)
        did.append(f"quantized {value.dtype} -> {want} (scale {scale:.4g}, zero point {zero})")
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(want))
    if want.kind == "b":
        raise InputError(bad)
    info = np.iinfo(want)
    if value.size and (value.min() < info.min or value.max() > info.max):
        raise InputError(bad + f" with values outside [{info.min}, {info.max}]")
    did.append(f"cast {value.dtype} -> {want} (every value fits)")
    return np.ascontiguousarray(value.astype(want))
