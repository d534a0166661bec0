"""`tfl-rebuild inspect`: what a model holds, as a text report or one JSON document.

The report is a list of lines and tables (`report`), rendered two ways: plain text, every name
whole and one row per line, when stdout is a pipe or a CI log (nothing cut to 80 columns); rich
on a terminal, and there only for small tables (a few hundred rich rows cost more than the rest
of the command together). Every string the model carries goes through `text.printable`.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

from tfl_rebuild.errors import InputError
from tfl_rebuild.text import printable
from tfl_rebuild.tflite.analysis import (
    activation_dtypes,
    params_by_dtype,
    quantization_kind,
    state_variables,
    to_json,
)
from tfl_rebuild.tflite.ir import Model, Operator, Subgraph, Tensor

__all__ = ["OpFilter", "op_options", "print_report", "report", "to_json"]

HISTOGRAM_FIRST = 50  # a subgraph with more ops shows its op histogram before the op table
RICH_MAX_ROWS = 60  # bigger tables are plain text rows even on a terminal

Segment = tuple[str, bool]  # (text, bold)


@dataclass
class Table:
    headers: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)


Block = list[Segment] | Table  # a line of segments, or a table; [] is a blank line


# -- what the report says ---------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    """'1x8x8x3', or with ? for the dims the file marks dynamic (-1 in shape_signature): '?x8x8x3'."""
    sig = t.shape_signature
    dims = sig if sig is not None and len(sig) == len(t.shape) and any(d < 0 for d in sig) else t.shape
    return "x".join("?" if d < 0 else str(d) for d in dims) or "scalar"


def _stored(t: Tensor) -> str:
    """'  (dynamic; stored as 1x1x1x3)' for a tensor with dynamic dims, else ''."""
    shown = _shape(t)
    return f"  (dynamic; stored as {'x'.join(map(str, t.shape)) or 'scalar'})" if "?" in shown else ""


def _inputs(sg: Subgraph, op: Operator) -> str:
    """Input shapes of an op; constants marked with *, omitted optionals with -."""
    return ", ".join(
        "-" if i < 0 else _shape(sg.tensors[i]) + ("*" if sg.tensors[i].is_constant else "")
        for i in op.inputs
    )


def _io_quant(t: Tensor) -> str:
    """'  (scale 0.0078 zp 128)' for a per-tensor quantized input or output, else ''."""
    if not t.quantized or t.quantization.per_channel:
        return ""
    return f"  (scale {t.quantization.scale[0]:.4g} zp {t.quantization.zero_point[0]})"


# Options that never change what an op computes as read here, or say their default.
_QUIET = {
    "asymmetric_quantize_inputs",
    "pot_scale_int16",
    "quantized_bias_type",
    "weights_format",
    "keep_num_dims",
}
_RENAMED = {f"{k}_subgraph_index": k for k in ("cond", "body", "then", "else", "decomposition")}
_DEFAULTS = {"beta": 1.0}  # SOFTMAX's
_SHORT = {"align_corners": "align_corners", "half_pixel_centers": "half_pixel", "keep_dims": "keep_dims"}
# (letter, the two options, the value left out when both have it)
_PAIRS = (
    ("s", ("stride_h", "stride_w"), 1),
    ("d", ("dilation_h_factor", "dilation_w_factor"), 1),
    ("k", ("filter_height", "filter_width"), None),
)


def _value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, str):
        return printable(v, 40)
    if hasattr(v, "tolist"):
        return _value(v.tolist())
    return printable(str(v), 40)


def op_options(op: Operator) -> str:
    """The options that matter, compactly: 's2 same relu6', 'k3x3 s2 valid', 'axis=-1', 'd2 m2'.

    Strides / dilations / pool sizes as s / d / k (one number when both agree, HxW otherwise; a
    stride or dilation of 1 is left out), padding and a fused activation in lower case (NONE
    left out); any other option is `name=value`, unless it is false, zero or empty."""
    opts = dict(op.options)
    words = []
    for letter, keys, default in _PAIRS:
        if not all(k in opts for k in keys):
            continue
        h, w = (opts.pop(k) for k in keys)
        if h == w == default:
            continue
        words.append(f"{letter}{h}" if h == w else f"{letter}{h}x{w}")
    if "padding" in opts:
        words.append(str(opts.pop("padding")).lower())
    if opts.get("depth_multiplier", 1) != 1:
        words.append(f"m{opts['depth_multiplier']}")
    opts.pop("depth_multiplier", None)
    act = opts.pop("fused_activation_function", "NONE")
    for key, v in opts.items():
        if (
            key in _QUIET
            or v is None
            or v is False
            or (isinstance(v, (int, float)) and v == 0 and key != "axis")
        ):
            continue
        if key in _SHORT and v is True:
            words.append(_SHORT[key])
        elif isinstance(v, (list, tuple, str)) and len(v) == 0:
            continue
        else:
            words.append(f"{_RENAMED.get(key, key)}={_value(v)}")
    if act and act != "NONE":
        words.append(str(act).lower())
    return " ".join(words)


@dataclass(frozen=True)
class OpFilter:
    """Which rows of the op table to show: op types (`--ops`) and a regex on output names (`--select`)."""

    ops: frozenset[str] = frozenset()
    select: re.Pattern | None = None

    @classmethod
    def parse(cls, ops=(), select: str | None = None) -> OpFilter:
        names = frozenset(o.strip().upper() for group in ops for o in group.split(",") if o.strip())
        pattern = None
        if select:
            try:
                pattern = re.compile(select)
            except re.error as exc:
                raise InputError(f"--select {select!r}: not a regular expression ({exc})") from None
        return cls(names, pattern)

    @property
    def active(self) -> bool:
        return bool(self.ops) or self.select is not None

    def keeps(self, sg: Subgraph, op: Operator) -> bool:
        if self.ops and op.key.upper() not in self.ops and op.opcode not in self.ops:
            return False
        if self.select is None:
            return True
        return any(i >= 0 and self.select.search(sg.tensors[i].name) for i in op.outputs)

    def describe(self) -> str:
        parts = ([f"--ops {','.join(sorted(self.ops))}"] if self.ops else []) + (
            [f"--select {self.select.pattern!r}"] if self.select is not None else []
        )
        return printable(" ".join(parts))


def _header(model: Model) -> list[Block]:
    p = printable
    params = params_by_dtype(model)
    lines: list[Block] = [
        [
            (p(model.name), True),
            (f"  {model.size / 1e6:.2f} MB  schema v{model.version}  sha256 {model.sha256[:12]}", False),
        ]
    ]
    if model.description:
        lines.append([(f"description: {p(model.description)}", False)])
    acts = activation_dtypes(model)
    kind = quantization_kind(model) + (f" (activations {', '.join(acts)})" if acts else "")
    lines.append(
        [
            ("quantization: ", False),
            (kind, True),
            (
                f"   params: {sum(params.values()):,} ("
                + ", ".join(f"{k} {v:,}" for k, v in params.items())
                + ")",
                False,
            ),
        ]
    )
    if model.min_runtime_version:
        lines.append([(f"min runtime version: {p(model.min_runtime_version)}", False)])
    if model.info is not None and (model.info.name or model.info.description):
        info = model.info
        lines.append([(f"metadata: {p(info.name)} {p(info.version)} — {p(info.description)}", False)])
    if model.metadata:
        entries = ", ".join(f"{p(k)} ({len(v)} B)" for k, v in model.metadata.items())
        lines.append([(f"metadata entries: {entries}", False)])
    for s in model.signatures:
        ins = ", ".join(f"{p(n)}={t}" for n, t in s.inputs)
        outs = ", ".join(f"{p(n)}={t}" for n, t in s.outputs)
        lines.append(
            [
                (
                    f"signature {p(repr(s.key))} (subgraph {s.subgraph_index}): inputs {ins}; outputs {outs}",
                    False,
                )
            ]
        )
    variables = state_variables(model)
    if variables:
        shown = ", ".join(p(repr(v)) for v in variables[:4]) + (
            f" and {len(variables) - 4} more" if len(variables) > 4 else ""
        )
        lines.append(
            [
                (
                    f"state: {len(variables)} resource variable(s) kept between runs ({shown}); keras / "
                    "check rebuild them as extra inputs and outputs",
                    False,
                )
            ]
        )
    return lines


def _subgraph(sg: Subgraph, show_tensors: bool, keep: OpFilter) -> list[Block]:
    p = printable
    blocks: list[Block] = [
        [],
        [
            (f"subgraph {sg.index}", True),
            (f" {p(sg.name)}: {len(sg.operators)} ops, {len(sg.tensors)} tensors", False),
        ],
    ]
    for label, ids in (("input", sg.inputs), ("output", sg.outputs)):
        for i in ids:
            t = sg.tensors[i]
            blocks.append(
                [(f"  {label} {i}: {p(t.name)}  {_shape(t)} {t.dtype}{_io_quant(t)}{_stored(t)}", False)]
            )
    if sg.index == 0 and any("?" in _shape(sg.tensors[i]) for i in sg.inputs):
        blocks.append(
            [
                (
                    "  ? = dynamic dim (-1 in shape_signature); keras / check rebuild at the stored shape, "
                    "or at another with --input-shape NAME=D,D,...",
                    False,
                )
            ]
        )
    hist = Table(("op", "count"))
    hist.rows = [(p(name), str(n)) for name, n in Counter(op.key for op in sg.operators).most_common()]
    table = Table(("#", "op", "options", "shape", "inputs", "output"))
    for op in sg.operators:
        if not keep.keeps(sg, op):
            continue
        out = sg.tensors[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None
        table.rows.append(
            (
                str(op.index),
                p(op.key),
                op_options(op),
                f"{_shape(out)} {out.dtype}" if out else "-",
                _inputs(sg, op),
                p(out.name) if out else "-",
            )
        )
    shown = [[(f"ops shown: {len(table.rows)} of {len(sg.operators)} ({keep.describe()})", False)]]
    if len(sg.operators) > HISTOGRAM_FIRST:
        blocks += [hist, [], *(shown if keep.active else []), table]
    else:
        blocks += [*(shown if keep.active else []), table, hist]
    if show_tensors:
        tt = Table(("#", "name", "shape", "dtype", "kind", "quantization"))
        for t in sg.tensors:
            kind = "const" if t.is_constant else ("variable" if t.is_variable else "")
            if t.sparsity is not None:
                kind += " sparse"
            q = ""
            if t.quantized:
                qs = t.quantization
                q = (
                    f"scale {qs.scale[0]:.4g} zp {qs.zero_point[0]}"
                    if not qs.per_channel
                    else f"{qs.scale.size} channels (dim {qs.quantized_dimension})"
                )
            tt.rows.append((str(t.index), p(t.name), _shape(t), t.dtype, kind, q))
        blocks.append(tt)
    return blocks


def report(model: Model, show_tensors: bool = False, keep: OpFilter | None = None) -> list[Block]:
    """The whole report as data: lines (lists of (text, bold) segments) and Tables."""
    keep = keep or OpFilter()
    blocks = _header(model)
    for sg in model.subgraphs:
        blocks += _subgraph(sg, show_tensors, keep)
    return blocks


# -- rendering --------------------------------------------------------------------------------------


def plain_table(table: Table) -> list[str]:
    """Space-aligned rows, one a line, nothing cut (the last column is not padded)."""
    rows = [table.headers, *table.rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(table.headers) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(r, widths)), r[-1]]).rstrip() for r in rows]


def render_plain(blocks: list[Block]) -> str:
    lines = []
    for b in blocks:
        if isinstance(b, Table):
            lines += plain_table(b)
        else:
            lines.append("".join(text for text, _ in b))
    return "\n".join(lines) + "\n"


def render_rich(blocks: list[Block], console) -> None:
    from rich.table import Table as RichTable
    from rich.text import Text

    for b in blocks:
        if isinstance(b, Table) and len(b.rows) <= RICH_MAX_ROWS:
            t = RichTable(box=None, pad_edge=False)
            for h in b.headers:
                t.add_column(h, overflow="fold")  # a long name wraps whole onto more lines, never "…"
            for r in b.rows:
                t.add_row(*(Text(c) for c in r))
            console.print(t)
        elif isinstance(b, Table):
            console.print(Text("\n".join(plain_table(b))), soft_wrap=True)
        else:
            console.print(Text.assemble(*((t, "bold" if bold else "") for t, bold in b)), soft_wrap=True)


def print_report(
    model: Model,
    show_tensors: bool = False,
    console=None,
    keep: OpFilter | None = None,
    plain: bool | None = None,
    file=None,
) -> None:
    """Print the report: to `console` (rich), or as plain text when stdout is not a terminal."""
    blocks = report(model, show_tensors, keep)
    out = file or sys.stdout
    if plain is None:
        plain = console is None and not (hasattr(out, "isatty") and out.isatty())
    if plain:
        out.write(render_plain(blocks))
        return
    if console is None:
        from rich.console import Console

        console = Console(highlight=False, file=out)
    render_rich(blocks, console)


def read_hashed(path: str) -> Model:
    """read_model, with the file's sha256 (which the report shows) computed on another thread
    while the flatbuffer is parsed: hashlib lets go of the GIL, so the hash of a big model no
    longer adds to the parse."""
    import threading

    from tfl_rebuild.fileio import file_sha256
    from tfl_rebuild.tflite.reader import read_model

    if not os.path.isfile(path):  # a FIFO or a device would block the hashing thread: no overlap
        return read_model(path)
    digest: list[str] = []

    def hash_file() -> None:
        try:
            digest.append(file_sha256(path))
        except OSError:
            return  # read_model says what is wrong with the path

    worker = threading.Thread(target=hash_file, daemon=True)
    worker.start()
    try:
        model = read_model(path)
    finally:
        worker.join()
    if digest and model.size == os.path.getsize(path):
        model.__dict__["sha256"] = digest[0]  # the cached_property's slot: the same value, hashed early
    return model
