"""The evaluator's core: the op table, an op's inputs (Args), the program walk, storage dtypes
and control flow. The op families (the package's other modules) register into OPS with `@op`."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable

import numpy as np

OPS: dict[str, Callable] = {}  # MIL op type -> fn(Args) -> value (a tuple for several outputs)


def op(*names: str):
    """Register the decorated function as the implementation of the MIL op types `names`."""

    def register(fn):
        for name in names:
            if name in OPS:
                raise ValueError(f"MIL op {name} registered twice")
            OPS[name] = fn
        return fn

    return register


class MilEvalError(Exception):
    """The program cannot be evaluated (an unknown op, a missing input)."""


class Args:
    """The inputs of one op: `a.x` is the value of input x, `a.get("pad", default)` an optional one."""

    def __init__(self, operation, env: dict):
        self.op = operation
        self._env = env

    def _value(self, var):
        if isinstance(var, (list, tuple)):
            return [self._value(v) for v in var]
        if var.name in self._env:
            return self._env[var.name]
        if var.val is not None:
            return _as_array(var.val)
        raise MilEvalError(f"{self.op.op_type} {self.op.name}: no value for input {var.name}")

    def get(self, name: str, default=None):
        var = self.op.inputs.get(name)
        return default if var is None else self._value(var)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self.op.inputs:
            raise MilEvalError(f"{self.op.op_type} {self.op.name}: input {name} is missing")
        return self._value(self.op.inputs[name])

    def scalar(self, name: str, default=None):
        v = self.get(name, default)
        return v.item() if isinstance(v, np.ndarray) else v

    def ints(self, name: str, default=None) -> list[int] | None:
        v = self.get(name, default)
        return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]


def _as_array(val):
    if isinstance(val, (str, bytes, dict)):
        return val
    a = np.asarray(val)
    if a.dtype.kind == "U" or a.dtype == object:
        return val  # strings (pad_type, mode) and lists of class labels stay Python values
    if a.dtype.kind == "f":
        return a.astype(np.float32)  # fp16 constants are exact in fp32
    if a.dtype.kind in "iu":
        return a.astype(np.int32)
    return a


# --- the program walk -------------------------------------------------------------------------


def _walk(block):
    for operation in block.operations:
        yield operation
        for inner in operation.blocks:
            yield from _walk(inner)


def input_vars(operation):
    """Every Var an op reads, list inputs (concat's values) flattened."""
    for var in operation.inputs.values():
        yield from var if isinstance(var, (list, tuple)) else (var,)


def _function(program, name: str = "main"):
    return program.functions[name] if hasattr(program, "functions") else program


def unknown_ops(program, function: str = "main") -> list[str]:
    """Op types in the program that this evaluator cannot run (sorted, each once)."""
    return sorted(
        {
            o.op_type
            for o in _walk(_function(program, function))
            if o.op_type not in OPS and o.op_type not in CONTROL_FLOW and o.op_type != "const"
        }
    )


def op_types(program, function: str = "main") -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in _walk(_function(program, function)):
        counts[o.op_type] = counts.get(o.op_type, 0) + 1
    return counts


def _store_dtype(var) -> np.dtype | None:
    from coremltools.converters.mil.mil import types

    sym = var.sym_type
    if types.is_tensor(sym):
        dtype = sym.get_primitive()
    elif types.is_scalar(sym):
        dtype = sym
    else:
        return None  # lists, dicts, strings
    if dtype == types.fp16 or dtype == types.fp32 or dtype == types.fp64:
        return np.dtype(np.float16 if dtype == types.fp16 else np.float32)
    if types.is_int(dtype):
        return np.dtype(np.int32)
    if dtype == types.bool:
        return np.dtype(np.bool_)
    return None  # strings, dicts, lists: kept as they are


def _store(value, var, fp16: bool = True, overflow: list | None = None):
    dtype = _store_dtype(var)
    if dtype == np.float16 and not fp16:
        dtype = np.dtype(np.float32)
    if dtype is None or not isinstance(value, (np.ndarray, np.generic, float, int, bool)):
        return value
    a = np.asarray(value)
    if dtype == np.float16:
        with np.errstate(over="ignore"):
            r = a.astype(np.float16).astype(np.float32)  # round to fp16, compute on in fp32
        if overflow is not None and np.isinf(r).any() and not np.isinf(a).any():
            overflow.append(var.name)  # beyond fp16's +-65504
        return r
    return a.astype(dtype, copy=False)


def evaluate(
    program,
    inputs: dict[str, np.ndarray],
    outputs: list[str] | None = None,
    function: str = "main",
    round_consts_fp16: bool = False,
    fp16: bool = True,
    overflow: list[str] | None = None,
    nan_origins: list[str] | None = None,
    observe: Callable[[object, dict], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run the function on `inputs` (by input name); returns {name: value} of its outputs, or of
    the variables named in `outputs`. `round_consts_fp16` rounds float constants through float16
    (what quantize_weights(nbits=16) does to a neural network's weights); `fp16=False` keeps fp16
    activations at fp32 precision (to tell conversion error from fp16 rounding). Names of variables
    whose values overflowed float16 are appended to `overflow` when given; "<op type> <name>" of
    each op that makes a NaN from NaN-free inputs to `nan_origins` (0/0 or inf - inf in float16, say).
    `observe(op, env)` is called after each op that is not a const or control flow, its inputs and
    outputs still in `env` (per-op measures, as coreml/mixed.py's)."""
    fn = _function(program, function)
    missing = unknown_ops(program, function)
    if missing:
        raise MilEvalError(f"unknown MIL ops: {', '.join(missing)}")
    want = list(outputs) if outputs is not None else [v.name for v in fn.outputs]
    env: dict = {}
    for name, var in fn.inputs.items():
        if name not in inputs:
            raise MilEvalError(f"no value for program input {name}")
        env[name] = _store(np.asarray(inputs[name]), var, fp16)

    def run(ops, env, keep: set[str]) -> None:
        last_use = _last_uses(ops, keep)
        for i, operation in enumerate(ops):
            if operation.op_type == "const":
                val = operation.outputs[0].val
                result = _as_array(val)
                if round_consts_fp16 and isinstance(result, np.ndarray) and result.dtype == np.float32:
                    result = result.astype(np.float16).astype(np.float32)
            elif operation.op_type in CONTROL_FLOW:
                result = CONTROL_FLOW[operation.op_type](operation, env, run_block)
            else:
                result = OPS[operation.op_type](Args(operation, env))
            results = result if len(operation.outputs) > 1 else (result,)
            for var, value in zip(operation.outputs, results):
                env[var.name] = _store(value, var, fp16, overflow)
            if (
                nan_origins is not None
                and operation.op_type not in CONTROL_FLOW
                and _makes_nan([env[v.name] for v in operation.outputs], Args(operation, env))
            ):
                nan_origins.append(f"{operation.op_type} {operation.name}")
            if observe is not None and operation.op_type != "const" and operation.op_type not in CONTROL_FLOW:
                observe(operation, env)
            for name in last_use.get(i, ()):
                env.pop(name, None)  # free activations once nothing reads them

    def run_block(block, env, bound: dict) -> list:
        """One nested block (loop cond/body, branch) on its own scope over the enclosing values:
        what it computes, and frees, stays local; outer values stay for the next iteration."""
        scope = ChainMap(dict(bound), env)
        run(list(block.operations), scope, {v.name for v in block.outputs})
        out = []
        for v in block.outputs:
            if v.name not in scope and v.val is None:
                raise MilEvalError(f"no value for block output {v.name}")
            out.append(scope[v.name] if v.name in scope else _as_array(v.val))
        return out

    run(list(fn.operations), env, set(want))
    return {name: env[name] for name in want}


def _has_nan(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    return isinstance(value, np.ndarray) and value.dtype.kind == "f" and bool(np.isnan(value).any())


def _makes_nan(outputs: list, args: Args) -> bool:
    """An output holds a NaN that none of the op's inputs held."""
    if not _has_nan(outputs):
        return False
    return not any(_has_nan(args.get(name)) for name in args.op.inputs)


def _last_uses(ops, keep: set[str]) -> dict[int, list[str]]:
    last: dict[str, int] = {}
    for i, operation in enumerate(ops):
        for inner in (operation, *(o for b in operation.blocks for o in _walk(b))):
            for v in input_vars(inner):
                last[v.name] = i  # a value read inside a nested block lives until its op is done
        for block in operation.blocks:
            for v in block.outputs:
                last[v.name] = i
    by_op: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            by_op.setdefault(i, []).append(name)
    return by_op


# --- control flow: ops with nested blocks, run through evaluate's run_block --------------------

MAX_ITERATIONS = 1_000_000


def _while_loop(operation, env, run_block):
    cond, body = operation.blocks
    values = Args(operation, env).loop_vars
    for _ in range(MAX_ITERATIONS):
        (keep_going,) = run_block(cond, env, {v.name: x for v, x in zip(cond.inputs, values)})
        if not bool(np.asarray(keep_going).reshape(-1)[0]):
            return tuple(values) if len(values) > 1 else values[0]
        values = run_block(body, env, {v.name: x for v, x in zip(body.inputs, values)})
    raise MilEvalError(f"while_loop {operation.name}: still running after {MAX_ITERATIONS} iterations")


def _cond(operation, env, run_block):
    pred = bool(np.asarray(Args(operation, env).pred).reshape(-1)[0])
    out = run_block(operation.blocks[0 if pred else 1], env, {})
    return tuple(out) if len(out) > 1 else out[0]


CONTROL_FLOW: dict[str, Callable] = {"while_loop": _while_loop, "cond": _cond}
