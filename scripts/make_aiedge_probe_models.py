"""Build a probe set of PyTorch -> ai-edge-torch (litert-torch) models, for `tfl-rebuild check` (not for CI).

    /work/probe-venv2/bin/python scripts/make_aiedge_probe_models.py [--out .probe_aiedge] [--only NAME ...] [--list]
    .venv/bin/tfl-rebuild check .probe_aiedge --jobs 1 --markdown .probe_aiedge/report.md

Runs in a separate virtualenv with torch (CPU) and litert-torch (formerly ai-edge-torch), neither of
which the project depends on. Google's PyTorch -> TFLite converter goes through torch.export and
StableHLO: it keeps NCHW with TRANSPOSEs around every conv, writes attention as BATCH_MATMUL /
TRANSPOSE / RESHAPE chains, exact GELU as the GELU builtin, and wraps some aten ops into
STABLEHLO_COMPOSITE ops (with a decomposition subgraph) where the converter has no direct lowering.

The models are those of scripts/make_torch_probe_models.py (same classes, same seeds, same BatchNorm
calibration), plus a few that exercise ai-edge-torch's composites (nn.MultiheadAttention, avg
pooling, nearest / bilinear upsampling, reflection / replication padding, an embedding lookup with
int32 token ids). Each is written as float32, and the CNNs also as PT2E int8 (static, per-channel
weights, calibrated on seeded inputs in [-1, 1]) and PT2E dynamic-range int8 where that converts;
the transformers also with ai-edge-quantizer's recipes (int8 weight-only, dynamic-range, fp16
weights). An LLM-style decoder step with a KV cache (DYNAMIC_UPDATE_SLICE) has two signatures,
prefill and decode; a CNN has NHWC input / output (to_channel_last_io).

Each written file is run with LiteRT on two seeded inputs; an output that moves by 1% or less of
its magnitude is reported (`CONSTANT?`), as such a model proves little.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_torch_probe_models as tp  # noqa: E402  (model classes, seeding, LiteRT helpers)

ROOT = Path(__file__).resolve().parent.parent
MIN_CHANGE = tp.MIN_CHANGE


class MHAEncoder(nn.Module):
    """A small ViT-like encoder with nn.MultiheadAttention, LayerNorm and exact GELU."""

    def __init__(self, size: int = 32, patch: int = 8, dim: int = 32, heads: int = 4, classes: int = 6):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.5)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x).mean(1))


class PoolPadUpsample(nn.Module):
    """ai-edge-torch's composite-wrapped ops: avg_pool2d, nearest / bilinear upsampling, reflection and
    replication padding, hardswish."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 3)

    def forward(self, x):
        y = F.avg_pool2d(F.hardswish(self.c1(x)), 2)
        y = F.interpolate(y, scale_factor=2, mode="nearest")
        y = self.c2(F.pad(y, (1, 1, 1, 1), mode="reflect"))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.c3(F.pad(y, (1, 1, 1, 1), mode="replicate"))


class TokenEmbedder(nn.Module):
    """nn.Embedding over int token ids (odml.embedding_lookup) into a GRU-free mean-pooled head."""

    VOCAB = 50

    def __init__(self, dim: int = 16, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(self.VOCAB, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids):
        return self.head(F.gelu(self.norm(self.embed(ids))).mean(1))


class HlfbDecoderBlock(tp.RotaryDecoderBlock):
    """The rotary decoder block written with ai-edge-torch's generative layers, as its published LLMs
    are: RMSNorm, scaled-dot-product attention and a group norm inside StableHLO composites
    (odml.rms_norm, odml.scaled_dot_product_attention, odml.group_norm), which stay STABLEHLO_COMPOSITE
    ops with a decomposition subgraph in the .tflite file."""

    def __init__(self, dim: int = 32, heads: int = 4, tokens: int = 12):
        super().__init__(dim, heads, tokens)
        self.ln_w, self.ln_b = (
            nn.Parameter(1.0 + 0.2 * torch.randn(dim)),
            nn.Parameter(0.1 * torch.randn(dim)),
        )
        mask = torch.full((tokens, tokens), float("-inf")).triu(1)
        self.register_buffer("mask", mask[None, None])

    def forward(self, x):
        from litert_torch.generative.layers.normalization import layer_norm_with_hlfb, rms_norm_with_hlfb
        from litert_torch.generative.layers.scaled_dot_product_attention import (
            scaled_dot_product_attention_with_hlfb,
        )

        b, n, c = x.shape
        one = torch.ones(())
        q, k, v = (
            self.qkv(rms_norm_with_hlfb(x, self.w1, 1e-6, one)).view(b, n, 3, self.heads, self.hd).unbind(2)
        )
        q = self.rotate(q.transpose(1, 2)).transpose(1, 2)  # [b, n, heads, hd], as the layer takes
        k = self.rotate(k.transpose(1, 2)).transpose(1, 2)
        a = scaled_dot_product_attention_with_hlfb(q, k, v, self.hd, mask=self.mask)
        x = x + self.out(a.reshape(b, n, c))
        h = rms_norm_with_hlfb(x, self.w2, 1e-6, one)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return layer_norm_with_hlfb(x, [c], self.ln_w, self.ln_b, 1e-5)


class KVCacheDecoder(nn.Module):
    """An LLM decoder step as ai-edge-torch's generative API writes one: token embeddings, RMSNorm,
    attention over a KV cache passed in and returned (updated at `input_pos` by
    dynamic_update_slice), a causal mask sliced by position; converted with two signatures,
    prefill (4 tokens) and decode (1 token), over one set of weights."""

    DIM, HEADS, MAX_LEN, VOCAB = 32, 4, 16, 40

    def __init__(self):
        super().__init__()
        d, self.hd = self.DIM, self.DIM // self.HEADS
        self.embed = nn.Embedding(self.VOCAB, d)
        self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.w = nn.Parameter(1.0 + 0.2 * torch.randn(d))
        self.head = nn.Linear(d, self.VOCAB, bias=False)
        mask = torch.full((self.MAX_LEN, self.MAX_LEN), float("-inf")).triu(1)
        self.register_buffer("mask", mask)

    def forward(self, tokens, input_pos, k_cache, v_cache):
        from litert_torch.generative.custom_ops.dynamic_update_slice import dynamic_update_slice

        b, n = tokens.shape
        x = self.embed(tokens)
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w
        q, k, v = self.qkv(h).view(b, n, 3, self.HEADS, self.hd).unbind(2)  # [b, n, heads, hd]
        zero = torch.zeros([], dtype=torch.int32)
        start = [zero, input_pos[0].reshape([]), zero, zero]
        k_cache = dynamic_update_slice(k_cache, k, start)
        v_cache = dynamic_update_slice(v_cache, v, start)
        mask = self.mask.index_select(0, input_pos)[None, None]  # [1, 1, n, max_len]
        scores = q.transpose(1, 2) @ k_cache.permute(0, 2, 3, 1) / math.sqrt(self.hd) + mask
        a = (scores.softmax(-1) @ v_cache.transpose(1, 2)).transpose(1, 2).reshape(b, n, -1)
        return self.head(x + self.out(a)), k_cache, v_cache


class ChannelLastCNN(nn.Module):
    """A small CNN wrapped by litert_torch.to_channel_last_io: NHWC input and output, as vision
    exports meant for NHWC pipelines are written."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            tp.ConvBNAct(3, 16, 3, 2, act=nn.ReLU6()),
            tp.ConvBNAct(16, 16, 3, groups=16),
            tp.ConvBNAct(16, 8, 1, act=nn.GELU()),
        )

    def forward(self, x):
        return self.body(x)


# name -> (factory, input shape, quantized variants): "int8" / "dynamic" are PT2E (static / dynamic
# activations); "weight_only" / "drq" / "fp16" ai-edge-quantizer's recipes (litert_torch.generative.quantize).
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], tuple[str, ...]]] = {
    "resnet": (tp.ResNet, (1, 3, 64, 64), ("int8", "dynamic")),
    "mobilenet_v3": (tp.MobileNetV3, (1, 3, 64, 64), ("int8", "dynamic")),
    "vit": (tp.ViT, (1, 3, 32, 32), ("dynamic", "weight_only", "drq", "fp16")),
    "mha_encoder": (MHAEncoder, (1, 3, 32, 32), ("weight_only",)),
    "text_transformer": (tp.TextTransformer, (1, 16, 32), ()),
    "unet": (tp.UNet, (1, 3, 64, 64), ("int8",)),
    "lstm_gru": (tp.Recurrent, (1, 20, 16), ()),
    "rotary_decoder": (tp.RotaryDecoderBlock, (1, 12, 32), ()),
    "hlfb_decoder": (HlfbDecoderBlock, (1, 12, 32), ("drq", "fp16")),
    "kv_cache_decoder": (KVCacheDecoder, (1, 4), ("weight_only",)),
    "channel_last_cnn": (ChannelLastCNN, (1, 3, 32, 32), ()),
    "convnext": (tp.ConvNeXtBlocks, (1, 3, 56, 40), ()),
    "pool_pad_upsample": (PoolPadUpsample, (1, 3, 24, 32), ()),
    "token_embedder": (TokenEmbedder, (1, 10), ()),
}


def example_input(name: str, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    if name == "token_embedder":
        return torch.from_numpy(tp.rng(salt).integers(0, TokenEmbedder.VOCAB, size=shape).astype(np.int32))
    return torch.from_numpy(tp.uniform(shape, salt=salt))


def build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    factory, shape, _ = MODELS[name]
    torch.manual_seed(tp.SEED)
    model = factory()
    if name not in ("token_embedder", "kv_cache_decoder"):
        tp.calibrate_batchnorm(model, torch.from_numpy(tp.uniform((16, *shape[1:]), salt=3)))
    return model.eval(), shape


def kv_args(tokens: int, salt: int) -> tuple[torch.Tensor, ...]:
    """(token ids, positions, k cache, v cache) for one KVCacheDecoder signature."""
    m = KVCacheDecoder
    ids = tp.rng(salt).integers(0, m.VOCAB, size=(1, tokens)).astype(np.int32)
    pos = np.arange(tokens, dtype=np.int32) + (0 if tokens > 1 else 5)
    cache = (1, m.MAX_LEN, m.HEADS, m.DIM // m.HEADS)
    return (
        torch.from_numpy(ids),
        torch.from_numpy(pos),
        torch.from_numpy(tp.uniform(cache, salt + 1)),
        torch.from_numpy(tp.uniform(cache, salt + 2)),
    )


def quant_recipe(kind: str):
    from litert_torch.generative.quantize import quant_recipes

    return {
        "weight_only": quant_recipes.full_weight_only_recipe,
        "drq": quant_recipes.full_dynamic_recipe,
        "fp16": quant_recipes.full_fp16_recipe,
    }[kind]()


def convert(name: str, kind: str, path: Path) -> None:
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer, quant_config

    model, shape = build(name)
    args = (example_input(name, shape, salt=5),)
    kwargs = {}
    if name == "channel_last_cnn":
        model = litert_torch.to_channel_last_io(model, args=[0], outputs=[0])
        args = (args[0].permute(0, 2, 3, 1).contiguous(),)
    if kind in ("weight_only", "drq", "fp16"):
        kwargs["quant_config"] = quant_recipe(kind)
    if name == "kv_cache_decoder":
        with tp.quiet(path.with_suffix(".log")):
            edge = (
                litert_torch.signature("prefill", model, kv_args(4, 30))
                .signature("decode", model, kv_args(1, 40))
                .convert(**kwargs)
            )
            edge.export(str(path))
        path.with_suffix(".log").unlink()
        return
    if kind in ("int8", "dynamic"):
        from torchao.quantization.pt2e import quantize_pt2e

        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(
                is_per_channel=True, is_dynamic=kind == "dynamic"
            )
        )
        exported = torch.export.export(model, args).module()
        exported = quantize_pt2e.prepare_pt2e(exported, quantizer)
        for k in range(8):  # calibration: seeded inputs in [-1, 1]
            exported(example_input(name, shape, salt=20 + k))
        model = quantize_pt2e.convert_pt2e(exported, fold_quantize=False)
        kwargs["quant_config"] = quant_config.QuantConfig(pt2e_quantizer=quantizer)
    with tp.quiet(path.with_suffix(".log")):
        edge = litert_torch.convert(model, args, **kwargs)
        edge.export(str(path))
    path.with_suffix(".log").unlink()
    if kind == "float32":  # the converted model computes what the torch model does
        x = example_input(name, shape, salt=6)
        if name == "channel_last_cnn":
            x = x.permute(0, 2, 3, 1).contiguous()
        with torch.no_grad():
            want = model(x)
        got = edge(x)
        want = [t.numpy() for t in (want if isinstance(want, (tuple, list)) else (want,))]
        got = list(got) if isinstance(got, (tuple, list)) else [got]
        for w, g in zip(want, got):
            err = float(np.abs(w - np.asarray(g)).max() / max(np.abs(w).max(), 1e-12))
            if err > 1e-4:
                print(f"  {path.name}: LiteRT differs from torch by rel {err:.2e}")


def run(path: Path, salt: int) -> list[np.ndarray]:
    """One LiteRT run on seeded inputs (token ids for an integer input without quantization);
    quantized inputs / outputs go through their scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        scale, zero_point = detail["quantization"]
        if np.issubdtype(detail["dtype"], np.integer) and not scale:
            values = tp.rng(1000 + salt).integers(0, 12, size=tuple(detail["shape"]))  # ids and positions
        else:
            values = tp.uniform(tuple(detail["shape"]), salt=1000 + salt)
            if detail["dtype"] != np.float32:
                info = np.iinfo(detail["dtype"])
                values = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        interpreter.set_tensor(detail["index"], values.astype(detail["dtype"]))
    interpreter.invoke()
    outs = []
    for detail in interpreter.get_output_details():
        value = interpreter.get_tensor(detail["index"]).astype(np.float32)
        scale, zero_point = detail["quantization"]
        outs.append((value - zero_point) * scale if detail["dtype"] != np.float32 and scale else value)
    return outs


def sensitivity(path: Path) -> list[float]:
    a, b = run(path, 1), run(path, 2)
    return [float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)) for x, y in zip(a, b)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / ".probe_aiedge"))
    parser.add_argument("--only", nargs="*", default=None, help="model names (see --list)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(MODELS))
        return 0
    unknown = sorted(set(args.only or ()) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; --list names them")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or MODELS:
        for kind in ("float32", *MODELS[name][2]):
            start = time.perf_counter()
            path = out / f"aiedge_{name}_{kind}.tflite"
            try:
                convert(name, kind, path)
            except Exception as exc:  # noqa: BLE001  (a probe: report and go on)
                line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:160]
                print(f"{path.name:44s} conversion failed ({type(exc).__name__}): {line}")
                if os.environ.get("PROBE_TRACEBACK"):
                    traceback.print_exc()
                path.unlink(missing_ok=True)
                continue
            try:
                ratios = sensitivity(path)
            except RuntimeError as exc:
                print(f"{path.name:44s} LiteRT cannot run it, not kept: {str(exc).splitlines()[0]}")
                path.unlink()
                continue
            flag = "" if min(ratios) > MIN_CHANGE else "  CONSTANT? an output moves by <= 1%"
            change = " ".join(f"{r:.3f}" for r in ratios)
            print(
                f"{path.name:44s} {path.stat().st_size / 1e6:6.2f} MB  change {change}{flag}"
                f"  ({time.perf_counter() - start:.1f} s)"
            )
            print(f"    {tp.op_histogram(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
