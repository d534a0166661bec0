"""Writing output files so that an interrupted run never leaves a half-written one."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tfl_rebuild.errors import OutputError


@contextmanager
def output_dir(path: str | os.PathLike) -> Iterator[Path]:
    """`ensure_dir`, and if the work inside fails, the directories it created go again (only
    while empty): a refused model leaves no empty output folder behind."""
    out = Path(path)
    created = [d for d in (out, *out.parents) if not d.exists() and not d.is_symlink()]
    try:
        yield ensure_dir(out)
    except BaseException:
        for d in created:  # deepest first
            try:
                d.rmdir()  # only an empty directory: never one that holds anything
            except OSError:
                break
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB steps into one reused buffer (a fresh 4 MiB chunk a
    step cost a fifth more CPU in page faults); hashlib lets go of the GIL while it hashes."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f, memoryview(bytearray(1 << 20)) as step:
        while n := f.readinto(step):
            h.update(step[:n])
    return h.hexdigest()


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and its parents) or say in one line why it cannot be."""
    out = Path(path)
    if out.is_dir():
        return out
    if out.exists() or out.is_symlink():
        what = "is a file" if out.is_file() else "exists"
        raise OutputError(f"{out}: {what}, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the directory ({exc.strerror or exc})") from None
    return out


def writable_file(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output file path that is a directory or under a file."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{target}: is a directory, expected a file path")
    ensure_dir(target.parent)
    return target


def _mode_for(target: Path) -> int:
    """What open() would give: the old file's permissions, else 0666 minus the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


@contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Yield a file beside `path`; it replaces `path` only when the block completes."""
    import tempfile  # (with shutil, bz2, lzma, random) off `inspect`'s path: a few ms of start-up

    target = writable_file(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; the user expects a normal file
            os.fchmod(fd, _mode_for(target))
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a fresh path beside `path` ending in `suffix`, for a writer that wants a file name
    (Keras' save_weights wants ".weights.h5"); it replaces `path` only when the block completes."""
    import tempfile

    target = writable_file(path)
    mode = _mode_for(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    try:
        os.close(fd)
        yield Path(tmp)
        try:
            os.chmod(tmp, mode)  # mkstemp makes 0600; the writer may have made the file anew
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputError(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
