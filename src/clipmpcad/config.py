"""Run configuration: one tree of frozen dataclasses, defaults → file → flags, JSON in and out."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SEED_LIMIT = 2**63  # seeds torch and numpy accept
DEMO_EPOCHS = 15  # the demo's training epochs per dataset (clipmpcad demo --epochs)
LOCAL_DIR = "local-dir:"  # a model given as a folder with open_clip_config.json and its weights
HF_HUB = "hf-hub:"  # a model on the Hugging Face hub; like LOCAL_DIR, it brings its own weights


def brings_own_weights(model: str) -> bool:
    """A local-dir: or hf-hub: model: OpenCLIP reads its architecture and weights itself."""
    return model.startswith((LOCAL_DIR, HF_HUB))


SHOTS = (1, 2, 4, 8, 16)
SHOT_SOURCES = ("auto", "list", "sample")
DOMAINS = ("medical", "industrial")
PIXEL_RESOLUTIONS = ("model", "original")
LEVEL_WEIGHTS = ("equal", "learned")
MAP_FORMATS = ("npy", "png16")  # what `predict --save-maps` writes: float .npy or 16-bit PNG
ADAPTER_KINDS = ("madff", "linear")  # madff.ADAPTERS' names, here so the CLI starts without torch
PRECISIONS = ("auto", "fp32", "bf16")  # compute (RunConfig.precision) and bank storage
BANK_PRECISIONS = PRECISIONS


@dataclass(frozen=True)
class BackboneConfig:
    model: str = "ViT-L-14-336"  # OpenCLIP ViT name, or local-dir:PATH / hf-hub:ID
    weights: str | None = "auto"  # pretrained tag, checkpoint file, "random", or "auto" (weights.concrete_weights)
    image_size: int = 240  # input side; the positional embedding is resized to it
    levels: tuple[int, ...] | None = None  # 1-based blocks after which adapters act; None: depth·{¼,½,¾,1}
    quick_gelu: bool | None = None  # None: as the weights were trained (QuickGELU for OpenAI)
    download: bool = False  # allow downloading missing pretrained weights
    cache_dir: str | None = None  # where downloaded / cached weights live
    init_seed: int = 0  # seed of a randomly initialised backbone, so every process builds the same one

    def __post_init__(self) -> None:
        _check_named("backbone", model=self.model, weights=self.weights, cache_dir=self.cache_dir)
        _check(0 <= self.init_seed < SEED_LIMIT, f"backbone.init_seed must be in [0, 2**63), got {self.init_seed}")
        _check(self.image_size > 0, f"image_size must be positive, got {self.image_size}")
        if self.levels is not None:
            _check(len(self.levels) >= 1, "levels must name at least one block")
            _check(list(self.levels) == sorted(set(self.levels)), f"levels must increase: {self.levels}")
            _check(self.levels[0] >= 1, f"levels are 1-based block numbers, got {self.levels}")


@dataclass(frozen=True)
class AdapterConfig:
    kind: str = "madff"  # a name in ADAPTER_KINDS (madff.ADAPTERS): "madff" or "linear" (MVFA baseline)
    reduction: int = 16  # channel-MLP reduction r (METHOD §3)
    spatial_kernel: int = 7  # local spatial attention window on the token grid
    learn_fusion: bool = False  # learn MADFF's fusion weights instead of the published ones
    residual: tuple[float, float, float] = (0.8, 0.1, 0.1)  # x ← a·x + b·y_seg + c·y_det

    def __post_init__(self) -> None:
        _check(self.kind in ADAPTER_KINDS, f"unknown adapter {self.kind!r}; choose one of {', '.join(ADAPTER_KINDS)}")
        _check(self.reduction >= 1, f"reduction must be ≥ 1, got {self.reduction}")
        _check(
            self.spatial_kernel >= 1 and self.spatial_kernel % 2 == 1,
            f"adapter.spatial_kernel must be odd and ≥ 1, got {self.spatial_kernel}",
        )
        _check(len(self.residual) == 3, f"residual needs 3 weights, got {self.residual}")
        _check(
            all(w >= 0 for w in self.residual) and self.residual[0] > 0,
            f"adapter.residual weights must be ≥ 0 with the first > 0 (x keeps a share), got {self.residual}",
        )


@dataclass(frozen=True)
class PromptConfig:
    mode: str = "base+p"  # "base", "p-prompts" or "base+p" (METHOD §4)
    prompt_set: str | None = None  # a package prompt set or a JSON file; None: the dataset's own
    classname: str | None = None  # object name in prompts; None: the dataset's

    def __post_init__(self) -> None:
        from .prompts import PROMPT_MODES

        _check(self.mode in PROMPT_MODES, f"unknown prompt mode {self.mode!r}; choose one of {', '.join(PROMPT_MODES)}")
        _check_named("prompts", prompt_set=self.prompt_set, classname=self.classname)


@dataclass(frozen=True)
class DecoderConfig:
    level_weights: str = "equal"  # "equal" (published) or "learned"

    def __post_init__(self) -> None:
        _check(self.level_weights in LEVEL_WEIGHTS, f"level_weights must be one of {', '.join(LEVEL_WEIGHTS)}")


@dataclass(frozen=True)
class BankConfig:
    coreset: float = 1.0  # fraction of bank tokens kept by greedy coreset; 1.0 = exact full bank
    block_size: int = 8192  # bank rows per similarity tile, at most 2048 on a CPU (bounds memory, not results)
    # "fp32" exact; "bf16" rows: half the memory, fp32 similarities of the rounded rows;
    # "auto": bf16 on a GPU whose model computes in bf16, else fp32 (memory_bank.bank_dtype)
    precision: str = "auto"

    def __post_init__(self) -> None:
        _check(0.0 < self.coreset <= 1.0, f"coreset fraction must be in (0, 1], got {self.coreset}")
        _check(self.precision in BANK_PRECISIONS, f"bank precision must be one of {', '.join(BANK_PRECISIONS)}")
        _check(self.block_size > 0, f"block_size must be positive, got {self.block_size}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    lr: float | None = None  # None: 1e-3 medical, 1e-4 industrial (METHOD §8)
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 8  # support views per optimiser step
    micro_batch: int | None = None  # views per forward pass (None: by memory on CPU); memory, not results
    views: int = 11  # augmented views per support image (METHOD §8)

    def __post_init__(self) -> None:
        _check(self.epochs >= 0, f"epochs must be ≥ 0, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        _check(self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be ≥ 1")
        _check(self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}")
        _check(self.views in (1, 11), f"views must be 1 (no augmentation) or 11, got {self.views}")
        _check(all(0 <= b < 1 for b in self.betas), f"train.betas must each be in [0, 1), got {self.betas}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mvtec"  # a name in data.DATASETS
    root: str = ""  # dataset root folder
    category: str = ""  # category (sub-dataset) name
    shot: int = 4  # k normal (+ k abnormal) support images
    shot_source: str = "auto"  # "list": the dataset's list files; "sample": seeded sampler; "auto": list if present
    shot_file: str | None = None  # a shots.json of an earlier run: repeat its exact support set
    domain: str | None = None  # override the loader's "medical"/"industrial"
    options: tuple[tuple[str, str], ...] = ()  # loader-specific options (folder layout), as pairs

    def __post_init__(self) -> None:
        _check(self.shot in SHOTS, f"shot must be one of {SHOTS}, got {self.shot}")
        _check_named("data", shot_file=self.shot_file)
        _check(self.shot_source in SHOT_SOURCES, f"shot_source must be one of {', '.join(SHOT_SOURCES)}")
        _check(self.domain is None or self.domain in DOMAINS, f"domain must be one of {', '.join(DOMAINS)}")


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int | None = None  # images per forward pass (memory and speed, not results); None: by device
    workers: int | None = None  # data-loading worker processes; 0: main process; None: by device
    pixel_resolution: str = "model"  # "model" input size, or each mask's "original" size
    image_fpr: float = 0.05  # false-positive target of the image threshold on normal references
    pixel_fpr: float = 0.01  # false-positive target of the pixel threshold (predicted masks)
    sigma: float = 0.0  # Gaussian smoothing of maps for display; 0: none
    smooth_scores: bool = False  # also smooth the maps that are scored

    def __post_init__(self) -> None:
        _check(self.pixel_resolution in PIXEL_RESOLUTIONS, f"pixel_resolution must be one of {PIXEL_RESOLUTIONS}")
        _check(0 < self.image_fpr < 1 and 0 < self.pixel_fpr < 1, "false-positive targets must be in (0, 1)")
        _check(
            (self.batch_size is None or self.batch_size >= 1) and (self.workers is None or self.workers >= 0),
            "batch_size ≥ 1 and workers ≥ 0",
        )
        _check(self.sigma >= 0, f"sigma must be ≥ 0, got {self.sigma}")

    def batch_for(self, device_type: str) -> int:
        """The configured batch, or by device: 64 on a GPU (ViT-L-14 at 240 px holds about 1.5 GiB
        there, and larger batches gain little), 16 on a CPU."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if device_type == "cuda" else 16

    @property
    def score_sigma(self) -> float:
        """Smoothing of the scored maps: none unless smooth_scores asks for sigma."""
        return self.sigma if self.smooth_scores else 0.0


@dataclass(frozen=True)
class RunConfig:
    protocol: str = "clean"  # a name in protocols.PROTOCOLS
    seed: int = 111  # shots (when sampled), augmentation order, adapter init (METHOD §8)
    device: str = "auto"
    precision: str = "auto"  # backbone and adapters: "auto" bf16 on GPU, fp32 on CPU; "fp32"; "bf16"
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        from .protocols import get_protocol

        get_protocol(self.protocol)
        _check(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
        _check(0 <= self.seed < SEED_LIMIT, f"seed must be in [0, 2**63), got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    def changed(self, *keys: str) -> list[str]:
        """Those of the dotted keys (or sections) whose values differ from the defaults'."""
        mine, default = flatten(self.to_dict()), flatten(RunConfig().to_dict())
        return [k for k in mine if any(k == key or k.startswith(key + ".") for key in keys) and mine[k] != default[k]]

    def named_paths(self) -> dict[str, str]:
        """Every setting that may name a file or folder, by dotted key, unset ones left out: the
        folder of a local-dir: model without its prefix, and under "data.options" the BMAD loader's
        shot_lists (its other options are folders relative to the root)."""
        from .prompts import names_a_file  # prompts and weights build on this module
        from .weights import is_named_weights

        b = self.backbone
        named = {
            "data.root": self.data.root,
            "data.shot_file": self.data.shot_file,
            "prompts.prompt_set": self.prompts.prompt_set if names_a_file(self.prompts.prompt_set or "") else None,
            "backbone.weights": None if is_named_weights(b.model, b.weights) else b.weights,  # openai, random
            "backbone.cache_dir": b.cache_dir,
            "backbone.model": b.model.removeprefix(LOCAL_DIR) if b.model.startswith(LOCAL_DIR) else None,
            "data.options": dict(self.data.options).get("shot_lists"),
        }
        return {key: value for key, value in named.items() if value}

    def with_absolute_paths(self) -> RunConfig:
        """Every file or folder this config names that exists here, made absolute (against the
        working folder), so that a run and its config.json work from any folder."""

        def absolute(value: str) -> str:
            path = Path(value).expanduser()
            return str(path.resolve()) if path.exists() else value

        overrides: dict[str, Any] = {key: absolute(value) for key, value in self.named_paths().items()}
        if "backbone.model" in overrides:
            overrides["backbone.model"] = LOCAL_DIR + overrides["backbone.model"]
        if "data.options" in overrides:
            lists = overrides["data.options"]
            overrides["data.options"] = sorted({**dict(self.data.options), "shot_lists": lists}.items())
        return self.with_overrides(overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _build(cls, data, "config")

    def with_overrides(self, overrides: dict[str, Any]) -> RunConfig:
        """Apply dotted-key overrides, e.g. {"train.epochs": 5}; unknown keys are refused."""
        tree = self.to_dict()
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"unknown configuration key {dotted!r}")
                node = node[part]
            if leaf not in node:
                raise ConfigError(f"unknown configuration key {dotted!r}; known here: {', '.join(node)}")
            if isinstance(node[leaf], dict) and isinstance(value, dict):  # a section: its other keys stay
                unknown = sorted(set(value) - set(node[leaf]))
                if unknown:
                    raise ConfigError(
                        f"unknown configuration key {dotted}.{unknown[0]}; known here: {', '.join(node[leaf])}"
                    )
                node[leaf] = {**node[leaf], **value}
            else:
                node[leaf] = value
        return RunConfig.from_dict(tree)


def load_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from a JSON file (a run's config.json or a user's file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {path} is a folder; give its config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"configuration file {path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must hold a JSON object")
    try:
        return RunConfig.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_named(section: str, **values: str | None) -> None:
    """Settings that name something are unset (None) or name it: an empty name is refused, not
    read as unset (`--shot-file ""` from an empty shell variable must not sample other shots)."""
    for key, value in values.items():
        _check(value is None or value.strip() != "", f"{section}.{key} is empty; give a name or leave it out")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": 5}} → {"train.epochs": 5}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_jsonable(value: Any) -> Any:
    """Tuples as lists, recursively: what json.dumps writes and from_dict reads back."""
    if isinstance(value, dict):
        return {key: to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Construct a frozen dataclass from JSON data, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check one JSON value against a field's type hint; lists become tuples."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise ConfigError(f"{where} must have {len(items)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(items, value, strict=True)))
    if hint is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (
        isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        return value
    raise ConfigError(f"{where} must be {getattr(hint, '__name__', hint)}, got {value!r}")
