"""Where backbone weights come from: a pretrained tag, a checkpoint file, a TorchScript archive,
`local-dir:` or `hf-hub:`, or none (random init); nothing is downloaded unless asked (METHOD §2).
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from .config import HF_HUB, LOCAL_DIR, brings_own_weights
from .errors import CheckpointError, ConfigError, load_failure

RANDOM = "random"  # the weights value for a randomly initialised backbone
AUTO = "auto"  # the weights value for "the model's usual weights" (concrete_weights)
SOURCE_KINDS = ("random", "file", "torchscript", "local-dir", "hf-hub")
_TORCHSCRIPT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass(frozen=True)
class WeightsSource:
    """Resolved weights: what kind of source, and the file or folder to read."""

    kind: str  # one of SOURCE_KINDS
    path: Path | None  # checkpoint file or local-dir folder; None for random / hf-hub
    quick_gelu: bool  # the activation these weights were trained with (METHOD §2)
    label: str  # how results name the weights, e.g. "openai", "random", a file name


def is_random(model: str, weights: str | None) -> bool:
    """No pretrained weights: `model` starts from random ones (`random`, none given, or "auto"
    for a model without pretrained weights); a local-dir: or hf-hub: model brings its own."""
    if brings_own_weights(model):
        return False
    return concrete_weights(model, weights) in (None, RANDOM)


def concrete_weights(model: str, weights: str | None) -> str | None:
    """`weights` with "auto" made concrete: the model's own for local-dir: and hf-hub: (None),
    OpenAI's for a model that has them, random for a model without any pretrained weights (the
    package's tiny test models); any other model must be told which of its tags to use."""
    if weights != AUTO:
        return weights
    if brings_own_weights(model):
        return None
    tags = open_clip.list_pretrained_tags_by_model(model)
    if "openai" in tags:
        return "openai"
    if not tags:
        return RANDOM
    raise ConfigError(
        f"{model} has no OpenAI weights; choose --weights from its tags ({', '.join(tags)}), a file, or random"
    )


def resolve_weights(
    model: str, weights: str | None, *, allow_download: bool = False, cache_dir: str | None = None
) -> WeightsSource:
    """Find the weights for `model` without touching the network unless `allow_download`."""
    weights = concrete_weights(model, weights)
    if model.startswith(LOCAL_DIR):
        return _resolve_local_dir(model, weights)
    if model.startswith(HF_HUB):  # read from the Hugging Face cache under offline_hub unless allow_download
        return WeightsSource("hf-hub", None, quick_gelu=False, label=model)
    if weights in (None, RANDOM):  # concrete already; local-dir: and hf-hub: are handled above
        return WeightsSource("random", None, quick_gelu=False, label=RANDOM)
    path = Path(weights).expanduser()
    tag_cfg = open_clip.get_pretrained_cfg(model, weights)  # a tag wins over a file of that name here
    if not tag_cfg and path.is_file():
        kind = "torchscript" if is_torchscript_archive(path) else "file"
        # OpenAI's own archives are TorchScript and were trained with QuickGELU.
        return WeightsSource(kind, path, quick_gelu=kind == "torchscript", label=path.name)
    if not tag_cfg:
        if path.is_dir():
            raise CheckpointError(
                f"--weights {path} is a folder; give the checkpoint file in it, or --model local-dir:{path} "
                "for an OpenCLIP model folder (open_clip_config.json and its weights)"
            )
        if _looks_like_path(weights):
            raise CheckpointError(f"checkpoint file {path} does not exist; check the --weights path")
        tags = open_clip.list_pretrained_tags_by_model(model) or ["(none)"]
        raise CheckpointError(
            f"weights {weights!r} are neither a file nor a pretrained tag of {model}; "
            f"tags: {', '.join(tags)}; or give a checkpoint file, or 'random'"
        )
    cached = _find_cached(tag_cfg, cache_dir)
    if cached is None:
        if not allow_download:
            raise CheckpointError(_missing_tag_message(model, weights, tag_cfg, cache_dir))
        try:
            cached = Path(open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir))
        except Exception as error:  # no network, a refused or broken download
            raise CheckpointError(f"could not download {model}/{weights}: {type(error).__name__}: {error}") from error
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    kind = "torchscript" if is_torchscript_archive(cached) else "file"
    return WeightsSource(kind, cached, quick_gelu=quick_gelu, label=weights)


@contextlib.contextmanager
def offline_hub(offline: bool = True) -> Iterator[None]:
    """Within: the Hugging Face hub library reads its cache only and never reaches the network
    (its HF_HUB_OFFLINE setting, read when it is imported, so the environment variable cannot
    switch it later)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants  # OpenCLIP's own dependency

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _resolve_local_dir(model: str, weights: str | None) -> WeightsSource:
    folder = Path(model.removeprefix(LOCAL_DIR)).expanduser()
    if weights not in (None, RANDOM):
        raise ConfigError(f"{model} carries its own weights; drop --weights {weights}")
    if not folder.is_dir():
        raise CheckpointError(f"local-dir folder {folder} does not exist")
    if not (folder / "open_clip_config.json").is_file():
        raise CheckpointError(
            f"local-dir folder {folder} has no open_clip_config.json; it needs that file and a "
            "weights file (open_clip_model.safetensors, open_clip_pytorch_model.bin, ...)"
        )
    return WeightsSource("local-dir", folder, quick_gelu=False, label=f"local-dir:{folder.name}")


def is_named_weights(model: str, weights: str | None) -> bool:
    """`weights` names weights rather than a file: random, auto, or a pretrained tag of `model`."""
    return weights in (None, RANDOM, AUTO) or bool(open_clip.get_pretrained_cfg(model, weights))


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def _cache_candidates(tag_cfg: dict, cache_dir: str | None) -> list[Path]:
    """Every place OpenCLIP would have put a download of this tag (URL and HF hub caches)."""
    places = []
    url = tag_cfg.get("url", "")
    if url:
        base = Path(cache_dir or "~/.cache/clip").expanduser()
        places.append(base / os.path.basename(url))
    return places


def _find_cached(tag_cfg: dict, cache_dir: str | None) -> Path | None:
    if "file" in tag_cfg and Path(tag_cfg["file"]).is_file():
        return Path(tag_cfg["file"])
    for place in _cache_candidates(tag_cfg, cache_dir):
        if place.is_file():
            return place
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache  # OpenCLIP's own dependency

        repo, filename = os.path.split(hub)  # "org/name/" → no file name: OpenCLIP's defaults
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    return None


def _missing_tag_message(model: str, tag: str, tag_cfg: dict, cache_dir: str | None) -> str:
    looked = [str(p) for p in _cache_candidates(tag_cfg, cache_dir)]
    if tag_cfg.get("hf_hub"):
        looked.append(f"Hugging Face cache ({tag_cfg['hf_hub'].rstrip('/')})")
    url = tag_cfg.get("url") or f"hf-hub:{tag_cfg.get('hf_hub', '')}"
    return (
        f"weights {model}/{tag} are not on this machine (looked in: {'; '.join(looked)}); "
        f"download {url} and pass it with --weights FILE, or allow a download with --download"
    )


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (it holds `code/`), False for a torch.save zip or anything else."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_state_dict(source: WeightsSource) -> dict[str, torch.Tensor]:
    """Read a state dict from a checkpoint file or TorchScript archive, on the CPU, in its stored dtype
    (copying into the fp32 towers converts tensor by tensor, so fp16 files never exist twice in fp32)."""
    path = source.path
    assert path is not None, "random and hub sources have no file"  # internal invariant
    try:
        if source.kind == "torchscript":
            with warnings.catch_warnings():  # torch.jit is deprecated, but OpenAI's files need it
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in _TORCHSCRIPT_EXTRA_KEYS:
                state.pop(key, None)
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any decoding failure is a bad file, reported as such
        raise CheckpointError(f"cannot read checkpoint {path}: {load_failure(error)}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path} holds no state dict (found {type(state).__name__})")
    if all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state
