"""The worker of commands/backends.py: verifies written rebuilds on the Keras backend it was started
with (KERAS_BACKEND, set by the parent before this process imported keras).

Run as `python -m tfl_rebuild.commands.backend_worker REQUEST_FD REPLY_FD`. Each request names the
.tflite, the module, its weights and the view options; the reply is the verdict as plain data. TFLite
runs in this process: the parent kills this process group to stop it.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from tfl_rebuild.runtime.isolated import recv_message, send_message


def verify_request(request: dict) -> dict:
    """Rebuild the view the parent wrote the module from, build the module, verify it."""
    from pathlib import Path

    import keras

    from tfl_rebuild.commands.pipeline import Rebuild, build_and_verify
    from tfl_rebuild.commands.report import report_doc
    from tfl_rebuild.rebuild.loader import read_sidecar
    from tfl_rebuild.runtime.views import make_view
    from tfl_rebuild.tflite.reader import read_model

    start = time.perf_counter()
    signature, shapes = request["signature"], tuple(request["input_shapes"])
    original = read_model(request["model"])
    view = make_view(original, signature, shapes)
    paths = {"py": Path(request["py"]), "weights": Path(request["weights"])}
    result = Rebuild(original, view.model, paths, read_sidecar(paths["py"]) or [], list(view.notes))
    reply = {"backend": keras.backend.backend(), "ok": False, "seconds": 0.0}
    try:
        build_and_verify(result, stream=request["stream"] and signature is None)
    except Exception as exc:  # the module does not build on this backend: the verdict, not a crash
        reply["error"] = _one_line(exc)
    reply["seconds"] = time.perf_counter() - start
    if result.verify_error is not None:
        reply["error"] = _one_line(result.verify_error)
    report = result.report
    if report is not None:
        doc = report_doc(report)
        reply.update(
            ok=report.ok,
            kind=report.kind,
            max_abs=max((o.max_abs for o in report.outputs), default=0.0),
            max_rel=report.max_rel,
            report=doc,
        )
        if request.get("report_to"):
            _print(report, keras.backend.backend(), request["report_to"])
    return reply


def _print(report, backend: str, where: str) -> None:
    from rich.console import Console

    from tfl_rebuild.commands.report import print_report

    con = Console(highlight=False, stderr=where == "stderr")
    con.print(f"on the {backend} backend:")
    print_report(report, con)
    con.file.flush()


def _one_line(exc: BaseException) -> str:
    from tfl_rebuild.commands.pipeline import _summary

    return _summary(exc)


def _serve(req_fd: int, rep_fd: int) -> None:
    if sys.platform.startswith("linux"):  # die with the parent, even when it is SIGKILLed
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    try:
        from tfl_rebuild.native_logs import preload_tensorflow

        preload_tensorflow()  # before keras: its C++ start-up notices silenced
        import keras  # noqa: F401  (the backend's import errors are one line to the parent)
    except Exception as exc:
        send_message(rep_fd, {"fatal": _one_line(exc)})
        return
    while True:
        request = recv_message(req_fd)
        if request is None:
            return  # the parent closed the pipe
        try:
            reply = verify_request(request)
        except Exception as exc:  # a file that no longer reads, ...: one line back to the parent
            reply = {
                "backend": os.environ.get("KERAS_BACKEND", "?"),
                "ok": False,
                "seconds": 0.0,
                "error": _one_line(exc),
            }
        send_message(rep_fd, _plain(reply))


def _plain(value):
    from tfl_rebuild.commands.report import _plain as plain

    return plain(value)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
