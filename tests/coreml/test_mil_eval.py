"""The numpy MIL evaluator, op by op: tiny programs built with coremltools' Builder, against numpy.

References are written independently of mil_eval (direct loops for convolution and pooling;
TensorFlow's resize/crop kernels for the modes MIL documents as equal to them).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import mil_list as mb_list  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from tfl_rebuild.coreml.mil_eval import MilEvalError, evaluate, op_types, unknown_ops  # noqa: E402

RNG = np.random.default_rng(7)


def rand(*shape, lo=-2.0, hi=2.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


def program(build, *arrays, opset=None):
    """A MIL program with one input per array (named a, b, c) whose body is `build(*vars)`."""
    names = "abc"[: len(arrays)]
    specs = [
        mb.TensorSpec(
            shape=x.shape,
            dtype=types.int32
            if x.dtype.kind in "iu"
            else (types.fp16 if x.dtype == np.float16 else types.fp32),
        )
        for x in arrays
    ]
    src = f"lambda {', '.join(names)}: build({', '.join(names)})"
    fn = eval(src, {"build": build})  # noqa: S307 (mb.program reads the parameter names)
    return mb.program(input_specs=specs, opset_version=opset)(fn)


def run(build, *arrays, opset=None, **kw):
    prog = program(build, *arrays, opset=opset)
    out = evaluate(prog, {n: x for n, x in zip("abc", arrays)}, **kw)
    values = list(out.values())
    return values[0] if len(values) == 1 else values


def close(got, want, tol=1e-5):
    want = np.asarray(want)
    assert np.shape(got) == want.shape, (np.shape(got), want.shape)
    np.testing.assert_allclose(np.asarray(got, np.float64), want.astype(np.float64), rtol=tol, atol=tol)


# --- elementwise ------------------------------------------------------------------------------

X, Y = rand(2, 3, 4), rand(3, 4)
POS = rand(2, 3, 4, lo=0.1, hi=3.0)
BINARY = [
    ("add", mb.add, np.add),
    ("sub", mb.sub, np.subtract),
    ("mul", mb.mul, np.multiply),
    ("real_div", mb.real_div, np.divide),
    ("maximum", mb.maximum, np.maximum),
    ("minimum", mb.minimum, np.minimum),
    ("floor_div", mb.floor_div, np.floor_divide),
    ("mod", mb.mod, np.mod),
]


@pytest.mark.parametrize("fn,ref", [pytest.param(f, r, id=n) for n, f, r in BINARY])
def test_binary_broadcast(fn, ref):
    close(run(lambda a, b: fn(x=a, y=b), X, Y), ref(X, Y))


def test_pow():
    close(run(lambda a: mb.pow(x=a, y=1.5), POS), POS**1.5)


@pytest.mark.parametrize(
    "fn,ref",
    [
        pytest.param(mb.equal, np.equal, id="equal"),
        pytest.param(mb.less, np.less, id="less"),
        pytest.param(mb.greater_equal, np.greater_equal, id="greater_equal"),
    ],
)
def test_comparison(fn, ref):
    y = np.where(RNG.random(Y.shape) < 0.3, X[0], Y)  # some ties
    got = run(lambda a, b: fn(x=a, y=b), X, y)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, ref(X, y))


def _erf(x):
    return np.vectorize(math.erf)(x)


UNARY = [
    ("abs", mb.abs, np.abs, X),
    ("exp", mb.exp, np.exp, X),
    ("sqrt", mb.sqrt, np.sqrt, POS),
    ("floor", mb.floor, np.floor, X),
    ("ceil", mb.ceil, np.ceil, X),
    ("round", mb.round, np.round, X * 3),
    ("sign", mb.sign, np.sign, X),
    ("square", mb.square, np.square, X),
    ("sin", mb.sin, np.sin, X),
    ("cos", mb.cos, np.cos, X),
    ("tanh", mb.tanh, np.tanh, X),
    ("erf", mb.erf, _erf, X),
    ("relu", mb.relu, lambda x: np.maximum(x, 0), X),
    ("relu6", mb.relu6, lambda x: np.minimum(np.maximum(x, 0), 6), X * 5),
    ("sigmoid", mb.sigmoid, lambda x: 1 / (1 + np.exp(-x)), X),
    ("softplus", mb.softplus, lambda x: np.log1p(np.exp(x)), X),
    ("softsign", mb.softsign, lambda x: x / (1 + np.abs(x)), X),
    ("silu", mb.silu, lambda x: x / (1 + np.exp(-x)), X),
]


@pytest.mark.parametrize("fn,ref,x", [pytest.param(f, r, x, id=n) for n, f, r, x in UNARY])
def test_unary(fn, ref, x):
    close(run(lambda a: fn(x=a), x), ref(x))


@pytest.mark.parametrize(
    "fn,kw,ref",
    [
        pytest.param(mb.log, {"epsilon": 1e-3}, lambda x: np.log(x + 1e-3), id="log"),
        pytest.param(mb.rsqrt, {"epsilon": 1e-3}, lambda x: 1 / np.sqrt(x + 1e-3), id="rsqrt"),
        pytest.param(mb.inverse, {"epsilon": 1e-3}, lambda x: 1 / (x + 1e-3), id="inverse"),
        pytest.param(mb.clip, {"alpha": -0.5, "beta": 0.7}, lambda x: np.clip(x, -0.5, 0.7), id="clip"),
        pytest.param(mb.threshold, {"alpha": 0.4}, lambda x: np.maximum(x, 0.4), id="threshold"),
        pytest.param(mb.leaky_relu, {"alpha": 0.2}, lambda x: np.where(x > 0, x, 0.2 * x), id="leaky_relu"),
        pytest.param(mb.elu, {"alpha": 0.7}, lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1)), id="elu"),
        pytest.param(
            mb.clamped_relu,
            {"alpha": 0.1, "beta": 1.5},
            lambda x: np.where(x >= 0, np.minimum(x, 1.5), np.minimum(1.5, 0.1 * x)),
            id="clamped_relu",
        ),
        pytest.param(
            mb.thresholded_relu, {"alpha": 0.3}, lambda x: np.where(x > 0.3, x, 0), id="thresholded_relu"
        ),
        pytest.param(
            mb.linear_activation, {"alpha": 2.0, "beta": -1.0}, lambda x: 2 * x - 1, id="linear_activation"
        ),
        pytest.param(
            mb.scaled_tanh, {"alpha": 1.7, "beta": 0.6}, lambda x: 1.7 * np.tanh(0.6 * x), id="scaled_tanh"
        ),
        pytest.param(
            mb.sigmoid_hard,
            {"alpha": 0.2, "beta": 0.5},
            lambda x: np.clip(0.2 * x + 0.5, 0, 1),
            id="sigmoid_hard",
        ),
        pytest.param(
            mb.gelu, {"mode": "EXACT"}, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), id="gelu_exact"
        ),
        pytest.param(
            mb.gelu,
            {"mode": "TANH_APPROXIMATION"},
            lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
            id="gelu_tanh",
        ),
        pytest.param(
            mb.gelu,
            {"mode": "SIGMOID_APPROXIMATION"},
            lambda x: x / (1 + np.exp(-1.702 * x)),
            id="gelu_sigmoid",
        ),
    ],
)
def test_unary_with_parameters(fn, kw, ref):
    x = POS if fn in (mb.log, mb.rsqrt, mb.inverse) else X
    close(run(lambda a: fn(x=a, **kw), x), ref(x))


def test_prelu_one_slope_per_channel():
    x, alpha = rand(1, 3, 4, 5), np.array([0.1, 0.5, 2.0], np.float32)
    close(run(lambda a: mb.prelu(x=a, alpha=alpha), x), np.where(x > 0, x, x * alpha[None, :, None, None]))


def test_softplus_parametric():
    x, al, be = rand(1, 3, 4, 5), np.array([1.0, 2.0, 0.5], np.float32), np.array([0.5, 1.0, 3.0], np.float32)
    want = al[None, :, None, None] * np.log1p(np.exp(be[None, :, None, None] * x))
    close(run(lambda a: mb.softplus_parametric(x=a, alpha=al, beta=be), x), want)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    e = np.exp(X - X.max(axis=axis, keepdims=True))
    close(run(lambda a: mb.softmax(x=a, axis=axis), X), e / e.sum(axis=axis, keepdims=True))


def test_select():
    cond = RNG.random((3, 4)) < 0.5
    got = run(lambda a, b: mb.select(cond=cond, a=a, b=b), X, Y)
    close(got, np.where(cond, X, Y))


# --- linear algebra ---------------------------------------------------------------------------


def test_linear():
    x, w, b = rand(2, 5), rand(3, 5), rand(3)
    close(run(lambda a: mb.linear(x=a, weight=w, bias=b), x), x @ w.T + b)


@pytest.mark.parametrize("tx,ty", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul(tx, ty):
    x, y = rand(2, 4, 3), rand(3, 5)
    xa = np.swapaxes(x, -1, -2).copy() if tx else x
    ya = y.T.copy() if ty else y
    close(run(lambda a, b: mb.matmul(x=a, y=b, transpose_x=tx, transpose_y=ty), xa, ya), x @ y, 1e-4)


# --- convolution and pooling ------------------------------------------------------------------


def ref_conv(x, w, stride, pads, dil, groups, bias=None):
    """Direct-loop 2-D convolution (NCHW, OIHW), pads ((top, bottom), (left, right))."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads])
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho = (h - (kh - 1) * dil[0] - 1) // stride[0] + 1
    wo = (wd - (kw - 1) * dil[1] - 1) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                patch = x[
                    :,
                    g * cg : (g + 1) * cg,
                    i * stride[0] : i * stride[0] + (kh - 1) * dil[0] + 1 : dil[0],
                    j * stride[1] : j * stride[1] + (kw - 1) * dil[1] + 1 : dil[1],
                ]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out if bias is None else out + bias[None, :, None, None]


def same(n, k, s, d=1):
    out = -(-n // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
    return total // 2, total - total // 2


CONVS = [  # id, x shape, w shape, strides, dilations, groups, pad_type, custom pad
    ("valid", (1, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1), 1, "valid", None),
    ("same_stride2", (2, 3, 9, 8), (5, 3, 3, 3), (2, 2), (1, 1), 1, "same", None),
    ("same_dilated", (1, 2, 9, 9), (3, 2, 3, 3), (1, 1), (2, 2), 1, "same", None),
    ("custom_groups", (1, 4, 6, 7), (6, 2, 2, 3), (1, 2), (1, 1), 2, "custom", [1, 0, 2, 1]),
    ("depthwise", (1, 4, 8, 8), (8, 1, 3, 3), (2, 2), (1, 1), 4, "same", None),
    ("same_lower_even_kernel", (1, 2, 7, 7), (2, 2, 4, 4), (2, 2), (1, 1), 1, "same_lower", None),
]


@pytest.mark.parametrize("xs,ws,st,dil,groups,pad_type,pad", [pytest.param(*c[1:], id=c[0]) for c in CONVS])
def test_conv2d(xs, ws, st, dil, groups, pad_type, pad):
    x, w, b = rand(*xs), rand(*ws), rand(ws[0])
    kw = {"pad": pad} if pad else {}
    got = run(
        lambda a: mb.conv(
            x=a, weight=w, bias=b, strides=st, dilations=dil, groups=groups, pad_type=pad_type, **kw
        ),
        x,
    )
    if pad_type == "custom":
        pads = [(pad[0], pad[1]), (pad[2], pad[3])]
    elif pad_type == "valid":
        pads = [(0, 0), (0, 0)]
    else:
        pads = [same(n, k, s, d) for n, k, s, d in zip(xs[2:], ws[2:], st, dil)]
        if pad_type == "same_lower":
            pads = [(p[1], p[0]) for p in pads]
    close(got, ref_conv(x, w, st, pads, dil, groups, b), 1e-4)


def test_conv1d():
    x, w = rand(1, 3, 10), rand(4, 3, 3)
    got = run(lambda a: mb.conv(x=a, weight=w, strides=[2], pad_type="same"), x)
    want = ref_conv(x[:, :, None], w[:, :, None], (1, 2), [(0, 0), same(10, 3, 2)], (1, 1), 1)[:, :, 0]
    close(got, want, 1e-4)


def ref_conv_transpose(x, w, stride, groups=1):
    """Full (uncropped) transposed convolution by scattering, weight [C_in, C_out/groups, kh, kw]."""
    n, cin, h, wd = x.shape
    _, og, kh, kw = w.shape
    out = np.zeros((n, og * groups, (h - 1) * stride[0] + kh, (wd - 1) * stride[1] + kw))
    cg = cin // groups
    for ci in range(cin):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                out[
                    :,
                    g * og : (g + 1) * og,
                    i * stride[0] : i * stride[0] + kh,
                    j * stride[1] : j * stride[1] + kw,
                ] += x[:, ci, i, j][:, None, None, None] * w[ci][None]
    return out


def test_conv_transpose_valid():
    x, w, b = rand(1, 3, 4, 5), rand(3, 2, 3, 3), rand(2)
    got = run(lambda a: mb.conv_transpose(x=a, weight=w, bias=b, strides=[2, 2], pad_type="valid"), x)
    close(got, ref_conv_transpose(x, w, (2, 2)) + b[None, :, None, None], 1e-4)


def test_conv_transpose_same_with_output_shape():
    x, w = rand(1, 3, 4, 4), rand(3, 2, 4, 4)
    got = run(
        lambda a: mb.conv_transpose(
            x=a, weight=w, strides=[2, 2], pad_type="same", output_shape=[1, 2, 8, 8]
        ),
        x,
    )
    full = ref_conv_transpose(x, w, (2, 2))  # 10x10; TF SAME crops (k - s) // 2 = 1 first
    close(got, full[:, :, 1:9, 1:9], 1e-4)


def test_conv_transpose_custom_pad_groups():
    x, w = rand(1, 4, 3, 3), rand(4, 1, 3, 3)
    got = run(
        lambda a: mb.conv_transpose(
            x=a, weight=w, strides=[2, 2], groups=2, pad_type="custom", pad=[1, 0, 0, 2]
        ),
        x,
    )
    close(got, ref_conv_transpose(x, w, (2, 2), groups=2)[:, :, 1:, :-2], 1e-4)


def ref_pool(x, k, s, pads, kind, exclude=False):
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads], constant_values=fill)
    valid = np.pad(np.ones(x.shape[2:]), pads)
    ho, wo = (xp.shape[2] - k[0]) // s[0] + 1, (xp.shape[3] - k[1]) // s[1] + 1
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]]
            if kind == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            elif kind == "l2":
                out[:, :, i, j] = np.sqrt((win**2).sum(axis=(2, 3)))
            else:
                count = (
                    valid[i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]].sum()
                    if exclude
                    else k[0] * k[1]
                )
                out[:, :, i, j] = win.sum(axis=(2, 3)) / count
    return out


@pytest.mark.parametrize(
    "kind,pad_type,exclude",
    [
        ("max", "valid", False),
        ("max", "same", False),
        ("avg", "valid", False),
        ("avg", "same", True),
        ("avg", "same", False),
        ("l2", "valid", False),
    ],
)
def test_pool(kind, pad_type, exclude):
    x = rand(1, 3, 7, 8)
    k, s = (3, 2), (2, 2)
    kw = {"exclude_padding_from_average": exclude} if kind == "avg" else {}
    fn = {"max": mb.max_pool, "avg": mb.avg_pool, "l2": mb.l2_pool}[kind]
    got = run(lambda a: fn(x=a, kernel_sizes=k, strides=s, pad_type=pad_type, **kw), x)
    pads = [same(7, 3, 2), same(8, 2, 2)] if pad_type == "same" else [(0, 0), (0, 0)]
    close(got, ref_pool(x, k, s, pads, kind, exclude), 1e-5)


def ref_conv3d(x, w, stride, pads, dil, groups=1):
    """Direct-loop 3-D convolution (NCDHW, weight [O, I/groups, kd, kh, kw])."""
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads])
    o, cg, *k = w.shape
    out_sizes = [(n - (kk - 1) * d - 1) // s + 1 for n, kk, d, s in zip(x.shape[2:], k, dil, stride)]
    out = np.zeros((x.shape[0], o, *out_sizes))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for pos in np.ndindex(*out_sizes):
            patch = x[
                (
                    slice(None),
                    slice(g * cg, (g + 1) * cg),
                    *(slice(p * s, p * s + (kk - 1) * d + 1, d) for p, s, kk, d in zip(pos, stride, k, dil)),
                )
            ]
            out[(slice(None), oc, *pos)] = (patch * w[oc]).sum(axis=(1, 2, 3, 4))
    return out


@pytest.mark.parametrize(
    "pad_type,st,dil,groups",
    [
        ("valid", (1, 2, 1), (1, 1, 1), 1),
        ("same", (2, 1, 2), (1, 1, 1), 1),
        ("same", (1, 1, 1), (1, 2, 2), 2),
        ("custom", (1, 1, 2), (1, 1, 1), 1),
    ],
    ids=["valid", "same-strided", "same-dilated-groups", "custom"],
)
def test_conv3d(pad_type, st, dil, groups):
    x, w, b = rand(1, 4, 5, 6, 7), rand(3 * groups, 4 // groups, 2, 3, 2), rand(3 * groups)
    pad = [1, 0, 0, 2, 1, 1]
    kw = {"pad": pad} if pad_type == "custom" else {}
    got = run(
        lambda a: mb.conv(
            x=a, weight=w, bias=b, strides=st, dilations=dil, groups=groups, pad_type=pad_type, **kw
        ),
        x,
    )
    if pad_type == "custom":
        pads = [(pad[0], pad[1]), (pad[2], pad[3]), (pad[4], pad[5])]
    elif pad_type == "valid":
        pads = [(0, 0)] * 3
    else:
        pads = [same(n, k, s, d) for n, k, s, d in zip(x.shape[2:], w.shape[2:], st, dil)]
    close(got, ref_conv3d(x, w, st, pads, dil, groups) + b[None, :, None, None, None], 1e-4)


def ref_conv_transpose3d(x, w, stride):
    """Full (uncropped) 3-D transposed convolution by scattering, weight [C_in, C_out, kd, kh, kw]."""
    n, cin, *sizes = x.shape
    _, co, *k = w.shape
    out = np.zeros((n, co, *((m - 1) * s + kk for m, s, kk in zip(sizes, stride, k))))
    for ci in range(cin):
        for pos in np.ndindex(*sizes):
            at = tuple(slice(p * s, p * s + kk) for p, s, kk in zip(pos, stride, k))
            out[(slice(None), slice(None), *at)] += (
                x[(slice(None), ci, *pos)][:, None, None, None, None] * w[ci][None]
            )
    return out


def test_conv_transpose3d_valid_and_same():
    x, w, b = rand(1, 3, 3, 4, 2), rand(3, 2, 3, 2, 3), rand(2)
    got = run(lambda a: mb.conv_transpose(x=a, weight=w, bias=b, strides=[2, 2, 1], pad_type="valid"), x)
    full = ref_conv_transpose3d(x, w, (2, 2, 1))
    close(got, full + b[None, :, None, None, None], 1e-4)
    got = run(
        lambda a: mb.conv_transpose(
            x=a, weight=w, strides=[2, 2, 1], pad_type="same", output_shape=[1, 2, 6, 8, 2]
        ),
        x,
    )
    # TF SAME keeps stride * size per axis, cropping (full - kept) // 2 first: 7 -> 6 (0), 8 -> 8, 4 -> 2 (1)
    close(got, full[:, :, 0:6, 0:8, 1:3], 1e-4)


@pytest.mark.parametrize(
    "kind,pad_type,exclude",
    [
        ("max", "valid", False),
        ("max", "same", False),
        ("avg", "same", True),
        ("avg", "same", False),
        ("avg", "valid", False),
    ],
)
def test_pool3d(kind, pad_type, exclude):
    x = rand(1, 2, 5, 6, 7)
    k, s = (2, 3, 2), (2, 2, 1)
    kw = {"exclude_padding_from_average": exclude} if kind == "avg" else {}
    fn = mb.max_pool if kind == "max" else mb.avg_pool
    got = run(lambda a: fn(x=a, kernel_sizes=k, strides=s, pad_type=pad_type, **kw), x)
    pads = [same(n, kk, ss) for n, kk, ss in zip(x.shape[2:], k, s)] if pad_type == "same" else [(0, 0)] * 3
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *pads], constant_values=fill)
    valid = np.pad(np.ones(x.shape[2:]), pads)
    sizes = [(n - kk) // ss + 1 for n, kk, ss in zip(xp.shape[2:], k, s)]
    want = np.zeros((1, 2, *sizes))
    for pos in np.ndindex(*sizes):
        at = tuple(slice(p * ss, p * ss + kk) for p, ss, kk in zip(pos, s, k))
        win = xp[(slice(None), slice(None), *at)]
        count = valid[at].sum() if exclude else np.prod(k)
        want[(slice(None), slice(None), *pos)] = (
            win.max(axis=(2, 3, 4)) if kind == "max" else win.sum(axis=(2, 3, 4)) / count
        )
    close(got, want, 1e-5)


# --- normalization ----------------------------------------------------------------------------


def test_batch_norm():
    x = rand(2, 3, 4, 5)
    mean, var, gamma, beta = rand(3), rand(3, lo=0.5, hi=2), rand(3), rand(3)
    got = run(lambda a: mb.batch_norm(x=a, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), x)
    c = lambda v: v[None, :, None, None]  # noqa: E731
    close(got, (x - c(mean)) / np.sqrt(c(var) + 1e-3) * c(gamma) + c(beta), 1e-5)


def test_instance_norm():
    x, gamma, beta = rand(2, 3, 4, 5), rand(3), rand(3)
    got = run(lambda a: mb.instance_norm(x=a, gamma=gamma, beta=beta, epsilon=1e-5), x)
    m, v = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    close(got, (x - m) / np.sqrt(v + 1e-5) * gamma[None, :, None, None] + beta[None, :, None, None], 1e-4)


def test_layer_norm():
    x, gamma, beta = rand(2, 3, 4), rand(3, 4), rand(3, 4)
    got = run(lambda a: mb.layer_norm(x=a, axes=[1, 2], gamma=gamma, beta=beta, epsilon=1e-5), x)
    m, v = x.mean(axis=(1, 2), keepdims=True), x.var(axis=(1, 2), keepdims=True)
    close(got, (x - m) / np.sqrt(v + 1e-5) * gamma + beta, 1e-4)


def test_l2_norm():
    x = rand(2, 3, 4, 5)
    got = run(lambda a: mb.l2_norm(x=a, epsilon=1e-6), x)
    close(got, x / np.sqrt((x**2).sum(axis=(1, 2, 3), keepdims=True) + 1e-6), 1e-5)


def test_local_response_norm():
    x = rand(1, 6, 3, 3)
    got = run(lambda a: mb.local_response_norm(x=a, size=3, alpha=1e-2, beta=0.75, k=1.0), x)
    sq = np.pad(x.astype(np.float64) ** 2, [(0, 0), (1, 1), (0, 0), (0, 0)])
    acc = sq[:, :-2] + sq[:, 1:-1] + sq[:, 2:]
    close(got, x / (1 + 1e-2 / 3 * acc) ** 0.75, 1e-5)


# --- reductions -------------------------------------------------------------------------------

REDUCE = [
    ("reduce_sum", mb.reduce_sum, np.sum),
    ("reduce_mean", mb.reduce_mean, np.mean),
    ("reduce_max", mb.reduce_max, np.max),
    ("reduce_min", mb.reduce_min, np.min),
    ("reduce_prod", mb.reduce_prod, np.prod),
    (
        "reduce_sum_square",
        mb.reduce_sum_square,
        lambda x, axis, keepdims: (x**2).sum(axis=axis, keepdims=keepdims),
    ),
    (
        "reduce_l1_norm",
        mb.reduce_l1_norm,
        lambda x, axis, keepdims: np.abs(x).sum(axis=axis, keepdims=keepdims),
    ),
    (
        "reduce_l2_norm",
        mb.reduce_l2_norm,
        lambda x, axis, keepdims: np.sqrt((x**2).sum(axis=axis, keepdims=keepdims)),
    ),
    (
        "reduce_log_sum_exp",
        mb.reduce_log_sum_exp,
        lambda x, axis, keepdims: np.log(np.exp(x).sum(axis=axis, keepdims=keepdims)),
    ),
]


@pytest.mark.parametrize("keep", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("fn,ref", [pytest.param(f, r, id=n) for n, f, r in REDUCE])
def test_reduce(fn, ref, keep):
    close(run(lambda a: fn(x=a, axes=[0, -1], keep_dims=keep), X), ref(X, axis=(0, 2), keepdims=keep), 1e-5)


@pytest.mark.parametrize(
    "fn,ref",
    [
        pytest.param(mb.reduce_argmax, np.argmax, id="argmax"),
        pytest.param(mb.reduce_argmin, np.argmin, id="argmin"),
    ],
)
def test_arg_reduce(fn, ref):
    np.testing.assert_array_equal(run(lambda a: fn(x=a, axis=1), X), ref(X, axis=1))


# --- shape and data movement ------------------------------------------------------------------


def test_reshape_and_transpose():
    got = run(lambda a: mb.transpose(x=mb.reshape(x=a, shape=[4, -1, 2]), perm=[2, 0, 1]), X)
    close(got, X.reshape(4, -1, 2).transpose(2, 0, 1))


def test_concat_and_interleave():
    x, y = rand(2, 3), rand(2, 3)
    close(run(lambda a, b: mb.concat(values=[a, b], axis=1), x, y), np.concatenate([x, y], 1))
    inter = run(lambda a, b: mb.concat(values=[a, b], axis=1, interleave=True), x, y)
    close(inter, np.stack([x, y], axis=2).reshape(2, 6))


def test_slice_by_index_masks_and_stride():
    got = run(
        lambda a: mb.slice_by_index(
            x=a,
            begin=[1, 0, -3],
            end=[2, 3, 4],
            stride=[1, 2, 1],
            begin_mask=[False, True, False],
            end_mask=[False, False, True],
            squeeze_mask=[True, False, False],
        ),
        X,
    )
    close(got, X[1, ::2, -3:])


def test_slice_by_size():
    close(run(lambda a: mb.slice_by_size(x=a, begin=[0, 1, 1], size=[2, -1, 2]), X), X[:, 1:, 1:3])


def test_squeeze_expand_dims():
    x = rand(1, 3, 1, 2)
    close(run(lambda a: mb.squeeze(x=a, axes=[0, 2]), x), x[0, :, 0])
    close(run(lambda a: mb.expand_dims(x=a, axes=[0, -1]), x), x[None, ..., None])


@pytest.mark.parametrize("axis", [1, -1])
def test_gather(axis):
    idx = np.array([[2, 0], [-1, 1]], np.int32)
    got = run(lambda a: mb.gather(x=a, indices=idx, axis=axis), X)
    close(got, np.take(X, idx % X.shape[axis], axis=axis))


def test_gather_batch_dims():
    idx = np.array([[0, 2], [1, 1]], np.int32)
    got = run(lambda a: mb.gather(x=a, indices=idx, axis=1, batch_dims=1), X, opset=ct.target.iOS16)
    close(got, np.stack([X[0][idx[0]], X[1][idx[1]]]))


def test_gather_nd_and_along_axis():
    idx = np.array([[0, 1], [1, 2]], np.int32)
    close(run(lambda a: mb.gather_nd(x=a, indices=idx), X), np.stack([X[0, 1], X[1, 2]]))
    along = RNG.integers(0, 3, (2, 3, 4)).astype(np.int32)
    close(run(lambda a: mb.gather_along_axis(x=a, indices=along, axis=1), X), np.take_along_axis(X, along, 1))


@pytest.mark.parametrize("mode", ["add", "update", "max"])
def test_scatter_nd(mode):
    data, updates = rand(4, 3), rand(3, 3)
    idx = np.array([[2], [0], [2]], np.int32) if mode != "update" else np.array([[2], [0], [3]], np.int32)
    got = run(lambda a, b: mb.scatter_nd(data=a, indices=idx, updates=b, mode=mode), data, updates)
    want = data.astype(np.float64).copy()
    for row, u in zip(idx[:, 0], updates.astype(np.float64)):
        want[row] = {"add": want[row] + u, "update": u, "max": np.maximum(want[row], u)}[mode]
    close(got, want)


def test_scatter_nd_elements():
    data, updates = rand(2, 3), rand(2)
    idx = np.array([[1, 2], [0, 0]], np.int32)
    got = run(lambda a, b: mb.scatter_nd(data=a, indices=idx, updates=b, mode="add"), data, updates)
    want = data.copy()
    want[1, 2] += updates[0]
    want[0, 0] += updates[1]
    close(got, want)


def test_split_and_stack():
    parts = run(lambda a: mb.split(x=a, split_sizes=[1, 3], axis=2), X)
    close(parts[0], X[:, :, :1])
    close(parts[1], X[:, :, 1:])
    even = run(lambda a: mb.split(x=a, num_splits=3, axis=1), X)
    close(even[2], X[:, 2:3])
    close(run(lambda a, b: mb.stack(values=[a, b], axis=1), Y, Y * 2), np.stack([Y, Y * 2], 1))


def test_tile_and_reverse():
    close(run(lambda a: mb.tile(x=a, reps=[2, 1]), Y), np.tile(Y, (2, 1)))
    close(run(lambda a: mb.reverse(x=a, axes=[1]), Y), Y[:, ::-1])


@pytest.mark.parametrize(
    "mode,np_mode", [("constant", "constant"), ("reflect", "reflect"), ("replicate", "edge")]
)
def test_pad(mode, np_mode):
    x = rand(1, 2, 4, 5)
    got = run(lambda a: mb.pad(x=a, pad=[1, 2, 0, 3], mode=mode), x)
    close(got, np.pad(x, [(0, 0), (0, 0), (1, 2), (0, 3)], mode=np_mode))


def test_pad_constant_value():
    got = run(lambda a: mb.pad(x=a, pad=[1, 1], mode="constant", constant_val=2.5), Y)
    close(got, np.pad(Y, [(0, 0), (1, 1)], constant_values=2.5))


def test_depth_to_space_matches_tensorflow_order():
    x = rand(1, 8, 2, 3)  # NCHW
    got = run(lambda a: mb.depth_to_space(x=a, block_size=2), x)
    nhwc = x.transpose(0, 2, 3, 1)
    want = nhwc.reshape(1, 2, 3, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 6, 2)  # TF DCR
    close(got, want.transpose(0, 3, 1, 2))


def test_space_to_depth_inverts_depth_to_space():
    x = rand(1, 2, 4, 6)
    got = run(lambda a: mb.depth_to_space(x=mb.space_to_depth(x=a, block_size=2), block_size=2), x)
    close(got, x)


def test_pixel_shuffle():
    x = rand(1, 8, 2, 3)
    got = run(lambda a: mb.pixel_shuffle(x=a, upscale_factor=2), x)
    close(got, x.reshape(1, 2, 2, 2, 2, 3).transpose(0, 1, 4, 2, 5, 3).reshape(1, 2, 4, 6))  # torch CRD


def test_shape_fill_and_cast():
    got = run(lambda a: mb.fill(shape=mb.shape(x=a), value=3.0), Y)
    close(got, np.full(Y.shape, 3.0))
    ints = run(lambda a: mb.cast(x=a, dtype="int32"), X * 3)
    assert ints.dtype == np.int32
    np.testing.assert_array_equal(ints, (X * 3).astype(np.int32))


def test_cumsum():
    close(
        run(lambda a: mb.cumsum(x=a, axis=1, exclusive=True, reverse=True), Y),
        np.flip(np.cumsum(np.flip(Y, 1), 1), 1) - Y,
        1e-5,
    )


# --- fp16: outputs rounded through float16 ----------------------------------------------------


def test_cast_to_fp16_rounds():
    x = rand(64) * 100
    got = run(lambda a: mb.cast(x=a, dtype="fp16"), x)
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))
    assert not np.array_equal(got, x)


def test_fp16_program_rounds_every_op():
    x = rand(64).astype(np.float16)
    got = run(lambda a: mb.mul(x=mb.add(x=a, y=np.float16(1 / 3)), y=np.float16(3.0)), x)
    step = (x.astype(np.float32) + np.float32(np.float16(1 / 3))).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, (step * 3).astype(np.float16).astype(np.float32))


def test_round_consts_fp16():
    x = rand(1, 8)
    w = rand(4, 8)
    got = run(lambda a: mb.linear(x=a, weight=w), x, round_consts_fp16=True)
    close(got, x @ w.astype(np.float16).astype(np.float32).T, 1e-5)


# --- resizing (TensorFlow's kernels as the reference) -----------------------------------------


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def tf_resize(tf, x, size, align, half):
    y = tf.compat.v1.image.resize_bilinear(
        x.transpose(0, 2, 3, 1), size, align_corners=align, half_pixel_centers=half
    )
    return np.asarray(y).transpose(0, 3, 1, 2)


@pytest.mark.parametrize(
    "align,half,opset",
    [
        (True, False, None),
        (False, True, None),
        (False, False, "iOS16"),
    ],
    ids=["align_corners", "half_pixel", "legacy"],
)
def test_upsample_bilinear(tf, align, half, opset):
    x = rand(1, 2, 3, 5)
    kw = {"half_pixel_centers": half} if opset else {}
    got = run(
        lambda a: mb.upsample_bilinear(
            x=a, scale_factor_height=2.0, scale_factor_width=1.5, align_corners=align, **kw
        ),
        x,
        opset=getattr(ct.target, opset) if opset else None,
    )
    close(got, tf_resize(tf, x, (6, 7), align, half), 1e-5)


@pytest.mark.parametrize(
    "mode,align,half",
    [
        ("STRICT_ALIGN_CORNERS", True, False),
        ("DEFAULT", False, False),
        ("UNALIGN_CORNERS", False, True),
    ],
)
def test_resize_bilinear(tf, mode, align, half):
    x = rand(1, 2, 4, 5)
    got = run(
        lambda a: mb.resize_bilinear(x=a, target_size_height=7, target_size_width=3, sampling_mode=mode), x
    )
    close(got, tf_resize(tf, x, (7, 3), align, half), 1e-5)


def test_nearest_neighbor(tf):
    x = rand(1, 2, 3, 4)
    up = run(lambda a: mb.upsample_nearest_neighbor(x=a, scale_factor_height=2, scale_factor_width=3), x)
    close(up, x.repeat(2, axis=2).repeat(3, axis=3))
    got = run(lambda a: mb.resize_nearest_neighbor(x=a, target_size_height=5, target_size_width=7), x)
    want = tf.compat.v1.image.resize_nearest_neighbor(x.transpose(0, 2, 3, 1), (5, 7))
    close(got, np.asarray(want).transpose(0, 3, 1, 2))


def test_crop_resize_matches_tf_crop_and_resize(tf):
    x = rand(2, 3, 6, 7)
    boxes = np.array([[0.1, 0.2, 0.8, 0.9], [0.0, 0.0, 1.0, 1.0], [0.5, -0.2, 1.3, 0.6]], np.float32)
    idx = np.array([0, 1, 1], np.float32)
    roi = np.concatenate([idx[:, None], boxes], 1).reshape(3, 1, 5, 1, 1)
    got = run(
        lambda a: mb.crop_resize(
            x=a,
            roi=roi,
            target_height=4,
            target_width=5,
            normalized_coordinates=True,
            box_coordinate_mode="CORNERS_HEIGHT_FIRST",
            sampling_mode="ALIGN_CORNERS",
        ),
        x,
    )
    want = tf.image.crop_and_resize(x.transpose(0, 2, 3, 1), boxes, idx.astype(np.int32), (4, 5))
    close(got[:, 0], np.asarray(want).transpose(0, 3, 1, 2), 1e-5)


def test_crop():
    x = rand(1, 2, 6, 7)
    close(run(lambda a: mb.crop(x=a, crop_height=[1, 2], crop_width=[0, 3]), x), x[:, :, 1:4, 0:4])


# --- classify and unknown ops -----------------------------------------------------------------


def test_classify_returns_label_and_probabilities():
    p = np.array([[0.1, 0.7, 0.2]], np.float32)
    classes = mb_list(["a", "b", "c"])
    prog = program(
        lambda a: mb.classify(probabilities=mb.reshape(x=a, shape=[3]), classes=mb.const(val=classes)), p
    )
    label, probs = evaluate(prog, {"a": p}).values()
    assert label == "b"
    close(probs, p.reshape(3))


def test_unknown_ops_are_named():
    prog = program(lambda a: mb.random_uniform(shape=mb.shape(x=a), low=0.0, high=1.0), Y)
    assert unknown_ops(prog) == ["random_uniform"]
    assert op_types(prog)["shape"] == 1
    with pytest.raises(MilEvalError, match="unknown MIL ops: random_uniform"):
        evaluate(prog, {"a": Y})


def test_missing_input_is_an_error():
    prog = program(lambda a: mb.relu(x=a), Y)
    with pytest.raises(MilEvalError, match="no value for program input a"):
        evaluate(prog, {})


# --- control flow -----------------------------------------------------------------------------


def test_while_loop_runs_its_body_until_cond_is_false():
    # x <- 0.5 * x + w, five times (w an outer value the body reads, kept across iterations).
    x0, w = rand(3), rand(3)

    def build(a, b):
        def cond(i, x):
            return mb.less(x=i, y=np.int32(5))

        def body(i, x):
            return mb.add(x=i, y=np.int32(1)), mb.add(x=mb.mul(x=x, y=np.float32(0.5)), y=b)

        return mb.while_loop(_cond=cond, _body=body, loop_vars=(np.int32(0), a))

    i, x = run(build, x0, w)
    want = x0.copy()
    for _ in range(5):
        want = 0.5 * want + w
    assert int(i) == 5
    close(x, want)


def test_while_loop_that_never_enters_returns_its_inputs():
    x0 = rand(2)

    def build(a):
        def cond(i, x):
            return mb.less(x=i, y=np.int32(0))

        def body(i, x):
            return mb.add(x=i, y=np.int32(1)), mb.mul(x=x, y=np.float32(2.0))

        return mb.while_loop(_cond=cond, _body=body, loop_vars=(np.int32(0), a))

    i, x = run(build, x0)
    assert int(i) == 0
    close(x, x0)


@pytest.mark.parametrize("take_true", [True, False], ids=["then", "else"])
def test_cond_runs_one_branch(take_true):
    x = rand(4)
    flag = np.array([1 if take_true else 0], np.int32)

    def build(a, b):
        pred = mb.squeeze(x=mb.greater(x=b, y=np.int32(0)))
        return mb.cond(
            pred=pred,
            _true_fn=lambda: mb.mul(x=a, y=np.float32(3.0)),
            _false_fn=lambda: mb.sub(x=a, y=np.float32(1.0)),
        )

    close(run(build, x, flag), x * 3.0 if take_true else x - 1.0)


@pytest.mark.parametrize(
    "block, pads", [((2, 2), ((1, 1), (1, 2))), ((1, 3), ((0, 0), (2, 2)))], ids=["2x2", "1x3"]
)
def test_space_to_batch_and_back_match_tensorflow(block, pads):
    tf = pytest.importorskip("tensorflow")
    x = rand(2, 3, 4, 5)  # NCHW
    got = run(lambda a: mb.space_to_batch(x=a, block_shape=np.int32(block), paddings=np.int32(pads)), x)
    want = tf.space_to_batch_nd(x.transpose(0, 2, 3, 1), block, pads).numpy()
    close(got, want.transpose(0, 3, 1, 2))
    crops = np.int32(pads)
    back = run(lambda a: mb.batch_to_space(x=a, block_shape=np.int32(block), crops=crops), got)
    want = tf.batch_to_space(want, block, crops).numpy()
    close(back, want.transpose(0, 3, 1, 2))
    close(back, x)
