"""Object names and P-Prompt set names of known categories, and the two domains (METHOD §4).

A known category gets its plain object name ("metal_nut" → "metal nut") and its own prompt set
"<dataset>_<category>"; an unknown one gets its folder name with underscores as spaces and the
generic prompt set of its domain ("generic_industrial" or "generic_medical").
"""

from __future__ import annotations

from clipmpcad.config import DOMAINS
from clipmpcad.errors import ConfigError

# BMAD (METHOD §4): category → (object name, prompt set, has pixel masks).
BMAD_CATEGORIES = {
    "Brain": ("Brain", "brain_mri", True),
    "Liver": ("Liver", "liver_ct", True),
    "Retina_RESC": ("retinal OCT", "retina_resc", True),
    "Retina_OCT2017": ("retinal OCT", "retina_oct2017", False),
    "Chest": ("Chest X-ray film", "chest_xray", False),
    "Histopathology": ("histopathological image", "histopathology", False),
}

# Industrial sets: registry name → (prompt-set prefix, {category: object name}).
INDUSTRIAL_CATEGORIES: dict[str, tuple[str, dict[str, str]]] = {
    "mvtec": (
        "mvtec_ad",
        {
            "bottle": "bottle",
            "cable": "cable",
            "capsule": "capsule",
            "carpet": "carpet",
            "grid": "grid",
            "hazelnut": "hazelnut",
            "leather": "leather",
            "metal_nut": "metal nut",
            "pill": "pill",
            "screw": "screw",
            "tile": "tile",
            "toothbrush": "toothbrush",
            "transistor": "transistor",
            "wood": "wood",
            "zipper": "zipper",
        },
    ),
    "mpdd": (
        "mpdd",
        {
            "bracket_black": "black bracket",
            "bracket_brown": "brown bracket",
            "bracket_white": "white bracket",
            "connector": "connector",
            "metal_plate": "metal plate",
            "tubes": "tubes",
        },
    ),
    # BTAD names its three products only by number; "object" keeps prompts grammatical.
    "btad": ("btad", {"01": "object", "02": "object", "03": "object"}),
    "visa": (
        "visa",
        {
            "candle": "candle",
            "capsules": "capsules",
            "cashew": "cashew",
            "chewinggum": "chewing gum",
            "fryum": "fryum",
            "macaroni1": "macaroni",
            "macaroni2": "macaroni",
            "pcb1": "printed circuit board",
            "pcb2": "printed circuit board",
            "pcb3": "printed circuit board",
            "pcb4": "printed circuit board",
            "pipe_fryum": "pipe fryum",
        },
    ),
}


def check_domain(domain: str) -> str:
    """`domain` itself if it is one of DOMAINS; else a ConfigError listing them."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; choices: {', '.join(DOMAINS)}")
    return domain


def generic_prompt_set(domain: str) -> str:
    """The fallback prompt set of a domain: "generic_medical" or "generic_industrial"."""
    return f"generic_{check_domain(domain)}"


def plain_name(category: str) -> str:
    """An unknown category's object name: underscores become spaces."""
    return category.replace("_", " ").strip()


def industrial_names(dataset: str, category: str, domain: str) -> tuple[str, str]:
    """(object name, prompt set) of an MVTec-like or VisA category."""
    prefix, known = INDUSTRIAL_CATEGORIES[dataset]
    if category in known:
        return known[category], f"{prefix}_{category}"
    return plain_name(category), generic_prompt_set(domain)


def bmad_names(category: str) -> tuple[str, str, bool | None]:
    """(object name, prompt set, has masks or None when unknown) of a BMAD category."""
    if category in BMAD_CATEGORIES:
        return BMAD_CATEGORIES[category]
    return category, generic_prompt_set("medical"), None
