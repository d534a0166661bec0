"""Click options that several commands share: their inputs, and how they stop."""

from __future__ import annotations

import functools
import os

import click


def input_options(command):
    """-i/--input, the image options and --cast, shared by dump and compare: `inputs=InputOptions`."""

    @click.option(
        "-i",
        "--input",
        "input_specs",
        multiple=True,
        metavar="[NAME=]FILE",
        help="Input value: .npy, .npz or an image; repeat as NAME=FILE for several inputs.",
    )
    @click.option(
        "--mean", metavar="V[,V,V]", help="Image inputs: subtract (default 127.5 for float inputs)."
    )
    @click.option(
        "--std", metavar="V[,V,V]", help="Image inputs: divide by (default 127.5 for float inputs)."
    )
    @click.option("--scale", type=float, help="Image inputs: multiply by this instead of dividing by --std.")
    @click.option("--bgr", is_flag=True, help="Image inputs: feed channels as BGR.")
    @click.option(
        "--cast", is_flag=True, help="Let an integer .npy / .npz feed a float input (200 -> 200.0)."
    )
    @functools.wraps(command)
    def run(*args, input_specs, mean, std, scale, bgr, cast, **kwargs):
        from tfl_rebuild.runtime.inputs import ImageOptions, InputOptions, parse_floats

        image = ImageOptions(parse_floats(mean, "--mean"), parse_floats(std, "--std"), scale, bgr)
        return command(*args, inputs=InputOptions(tuple(input_specs), image, cast), **kwargs)

    return run


def stoppable(command):
    """--timeout, and TFLite runs in a child process that Ctrl-C, SIGTERM and the timeout kill."""

    @click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        metavar="SECONDS",
        help="Stop after this many seconds: one line, exit 2 (default: no limit).",
    )
    @functools.wraps(command)
    def run(*args, timeout=None, **kwargs):
        from tfl_rebuild.commands.stopping import deadline
        from tfl_rebuild.runtime import isolated

        with isolated.session(), deadline(timeout):  # the alarm is off before the child is killed
            return command(*args, **kwargs)

    return run


class InputFile(click.ParamType):
    """An existing file; anything else is our one-line error (exit 2), not click's usage text."""

    name = "file"

    def __init__(self, folders: bool = False):
        self.folders = folders  # a folder is welcome too (compare's folder of .npy references)

    def convert(self, value, param, ctx):
        from tfl_rebuild.errors import InputError

        if self.folders and os.path.isdir(value):
            return value
        if os.path.isdir(value):
            raise InputError(f"{value}: is a directory, not a file")
        if not os.path.isfile(value):
            raise InputError(f"{value}: cannot read (No such file or directory)")
        return value


INPUT_FILE = InputFile()
INPUT_FILE_OR_FOLDER = InputFile(folders=True)
