"""The image and text towers of an OpenCLIP model, built apart and filled from a checkpoint.

Built apart, a test or predict run never allocates the text tower, and training frees it once the
text prototypes exist. The image tower is built exactly as OpenCLIP's CLIP builds it (first, under
the same seed), so a random-init tower equals the one inside `open_clip.create_model`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import open_clip
import torch
from open_clip.model import _build_text_tower, _build_vision_tower  # stable across open-clip 3.x
from torch import nn

from .config import HF_HUB, LOCAL_DIR, BackboneConfig, brings_own_weights
from .errors import CheckpointError, ConfigError, load_failure
from .runtime import fixed_torch_seed
from .vision_towers import check_patch_size
from .weights import WeightsSource, concrete_weights, offline_hub, read_state_dict

TEXT_SEED_OFFSET = 1_000_003  # a random text tower gets its own seed, apart from the image tower's
_NOT_TOWER_KEYS = ("logit_scale", "logit_bias")


def build_towers(
    model: str,
    model_cfg: dict,
    source: WeightsSource,
    cfg: BackboneConfig,
    quick_gelu: bool | None,
    with_text: bool,
) -> tuple[nn.Module, nn.Module | None, dict]:
    """(image tower, text tower or None, preprocess config) for `model` with `source`'s weights.

    model_cfg: OpenCLIP's architecture of `model` (model_config; unused for local-dir: and hf-hub:,
    whose config OpenCLIP reads itself); it is not modified.
    """
    if brings_own_weights(model):
        return _from_open_clip(model, cfg, quick_gelu, with_text)
    # before any positional embedding is resized to an empty grid
    check_patch_size(model, cfg.image_size, model_cfg["vision_cfg"].get("patch_size", 1))
    vision_cfg = {**model_cfg["vision_cfg"], "image_size": cfg.image_size}
    embed_dim = model_cfg["embed_dim"]
    with fixed_torch_seed(cfg.init_seed):
        visual = _build_vision_tower(embed_dim, vision_cfg, quick_gelu)
    text = None
    if with_text:
        with fixed_torch_seed(cfg.init_seed + TEXT_SEED_OFFSET):
            text = _build_text_tower(embed_dim, model_cfg["text_cfg"], quick_gelu)
    if source.kind in ("file", "torchscript"):
        load_towers(visual, text, read_state_dict(source), source)
    weights = concrete_weights(model, cfg.weights)
    tag = open_clip.get_pretrained_cfg(model, weights) if weights else {}
    preprocess = {
        "mean": tag.get("mean", open_clip.OPENAI_DATASET_MEAN),
        "std": tag.get("std", open_clip.OPENAI_DATASET_STD),
    }
    return visual.float().eval(), None if text is None else text.float().eval(), preprocess


def _from_open_clip(model: str, cfg: BackboneConfig, quick_gelu: bool | None, with_text: bool):
    """local-dir: and hf-hub: models: OpenCLIP reads their config and weights itself, and must find
    weights (no silent random init). quick_gelu None: as the model's own config says."""
    chosen = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
    _check_patch(model, cfg.image_size)
    logging.disable(logging.WARNING)  # OpenCLIP's own notes; failures are raised below
    try:
        with fixed_torch_seed(cfg.init_seed), offline_hub(not cfg.download):
            clip = open_clip.create_model(
                model,
                pretrained=None,
                cache_dir=cfg.cache_dir,
                force_image_size=cfg.image_size,
                require_pretrained=True,
                **chosen,
            )
    except Exception as error:  # a bad folder, config or weights file, a missing package: one line
        offline = " (hf-hub: models are read from the Hugging Face cache only; --download fetches them)"
        hint = offline if model.startswith(HF_HUB) and not cfg.download else ""
        raise CheckpointError(f"cannot build {model}: {_why(error, model)}{hint}") from error
    finally:
        logging.disable(logging.NOTSET)
    preprocess = open_clip.get_model_preprocess_cfg(clip)
    visual = clip.visual
    clip.visual = nn.Identity()  # what is left is the text tower, with CLIP's encode_text
    return visual.float().eval(), clip.float().eval() if with_text else None, preprocess


def _check_patch(model: str, image_size: int) -> None:
    """A local-dir: OpenCLIP ViT's patch against image_size, from its config, before anything is
    resized to an empty grid (a timm tower is checked when it is resized)."""
    if not model.startswith(LOCAL_DIR):
        return
    config = Path(model.removeprefix(LOCAL_DIR)).expanduser() / "open_clip_config.json"
    try:
        patch = json.loads(config.read_text())["model_cfg"]["vision_cfg"].get("patch_size")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # building reports what is wrong with the folder
    if isinstance(patch, int):
        check_patch_size(model, image_size, patch)


def _why(error: Exception, model: str) -> str:
    """One line on why OpenCLIP could not build `model`."""
    if isinstance(error, RuntimeError) and "Required pretrained weights" in str(error):
        return (
            "no weights file found (a local-dir: folder needs open_clip_model.safetensors or "
            "open_clip_pytorch_model.bin beside open_clip_config.json; an hf-hub: model must be in the "
            "Hugging Face cache, or pass --download)"
        )
    if isinstance(error, ModuleNotFoundError):
        return f"it needs the Python package {error.name!r}, which is not installed (pip install {error.name})"
    return f"{type(error).__name__}: {load_failure(error)}"


def load_towers(
    visual: nn.Module, text: nn.Module | None, state: dict[str, torch.Tensor], source: WeightsSource
) -> None:
    """Copy a CLIP state dict into the towers; positions resized (bicubic) to the tower's grid."""
    visual_state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    if "positional_embedding" in visual_state:
        resized = {"visual.positional_embedding": visual_state["positional_embedding"].float()}
        open_clip.model.resize_pos_embed(resized, SimpleNamespace(visual=visual))  # e.g. 24×24 → 17×17
        visual_state["positional_embedding"] = resized["visual.positional_embedding"]
    _copy_into(visual, visual_state, source, "image")
    if text is not None:
        text_state = {k: v for k, v in state.items() if not k.startswith("visual.") and k not in _NOT_TOWER_KEYS}
        _copy_into(text, text_state, source, "text")


def _copy_into(tower: nn.Module, state: dict[str, torch.Tensor], source: WeightsSource, name: str) -> None:
    hint = "does --model name the architecture of these weights?"
    try:
        result = tower.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise CheckpointError(
            f"checkpoint {source.path} does not match the {name} tower: {lines[-1]}; {hint}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {source.path} does not match the {name} tower: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}; {hint}"
        )


def model_config(model: str) -> dict:
    """OpenCLIP's architecture of a named model; the error lists the ViTs it knows."""
    found = open_clip.get_model_config(model)
    if found is None:
        vits = [name for name in open_clip.list_models() if "ViT" in name or name.startswith("clipmpcad")]
        raise ConfigError(f"unknown OpenCLIP model {model!r}; ViT models: {', '.join(vits)}")
    return found
