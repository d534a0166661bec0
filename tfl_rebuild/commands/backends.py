"""Verify a written rebuild on other Keras backends (TensorFlow, JAX, PyTorch), each in a worker.

Keras picks its backend once, at import, from KERAS_BACKEND: one process cannot check a module on
two backends. So each backend gets a worker process (`python -m tfl_rebuild.commands.backend_worker`,
KERAS_BACKEND set, its own process group) that builds the module and runs the same verification as
`keras` (end to end against TFLite, then every layer on TFLite's own inputs). A worker answers any
number of requests over a pipe (the per-op tests reuse one per session); the parent waits in an
ordinary read, so Ctrl-C, SIGTERM or the --timeout alarm raise here and `close()` kills the
worker's group (TFLite runs inside the worker, so nothing outlives it).

    with Workers() as workers:
        result = workers.verify("jax", rebuild)     # BackendResult: ok, max_abs, max_rel, seconds
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tfl_rebuild.errors import InputError, RuntimeUnavailableError, TflRebuildError
from tfl_rebuild.runtime.isolated import PipedChild, has_fileno

BACKENDS = ("tensorflow", "jax", "torch")
# backend -> (extra of pyproject.toml, the module it needs)
EXTRA_OF = {"tensorflow": ("keras", "tensorflow"), "jax": ("jax", "jax"), "torch": ("torch", "torch")}


def parse_backends(values, option: str = "--backend") -> tuple[str, ...]:
    """--backend words (repeatable; "all"; commas allowed) as backend names, in BACKENDS order."""
    asked: set[str] = set()
    for value in [values] if isinstance(values, str) else values:
        for word in str(value).split(","):
            word = word.strip().lower()
            if word == "all":
                asked.update(BACKENDS)
            elif word in BACKENDS:
                asked.add(word)
            elif word:
                raise InputError(f"{option} {word!r}: one of {', '.join(BACKENDS)} or all")
    return tuple(b for b in BACKENDS if b in asked)


def require_backends(command: str, backends) -> None:
    """One line naming the extra to install when a backend's package is absent (before any work)."""
    from tfl_rebuild.commands.extras import installed

    missing = [b for b in backends if not installed(EXTRA_OF[b][1])]
    if missing:
        extras = ",".join(EXTRA_OF[b][0] for b in missing)
        raise RuntimeUnavailableError(
            f"`tfl-rebuild {command}` on the {' and '.join(missing)} backend needs "
            f"{' and '.join(EXTRA_OF[b][1] for b in missing)}, not installed here: "
            f"pip install 'tfl-rebuild[{extras}]'"
        )


@dataclass
class BackendResult:
    """One backend's verdict on one rebuild (`report`: report_doc's plain data, None on error)."""

    backend: str
    ok: bool
    seconds: float  # build + verify in the worker (its imports excluded)
    max_abs: float | None = None
    max_rel: float | None = None
    kind: str | None = None
    error: str | None = None
    report: dict | None = field(default=None, repr=False)

    def text(self) -> str:
        if self.error:
            return f"{self.backend}: error: {self.error}"
        verdict = "match" if self.ok else "MISMATCH"
        return f"{self.backend}: {verdict}, max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, {self.seconds:.1f} s"


def verify_on_backends(rebuild, backends, report_to: str | None = None) -> list[BackendResult]:
    """Verify the written `rebuild` on each of `backends` (a worker each, closed after), then name
    the backends that passed in the module's header."""
    from tfl_rebuild.commands.pipeline import stamp_verified_on

    results = []
    out = sys.stdout if report_to == "stdout" and has_fileno(sys.stdout) else None
    with Workers(stdout=out.fileno() if out else None) as workers:
        for backend in backends:
            if report_to:
                (sys.stderr if report_to == "stderr" else sys.stdout).flush()
            results.append(workers.verify(backend, rebuild, report_to=report_to))
    rebuild.backends = results
    stamp_verified_on(rebuild, tuple(r.backend for r in results if r.ok and not r.error))
    return results


class Workers:
    """One worker per backend, started on first use and killed (with its group) on close."""

    def __init__(self, stdout=None):
        self._workers: dict[str, _Worker] = {}
        self._stdout = stdout  # where a worker prints reports: a file object with a fileno, or None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def verify(
        self, backend: str, rebuild, *, stream: bool = True, report_to: str | None = None
    ) -> BackendResult:
        """Build and verify `rebuild` (pipeline.Rebuild: its files, the model path, the view
        options) on `backend`. report_to: "stdout"/"stderr" has the worker print the human report."""
        worker = self._workers.get(backend)
        if worker is None:
            worker = self._workers[backend] = _Worker(backend, self._stdout)
        request = {
            "model": str(Path(rebuild.original.path).resolve()),
            "py": str(rebuild.py.resolve()),
            "weights": str(rebuild.weights.resolve()),
            "signature": rebuild.signature,
            "input_shapes": list(rebuild.input_shapes),
            "stream": stream,
            "report_to": report_to,
        }
        reply = worker.call(request)
        for key in ("max_abs", "max_rel"):  # report_doc writes infinities and NaN as strings
            if reply.get(key) is not None:
                reply[key] = float(reply[key])
        return BackendResult(**reply)

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()


class _Worker:
    """One backend's worker (commands.backend_worker) with KERAS_BACKEND set for it."""

    def __init__(self, backend: str, stdout=None):
        self.backend = backend
        env = {"KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
        self.child = PipedChild("tfl_rebuild.commands.backend_worker", env=env, stdout=stdout)

    def call(self, request: dict) -> dict:
        reply = self.child.exchange(request)
        if reply is None:
            raise TflRebuildError(
                f"the {self.backend} backend worker ended without an answer ({self.child.ended()})"
            )
        if "fatal" in reply:  # the backend itself cannot start (an import error): one line
            raise RuntimeUnavailableError(f"the {self.backend} backend: {reply['fatal']}")
        return reply

    def close(self) -> None:
        self.child.close()
