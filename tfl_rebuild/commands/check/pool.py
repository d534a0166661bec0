"""The driver: one worker process per model (worker.py), at most `jobs` at once.

A segfault, an uncaught exception, the OOM killer or a hang in one model ends that process only,
and its row says which. The worker writes its row as JSON to a file (stdout and stderr belong to
TensorFlow's chatter; their last line explains a crash). Each worker runs in its own process group
with TMPDIR inside the driver's temporary directory: on a timeout, Ctrl-C or SIGTERM the group is
killed and everything it made in temporary files is removed with that directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tfl_rebuild.commands.check import worker
from tfl_rebuild.commands.check.discover import Found, as_found, keep_names
from tfl_rebuild.commands.check.rows import Options, Row, one_line
from tfl_rebuild.errors import Terminated


def worker_command(model: Path, result: Path, opts: Options, keep: Path | None) -> list[str]:
    """The command that checks one model and writes its row to `result` (tests swap it for a crash)."""
    return worker.command(model, result, opts, keep)


_LIVE: set[subprocess.Popen] = set()  # running workers, killed together when the user interrupts
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


def run_one(model: Path | Found, opts: Options, keep: Path | None = None) -> Row:
    """Check one model in its own process; a crash or a timeout becomes the row's reason."""
    found = as_found(model)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfl-rebuild-worker-") as tmp:
        result, log, scratch = Path(tmp) / "row.json", Path(tmp) / "log.txt", Path(tmp) / "tmp"
        scratch.mkdir()
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
            "TMPDIR": str(scratch),  # what the worker leaves in temporary files goes with `tmp`
        }
        with open(log, "wb") as out:
            with _LIVE_LOCK:
                if _STOPPING.is_set():
                    raise KeyboardInterrupt
                proc = subprocess.Popen(
                    worker_command(found.path, result, opts, keep),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )  # its own process group: Ctrl-C reaches us only, and run_all ends the group
                _LIVE.add(proc)
            try:
                code = proc.wait(timeout=opts.timeout)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return _failed_row(found, "timeout", f"timed out after {opts.timeout:g} s", start)
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(proc)
        if code == 0 and result.is_file():
            try:
                row = Row.from_dict(json.loads(result.read_text(encoding="utf-8")))
            except (ValueError, TypeError, KeyError) as exc:
                return _failed_row(found, "crash", f"worker wrote an unreadable row: {one_line(exc)}", start)
            row.name = found.name
            return row
        return _failed_row(found, "crash", _crash_reason(code, log), start)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group: only what it started
    except ProcessLookupError:
        pass
    proc.wait()


def _crash_reason(code: int, log: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"worker killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    else:
        what = f"worker exited with code {code}"
    lines = [
        ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
    ]
    return one_line(f"{what}: {lines[-1]}" if lines else what)


def _failed_row(model: Found, outcome: str, reason: str, start: float) -> Row:
    row = Row(path=str(model.path), name=model.name, outcome=outcome, reason=reason)
    row.seconds = time.perf_counter() - start
    return row


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one must not cut the clean-up short
    raise Terminated()  # as Ctrl-C: the workers are ended and cleaned up, then the CLI exits 143


def run_all(
    models: list[Found] | list[Path],
    opts: Options,
    jobs: int = 1,
    keep: Path | None = None,
    progress: Callable[[int, Row], None] | None = None,
) -> list[Row]:
    """Rows in the order of `models`; `progress(done, row)` as each finishes. Ctrl-C or SIGTERM
    (from the main thread) kills every running worker and waits for their directories to go."""
    found = [as_found(m) for m in models]
    names = keep_names(found)
    rows: list[Row | None] = [None] * len(found)
    _STOPPING.clear()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {
            pool.submit(run_one, m, opts, keep / n if keep else None): k
            for k, (m, n) in enumerate(zip(found, names))
        }
        for done, fut in enumerate(as_completed(futures), 1):
            k = futures[fut]
            try:
                rows[k] = fut.result()
            except Exception as exc:  # cannot start a process, disk full: that model's row, not the run
                rows[k] = _failed_row(
                    found[k], "crash", f"could not run the worker: {one_line(exc)}", time.perf_counter()
                )
            if progress:
                progress(done, rows[k])
    except BaseException:  # Ctrl-C, SIGTERM: no new workers, and the running ones die with us
        _STOPPING.set()
        with _LIVE_LOCK:
            for proc in list(_LIVE):
                _kill(proc)
        pool.shutdown(wait=True, cancel_futures=True)  # quick: every worker it waits on is dead
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    pool.shutdown()
    return [r for r in rows if r is not None]
