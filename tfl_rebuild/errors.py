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
