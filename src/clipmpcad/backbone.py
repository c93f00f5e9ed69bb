"""The frozen CLIP ViT, run block by block so adapters can act after chosen levels (METHOD §2).

Shapes: images (B, 3, S, S) → tokens (B, 1+N, C), N = h·w patches, CLS first; the joint
embedding has width D.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

from .config import BackboneConfig, brings_own_weights
from .errors import CheckpointError, ConfigError
from .products import linear, route_linears, routed
from .runtime import compute_dtype
from .towers import build_towers, model_config
from .vision_towers import OpenClipTower, TimmTower, check_patch_size, vision_tower
from .weights import WeightsSource, offline_hub, resolve_weights


def register_model_configs() -> list[str]:
    """Add the package's tiny random-init architectures to OpenCLIP's registry (idempotent)."""
    folder = resources.files("clipmpcad") / "model_configs"
    names = sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))
    if any(open_clip.get_model_config(name) is None for name in names):
        open_clip.add_model_config(str(folder))
    return names


@dataclass(frozen=True)
class BackboneInfo:
    """What was loaded, as results report it."""

    model: str
    weights: str  # "openai", a file name, "random", ...
    random: bool  # randomly initialised: results say nothing about the method
    quick_gelu: bool
    image_size: int
    patch_size: int
    grid: tuple[int, int]  # (h, w) patch grid
    width: int  # C, token width
    embed_dim: int  # D, joint embedding width
    depth: int  # number of transformer blocks
    levels: tuple[int, ...]  # 1-based blocks after which adapters act
    identity: str  # what the text tower depends on: keys the text-prototype cache

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def describe(self) -> str:
        gelu = "QuickGELU" if self.quick_gelu else "GELU"
        weights = "RANDOM weights" if self.random else f"weights {self.weights}"
        return f"{self.model} ({weights}, {gelu}, {self.image_size} px, levels {list(self.levels)})"


def default_levels(depth: int) -> tuple[int, ...]:
    """The four blocks at depth·{1/4, 2/4, 3/4, 1}: 6/12/18/24 for a 24-block ViT (METHOD §2).
    Halves round up (depth 6 → 2/3/5/6, depth 10 → 3/5/8/10), never to the even neighbour as
    Python's round does; fewer than four blocks give one level each."""
    return tuple(sorted({max(1, (depth * q + 2) // 4) for q in (1, 2, 3, 4)}))


class Backbone(nn.Module):
    """A frozen CLIP ViT (OpenCLIP's or timm's, vision_towers) with its text tower, always in eval mode."""

    def __init__(
        self,
        tower: OpenClipTower | TimmTower,
        text: nn.Module | None,
        info: BackboneInfo,
        mean: tuple,
        std: tuple,
        tokenizer: Callable[[list[str]], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.visual = tower.visual
        self.tower = tower  # embed, blocks, project
        self.text = text  # the text tower, until the prototypes exist
        self.info = info
        self.mean, self.std = tuple(mean), tuple(std)
        self.tokenizer = tokenizer  # with the text tower: sentences → token ids (n, context)
        self.fingerprint = fingerprint(tower.visual)  # of the weights as loaded, whatever they are stored in later
        for tower_module in (tower.visual, text):
            if tower_module is not None:
                route_linears(tower_module)  # fp32 products on a CPU through oneDNN (products.py)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(False)  # METHOD §2: frozen, patch dropout off, always

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, CLS token, positional embedding, pre-norm: (B,3,S,S) → (B,1+N,C)."""
        return self.tower.embed(images)

    def blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run blocks start..stop-1 (0-based) on tokens (B, 1+N, C)."""
        # With gradients, nn.MultiheadAttention's slow path runs its projections as bmm; under CPU
        # autocast its fused path runs about 20× slower than these plain products (torch 2.14); on
        # a CPU in fp32 its fused path multiplies with MKL, at half oneDNN's speed (products.py).
        plain = torch.is_grad_enabled() or torch.is_autocast_enabled("cpu")
        for block in self.tower.blocks[start:stop]:
            if type(block) is ResidualAttentionBlock and (plain or routed(x, block.attn.in_proj_weight)):
                x = block_forward(block, x)
            else:
                x = block(x)
        return x

    def store_products(self, device: torch.device, precision: str) -> None:
        """On a CPU computing in bf16, keep the blocks' matrix-product weights (attention projections
        and MLP) in bf16. Autocast casts exactly these weights to bf16 anyway, so results do not
        change; but it casts them anew at every call, and training holds the copies for the
        backward: on ViT-L-14 at 240 px that is about 9 % of a training step and 1 GiB of memory.
        LayerNorms, embeddings and proj stay fp32. (On a GPU the casts are cheap: weights stay fp32.)
        """
        if device.type != "cpu" or compute_dtype(device, precision) != torch.bfloat16:
            return
        for block in self.tower.blocks:
            if type(block) is ResidualAttentionBlock:  # the blocks block_forward runs
                block.attn.to(torch.bfloat16)
                block.mlp.to(torch.bfloat16)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens into the joint space, as CLIP does for its CLS: ln_post then proj, (B,L,C) → (B,L,D)."""
        return self.tower.project(x)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings (n, D) of tokenised sentences (n, context)."""
        if self.text is None:
            raise RuntimeError("this backbone has no text tower (built without one, or dropped after the prototypes)")
        encode = getattr(self.text, "encode_text", self.text)  # CLIP minus its image tower, or a TextTransformer
        device = next(self.text.parameters()).device
        return encode(tokens.to(device))  # token ids come from the CPU tokenizer

    def tokenize(self, sentences: list[str]) -> torch.Tensor:
        return self.tokenizer(sentences)

    def drop_text(self) -> None:
        """Free the text tower once the prototypes exist: test and predict never need it."""
        self.text = None


FINGERPRINT_VERSION = "v2"
_SAMPLED = 8192  # elements hashed per tensor, evenly spread over it


def fingerprint(module: nn.Module) -> str:
    """A short hash of every tensor of `module` (its names, shapes and up to 8192 evenly spread
    values each): the same weights give the same string; other weights in any tensor, almost surely
    another. Prefixed with its version, so runs saved by another version are compared their way."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        if flat.numel() > _SAMPLED:
            flat = flat[torch.linspace(0, flat.numel() - 1, _SAMPLED, device=flat.device).long()]
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(flat.float().cpu().contiguous().numpy().tobytes())
    return f"{FINGERPRINT_VERSION}:{digest.hexdigest()[:16]}"


def legacy_fingerprint(visual: VisionTransformer) -> str:
    """The fingerprint of runs saved before v2: four image-tower tensors only."""
    digest = hashlib.sha256()
    last = visual.transformer.resblocks[-1].mlp.c_fc.weight
    for tensor in (visual.conv1.weight, visual.positional_embedding, visual.proj, last):
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def same_weights(backbone: Backbone, saved: str) -> bool:
    """Whether `backbone` was loaded with the weights a run's saved fingerprint stands for (any
    version; a pre-v2 one is compared on the tower as loaded, before store_products)."""
    return saved == (backbone.fingerprint if ":" in saved else legacy_fingerprint(backbone.visual))


def block_forward(block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """OpenCLIP's pre-norm block on contiguous (B, L, C) tokens, as plain matrix products.

    nn.MultiheadAttention, when gradients are on, transposes to (L, B, C) and projects with a
    broadcast bmm per token; the same arithmetic as one (B·L, C) product is markedly faster on CPU.
    """
    attn = block.attn
    b, n, c = x.shape
    heads = attn.num_heads
    qkv = linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # (B, L, 3C)
    q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # 3 × (B, H, L, C/H)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)  # (B, L, C)
    x = x + block.ls_1(linear(out, attn.out_proj.weight, attn.out_proj.bias))
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def load_backbone(cfg: BackboneConfig, *, quick_gelu_for_openai: bool = True, with_text: bool = True) -> Backbone:
    """Build the frozen backbone from a model name and weights, resizing positions to image_size.

    with_text=False builds no text tower: test and predict read the prototypes from the run.
    """
    register_model_configs()
    model = cfg.model
    model_cfg = {} if brings_own_weights(model) else model_config(model)
    source = resolve_weights(model, cfg.weights, allow_download=cfg.download, cache_dir=cfg.cache_dir)
    quick_gelu = cfg.quick_gelu
    if quick_gelu is None and not brings_own_weights(model):  # those follow their own config
        # as the weights were trained (METHOD §2); the `paper` protocol runs OpenAI's with GELU
        quick_gelu = (source.quick_gelu and quick_gelu_for_openai) or bool(model_cfg.get("quick_gelu", False))
    visual, text, preprocess = build_towers(model, model_cfg, source, cfg, quick_gelu, with_text)
    tower = vision_tower(visual, model)
    check_patch_size(model, cfg.image_size, tower.geometry().patch_size)
    if isinstance(tower, TimmTower):
        tower.resize(cfg.image_size)
    info = _describe(tower, model, source, cfg, text)
    tokenizer = None
    if with_text:
        try:
            with offline_hub(not cfg.download):  # an hf-hub: model's tokenizer files come from the cache too
                tokenizer = open_clip.get_tokenizer(model)
        except Exception as error:  # missing or unreadable tokenizer files, a missing package
            raise CheckpointError(f"cannot load the tokenizer of {model}: {type(error).__name__}: {error}") from error
    return Backbone(tower, text, info, preprocess.get("mean"), preprocess.get("std"), tokenizer)


def _describe(
    tower: OpenClipTower | TimmTower, model: str, source: WeightsSource, cfg: BackboneConfig, text: nn.Module | None
) -> BackboneInfo:
    g = tower.geometry()
    # A side that the patch does not divide (240 with patch 14, METHOD §2) drops its last pixels:
    # the grid is ⌊S/p⌋, as OpenCLIP's force_image_size builds it.
    levels = tuple(cfg.levels) if cfg.levels is not None else default_levels(g.depth)
    if levels[-1] > g.depth:
        raise ConfigError(f"levels {list(levels)} go past the {g.depth} blocks of {model}")
    return BackboneInfo(
        model=model,
        weights=source.label,
        random=source.kind == "random",
        quick_gelu=g.quick_gelu,
        image_size=cfg.image_size,
        patch_size=g.patch_size,
        grid=g.grid,
        width=g.width,
        embed_dim=g.embed_dim,
        depth=g.depth,
        levels=levels,
        identity=_identity(model, source, cfg, g.quick_gelu, text),
    )


def _identity(model: str, source: WeightsSource, cfg: BackboneConfig, quick_gelu: bool, text: nn.Module | None) -> str:
    """What the text prototypes depend on. A local-dir: or hf-hub: model is named by a folder or
    repository whose weights may change, so its text tower's own fingerprint stands for them."""
    if source.kind in ("local-dir", "hf-hub"):
        weights = f"{source.label}:{fingerprint(text) if text is not None else 'no text tower'}"
    elif source.kind == "random":
        weights = f"random:{cfg.init_seed}"
    elif source.path is not None:
        stat = source.path.stat() if source.path.is_file() else None
        weights = f"{source.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(source.path.resolve())
    else:
        weights = source.label
    return f"{model}|{weights}|quick_gelu={quick_gelu}"
