"""The jinja2 environment of the generated source: strict, and refusing any value that is not Code."""

from __future__ import annotations

import functools
from importlib import resources

import jinja2

from tfl_rebuild.rebuild.codegen.literals import Code
from tfl_rebuild.rebuild.codegen.naming import snake


@functools.cache  # one environment per process: its templates are compiled once
def environment() -> jinja2.Environment:
    root = resources.files("tfl_rebuild.rebuild").joinpath("templates")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        finalize=_only_code,
        keep_trailing_newline=True,
        trim_blocks=True,
        autoescape=False,
    )


def _only_code(value):
    if isinstance(value, Code):
        return value
    raise TypeError(f"template got a raw {type(value).__name__}; values must go through lit()/Namer")


@functools.cache
def class_template(name: str) -> str:
    """The rendered source of a custom layer class (templates/layers/<snake_name>.py.j2)."""
    return environment().get_template(f"layers/{snake(name)}.py.j2").render().strip()
