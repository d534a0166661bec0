"""Errors the tool reports to the user as one line (the CLI maps them to exit code 2)."""


class TflRebuildError(Exception):
    """Base of every error that is the input's fault, not a bug of ours."""

    exit_code = 2


class ModelFormatError(TflRebuildError):
    """The file is not a readable .tflite flatbuffer (truncated, corrupt, out-of-range field)."""


class UnsupportedOpError(TflRebuildError):
    """No converter is registered for an operator."""


class RuntimeUnavailableError(TflRebuildError):
    """A needed optional runtime (LiteRT, TensorFlow, coremltools) is not installed or cannot run."""


class InputError(TflRebuildError):
    """A user-supplied input (array file, image, option value) does not fit the model."""


class OutputError(TflRebuildError):
    """An output path cannot be written (a file where a directory must be, no permission, ...)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python runs (like Ctrl-C's KeyboardInterrupt) so `finally` blocks run
    and temp files go; the CLI exits 143."""

    exit_code = 143


class TimedOut(BaseException):
    """The command's --timeout passed. Not an Exception: no `except Exception` in the work swallows
    it; the CLI prints one line and exits 2."""

    def __init__(self, seconds: float):
        super().__init__(f"timed out after {seconds:g} s (--timeout)")
        self.seconds = seconds
