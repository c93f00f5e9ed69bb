"""The image towers a backbone can run block by block: OpenCLIP's own ViT, and a timm ViT inside
OpenCLIP's TimmModel (BiomedCLIP's kind, METHOD §2). Each gives the same three steps.

Shapes: images (B, 3, S, S) → embed → tokens (B, 1+N, C), CLS first → blocks → (B, 1+N, C)
→ project → (B, 1+N, D), the joint space the text prototypes live in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from open_clip.timm_model import TimmModel
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

from .errors import ConfigError
from .products import linear


@dataclass(frozen=True)
class Geometry:
    """What a tower's shapes are, as BackboneInfo reports them."""

    patch_size: int
    grid: tuple[int, int]  # (h, w) patches
    width: int  # C
    embed_dim: int  # D
    depth: int
    quick_gelu: bool


class OpenClipTower:
    """OpenCLIP's VisionTransformer: conv1, class and positional embeddings, ln_pre; resblocks;
    ln_post and proj (applied to every token, as CLIP applies them to its CLS)."""

    def __init__(self, visual: VisionTransformer) -> None:
        self.visual = visual
        self.blocks = visual.transformer.resblocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images).flatten(2).transpose(1, 2)  # (B, N, C)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        return v.ln_pre(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.visual.ln_post(x), self.visual.proj.t())  # x @ proj

    def geometry(self) -> Geometry:
        v = self.visual
        quick = isinstance(self.blocks[0].mlp.gelu, QuickGELU)
        grid = tuple(v.grid_size)
        return Geometry(v.patch_size[0], grid, v.transformer.width, v.proj.shape[1], len(self.blocks), quick)


class TimmTower:
    """A timm VisionTransformer with one class token inside OpenCLIP's TimmModel: patch and
    positional embedding, norm_pre; blocks; norm (and fc_norm) then OpenCLIP's head, per token."""

    def __init__(self, visual: TimmModel) -> None:
        self.visual = visual
        self.trunk = visual.trunk
        self.blocks = self.trunk.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        t = self.trunk
        return t.norm_pre(t.patch_drop(t._pos_embed(t.patch_embed(images))))  # as timm's forward_features

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.head(self.trunk.fc_norm(self.trunk.norm(x)))

    def geometry(self) -> Geometry:
        t = self.trunk
        embed_dim = self.project(torch.zeros(1, 1, t.embed_dim, device=t.cls_token.device)).shape[-1]
        grid = tuple(t.patch_embed.grid_size)
        return Geometry(t.patch_embed.patch_size[0], grid, t.embed_dim, embed_dim, len(self.blocks), quick_gelu=False)

    def resize(self, image_size: int) -> None:
        """Inputs of image_size (≥ the patch, check_patch_size): timm resamples the positional
        embedding (bicubic, as OpenCLIP's)."""
        if tuple(self.trunk.patch_embed.img_size) != (image_size, image_size):
            self.trunk.set_input_size(img_size=image_size)


def check_patch_size(model: str, image_size: int, patch: int) -> None:
    """A ConfigError where image_size leaves no patch: the grid would be empty."""
    if image_size < patch:
        raise ConfigError(f"image_size {image_size} is smaller than {model}'s patch size {patch}")


def vision_tower(visual: nn.Module, model: str) -> OpenClipTower | TimmTower:
    """The block-by-block view of an image tower; a ConfigError for one ClipMPCAD cannot run."""
    if isinstance(visual, VisionTransformer):
        return OpenClipTower(visual)
    trunk = getattr(visual, "trunk", None)
    if isinstance(visual, TimmModel) and _is_timm_vit(trunk):
        if trunk.num_prefix_tokens == 1 and trunk.cls_token is not None:
            return TimmTower(visual)
        raise ConfigError(
            f"{model}'s timm ViT has {trunk.num_prefix_tokens} prefix tokens; ClipMPCAD needs exactly one class token"
        )
    kind = f"timm {type(trunk).__name__}" if trunk is not None else type(visual).__name__
    raise ConfigError(f"{model} has a {kind} image tower; ClipMPCAD needs a ViT (OpenCLIP's, or timm's)")


def _is_timm_vit(trunk: object) -> bool:
    from timm.models.vision_transformer import VisionTransformer as TimmViT  # OpenCLIP's dependency

    return isinstance(trunk, TimmViT)
