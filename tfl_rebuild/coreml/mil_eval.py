"""A small numpy reference evaluator for Core ML MIL programs: the Linux stand-in for MLModel.predict.

Core ML runs models only on macOS. To still check a conversion's numbers on Linux we execute the
MIL program that coremltools produced (`mlmodel._mil_program`) op by op with numpy. Layout is the
program's (conv and pooling in NCHW). Each op computes in float32 and its result is stored in the
output variable's declared dtype: an fp16 output is rounded through np.float16 (kept in a float32
array, since numpy's float16 arithmetic is slow), which emulates a float16 ML program's storage
precision; device kernels may accumulate in fp16 where we use fp32, so fp16 checks need a
tolerance (see coreml.py).

`unknown_ops(program)` lists op types this evaluator cannot run, so a caller can say "not checked"
instead of guessing. Ops are registered with `@op("name", ...)`, one small function each.
"""

from __future__ import annotations

import itertools
import math
from collections import ChainMap
from collections.abc import Callable

import numpy as np

OPS: dict[str, Callable] = {}


def op(*names: str):
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
) -> dict[str, np.ndarray]:
    """Run the function on `inputs` (by input name); returns {name: value} of its outputs, or of
    the variables named in `outputs`. `round_consts_fp16` rounds float constants through float16
    (what quantize_weights(nbits=16) does to a neural network's weights); `fp16=False` keeps fp16
    activations at fp32 precision (to tell conversion error from fp16 rounding). Names of variables
    whose values overflowed float16 are appended to `overflow` when given; "<op type> <name>" of
    each op that makes a NaN from NaN-free inputs to `nan_origins` (0/0 or inf - inf in float16, say)."""
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
            for var in inner.inputs.values():
                for v in var if isinstance(var, (list, tuple)) else (var,):
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


# --- elementwise ------------------------------------------------------------------------------

_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_div": np.floor_divide,
    "mod": np.mod,
    "pow": np.power,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}


def _binary(fn):
    return lambda a: fn(a.x, a.y)


for _name, _fn in _BINARY.items():
    op(_name)(_binary(_fn))


@op("real_div")
def _real_div(a):
    x, y = a.x, a.y
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.floor_divide(x, y)  # MIL real_div of int32 stays int32
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(x, y)


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": _erf,
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "logical_not": np.logical_not,
    "round": np.round,
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "softplus": lambda x: np.logaddexp(0, x),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "identity": lambda x: x,
}


def _unary(fn):
    def run(a):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return fn(a.x)

    return run


for _name, _fn in _UNARY.items():
    op(_name)(_unary(_fn))


@op("inverse")
def _inverse(a):
    with np.errstate(divide="ignore"):
        return 1.0 / (a.x + a.scalar("epsilon", 1e-4))


@op("log")
def _log(a):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(a.x + a.scalar("epsilon", 1e-45))


@op("rsqrt")
def _rsqrt(a):
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(a.x + a.scalar("epsilon", 1e-12))


@op("clip")
def _clip(a):
    return np.minimum(np.maximum(a.x, a.scalar("alpha")), a.scalar("beta"))


@op("threshold")
def _threshold(a):
    return np.maximum(a.x, a.scalar("alpha"))


@op("cast")
def _cast(a):
    dtype = {
        "fp16": np.float16,
        "fp32": np.float32,
        "int32": np.int32,
        "bool": np.bool_,
        "int16": np.int16,
        "int8": np.int8,
        "uint8": np.uint8,
        "uint16": np.uint16,
    }[a.scalar("dtype")]
    return a.x.astype(dtype)  # the output var's dtype does the fp16 rounding


@op("select")
def _select(a):
    return np.where(a.cond, a.a, a.b)


# --- activations ------------------------------------------------------------------------------


@op("leaky_relu")
def _leaky_relu(a):
    x = a.x
    return np.where(x >= 0, x, x * a.scalar("alpha", 0.01))


@op("elu")
def _elu(a):
    x = a.x
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a.scalar("alpha", 1.0) * (np.exp(np.minimum(x, 0)) - 1))


@op("prelu")
def _prelu(a):
    x, alpha = a.x, a.alpha.reshape(-1)
    alpha = alpha.reshape((1, -1) + (1,) * (x.ndim - 2))  # one slope per channel (axis 1)
    return np.where(x >= 0, x, x * alpha)


@op("clamped_relu")
def _clamped_relu(a):
    x, beta = a.x, a.scalar("beta")
    return np.where(x >= 0, np.minimum(beta, x), np.minimum(beta, a.scalar("alpha") * x))


@op("thresholded_relu")
def _thresholded_relu(a):
    x = a.x
    return np.where(x > a.scalar("alpha", 1.0), x, 0).astype(x.dtype)


@op("linear_activation")
def _linear_activation(a):
    return a.scalar("alpha") * a.x + a.scalar("beta", 0.0)


@op("scaled_tanh")
def _scaled_tanh(a):
    return a.scalar("alpha", 1.0) * np.tanh(a.scalar("beta", 1.0) * a.x)


@op("sigmoid_hard")
def _sigmoid_hard(a):
    return np.clip(a.scalar("alpha", 0.2) * a.x + a.scalar("beta", 0.5), 0, 1)


@op("softplus_parametric")
def _softplus_parametric(a):
    x = a.x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    alpha, beta = a.alpha.reshape(shape), a.beta.reshape(shape)
    return alpha * np.logaddexp(0, beta * x)


@op("gelu")
def _gelu(a):
    x, mode = a.x, a.scalar("mode", "EXACT")
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x / (1 + np.exp(-1.702 * x))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


@op("softmax")
def _softmax(a):
    x = a.x.astype(np.float64)
    axis = a.scalar("axis", -1)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- linear algebra ---------------------------------------------------------------------------


@op("linear")
def _linear(a):
    y = np.matmul(a.x, a.weight.T)
    bias = a.get("bias")
    return y if bias is None else y + bias


@op("matmul")
def _matmul(a):
    x, y = a.x, a.y
    if a.scalar("transpose_x", False):
        x = np.swapaxes(x, -1, -2)
    if a.scalar("transpose_y", False):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("einsum")
def _einsum(a):
    return np.einsum(a.scalar("equation"), *a.values)


# --- convolution and pooling (NCHW; 1-D as 2-D with height 1) ---------------------------------


def _same_pads(size: int, k_eff: int, stride: int, lower: bool = False) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def _spatial_pads(a, in_sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    pad_type = a.scalar("pad_type", "valid")
    k_eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if pad_type in ("same", "same_lower"):
        return [_same_pads(n, k, s, pad_type == "same_lower") for n, k, s in zip(in_sizes, k_eff, strides)]
    if pad_type == "custom":
        p = a.ints("pad")
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(in_sizes))]
    return [(0, 0)] * len(in_sizes)


def _as_2d(x, n_spatial):
    return x[:, :, None, :] if n_spatial == 1 else x


def _windows(x, kernel, strides, dilations):
    """(N, C, Ho, Wo, kh, kw) view of the 2-D windows of x (already padded)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    win = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


@op("conv")
def _conv(a):
    x, w = a.x, a.weight
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _conv_3d(a)
    if n_sp not in (1, 2):
        raise MilEvalError(f"conv with {n_sp} spatial dimensions is not supported")
    x, w = _as_2d(x, n_sp), _as_2d(w, n_sp)
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    dilations = ([1] if n_sp == 1 else []) + a.ints("dilations", [1] * n_sp)
    kernel = list(w.shape[2:])
    pads = (
        _spatial_pads(a, x.shape[2:], kernel, strides, dilations)
        if n_sp == 2
        else [(0, 0)] + _spatial_pads(a, x.shape[3:], kernel[1:], strides[1:], dilations[1:])
    )
    x = np.pad(x, [(0, 0), (0, 0), *pads])
    groups = int(a.scalar("groups", 1))
    win = _windows(x, kernel, strides, dilations)  # N, C, Ho, Wo, kh, kw
    n, c, ho, wo = win.shape[:4]
    cout = w.shape[0]
    win = win.reshape(n, groups, c // groups, ho, wo, *kernel)
    wg = w.reshape(groups, cout // groups, c // groups, *kernel)
    y = np.einsum("ngchwij,gocij->ngohw", win, wg, optimize=True).reshape(n, cout, ho, wo)
    bias = a.get("bias")
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y[:, :, 0, :] if n_sp == 1 else y


@op("conv_transpose")
def _conv_transpose(a):
    x, w = a.x, a.weight  # w: [C_in, C_out/groups, kh, kw]
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _conv_transpose_3d(a)
    if n_sp not in (1, 2):
        raise MilEvalError(f"conv_transpose with {n_sp} spatial dimensions is not supported")
    x, w = _as_2d(x, n_sp), _as_2d(w, n_sp)
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    dilations = ([1] if n_sp == 1 else []) + a.ints("dilations", [1] * n_sp)
    groups = int(a.scalar("groups", 1))
    n, cin, h, wd = x.shape
    og, kh, kw = w.shape[1:]
    full = [
        (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1,
        (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1,
    ]
    y = np.zeros((n, groups * og, *full), np.float32)
    xg = x.reshape(n, groups, cin // groups, h, wd)
    wg = w.reshape(groups, cin // groups, og, kh, kw)
    for i in range(kh):  # scatter each kernel tap: out[s*h + d*i] += x[h] * w[i]
        for j in range(kw):
            contrib = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j]).reshape(n, groups * og, h, wd)
            oi, oj = i * dilations[0], j * dilations[1]
            y[
                :,
                :,
                oi : oi + (h - 1) * strides[0] + 1 : strides[0],
                oj : oj + (wd - 1) * strides[1] + 1 : strides[1],
            ] += contrib
    pad_type = a.scalar("pad_type", "valid")
    sizes = a.ints("output_shape")
    sizes = None if sizes is None else ([1] if n_sp == 1 else []) + sizes[2:]
    custom = a.ints("pad", [0] * 2 * n_sp)
    custom = ([0, 0] if n_sp == 1 else []) + custom
    crops = []  # (first row kept, rows kept) per spatial axis of the full scatter result
    for r in range(2):
        if pad_type in ("same", "same_lower"):
            size = sizes[r] if sizes else strides[r] * x.shape[2 + r]
            total = max(full[r] - size, 0)  # what TensorFlow's SAME conv would have padded
            before = total - total // 2 if pad_type == "same_lower" else total // 2
        else:
            before = custom[2 * r] if pad_type == "custom" else 0
            after = custom[2 * r + 1] if pad_type == "custom" else 0
            size = sizes[r] if sizes else full[r] - before - after
        crops.append((before, size))
    pad_end = [max(b + s - f, 0) for (b, s), f in zip(crops, full)]
    if any(pad_end):
        y = np.pad(y, [(0, 0), (0, 0), (0, pad_end[0]), (0, pad_end[1])])
    y = y[:, :, crops[0][0] : crops[0][0] + crops[0][1], crops[1][0] : crops[1][0] + crops[1][1]]
    bias = a.get("bias")
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y[:, :, 0, :] if n_sp == 1 else y


def _pool(a, kind: str):
    x = a.x
    n_sp = x.ndim - 2
    if n_sp == 3:
        return _pool_3d(a, kind)
    if n_sp not in (1, 2):
        raise MilEvalError(f"{kind} pool with {n_sp} spatial dimensions is not supported")
    x = _as_2d(x, n_sp)
    kernel = ([1] if n_sp == 1 else []) + a.ints("kernel_sizes")
    strides = ([1] if n_sp == 1 else []) + a.ints("strides", [1] * n_sp)
    pads = (
        _spatial_pads(a, x.shape[2:], kernel, strides, [1, 1])
        if n_sp == 2
        else [(0, 0)] + _spatial_pads(a, x.shape[3:], kernel[1:], strides[1:], [1])
    )
    if a.scalar("ceil_mode", False):  # extend the end so a partial last window counts
        pads = [
            (b, e + _ceil_extra(n + b + e, k, s))
            for (b, e), n, k, s in zip(pads, x.shape[2:], kernel, strides)
        ]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=fill)
    win = _windows(xp, kernel, strides, [1, 1])
    if kind == "max":
        y = win.max(axis=(-2, -1))
    elif kind == "l2":
        y = np.sqrt((win.astype(np.float64) ** 2).sum(axis=(-2, -1)))
    elif a.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1) + x.shape[2:], np.float32), [(0, 0), (0, 0), *pads])
        count = _windows(ones, kernel, strides, [1, 1]).sum(axis=(-2, -1))
        y = win.sum(axis=(-2, -1), dtype=np.float64) / count
    else:
        y = win.sum(axis=(-2, -1), dtype=np.float64) / (kernel[0] * kernel[1])
    return y[:, :, 0, :] if n_sp == 1 else y


def _ceil_extra(padded: int, k: int, s: int) -> int:
    out_floor = (padded - k) // s + 1
    out_ceil = -(-(padded - k) // s) + 1
    return (out_ceil - out_floor) * s if out_ceil > out_floor else 0


# 3-D (NCDHW): one strided slice per kernel tap, so any number of spatial axes reads the same.


def _taps(kernel):
    return itertools.product(*(range(k) for k in kernel))


def _tap_slice(tap, dilations, out, strides) -> tuple:
    """The input positions kernel tap `tap` meets for every output position (padded input)."""
    return (
        slice(None),
        slice(None),
        *(slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(tap, dilations, out, strides)),
    )


def _conv_3d(a):
    x, w = a.x, a.weight  # w: [C_out, C_in/groups, kd, kh, kw]
    strides, dilations = a.ints("strides", [1] * 3), a.ints("dilations", [1] * 3)
    kernel = list(w.shape[2:])
    x = np.pad(x, [(0, 0), (0, 0), *_spatial_pads(a, x.shape[2:], kernel, strides, dilations)])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, d, s in zip(x.shape[2:], kernel, dilations, strides)]
    groups = int(a.scalar("groups", 1))
    n, c, cout = x.shape[0], x.shape[1], w.shape[0]
    wg = w.reshape(groups, cout // groups, c // groups, *kernel)
    y = np.zeros((n, groups, cout // groups, *out), np.float64)
    for tap in _taps(kernel):
        xs = x[_tap_slice(tap, dilations, out, strides)].reshape(n, groups, c // groups, *out)
        y += np.einsum("ngcdhw,goc->ngodhw", xs, wg[(slice(None),) * 3 + tap], optimize=True)
    y = y.reshape(n, cout, *out)
    bias = a.get("bias")
    return (y if bias is None else y + bias.reshape(1, -1, 1, 1, 1)).astype(np.float32)


def _conv_transpose_3d(a):
    x, w = a.x, a.weight  # w: [C_in, C_out/groups, kd, kh, kw]
    strides, dilations = a.ints("strides", [1] * 3), a.ints("dilations", [1] * 3)
    groups = int(a.scalar("groups", 1))
    n, cin, *sizes = x.shape
    og, *kernel = w.shape[1:]
    full = [(m - 1) * s + (k - 1) * d + 1 for m, s, k, d in zip(sizes, strides, kernel, dilations)]
    y = np.zeros((n, groups, og, *full), np.float64)
    xg = x.reshape(n, groups, cin // groups, *sizes)
    wg = w.reshape(groups, cin // groups, og, *kernel)
    for tap in _taps(kernel):  # out[s*i + d*k] += x[i] * w[k]
        y[(slice(None),) + _tap_slice(tap, dilations, sizes, strides)] += np.einsum(
            "ngcdhw,gco->ngodhw", xg, wg[(slice(None),) * 3 + tap], optimize=True
        )
    y = y.reshape(n, groups * og, *full)
    pad_type, sizes_out = a.scalar("pad_type", "valid"), a.ints("output_shape")
    custom = a.ints("pad", [0] * 6)
    crops = []  # (first kept, count kept) per spatial axis of the full scatter result
    for r in range(3):
        if pad_type in ("same", "same_lower"):
            size = sizes_out[2 + r] if sizes_out else strides[r] * sizes[r]
            total = max(full[r] - size, 0)  # what TensorFlow's SAME conv would have padded
            before = total - total // 2 if pad_type == "same_lower" else total // 2
        else:
            before = custom[2 * r] if pad_type == "custom" else 0
            after = custom[2 * r + 1] if pad_type == "custom" else 0
            size = sizes_out[2 + r] if sizes_out else full[r] - before - after
        crops.append((before, size))
    y = np.pad(y, [(0, 0), (0, 0), *((0, max(b + m - f, 0)) for (b, m), f in zip(crops, full))])
    y = y[(slice(None), slice(None), *(slice(b, b + m) for b, m in crops))]
    bias = a.get("bias")
    return (y if bias is None else y + bias.reshape(1, -1, 1, 1, 1)).astype(np.float32)


def _pool_3d(a, kind: str):
    x = a.x
    kernel, strides = a.ints("kernel_sizes"), a.ints("strides", [1] * 3)
    pads = _spatial_pads(a, x.shape[2:], kernel, strides, [1] * 3)
    if a.scalar("ceil_mode", False):  # extend the end so a partial last window counts
        pads = [
            (b, e + _ceil_extra(n + b + e, k, s))
            for (b, e), n, k, s in zip(pads, x.shape[2:], kernel, strides)
        ]
    xp = np.pad(
        x.astype(np.float64), [(0, 0), (0, 0), *pads], constant_values=-np.inf if kind == "max" else 0.0
    )
    out = [(n - k) // s + 1 for n, k, s in zip(xp.shape[2:], kernel, strides)]
    win = np.stack([xp[_tap_slice(t, [1] * 3, out, strides)] for t in _taps(kernel)])
    if kind == "max":
        y = win.max(axis=0)
    elif kind == "l2":
        y = np.sqrt((win**2).sum(axis=0))
    elif a.scalar("exclude_padding_from_average", False):
        ones = np.pad(np.ones((1, 1, *x.shape[2:])), [(0, 0), (0, 0), *pads])
        y = win.sum(axis=0) / np.stack(
            [ones[_tap_slice(t, [1] * 3, out, strides)] for t in _taps(kernel)]
        ).sum(axis=0)
    else:
        y = win.sum(axis=0) / math.prod(kernel)
    return y.astype(np.float32)


op("max_pool")(lambda a: _pool(a, "max"))
op("avg_pool")(lambda a: _pool(a, "avg"))
op("l2_pool")(lambda a: _pool(a, "l2"))


# --- normalization ----------------------------------------------------------------------------


def _channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


@op("batch_norm")
def _batch_norm(a):
    x = a.x
    mean, var = _channel(a.mean, x.ndim), _channel(a.variance, x.ndim)
    y = (x - mean) / np.sqrt(var + a.scalar("epsilon", 1e-5))
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


@op("instance_norm")
def _instance_norm(a):
    x = a.x.astype(np.float64)
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-5)
    )
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * _channel(gamma, x.ndim)
    if beta is not None:
        y = y + _channel(beta, x.ndim)
    return y


@op("layer_norm")
def _layer_norm(a):
    x = a.x.astype(np.float64)
    axes = a.ints("axes")
    axes = tuple(range(x.ndim)) if axes is None else tuple(ax % x.ndim for ax in axes)
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(
        x.var(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-5)
    )
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    gamma, beta = a.get("gamma"), a.get("beta")
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@op("l2_norm")
def _l2_norm(a):
    x = a.x.astype(np.float64)
    axes = tuple(range(max(x.ndim - 3, 0), x.ndim))
    return x / np.sqrt((x**2).sum(axis=axes, keepdims=True) + a.scalar("epsilon", 1e-6))


@op("local_response_norm")
def _local_response_norm(a):
    x = a.x.astype(np.float64)
    size = int(a.scalar("size"))
    sq = np.pad(x**2, [(0, 0), ((size - 1) // 2, size // 2)] + [(0, 0)] * (x.ndim - 2))
    acc = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    return x / (a.scalar("k", 1.0) + a.scalar("alpha", 1e-4) / size * acc) ** a.scalar("beta", 0.75)


# --- reductions -------------------------------------------------------------------------------


def _reduce(fn):
    def run(a):
        x = a.x
        axes = a.ints("axes")
        axes = None if axes is None else tuple(ax % max(x.ndim, 1) for ax in axes)
        keep = bool(a.scalar("keep_dims", False))
        return fn(x.astype(np.float64) if x.dtype.kind == "f" else x, axes, keep)

    return run


_REDUCE = {
    "reduce_sum": lambda x, ax, k: x.sum(axis=ax, keepdims=k),
    "reduce_mean": lambda x, ax, k: x.mean(axis=ax, keepdims=k),
    "reduce_max": lambda x, ax, k: x.max(axis=ax, keepdims=k),
    "reduce_min": lambda x, ax, k: x.min(axis=ax, keepdims=k),
    "reduce_prod": lambda x, ax, k: x.prod(axis=ax, keepdims=k),
    "reduce_sum_square": lambda x, ax, k: (x * x).sum(axis=ax, keepdims=k),
    "reduce_l1_norm": lambda x, ax, k: np.abs(x).sum(axis=ax, keepdims=k),
    "reduce_l2_norm": lambda x, ax, k: np.sqrt((x * x).sum(axis=ax, keepdims=k)),
    "reduce_log_sum": lambda x, ax, k: np.log(x.sum(axis=ax, keepdims=k)),
    "reduce_log_sum_exp": lambda x, ax, k: _logsumexp(x, ax, k),
}


def _logsumexp(x, axes, keep):
    m = x.max(axis=axes, keepdims=True)
    y = np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


for _name, _fn in _REDUCE.items():
    op(_name)(_reduce(_fn))


def _arg_reduce(fn):
    def run(a):
        x, axis = a.x, int(a.scalar("axis", -1))
        y = fn(x, axis=axis)
        return np.expand_dims(y, axis) if a.scalar("keep_dims", False) else y

    return run


op("reduce_argmax")(_arg_reduce(np.argmax))
op("reduce_argmin")(_arg_reduce(np.argmin))


# --- shape and data movement ------------------------------------------------------------------


@op("reshape")
def _reshape(a):
    x, shape = a.x, a.ints("shape")
    if len(shape) == x.ndim:  # 0 copies the input's dimension
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@op("reshape_like")
def _reshape_like(a):
    x, refs = a.x, a.ref_tensors
    begins, ends = a.ints("begins"), a.ints("ends")
    end_masks = [bool(m) for m in np.asarray(a.end_masks).reshape(-1)]
    shape: list[int] = []
    for ref, b, e, m in zip(refs, begins, ends, end_masks):
        shape += list(ref.shape[b:] if m else ref.shape[b:e])
    return x.reshape(shape)


@op("transpose")
def _transpose(a):
    return np.transpose(a.x, a.ints("perm"))


@op("concat")
def _concat(a):
    values, axis = a.values, int(a.scalar("axis"))
    if a.scalar("interleave", False):
        parts = [np.split(v, v.shape[axis], axis=axis) for v in values]
        return np.concatenate([p for group in zip(*parts) for p in group], axis=axis)
    return np.concatenate(values, axis=axis)


@op("stack")
def _stack(a):
    return np.stack(a.values, axis=int(a.scalar("axis")))


@op("split")
def _split(a):
    x, axis = a.x, int(a.scalar("axis"))
    sizes = a.ints("split_sizes")
    if sizes is None:
        return tuple(np.split(x, int(a.scalar("num_splits")), axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@op("squeeze")
def _squeeze(a):
    axes = a.ints("axes")
    return np.squeeze(a.x, axis=None if axes is None else tuple(axes))


@op("expand_dims")
def _expand_dims(a):
    x, axes = a.x, a.ints("axes")
    rank = x.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = np.expand_dims(x, ax)
    return x


@op("slice_by_index")
def _slice_by_index(a):
    x = a.x
    begin, end = a.ints("begin"), a.ints("end")
    stride = a.ints("stride", [1] * x.ndim)
    begin_mask = [bool(m) for m in a.ints("begin_mask", [0] * x.ndim)]
    end_mask = [bool(m) for m in a.ints("end_mask", [0] * x.ndim)]
    squeeze = [bool(m) for m in a.ints("squeeze_mask", [0] * x.ndim)]
    index = []
    for i in range(x.ndim):
        if squeeze[i]:
            index.append(begin[i])
            continue
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        index.append(slice(b, e, stride[i]))
    return x[tuple(index)]


@op("slice_by_size")
def _slice_by_size(a):
    x, begin, size = a.x, a.ints("begin"), a.ints("size")
    index = []
    for i, (b, s) in enumerate(zip(begin, size)):
        b = b % x.shape[i] if b < 0 else b
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


@op("gather")
def _gather(a):
    x, idx = a.x, a.indices.astype(np.int64)
    axis, batch = int(a.scalar("axis", 0)) % x.ndim, int(a.scalar("batch_dims", 0))
    if batch == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([_gather_batched(x[i], idx[i], axis - 1, batch - 1) for i in range(x.shape[0])])


def _gather_batched(x, idx, axis, batch):
    if batch == 0:
        return np.take(x, idx, axis=axis)
    return np.stack([_gather_batched(x[i], idx[i], axis - 1, batch - 1) for i in range(x.shape[0])])


@op("gather_along_axis")
def _gather_along_axis(a):
    return np.take_along_axis(
        a.x, a.indices.astype(np.int64) % a.x.shape[int(a.scalar("axis", 0))], axis=int(a.scalar("axis", 0))
    )


@op("gather_nd")
def _gather_nd(a):
    return _gather_nd_batched(a.x, a.indices.astype(np.int64), int(a.scalar("batch_dims", 0)))


def _gather_nd_batched(x, idx, batch):
    if batch:
        return np.stack([_gather_nd_batched(x[i], idx[i], batch - 1) for i in range(x.shape[0])])
    k = idx.shape[-1]
    out = x[tuple(idx.reshape(-1, k).T)]
    return out.reshape(idx.shape[:-1] + x.shape[k:])


_SCATTER = {
    "update": None,
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


@op("scatter_nd")
def _scatter_nd(a):
    mode = a.scalar("mode", "add")
    if mode not in _SCATTER:
        raise MilEvalError(f"scatter_nd mode {mode!r} is not supported")
    out = np.array(a.data, copy=True)
    idx = a.indices.astype(np.int64)
    k = idx.shape[-1]
    rows = tuple(idx.reshape(-1, k).T)
    updates = np.asarray(a.updates, out.dtype).reshape((-1, *out.shape[k:]))
    if _SCATTER[mode] is None:
        out[rows] = updates
    else:  # unbuffered, so repeated indices combine
        _SCATTER[mode].at(out, rows, updates)
    return out


@op("tile")
def _tile(a):
    return np.tile(a.x, a.ints("reps"))


@op("reverse")
def _reverse(a):
    axes = a.ints("axes")
    return np.flip(a.x, axis=None if axes is None else tuple(axes))


@op("pad")
def _pad(a):
    x, p = a.x, a.ints("pad")
    n = len(p) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    mode = a.scalar("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, constant_values=a.scalar("constant_val", 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@op("shape")
def _shape(a):
    return np.array(a.x.shape, np.int32)


@op("fill")
def _fill(a):
    return np.full(a.ints("shape"), a.scalar("value", 0.0))


@op("fill_like")
def _fill_like(a):
    return np.full(a.ref_tensor.shape, a.scalar("value", 0.0))


@op("range_1d")
def _range_1d(a):
    return np.arange(a.scalar("start"), a.scalar("end"), a.scalar("step"))


@op("cumsum")
def _cumsum(a):
    x, axis = a.x, int(a.scalar("axis", 0))
    if a.scalar("reverse", False):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if a.scalar("exclusive", False):
        y = y - x
    return np.flip(y, axis) if a.scalar("reverse", False) else y


@op("depth_to_space")
def _depth_to_space(a):
    x, b = a.x, int(a.scalar("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)  # DCR, as TensorFlow
    return y.reshape(n, c // (b * b), h * b, w * b)


@op("space_to_depth")
def _space_to_depth(a):
    x, b = a.x, int(a.scalar("block_size"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@op("space_to_batch")
def _space_to_batch(a):
    # TensorFlow's SpaceToBatchND in NCHW: batch index (i * bw + j) * n + k for block offset (i, j).
    x, (bh, bw) = a.x, a.ints("block_shape")
    pads = np.asarray(a.paddings).reshape(2, 2)
    x = np.pad(x, [(0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // bh, bh, w // bw, bw).transpose(3, 5, 0, 1, 2, 4)
    return y.reshape(bh * bw * n, c, h // bh, w // bw)


@op("batch_to_space")
def _batch_to_space(a):
    x, (bh, bw) = a.x, a.ints("block_shape")
    crops = np.asarray(a.crops).reshape(2, 2)
    b, c, h, w = x.shape
    n = b // (bh * bw)
    y = x.reshape(bh, bw, n, c, h, w).transpose(2, 3, 4, 0, 5, 1).reshape(n, c, h * bh, w * bw)
    return y[:, :, crops[0, 0] : h * bh - crops[0, 1], crops[1, 0] : w * bw - crops[1, 1]]


@op("pixel_shuffle")
def _pixel_shuffle(a):
    x, f = a.x, int(a.scalar("upscale_factor"))
    n, c, h, w = x.shape
    y = x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3)  # CRD, as PyTorch
    return y.reshape(n, c // (f * f), h * f, w * f)


@op("flatten2d")
def _flatten2d(a):
    x, axis = a.x, int(a.scalar("axis", 1)) % max(a.x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("topk")
def _topk(a):
    x, k, axis = a.x, int(a.scalar("k", 1)), int(a.scalar("axis", -1))
    order = np.argsort(-x if not a.scalar("ascending", False) else x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


@op("argsort")
def _argsort(a):
    x, axis = a.x, int(a.scalar("axis", -1))
    return np.argsort(x if a.scalar("ascending", False) else -x, axis=axis, kind="stable").astype(np.int32)


@op("one_hot")
def _one_hot(a):
    idx, depth = a.indices.astype(np.int64), int(a.scalar("one_hot_vector_size"))
    y = (idx[..., None] == np.arange(depth)).astype(np.float32)
    y = np.where(y > 0, a.scalar("on_value", 1.0), a.scalar("off_value", 0.0))
    return np.moveaxis(y, -1, int(a.scalar("axis", -1)))


@op("band_part")
def _band_part(a):
    x = a.x
    lower, upper = int(a.scalar("lower", -1)), int(a.scalar("upper", -1))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, 0)


# --- resizing ---------------------------------------------------------------------------------


def _grid(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """Sample positions in input coordinates (the formulas of MIL's resize_bilinear doc)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            g = np.full(1, (n_in - 1) / 2 if mode == "ALIGN_CORNERS" else 0.0)
        else:
            g = i * (n_in - 1) / (n_out - 1)
    elif mode == "DEFAULT":
        g = i * n_in / n_out
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        g = 0.5 * delta + i * delta
    else:  # UNALIGN_CORNERS: half-pixel centers
        g = (i + 0.5) * n_in / n_out - 0.5
    return np.clip(g, 0, n_in - 1)


def _lerp_axis(x, grid, axis):
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, x.shape[axis] - 1)
    frac = (grid - lo).reshape([-1 if d == axis % x.ndim else 1 for d in range(x.ndim)])
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _bilinear(x, out_h, out_w, mode):
    y = _lerp_axis(x.astype(np.float64), _grid(x.shape[-2], out_h, mode), -2)
    return _lerp_axis(y, _grid(x.shape[-1], out_w, mode), -1)


@op("upsample_bilinear")
def _upsample_bilinear(a):
    x = a.x
    sh, sw = a.scalar("scale_factor_height", 1), a.scalar("scale_factor_width", 1)
    align = bool(a.scalar("align_corners", True))
    half = bool(a.scalar("half_pixel_centers", not align))
    mode = "STRICT_ALIGN_CORNERS" if align else ("UNALIGN_CORNERS" if half else "DEFAULT")
    return _bilinear(x, int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)), mode)


@op("resize_bilinear")
def _resize_bilinear(a):
    return _bilinear(
        a.x,
        int(a.scalar("target_size_height", 1)),
        int(a.scalar("target_size_width", 1)),
        a.scalar("sampling_mode", "DEFAULT"),
    )


def _nearest(x, out_h, out_w):
    rows = np.minimum(np.floor(np.arange(out_h) * x.shape[-2] / out_h).astype(np.int64), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(out_w) * x.shape[-1] / out_w).astype(np.int64), x.shape[-1] - 1)
    return np.take(np.take(x, rows, axis=-2), cols, axis=-1)


@op("upsample_nearest_neighbor")
def _upsample_nearest(a):
    x = a.x
    sh, sw = a.scalar("scale_factor_height", 1), a.scalar("scale_factor_width", 1)
    return _nearest(x, int(math.floor(x.shape[-2] * sh)), int(math.floor(x.shape[-1] * sw)))


@op("resize_nearest_neighbor")
def _resize_nearest(a):
    return _nearest(a.x, int(a.scalar("target_size_height")), int(a.scalar("target_size_width")))


@op("crop")
def _crop(a):
    x, (t, b), (left, r) = a.x, a.ints("crop_height"), a.ints("crop_width")
    return x[..., t : x.shape[-2] - b, left : x.shape[-1] - r]


@op("crop_resize")
def _crop_resize(a):
    """Bilinear crops of NCHW x. iOS15/16: roi [N, 1, 4|5, 1, 1] -> [N, B|1, C, th, tw];
    iOS17: boxes [N, 4] (+ box_indices) -> [N, C, th, tw]. Only the align-corners grids, which
    is what coremltools emits (TF CropAndResize, ExtractImagePatches)."""
    x = a.x.astype(np.float64)
    th, tw = int(a.scalar("target_height", 1)), int(a.scalar("target_width", 1))
    mode = a.scalar("box_coordinate_mode", "CORNERS_HEIGHT_FIRST")
    sampling = a.scalar("sampling_mode", "DEFAULT")
    if sampling not in ("ALIGN_CORNERS", "STRICT_ALIGN_CORNERS"):
        raise MilEvalError(f"crop_resize sampling_mode {sampling} is not supported")
    scale, pad_value = float(a.scalar("spatial_scale", 1.0)), float(a.scalar("pad_value", 0.0))
    b, _, h, w = x.shape
    if "boxes" in a.op.inputs:
        boxes = a.boxes.reshape(-1, 4).astype(np.float64)
        idx = a.get("box_indices")
        idx = np.arange(len(boxes)) if idx is None else idx.reshape(-1)
        jobs = [([int(i)], box) for i, box in zip(idx, boxes)]
    else:
        roi = a.roi.reshape(a.roi.shape[0], -1).astype(np.float64)
        jobs = [([int(r[0])] if r.size == 5 else list(range(b)), r[-4:]) for r in roi]
    outs = []
    for images, box in jobs:
        c = box * scale
        if mode.startswith("CENTER_SIZE"):
            c = np.array([c[0] - c[2] / 2, c[1] - c[3] / 2, c[0] + c[2] / 2, c[1] + c[3] / 2])
        y1, x1, y2, x2 = c if mode.endswith("HEIGHT_FIRST") else c[[1, 0, 3, 2]]
        if a.scalar("normalized_coordinates", False):
            y1, y2, x1, x2 = y1 * (h - 1), y2 * (h - 1), x1 * (w - 1), x2 * (w - 1)
        ys = _crop_grid(y1, y2, th, sampling == "STRICT_ALIGN_CORNERS")
        xs = _crop_grid(x1, x2, tw, sampling == "STRICT_ALIGN_CORNERS")
        outs.append(np.stack([_sample(x[i], ys, xs, pad_value) for i in images]))
    out = np.stack(outs)
    return out[:, 0] if "boxes" in a.op.inputs else out


def _crop_grid(lo, hi, n, strict):
    if n == 1:
        return np.array([lo if strict else (lo + hi) / 2])
    return lo + np.arange(n) * (hi - lo) / (n - 1)


def _sample(img, ys, xs, pad_value):
    c, h, w = img.shape
    out = np.full((c, ys.size, xs.size), pad_value)
    vy, vx = (ys >= 0) & (ys <= h - 1), (xs >= 0) & (xs <= w - 1)
    y, x = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = img[:, y0][:, :, x0] * (1 - fx) + img[:, y0][:, :, x1] * fx
    bottom = img[:, y1][:, :, x0] * (1 - fx) + img[:, y1][:, :, x1] * fx
    val = top * (1 - fy) + bottom * fy
    mask = vy[:, None] & vx[None, :]
    out[:, mask] = val[:, mask]
    return out


# --- classifier -------------------------------------------------------------------------------


@op("classify")
def _classify(a):
    """(label, probabilities): the probability vector stands in for Core ML's label->prob dict."""
    probs = a.probabilities
    classes = a.op.inputs["classes"].val
    labels = list(getattr(classes, "ls", classes))
    flat = probs.reshape(-1)
    return labels[int(np.argmax(flat))], probs
