"""The jinja2 environment of the generated source: strict, and refusing any value that is not Code."""

from __future__ import annotations

import functools
from importlib import resources

import jinja2

from tfl_rebuild.rebuild.codegen.literals import Code, lit
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


class _Everything:
    """`uses` of a class rendered with all of its code (for its constructor's defaults)."""

    def __contains__(self, value) -> bool:
        return True


@functools.cache
def class_template(name: str) -> str:
    """The source of a custom layer class (templates/layers/<snake_name>.py.j2) with all its code."""
    return _render(name, _Everything(), True, "tfl_rebuild")


def class_source(name: str, uses: frozenset[str], package: str) -> str:
    """A custom layer class as one module holds it: registered under the module's `package`
    (two generated modules' classes of one name do not replace each other when saved models load),
    with only the helper code its string arguments `uses` call ('multiply' of BinaryOp's table,
    Pad's 'symmetric')."""
    return _render(name, uses, bool(set(uses) - {"add"}), package)


def _render(name: str, uses, uses_table: bool, package: str) -> str:
    template = environment().get_template(f"layers/{snake(name)}.py.j2")
    return template.render(uses=uses, uses_table=uses_table, package=lit(package)).strip()
