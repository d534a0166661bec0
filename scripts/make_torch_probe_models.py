"""Build a probe set of PyTorch -> ONNX -> onnx2tf models, for `tfl-rebuild check` (not for CI).

    /work/probe-venv/bin/python scripts/make_torch_probe_models.py [--out .probe_torch] [--only NAME ...] [--list]
    .venv/bin/tfl-rebuild check .probe_torch --jobs 1 --markdown .probe_torch/report.md

Runs in a separate virtualenv with torch, onnx, onnxruntime and onnx2tf (none of which the project
depends on). Many .tflite files in the wild come this way (Ultralytics exports, the PINTO model zoo):
onnx2tf turns NCHW into NHWC with transposes, writes SiLU as LOGISTIC * MUL, slices with
GATHER / STRIDED_SLICE chains and builds attention from BATCH_MATMUL / TRANSPOSE / RESHAPE.

Hand-written models of the common kinds, from fixed seeds, small enough to convert in seconds:
a ResNet-style CNN, a YOLOv8-style detector (SiLU conv blocks, C2f split / concat, SPPF, nearest
upsampling, a DFL detect head that reshapes, permutes and concatenates), MobileNetV3 blocks
(hardswish, squeeze-excite), a ViT (patch conv, class token, hand-written multi-head attention,
GELU), an nn.TransformerEncoder, a UNet (ConvTranspose2d, bilinear upsampling, skip concat), an
LSTM + GRU sequence model and a 1-D conv audio model; then the tricks of other exports: a YOLOv8
pose / seg head (keypoints decoded through strided slices, mask coefficients x prototypes), an
ESPCN super-resolution net (PReLU, LeakyReLU, PixelShuffle, align_corners bilinear), a diffusion-
style UNet (GroupNorm, Mish, InstanceNorm, spatial attention, nearest upsampling as expand + reshape),
an ops zoo (grouped / dilated convs, ceil-mode pooling, ELU, softplus, clamp, F.normalize, cumsum,
einsum, arg-max), a TCN + bidirectional GRU / LSTM, an LLM-style block (RMSNorm, rotary embedding,
causal scaled_dot_product_attention, SwiGLU) and ConvNeXt blocks (7x7 depthwise, channels-last
LayerNorm between permutes, layer scale). Each is written as float32 and float16, and
five also quantized by onnx2tf (seeded calibration inputs in [-1, 1]): full int8 (resnet, mobilenet_v3,
yolo, vit, unet), int8 with float input / output (yolo), dynamic range and int16 activations (mobilenet_v3);
yolo once more with a dynamic batch axis (float32).

Weights stay meaningful: every BatchNorm holds the statistics of its input over seeded inputs (one
training-mode pass, cumulative average), gamma / beta are seeded away from 1 / 0, no final softmax.
Each written file is run with LiteRT on two seeded inputs; an output that moves by 1% or less of
its magnitude is reported (`CONSTANT?`), as such a model proves little.

onnx2tf looks for its sample images in the working directory before downloading them; a seeded
random file is written there, so nothing is fetched.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
MIN_CHANGE = 0.01  # an output must move by more than 1% of its magnitude between two inputs
# onnx2tf's quantized outputs (-oiqt): which ones each model is written as.
QUANT_FILES = {
    "int8": "full_integer_quant",
    "int8_float_io": "integer_quant",
    "dynamic": "dynamic_range_quant",
    "int16act": "full_integer_quant_with_int16_act",
}
DYNAMIC_BATCH = ("yolo",)  # also exported with a dynamic batch axis
INT8 = {
    "resnet": ("int8",),
    "mobilenet_v3": ("int8", "dynamic", "int16act"),
    "yolo": ("int8", "int8_float_io"),
    "vit": ("int8",),
    "unet": ("int8",),
}  # (LiteRT cannot run vit's: onnx2tf's erf divides x / |x|)


def rng(salt: int) -> np.random.Generator:
    return np.random.default_rng(SEED + salt)


def uniform(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Seeded inputs in [-1, 1], the range tfl-rebuild checks with."""
    return rng(salt).uniform(-1.0, 1.0, size=shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Building blocks


class ConvBNAct(nn.Module):
    def __init__(
        self, c1: int, c2: int, k: int = 1, s: int = 1, groups: int = 1, act: nn.Module | None = None
    ):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is None else act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, c1: int, c2: int, s: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, 3, s, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.down = None
        if s != 1 or c1 != c2:
            self.down = nn.Sequential(nn.Conv2d(c1, c2, 1, s, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.layers(self.pool(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# YOLOv8-style (Ultralytics' modules, written out)


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1, self.cv2 = ConvBNAct(c, c, 3), ConvBNAct(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False):
        super().__init__()
        self.c = c2 // 2
        self.cv1 = ConvBNAct(c1, 2 * self.c, 1)
        self.cv2 = ConvBNAct((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        self.cv1 = ConvBNAct(c1, c1 // 2, 1)
        self.cv2 = ConvBNAct(c1 // 2 * 4, c2, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, then a fixed 1x1 conv (0..15)."""

    def __init__(self, c1: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


class Detect(nn.Module):
    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...], size: int):
        super().__init__()
        self.nc, self.reg_max = nc, 16
        self.no = nc + 4 * self.reg_max
        c2, c3 = max(16, ch[0] // 4, 4 * self.reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, c2, 3), ConvBNAct(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1))
            for c in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, c3, 3), ConvBNAct(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in ch
        )
        self.dfl = DFL(self.reg_max)
        anchors, stride_t = [], []
        for s in strides:  # anchor points at cell centres, as Ultralytics' make_anchors
            n = size // s
            sy, sx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            stride_t.append(torch.full((n * n, 1), float(s)))
        self.register_buffer("anchors", torch.cat(anchors).transpose(0, 1).unsqueeze(0))
        self.register_buffer("strides", torch.cat(stride_t).transpose(0, 1).unsqueeze(0))

    def forward(self, xs):
        xs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        b = xs[0].shape[0]
        x_cat = torch.cat([xi.view(b, self.no, -1) for xi in xs], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        lt, rb = self.dfl(box).chunk(2, 1)
        x1y1, x2y2 = self.anchors - lt, self.anchors + rb
        dbox = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * self.strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class Yolo(nn.Module):
    SIZE = 160  # no feature map as wide as its channel count: onnx2tf then guesses the layout wrong

    def __init__(self, nc: int = 4):
        super().__init__()
        self.b0 = nn.Sequential(
            ConvBNAct(3, 16, 3, 2),
            ConvBNAct(16, 32, 3, 2),
            C2f(32, 32, 1, True),
            ConvBNAct(32, 32, 3, 2),
            C2f(32, 32, 1, True),
        )
        self.b1 = nn.Sequential(ConvBNAct(32, 64, 3, 2), C2f(64, 64, 1, True))
        self.b2 = nn.Sequential(ConvBNAct(64, 128, 3, 2), C2f(128, 128, 1, True), SPPF(128, 128))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h1, self.h2 = C2f(192, 64), C2f(96, 32)
        self.d1, self.h3 = ConvBNAct(32, 32, 3, 2), C2f(96, 64)
        self.d2, self.h4 = ConvBNAct(64, 64, 3, 2), C2f(192, 128)
        self.detect = Detect(nc, (32, 64, 128), (8, 16, 32), self.SIZE)

    def forward(self, x):
        p3 = self.b0(x)
        p4 = self.b1(p3)
        p5 = self.b2(p4)
        n4 = self.h1(torch.cat((self.up(p5), p4), 1))
        n3 = self.h2(torch.cat((self.up(n4), p3), 1))
        m4 = self.h3(torch.cat((self.d1(n3), n4), 1))
        m5 = self.h4(torch.cat((self.d2(m4), p5), 1))
        return self.detect([n3, m4, m5])


# MobileNetV3


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, c1: int, exp: int, c2: int, k: int, s: int, se: bool, act: type[nn.Module]):
        super().__init__()
        self.expand = ConvBNAct(c1, exp, 1, act=act())
        self.dw = ConvBNAct(exp, exp, k, s, groups=exp, act=act())
        self.se = SqueezeExcite(exp) if se else nn.Identity()
        self.project = ConvBNAct(exp, c2, 1, act=nn.Identity())
        self.residual = s == 1 and c1 == c2

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16, 3, 2, act=nn.Hardswish()),
            InvertedResidual(16, 64, 24, 3, 2, False, nn.ReLU),
            InvertedResidual(24, 72, 24, 3, 1, False, nn.ReLU),
            InvertedResidual(24, 96, 40, 5, 2, True, nn.Hardswish),
            InvertedResidual(40, 120, 40, 5, 1, True, nn.Hardswish),
            ConvBNAct(40, 240, 1, act=nn.Hardswish()),
        )
        self.head = nn.Sequential(nn.Linear(240, 128), nn.Hardswish(), nn.Linear(128, classes))

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# ViT (timm-style hand-written attention)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(
        self, size: int = 32, patch: int = 8, dim: int = 64, depth: int = 2, heads: int = 4, classes: int = 10
    ):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.5)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, 2 * dim) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls.expand(x.shape[0], -1, -1), x), 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


class TextTransformer(nn.Module):
    """nn.TransformerEncoder (PyTorch's own multi-head attention) over a float feature sequence."""

    def __init__(self, dim: int = 32, tokens: int = 16, classes: int = 6):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            dim, 4, 64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.5)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.encoder(x + self.pos).mean(1))


# UNet


def double_conv(c1: int, c2: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(c1, c2, 3, act=nn.ReLU()), ConvBNAct(c2, c2, 3, act=nn.ReLU()))


class UNet(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.e1, self.e2, self.mid = double_conv(3, 16), double_conv(16, 32), double_conv(32, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, 2)
        self.d2 = double_conv(64, 32)
        self.up1 = nn.Conv2d(32, 16, 1)
        self.d1 = double_conv(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        s1 = self.e1(x)
        s2 = self.e2(F.max_pool2d(s1, 2))
        m = self.mid(F.max_pool2d(s2, 2))
        y = self.d2(torch.cat((self.up2(m), s2), 1))
        y = self.up1(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
        return self.out(self.d1(torch.cat((y, s1), 1)))


# Sequences


class Recurrent(nn.Module):
    def __init__(self, features: int = 16, classes: int = 5):
        super().__init__()
        self.lstm = nn.LSTM(features, 32, batch_first=True)
        self.gru = nn.GRU(32, 24, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.head(y)


class Audio1d(nn.Module):
    def __init__(self, classes: int = 8):
        super().__init__()

        def block(c1, c2, k, s, groups=1):
            return nn.Sequential(
                nn.Conv1d(c1, c2, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm1d(c2), nn.ReLU()
            )

        self.features = nn.Sequential(
            block(1, 16, 9, 4),
            block(16, 32, 9, 2),
            nn.MaxPool1d(2),
            block(32, 32, 3, 1, groups=32),
            block(32, 64, 1, 1),
        )
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.features(x).mean(-1))


# Heads and tricks seen in exported detectors / segmenters / restorers


class PoseSegHead(nn.Module):
    """YOLOv8 pose + seg style outputs on one level: keypoints decoded with strided slices
    (x[:, 0::3]), mask coefficients times prototypes (a matmul), boxes as before."""

    def __init__(self, c: int = 32, kpts: int = 5, masks: int = 8, size: int = 80, stride: int = 8):
        super().__init__()
        self.kpts, self.masks = kpts, masks
        self.stem = nn.Sequential(
            ConvBNAct(3, 16, 3, 2), ConvBNAct(16, c, 3, 2), C2f(c, c, 1, True), ConvBNAct(c, c, 3, 2)
        )
        self.kpt = nn.Sequential(ConvBNAct(c, c, 3), nn.Conv2d(c, kpts * 3, 1))
        self.coef = nn.Sequential(ConvBNAct(c, c, 3), nn.Conv2d(c, masks, 1))
        self.proto = nn.Sequential(
            ConvBNAct(c, c, 3), nn.ConvTranspose2d(c, c, 2, 2, bias=True), ConvBNAct(c, masks, 1)
        )
        n = size // stride
        sy, sx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
        self.register_buffer("anchors", torch.stack((sx, sy), 0).view(1, 2, -1))
        self.stride = float(stride)

    def forward(self, x):
        f = self.stem(x)
        b = f.shape[0]
        k = self.kpt(f).view(b, self.kpts * 3, -1)
        y = k.clone()
        y[:, 0::3] = (k[:, 0::3] * 2.0 + (self.anchors[:, [0]] - 0.5)) * self.stride
        y[:, 1::3] = (k[:, 1::3] * 2.0 + (self.anchors[:, [1]] - 0.5)) * self.stride
        y[:, 2::3] = k[:, 2::3].sigmoid()
        coef = self.coef(f).view(b, self.masks, -1)  # [b, masks, anchors]
        p = self.proto(f)  # [b, masks, 2h, 2w]
        ph, pw = p.shape[2:]
        masks = (coef.transpose(1, 2) @ p.view(b, self.masks, -1)).sigmoid().view(b, -1, ph, pw)
        return y, masks[:, :4]


class SuperResolution(nn.Module):
    """ESPCN-style: PReLU / LeakyReLU convs, PixelShuffle, an align_corners bilinear skip."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 5, 1, 2),
            nn.PReLU(32),
            nn.Conv2d(32, 16, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(16, 3 * scale * scale, 3, 1, 1),
        )
        self.shuffle = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x):
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)
        return self.shuffle(self.body(x)) + skip


def upsample_by_expand(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Nearest upsampling written without Resize (as some exports do for TensorRT / NPUs):
    insert axes, broadcast, reshape (ONNX Unsqueeze / Expand / Reshape; 6-D on the way)."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, k, w, k).reshape(b, c, h * k, w * k)


class AttnBlock(nn.Module):
    """A diffusion UNet's spatial self-attention: GroupNorm, 1x1 q/k/v, softmax over positions."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(4, c)
        self.qkv, self.proj = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)
        return x + self.proj((v @ attn.transpose(1, 2)).reshape(b, c, h, w))


class GroupNormUNet(nn.Module):
    """GroupNorm + SiLU / Mish res blocks, instance norm, an attention block, nearest upsampling
    written as expand + reshape."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(3, 16, 3, 1, 1)
        self.res1 = nn.Sequential(nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 16, 3, 1, 1))
        self.down = nn.Conv2d(16, 32, 3, 2, 1)
        self.res2 = nn.Sequential(nn.GroupNorm(8, 32), nn.Mish(), nn.Conv2d(32, 32, 3, 1, 1))
        self.attn = AttnBlock(32)
        self.up = nn.Conv2d(32, 16, 3, 1, 1)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.out = nn.Conv2d(32, 3, 3, 1, 1)

    def forward(self, x):
        a = self.inp(x)
        a = a + self.res1(a)
        b = self.down(a)
        b = self.attn(b + self.res2(b))
        u = self.inorm(self.up(upsample_by_expand(b)))
        return self.out(torch.cat((u, a), 1))


class OpsZoo(nn.Module):
    """Grouped and dilated convs, ceil-mode pooling, adaptive pooling to 4x4, ELU / Softplus / clamp,
    F.normalize, flatten, cumsum, einsum; an arg-max output and a max output."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.grouped = nn.Conv2d(16, 32, 3, 1, 1, groups=4)
        self.dilated = nn.Conv2d(32, 32, 3, 1, 2, dilation=2)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.proj = nn.Linear(32 * 16, 24, bias=False)
        self.mix = nn.Parameter(torch.randn(24, 24) * 0.3)

    def forward(self, x):
        y = F.elu(self.c1(x))
        y = F.softplus(self.grouped(y)) - 0.5
        y = torch.clamp(self.dilated(y), -2.0, 3.0)
        y = self.pool(y)  # 32 -> 16 (floor would give 15)
        y = F.adaptive_avg_pool2d(y, 4)
        y = F.normalize(torch.flatten(y, 1), dim=1) * 4.0
        z = self.proj(y)
        z = torch.einsum("bi,ij->bj", z, self.mix)
        c = torch.cumsum(z, dim=1)
        return c, torch.argmax(z, dim=1), z.amax(1)  # (onnx2tf 1.28 fails on torch.topk: k arrives as [1])


class TemporalConvBiRNN(nn.Module):
    """A TCN front end (dilated Conv1d, LayerNorm over channels), a bidirectional GRU and LSTM."""

    def __init__(self, features: int = 12, classes: int = 4):
        super().__init__()
        self.tcn = nn.Sequential(
            nn.Conv1d(features, 24, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv1d(24, 24, 3, padding=4, dilation=4),
            nn.ReLU(),
        )
        self.norm = nn.LayerNorm(24)
        self.gru = nn.GRU(24, 16, batch_first=True, bidirectional=True)
        self.lstm = nn.LSTM(32, 12, batch_first=True, bidirectional=True)
        self.head = nn.Linear(24, classes)

    def forward(self, x):  # x: [b, features, time]
        y = self.norm(self.tcn(x).transpose(1, 2))
        y, _ = self.gru(y)
        y, _ = self.lstm(y)
        return self.head(y[:, -1])


class RotaryDecoderBlock(nn.Module):
    """An LLM-style block: RMSNorm, rotary position embedding (halves swapped and negated), causal
    F.scaled_dot_product_attention, a SwiGLU MLP."""

    def __init__(self, dim: int = 32, heads: int = 4, tokens: int = 12):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.qkv, self.out = nn.Linear(dim, 3 * dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.gate, self.up, self.down = (
            nn.Linear(dim, 64, bias=False),
            nn.Linear(dim, 64, bias=False),
            nn.Linear(64, dim, bias=False),
        )
        self.w1, self.w2 = (
            nn.Parameter(1.0 + 0.2 * torch.randn(dim)),
            nn.Parameter(1.0 + 0.2 * torch.randn(dim)),
        )
        inv = 1.0 / 10000 ** (torch.arange(0, self.hd, 2).float() / self.hd)
        angles = torch.arange(tokens).float()[:, None] * inv[None]
        self.register_buffer("cos", torch.cat((angles.cos(), angles.cos()), -1))
        self.register_buffer("sin", torch.cat((angles.sin(), angles.sin()), -1))

    @staticmethod
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def rotate(self, x):
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2 :]
        return x * self.cos + torch.cat((-x2, x1), -1) * self.sin

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(self.rms(x, self.w1)).view(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(self.rotate(q), self.rotate(k), v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, n, c))
        h = self.rms(x, self.w2)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class ConvNeXtBlocks(nn.Module):
    """ConvNeXt: 7x7 depthwise conv, LayerNorm over channels after an NCHW -> NHWC permute, GELU,
    layer scale, permute back; a LayerNorm2d-style downsample."""

    def __init__(self, c: int = 24, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, 4)
        self.blocks = nn.ModuleList(self._block(c) for _ in range(2))
        self.scales = nn.ParameterList(nn.Parameter(torch.full((c,), 0.5)) for _ in range(2))
        self.down_norm = nn.LayerNorm(c)
        self.down = nn.Conv2d(c, 2 * c, 2, 2)
        self.head = nn.Linear(2 * c, classes)

    @staticmethod
    def _block(c):
        return nn.ModuleDict(
            {
                "dw": nn.Conv2d(c, c, 7, 1, 3, groups=c),
                "norm": nn.LayerNorm(c),
                "pw1": nn.Linear(c, 4 * c),
                "pw2": nn.Linear(4 * c, c),
            }
        )

    def forward(self, x):
        x = self.stem(x)
        for blk, scale in zip(self.blocks, self.scales):
            y = blk["dw"](x).permute(0, 2, 3, 1)
            y = blk["pw2"](F.gelu(blk["pw1"](blk["norm"](y)))) * scale
            x = x + y.permute(0, 3, 1, 2)
        x = self.down(self.down_norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return self.head(x.mean((2, 3)))


# name -> (factory, NCHW / NCW / NTC input shape)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet": (ResNet, (1, 3, 64, 64)),
    "yolo": (Yolo, (1, 3, Yolo.SIZE, Yolo.SIZE)),
    "mobilenet_v3": (MobileNetV3, (1, 3, 64, 64)),
    "vit": (ViT, (1, 3, 32, 32)),
    "text_transformer": (TextTransformer, (1, 16, 32)),
    "unet": (UNet, (1, 3, 64, 64)),
    "lstm_gru": (Recurrent, (1, 20, 16)),
    "audio_conv1d": (Audio1d, (1, 1, 1600)),
    "pose_seg_head": (PoseSegHead, (1, 3, 80, 80)),
    "super_resolution": (SuperResolution, (1, 3, 24, 40)),
    "groupnorm_unet": (GroupNormUNet, (1, 3, 24, 40)),
    "ops_zoo": (OpsZoo, (1, 3, 32, 32)),
    "tcn_birnn": (TemporalConvBiRNN, (1, 12, 30)),
    "rotary_decoder": (RotaryDecoderBlock, (1, 12, 32)),
    "convnext": (ConvNeXtBlocks, (1, 3, 56, 40)),
}


# ---------------------------------------------------------------------------------------------
# Seeding


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape = MODELS[name]
    torch.manual_seed(SEED)
    model = factory()
    calibrate_batchnorm(model, torch.from_numpy(uniform((16, *shape[1:]), salt=3)))
    return model.eval(), shape


def calibrate_batchnorm(model: nn.Module, calibration: torch.Tensor) -> None:
    """Seeded gamma / beta, then the batch statistics of one training-mode pass (momentum None:
    a cumulative average, so one pass stores exactly that batch's mean / variance)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    g = torch.Generator().manual_seed(SEED + 7)
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.6, 1.4, generator=g))
            bn.bias.copy_(torch.empty_like(bn.bias).uniform_(0.0, 0.6, generator=g))
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        model(calibration)
    model.eval()


# ---------------------------------------------------------------------------------------------
# Conversion


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path, dynamic_batch: bool = False) -> None:
    example = torch.from_numpy(uniform(shape, salt=5))
    # Grad stays on: under no_grad nn.TransformerEncoderLayer takes its fused fast path, which has no ONNX form.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the TorchScript exporter (still what most exports use) and its notes
        outs = model(example)
        count = len(outs) if isinstance(outs, (tuple, list)) else 1
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input"],
            output_names=[f"output{k}" if count > 1 else "output" for k in range(count)],
            dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None,
            opset_version=17,
            dynamo=False,
        )
    # Constant-fold shape arithmetic (torch's chunk() exports as Shape / Gather / Div / Slice), as
    # Ultralytics' exporter does with onnxslim; onnx2tf misreads the unfolded form.
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(path))), str(path))


def sample_images(work: Path) -> None:
    """onnx2tf reads its test / calibration images from this file in the working directory, and
    downloads it when absent: seeded random images instead (nothing is fetched)."""
    path = work / "calibration_image_sample_data_20x128x128x3_float32.npy"
    if not path.exists():
        np.save(path, rng(11).uniform(0.0, 1.0, size=(20, 128, 128, 3)).astype(np.float32))


def onnx2tf_convert(onnx_path: Path, out_dir: Path, shape: tuple[int, ...], int8: bool) -> None:
    import onnx2tf

    # Erf (exact GELU) has no TFLite builtin: onnx2tf would write a Flex op; its pseudo-op form
    # (a polynomial of builtins) is what exports meant for TFLite use.
    kwargs: dict = {"replace_to_pseudo_operators": ["erf"]}
    if int8:
        # Calibration inputs in the layout onnx2tf feeds (channels last), in [-1, 1], no normalisation.
        nhwc = (16, *shape[2:], shape[1]) if len(shape) in (3, 4) else (16, *shape[1:])
        calib = out_dir / "calibration.npy"
        np.save(calib, uniform(nhwc, salt=9))
        ones = np.ones((1,) * len(nhwc), np.float32)
        kwargs |= {
            "output_integer_quantized_tflite": True,
            "quant_type": "per-channel",
            "custom_input_op_name_np_data_path": [["input", str(calib), ones * 0.0, ones]],
        }
    cwd = os.getcwd()
    os.chdir(out_dir)
    try:
        with quiet(out_dir / "onnx2tf.log"):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(out_dir / "tf"),
                output_signaturedefs=True,
                non_verbose=True,
                **kwargs,
            )  # as Ultralytics' export
    finally:
        os.chdir(cwd)


@contextlib.contextmanager
def quiet(log: Path):
    """TensorFlow's converter prints to the process's own stdout / stderr: both into a log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run(path: Path, salt: int) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        values = uniform(tuple(detail["shape"]), salt=1000 + salt)
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            info = np.iinfo(detail["dtype"])
            values = np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(
                detail["dtype"]
            )
        interpreter.set_tensor(detail["index"], values)
    interpreter.invoke()
    outs = []
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"]).astype(np.float32)
        scale, zero_point = detail["quantization"]
        if detail["dtype"] != np.float32 and scale:
            value = (value - zero_point) * scale
        outs.append(value)
    return outs


def sensitivity(path: Path) -> list[float]:
    """Per output: max |change| between two seeded inputs over the output's max magnitude."""
    a, b = run(path, 1), run(path, 2)
    return [float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)) for x, y in zip(a, b)]


def op_histogram(path: Path) -> str:
    from ai_edge_litert.interpreter import Interpreter

    counts: dict[str, int] = {}
    for op in Interpreter(model_path=str(path))._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return " ".join(f"{k}x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def make(name: str, out: Path, dynamic_batch: bool = False) -> list[Path]:
    """Write the model's .tflite files; with `dynamic_batch`, exported with a dynamic batch axis
    (Ultralytics' dynamic=True: -1 in the TFLite shape signatures, float32 only)."""
    model, shape = build(name)
    stem = f"{name}_dynbatch" if dynamic_batch else name
    work = out / "work" / stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sample_images(work)
    onnx_path = work / f"{name}.onnx"
    export_onnx(model, shape, onnx_path, dynamic_batch)
    _check_onnx(model, shape, onnx_path)
    quantized = INT8.get(name, ()) if not dynamic_batch else ()
    try:
        onnx2tf_convert(onnx_path, work, shape, int8=bool(quantized))
    except SystemExit:  # onnx2tf exits on its own errors (the reason is in its log)
        print(f"  {stem}: onnx2tf failed, see {work / 'onnx2tf.log'}")
        return []
    written = []
    kinds = {"float32": "float32"} if dynamic_batch else {"float32": "float32", "float16": "float16"}
    for kind in quantized:
        kinds[kind] = QUANT_FILES[kind]
    for kind, suffix in kinds.items():
        src = work / "tf" / f"{name}_{suffix}.tflite"
        if not src.exists():
            print(f"  {stem}: onnx2tf wrote no {src.name}")
            continue
        dst = out / f"torch_{stem}_{kind}.tflite"
        shutil.copyfile(src, dst)
        written.append(dst)
    return written


def _check_onnx(model: nn.Module, shape: tuple[int, ...], onnx_path: Path) -> None:
    """The ONNX export computes what the torch model does (else the probe tests the exporter)."""
    import onnxruntime as ort

    x = uniform(shape, salt=6)
    with torch.no_grad():
        want = model(torch.from_numpy(x))
    want = [t.numpy() for t in (want if isinstance(want, (tuple, list)) else (want,))]
    got = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    for w, g in zip(want, got):
        err = float(np.abs(w - g).max() / max(np.abs(w).max(), 1e-12))
        if err > 1e-4:
            print(f"  {onnx_path.name}: onnxruntime differs from torch by rel {err:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".probe_torch"))
    parser.add_argument("--only", nargs="*", default=None, help="model names (see --list)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the ONNX / SavedModel files in OUT/work"
    )
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(MODELS))
        return 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(args.only or ()) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; --list names them")
    jobs = [(name, False) for name in args.only or MODELS]
    jobs += [(name, True) for name in DYNAMIC_BATCH if name in (args.only or MODELS)]
    for name, dynamic in jobs:
        start = time.perf_counter()
        for path in make(name, out, dynamic):
            try:
                ratios = sensitivity(path)
            except RuntimeError as exc:  # e.g. int8 DIV by a zero the calibration never saw
                print(f"{path.name:40s} LiteRT cannot run it, not kept: {str(exc).splitlines()[0]}")
                path.unlink()
                continue
            flag = "" if min(ratios) > MIN_CHANGE else "  CONSTANT? an output moves by <= 1%"
            change = " ".join(f"{r:.3f}" for r in ratios)
            print(f"{path.name:40s} {path.stat().st_size / 1e6:6.2f} MB  change {change}{flag}")
            print(f"    {op_histogram(path)}")
        print(f"  ({time.perf_counter() - start:.1f} s)")
    if not args.keep_work:
        shutil.rmtree(out / "work", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
