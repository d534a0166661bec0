"""TFLite interpreters in a child process, so a run that never ends (an endless WHILE) still stops.

Inside the native interpreter Python cannot act on Ctrl-C, SIGTERM or a timer: only killing the
process stops it. Within `session()`, `make_interpreter` (interpreter.py) returns a `Remote`
proxy instead: the real interpreter lives in one child process (`python -m
tfl_rebuild.runtime.isolated_child`, its own process group), and every call is a request over a pipe
(JSON; arrays as .npy files, `allow_pickle=False`, in a temp dir we own). The parent waits in an
ordinary read, where a signal handler runs: on Ctrl-C, SIGTERM, the --timeout alarm or any other
exception the child's process group is killed and the temp dir removed. A child that crashes
(segfault) is one line too, not the end of the command.

Cost: one Python start with numpy and the runtime (~0.3 s), and each array through a file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tfl_rebuild.errors import TflRebuildError

INLINE = 256  # arrays up to this many numbers go inside the JSON message, larger ones as .npy files
_SESSION: list[_Child] = []  # the active session's child (started on first use), innermost last


@contextmanager
def session() -> Iterator[None]:
    """Interpreters made within this block run in a child process, killed when the block ends."""
    holder = _Child()
    _SESSION.append(holder)
    try:
        yield
    finally:
        _SESSION.remove(holder)
        holder.close()


def active() -> bool:
    return bool(_SESSION)


def make_remote(**kwargs) -> Remote:
    """The child's `make_interpreter(**kwargs)`, as a proxy (its errors raised here)."""
    from tfl_rebuild.runtime.litert import runtime_module

    child = _SESSION[-1]
    reply = child.call({"op": "make", "runtime": runtime_module(), "kwargs": kwargs})
    return Remote(child, reply["id"], reply["methods"], reply["attrs"], reply["module"])


class Remote:
    """A TFLite interpreter in the child: the same calls, arrays copied across."""

    def __init__(self, child: _Child, ident: int, methods: list[str], attrs: dict, module: str):
        self._child, self._id, self._methods = child, ident, set(methods)
        self.runtime_module = module  # the real interpreter's module (which runtime ran it)
        for key, value in attrs.items():
            setattr(self, key, value)

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in self.__dict__.get("_methods", ()):
            raise AttributeError(name)

        def call(*args, **kwargs):
            request = {"op": "call", "id": self._id, "method": name, "args": list(args), "kwargs": kwargs}
            return self._child.call(request)["value"]

        return call

    def tensor(self, index: int):
        """A copy, not a view: the child's memory is not ours."""
        return lambda: self.get_tensor(index)


class PipedChild:
    """`python -m <module> <request fd> <reply fd> *args` in a session of its own, answering one
    message with one reply over two pipes (send_message / recv_message). close() kills its group:
    only what it started. The TFLite child here and the Keras backend workers both run this way."""

    def __init__(self, module: str, *args: str, env: dict | None = None, stdout: int | None = None):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        package_root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(req_r), str(rep_w), *args],
                stdin=subprocess.DEVNULL,
                stdout=stdout if stdout is not None else _stderr_fd(),
                pass_fds=(req_r, rep_w),
                env={**os.environ, **(env or {}), "PYTHONPATH": python_path},
                start_new_session=True,  # Ctrl-C reaches the parent only; close() kills this group
            )
        except BaseException:
            for fd in (req_w, rep_r):
                os.close(fd)
            raise
        finally:
            os.close(req_r)
            os.close(rep_w)
        self._req_w, self._rep_r = req_w, rep_r

    def exchange(self, message):
        """The child's reply to `message`, or None when it ended without one."""
        try:
            send_message(self._req_w, message)
        except BrokenPipeError:  # it died after its last answer
            return None
        return recv_message(self._rep_r)

    def ended(self) -> str:
        """How the child ended, once it has: "exit code 1", "signal SIGSEGV"."""
        code = self.proc.wait()
        try:
            return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        except ValueError:
            return f"signal {-code}"

    def close(self) -> None:
        for fd in (self._req_w, self._rep_r):
            os.close(fd)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


class _Child:
    """The TFLite child process (runtime.isolated_child) and the temp dir the arrays go through."""

    def __init__(self):
        self.child: PipedChild | None = None
        self.tmp: Path | None = None
        self.count = 0

    @property
    def proc(self) -> subprocess.Popen | None:
        return None if self.child is None else self.child.proc

    def call(self, request: dict) -> dict:
        if self.child is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="tfl-rebuild-run-"))  # close() removes it
            self.child = PipedChild("tfl_rebuild.runtime.isolated_child", str(self.tmp))
        reply = self.child.exchange(encode(request, self))
        if reply is None:
            raise _Crashed(
                f"the TFLite runtime crashed running the model (its process ended by {self.child.ended()})"
            )
        reply = decode(reply)
        if "error" in reply:
            raise _rebuild_error(reply["error"], reply["message"])
        return reply

    def new_file(self) -> Path:
        self.count += 1
        return self.tmp / f"p{self.count}.npy"

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


class _Crashed(TflRebuildError):
    """The child died without answering (a crash in native code)."""


def _stderr_fd() -> int | None:
    """Where a child's stdout goes by default: our stderr, when it is a real file."""
    return sys.stderr.fileno() if has_fileno(sys.stderr) else None


def has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


# --- the protocol: 8-byte length + JSON; arrays as {"__npy__": path} ------------------------------------


def send_message(fd: int, obj) -> None:
    data = json.dumps(obj).encode()
    view = memoryview(len(data).to_bytes(8, "little") + data)
    while view:
        view = view[os.write(fd, view) :]


def read_exactly(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))  # a signal here runs its handler (Ctrl-C, SIGTERM, alarm)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_message(fd: int):
    head = read_exactly(fd, 8)
    if head is None:
        return None
    body = read_exactly(fd, int.from_bytes(head, "little"))
    return None if body is None else json.loads(body)


def encode(value, child: _Child):
    """JSON-able: arrays to .npy files in the child's temp dir, dtypes by name, tuples as lists."""
    if isinstance(value, bytes):  # a model's content
        path = child.new_file().with_suffix(".bin")
        path.write_bytes(value)
        return {"__file__": str(path)}
    if isinstance(value, np.ndarray) and value.size <= INLINE and value.dtype.kind in "biuf":
        # shapes, quantization parameters: in the message (exact: JSON floats are doubles)
        return {"__array__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.ndarray):
        path = child.new_file()
        obj = value.dtype == object
        np.save(path, value.astype(np.bytes_) if obj else value, allow_pickle=False)
        return {"__npy__": str(path), "object": bool(obj)}
    if isinstance(value, type) and issubclass(value, np.generic):
        return {"__dtype__": np.dtype(value).str if value is not np.object_ else "O"}
    if isinstance(value, np.dtype):
        return {"__dtype__": value.str}
    if isinstance(value, np.bytes_):
        return {"__bytes__": value.hex()}
    if isinstance(value, np.generic):  # a scalar tensor's value stays a numpy scalar
        return {"__scalar__": value.item(), "dtype": value.dtype.str}
    if isinstance(value, dict):
        return {str(k): encode(v, child) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v, child) for v in value]
    return value


def decode(value):
    if isinstance(value, dict):
        if "__npy__" in value:
            path = Path(value["__npy__"])
            array = np.load(path, allow_pickle=False)
            path.unlink(missing_ok=True)
            return array.astype(object) if value.get("object") else array
        if "__array__" in value:
            return np.array(value["__array__"], np.dtype(value["dtype"])).reshape(value["shape"])
        if "__file__" in value:
            path = Path(value["__file__"])
            data = path.read_bytes()
            path.unlink(missing_ok=True)
            return data
        if "__dtype__" in value:
            return np.dtype(value["__dtype__"]).type
        if "__scalar__" in value:
            return np.dtype(value["dtype"]).type(value["__scalar__"])
        if "__bytes__" in value:
            return np.bytes_(bytes.fromhex(value["__bytes__"]))
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def _rebuild_error(name: str, message: str) -> Exception:
    """The child's exception as the parent's: ours by class name, builtins by name, else RuntimeError."""
    import builtins

    from tfl_rebuild import errors

    cls = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except TypeError:
            pass
    return RuntimeError(f"{name}: {message}")
