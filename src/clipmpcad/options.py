"""Command-line options of a run and how each reaches the RunConfig: defaults → file → flags.

Every run option is one row of RUN_OPTIONS (flags, dotted config key, argparse keywords), so
the parser, the help text and the config can never drift apart; a test walks this table.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .config import (
    ADAPTER_KINDS,
    BANK_PRECISIONS,
    DOMAINS,
    LEVEL_WEIGHTS,
    PIXEL_RESOLUTIONS,
    PRECISIONS,
    SHOT_SOURCES,
    SHOTS,
    RunConfig,
    load_config,
)
from .data import DATASETS
from .data.folder import LAYOUT_OPTIONS
from .errors import ConfigError
from .prompts import PROMPT_MODES
from .protocols import PROTOCOLS

PRECISION_HELP = (
    "backbone and adapters: auto (bf16 on GPU, fp32 on CPU), fp32, or bf16 (fast on CPUs with AVX512-BF16/AMX)"
)

# (flags, config key, argparse keywords); dest is the key with dots as underscores
RUN_OPTIONS: tuple[tuple[tuple[str, ...], str, dict[str, Any]], ...] = (
    (("--dataset",), "data.dataset", {"choices": sorted(DATASETS), "help": "dataset layout"}),
    (("--root",), "data.root", {"help": "dataset root folder"}),
    (("--category",), "data.category", {"help": "category (see `clipmpcad datasets`)"}),
    (("--shot",), "data.shot", {"type": int, "choices": SHOTS, "help": "k normal (+ k abnormal) support images"}),
    (("--shot-source",), "data.shot_source", {"choices": SHOT_SOURCES, "help": "list files, seeded sampler, or auto"}),
    (("--shot-file",), "data.shot_file", {"help": "shots.json of an earlier run: repeat its support set exactly"}),
    (
        ("--domain",),
        "data.domain",
        {
            "choices": DOMAINS,
            "help": "medical or industrial: prompts and learning rate (default: the layout's; "
            "bmad is medical, the others industrial)",
        },
    ),
    (("--protocol",), "protocol", {"choices": sorted(PROTOCOLS), "help": "evaluation protocol (default clean)"}),
    (("--seed",), "seed", {"type": int, "help": "shots, augmentation order and adapter init (default 111)"}),
    (("--device",), "device", {"help": "auto, cpu, cuda or cuda:N"}),
    (("--precision",), "precision", {"choices": PRECISIONS, "help": PRECISION_HELP}),
    (("--model",), "backbone.model", {"help": "OpenCLIP ViT name, local-dir:PATH or hf-hub:ID"}),
    (
        ("--weights",),
        "backbone.weights",
        {
            "help": "pretrained tag (openai), checkpoint file, or random; default auto: openai, "
            "a local-dir: or hf-hub: model's own, random for the package's tiny models"
        },
    ),
    (("--image-size",), "backbone.image_size", {"type": int, "help": "input side in pixels (default 240)"}),
    (("--levels",), "backbone.levels", {"type": int, "nargs": "+", "help": "1-based blocks the adapters follow"}),
    (
        ("--quick-gelu",),
        "backbone.quick_gelu",
        {"action": argparse.BooleanOptionalAction, "help": "force QuickGELU on/off"},
    ),
    (
        ("--download",),
        "backbone.download",
        {"action": "store_true", "default": None, "help": "allow downloading weights"},
    ),
    (("--cache-dir",), "backbone.cache_dir", {"help": "where pretrained weights are cached"}),
    (("--adapter",), "adapter.kind", {"choices": sorted(ADAPTER_KINDS), "help": "madff (default) or linear (MVFA)"}),
    (
        ("--learn-fusion",),
        "adapter.learn_fusion",
        {"action": "store_true", "default": None, "help": "learn MADFF fusion weights"},
    ),
    (("--prompts",), "prompts.mode", {"choices": list(PROMPT_MODES), "help": "text prototypes (default base+p)"}),
    (("--prompt-set",), "prompts.prompt_set", {"help": "package prompt set name or JSON file"}),
    (("--prompt-classname",), "prompts.classname", {"help": "object name in the prompts"}),
    (
        ("--level-weights",),
        "decoder.level_weights",
        {"choices": LEVEL_WEIGHTS, "help": "M-Decoder level weights: equal (published) or learned"},
    ),
    (
        ("--coreset",),
        "bank.coreset",
        {"type": float, "help": "keep this fraction of the bank (approximate; default 1)"},
    ),
    (
        ("--bank-precision",),
        "bank.precision",
        {
            "choices": BANK_PRECISIONS,
            "help": "fp32 (exact); bf16 rows: half the memory, similarities of the rounded rows in fp32; "
            "auto: bf16 on a GPU whose model computes in bf16, else fp32",
        },
    ),
    (("--epochs",), "train.epochs", {"type": int, "help": "passes over the support views (default 50)"}),
    (("--lr",), "train.lr", {"type": float, "help": "default 1e-3 medical, 1e-4 industrial"}),
    (("--batch-size",), "train.batch_size", {"type": int, "help": "support views per optimiser step"}),
    (("--micro-batch",), "train.micro_batch", {"type": int, "help": "views per forward pass (memory, not results)"}),
    (
        ("--eval-batch-size",),
        "eval.batch_size",
        {"type": int, "help": "test images per forward pass (default: 64 on a GPU, 16 on a CPU)"},
    ),
    (("--workers",), "eval.workers", {"type": int, "help": "image-loading worker processes"}),
    (
        ("--image-fpr",),
        "eval.image_fpr",
        {"type": float, "help": "false-positive target of the image threshold on the normal references (default 0.05)"},
    ),
    (
        ("--pixel-fpr",),
        "eval.pixel_fpr",
        {"type": float, "help": "false-positive target of the pixel threshold on the normal references (default 0.01)"},
    ),
    (
        ("--pixel-resolution",),
        "eval.pixel_resolution",
        {
            "choices": PIXEL_RESOLUTIONS,
            "help": "pixel metrics at the model's input size (model) or each mask's own (original)",
        },
    ),
    (("--sigma",), "eval.sigma", {"type": float, "help": "Gaussian smoothing of displayed maps (pixels)"}),
    (
        ("--smooth-scores",),
        "eval.smooth_scores",
        {"action": "store_true", "default": None, "help": "score the smoothed maps too (default: display only)"},
    ),
)
FOLDER_FLAGS = tuple("--" + name.replace("_", "-") for name in LAYOUT_OPTIONS)
FOLDER_HELP = {  # one line per FolderLayout field; a test checks that none is missing
    "normal_dir": "normal images, relative to --root or absolute (default normal)",
    "abnormal_dir": 'anomalous images (default abnormal; "" for none: normal-only)',
    "mask_dir": "masks of the anomalous images, matched by file stem",
    "mask_suffix": "mask name = image stem + this (default: the stem alone or stem_mask)",
    "test_normal_dir": "normal test images (default: the normal folder, shots left out)",
    "test_abnormal_dir": "anomalous test images (default: the abnormal folder, shots left out)",
    "test_mask_dir": "masks of the test anomalies (default: --mask-dir)",
}


def option_help(flag: str) -> str:
    """A run option's help line for verbs that override a saved run's value with it."""
    return next(kwargs["help"] for flags, _, kwargs in RUN_OPTIONS if flag in flags) + " (default: the run's)"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """All run options, plus --config FILE, --set KEY=VALUE and the custom-folder layout."""
    parser.add_argument("--config", help="JSON RunConfig file (e.g. a run's config.json) to start from")
    group = parser.add_argument_group("run configuration")
    for flags, key, kwargs in RUN_OPTIONS:
        takes_value = "action" not in kwargs and "choices" not in kwargs
        metavar = {"metavar": flags[0].lstrip("-").upper().replace("-", "_")} if takes_value else {}
        group.add_argument(*flags, dest=key.replace(".", "__"), **{"default": None, **metavar, **kwargs})
    folder = parser.add_argument_group("custom folder layout (--dataset folder)")
    for flag, name in zip(FOLDER_FLAGS, LAYOUT_OPTIONS, strict=True):
        metavar = "SUFFIX" if name == "mask_suffix" else "DIR"
        folder.add_argument(flag, dest=f"folder__{name}", default=None, metavar=metavar, help=FOLDER_HELP[name])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any configuration key, e.g. --set train.betas=[0.9,0.999] (JSON values)",
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then --config, then each given flag, then --set overrides."""
    cfg = load_config(args.config) if args.config else RunConfig()
    overrides: dict[str, Any] = {}
    for _, key, _ in RUN_OPTIONS:
        value = getattr(args, key.replace(".", "__"))
        if value is not None:
            overrides[key] = list(value) if isinstance(value, tuple) else value
    layout = {name: getattr(args, f"folder__{name}") for name in LAYOUT_OPTIONS}
    layout = {k: v for k, v in layout.items() if v is not None}
    if layout:
        overrides["data.options"] = sorted({**dict(cfg.data.options), **layout}.items())
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        overrides[key.strip()] = _parse_value(text)
    cfg = cfg.with_overrides(overrides).with_absolute_paths()
    if "data.shot" in overrides and cfg.data.shot_file:  # --shot or --set data.shot, beside a shot file
        raise ConfigError(
            f"--shot (data.shot) and the shot file {cfg.data.shot_file} both set k: the file's support set does; "
            "drop --shot"
        )
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as a path
