"""The child process of isolated.py: holds the real interpreters and answers its parent's calls.

Run as `python -m tfl_rebuild.runtime.isolated_child REQUEST_FD REPLY_FD TMP_DIR`.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tfl_rebuild.runtime.isolated import decode, encode, recv_message, send_message


class _Server:
    def __init__(self, tmp: Path):
        self.tmp, self.count, self.objects = tmp, 0, {}

    def new_file(self) -> Path:
        self.count += 1
        return self.tmp / f"c{self.count}.npy"

    def handle(self, request: dict):
        from tfl_rebuild.runtime.interpreter import make_interpreter
        from tfl_rebuild.runtime.litert import use

        if request["op"] == "make":
            use(request["runtime"])  # what the parent would have run (LiteRT may be hidden from it)
            interp = make_interpreter(**request["kwargs"])
            ident = len(self.objects) + 1
            self.objects[ident] = interp
            methods = [m for m in dir(interp) if not m.startswith("_") and callable(getattr(interp, m, None))]
            attrs = {k: v for k, v in vars(interp).items() if k == "fallback_note"}
            return {"id": ident, "methods": methods, "attrs": attrs, "module": type(interp).__module__}
        interp = self.objects[request["id"]]
        value = getattr(interp, request["method"])(*request["args"], **request.get("kwargs", {}))
        return {"value": value}


def _serve(req_fd: int, rep_fd: int, tmp: Path) -> None:
    if sys.platform.startswith("linux"):  # die with the parent, even when it is SIGKILLed
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    server = _Server(tmp)
    while True:
        request = recv_message(req_fd)
        if request is None:
            return  # the parent closed the pipe
        try:
            reply = encode(server.handle(decode(request)), server)
        except Exception as exc:  # every failure goes back to the parent as one line
            text = str(exc)
            reply = {"error": type(exc).__name__, "message": text if text else type(exc).__name__}
        send_message(rep_fd, reply)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
