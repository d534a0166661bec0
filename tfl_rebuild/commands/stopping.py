"""Stopping a command: SIGTERM like Ctrl-C, and --timeout as an alarm.

Both raise in the main thread where Python runs: `finally` blocks remove temp files, and a TFLite
run (in its child process, runtime/isolated.py) is killed with its process group.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from tfl_rebuild.errors import Terminated, TimedOut


def _terminate(signum, frame):
    raise Terminated()


def handle_sigterm() -> None:
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) instead of ending the process at once."""
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (an embedding caller): leave its handlers alone
        pass


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `TimedOut` in this block after `seconds` (None: no limit)."""
    if not seconds:
        yield
        return

    def alarm(signum, frame):
        raise TimedOut(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
