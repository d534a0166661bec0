"""Every op the rebuild would refuse, listed at once (not only the first): `check`'s scan."""

from __future__ import annotations

from tfl_rebuild.commands.check.rows import one_line
from tfl_rebuild.errors import TflRebuildError


def reachable_subgraphs(model) -> list[int]:
    """Subgraph 0 and every subgraph its control-flow ops (WHILE, IF, CALL_ONCE, ...) call."""
    order, todo = [], [0]
    while todo:
        i = todo.pop()
        if i in order or not 0 <= i < len(model.subgraphs):
            continue
        order.append(i)
        for op in model.subgraphs[i].operators:
            for key, v in op.options.items():
                if (key.endswith("subgraph_index") or key == "subgraph") and isinstance(v, int):
                    todo.append(v)
    return sorted(order)


def scan_ops(model) -> tuple[list[dict], list[str]]:
    """Every op the rebuild would refuse, not just the first: (ops the registry does not take, as
    {"op", "count", "detail"}; ConversionErrors the main subgraph's converters raise)."""
    from tfl_rebuild.rebuild.ops import ConversionError, lookup
    from tfl_rebuild.rebuild.passes.pipeline import prepare

    missing: dict[str, dict] = {}
    errors: list[str] = []
    try:
        ctx, main_ops = prepare(model)
    except Exception:  # the rebuild reports this; still list what the registry lacks
        ctx, main_ops = None, list(model.main.operators)
    for i in reachable_subgraphs(model):
        sg = model.subgraphs[i]
        for op in main_ops if i == 0 else _prepared_ops(model, i):
            try:
                fn = lookup(op, sg)
            except TflRebuildError as exc:
                what = f"custom {op.custom_code}" if op.opcode == "CUSTOM" else f"{op.opcode} v{op.version}"
                # "no converter for X" says nothing the op name does not; other refusals explain why
                detail = "" if str(exc).startswith("no converter for") else one_line(exc)
                missing.setdefault(what, {"op": what, "count": 0, "detail": detail})["count"] += 1
                continue
            if i != 0 or ctx is None:
                continue  # called subgraphs are converted within their control-flow op, not alone
            try:
                fn(op, ctx)
            except ConversionError as exc:
                errors.append(f"{op.key} (op {op.index}): {one_line(exc)}")
            except Exception:  # a converter bug surfaces again, with its traceback, in the rebuild
                pass
    return list(missing.values()), errors


def _prepared_ops(model, index: int) -> list:
    """A called subgraph's ops after passes.prepare (which folds e.g. DEQUANTIZE of fp16 weights),
    as the rebuild converts them."""
    from tfl_rebuild.rebuild.passes.pipeline import prepare

    try:
        return prepare(model, index)[1]
    except Exception:  # the rebuild reports this; still list what the registry lacks
        return list(model.subgraphs[index].operators)
