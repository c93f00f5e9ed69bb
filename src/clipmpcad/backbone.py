"""The frozen CLIP ViT, run block by block so adapters can act after chosen levels (METHOD §2).

Shapes: images (B, 3, S, S) → tokens (B, 1+N, C), N = h·w patches, CLS first; the joint
embedding has width D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import open_clip
import torch
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

from .config import BackboneConfig
from .errors import CheckpointError, ConfigError
from .runtime import fixed_torch_seed
from .weights import WeightsSource, read_state_dict, resolve_weights

_registered = False


def register_model_configs() -> list[str]:
    """Add the package's tiny random-init architectures to OpenCLIP's registry (idempotent)."""
    global _registered
    folder = resources.files("clipmpcad") / "model_configs"
    if not _registered:
        open_clip.add_model_config(str(folder))
        _registered = True
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


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
    """The four blocks at depth·{1/4, 2/4, 3/4, 1}: 6/12/18/24 for a 24-block ViT (METHOD §2)."""
    return tuple(sorted({max(1, round(depth * q / 4)) for q in (1, 2, 3, 4)}))


class Backbone(nn.Module):
    """A frozen OpenCLIP ViT with its text tower, always in eval mode."""

    def __init__(self, clip: nn.Module, info: BackboneInfo, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.visual: VisionTransformer = clip.visual
        clip.visual = nn.Identity()  # the text half stays in `self.text` and can be dropped alone
        self.text: nn.Module | None = clip
        self.info = info
        self.mean, self.std = tuple(mean), tuple(std)
        self.tokenizer = None
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Backbone:
        return super().train(False)  # METHOD §2: frozen, patch dropout off, always

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, CLS token, positional embedding, ln_pre: (B,3,S,S) → (B,1+N,C)."""
        v = self.visual
        x = v.conv1(images)  # (B, C, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run blocks start..stop-1 (0-based) on tokens (B, 1+N, C)."""
        for block in self.visual.transformer.resblocks[start:stop]:
            x = block(x)
        return x

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens into the joint space, as CLIP does for its CLS: ln_post then proj, (B,L,C) → (B,L,D)."""
        return self.visual.ln_post(x) @ self.visual.proj

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings (n, D) of tokenised sentences (n, context)."""
        if self.text is None:
            raise RuntimeError("the text tower was dropped after the text prototypes were built")
        return self.text.encode_text(tokens)

    def tokenize(self, sentences: list[str]) -> torch.Tensor:
        return self.tokenizer(sentences)

    def drop_text(self) -> None:
        """Free the text tower once the prototypes exist: test and predict never need it."""
        self.text = None


def load_backbone(cfg: BackboneConfig, *, quick_gelu_for_openai: bool = True) -> Backbone:
    """Build the frozen backbone from a model name and weights, resizing positions to image_size."""
    register_model_configs()
    model = cfg.model
    if not model.startswith(("local-dir:", "hf-hub:")) and open_clip.get_model_config(model) is None:
        vits = [name for name in open_clip.list_models() if "ViT" in name or name.startswith("clipmpcad")]
        raise ConfigError(f"unknown OpenCLIP model {model!r}; ViT models: {', '.join(vits)}")
    source = resolve_weights(model, cfg.weights, allow_download=cfg.download, cache_dir=cfg.cache_dir)
    quick_gelu = cfg.quick_gelu if cfg.quick_gelu is not None else source.quick_gelu and quick_gelu_for_openai
    clip = _create(model, source, cfg, quick_gelu)
    if not isinstance(clip.visual, VisionTransformer):
        raise ConfigError(f"{model} has a {type(clip.visual).__name__} image tower; ClipMPCAD needs an OpenCLIP ViT")
    if source.kind in ("file", "torchscript"):
        _load_into(clip, read_state_dict(source), source)
    info = _describe(clip.visual, model, source, cfg)
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    backbone = Backbone(clip, info, preprocess.get("mean"), preprocess.get("std"))
    backbone.tokenizer = open_clip.get_tokenizer(model)
    return backbone


def _create(model: str, source: WeightsSource, cfg: BackboneConfig, quick_gelu: bool) -> nn.Module:
    kwargs = {"force_image_size": cfg.image_size, "quick_gelu": quick_gelu}
    logging.disable(logging.WARNING)  # OpenCLIP warns of random init; BackboneInfo reports it instead
    try:
        with fixed_torch_seed(cfg.init_seed):  # the same random backbone in every process
            clip = open_clip.create_model(model, pretrained=None, cache_dir=cfg.cache_dir, **kwargs)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"cannot build {model}: {error}") from error
    finally:
        logging.disable(logging.NOTSET)
    return clip.float().eval()


def _load_into(clip: nn.Module, state: dict[str, torch.Tensor], source: WeightsSource) -> None:
    open_clip.model.resize_pos_embed(state, clip)  # bicubic, e.g. 24×24 → 17×17 for 240 px
    if "logit_scale" in state and state["logit_scale"].ndim != clip.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(clip.logit_scale.shape)
    hint = "does --model name the architecture of these weights?"
    try:
        result = clip.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"checkpoint {source.path} does not match the model: {first}; {hint}") from None
    missing = [k for k in result.missing_keys if k != "logit_bias"]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {source.path} does not match the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}; {hint}"
        )


def _describe(v: VisionTransformer, model: str, source: WeightsSource, cfg: BackboneConfig) -> BackboneInfo:
    depth = len(v.transformer.resblocks)
    if cfg.image_size % v.patch_size[0]:
        raise ConfigError(f"image_size {cfg.image_size} is not a multiple of {model}'s patch size {v.patch_size[0]}")
    levels = tuple(cfg.levels) if cfg.levels is not None else default_levels(depth)
    if levels[-1] > depth:
        raise ConfigError(f"levels {list(levels)} go past the {depth} blocks of {model}")
    gelu = v.transformer.resblocks[0].mlp.gelu
    h, w = v.grid_size
    return BackboneInfo(
        model=model,
        weights=source.label,
        random=source.kind == "random",
        quick_gelu=isinstance(gelu, QuickGELU),
        image_size=cfg.image_size,
        patch_size=v.patch_size[0],
        grid=(h, w),
        width=v.transformer.width,
        embed_dim=v.proj.shape[1],
        depth=depth,
        levels=levels,
        identity=_identity(model, source, cfg, isinstance(gelu, QuickGELU)),
    )


def _identity(model: str, source: WeightsSource, cfg: BackboneConfig, quick_gelu: bool) -> str:
    if source.kind == "random":
        weights = f"random:{cfg.init_seed}"
    elif source.path is not None:
        stat = source.path.stat() if source.path.is_file() else None
        weights = f"{source.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(source.path.resolve())
    else:
        weights = source.label
    return f"{model}|{weights}|quick_gelu={quick_gelu}"
