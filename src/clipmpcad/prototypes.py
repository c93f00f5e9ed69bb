"""Text prototypes T of METHOD §4: the base ensemble and P-Prompt sentences of a mode, encoded,
normalised and averaged per state, and cached on disk per backbone identity and sentence content.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import save_torch
from .errors import PromptError
from .prompts import (
    ABNORMAL_STATES,
    CONTEXT_LENGTH,
    NORMAL_STATES,
    PROMPT_MODES,
    TEMPLATES,
    PromptSet,
    fill_classname,
    overlong,
)


@dataclass(frozen=True)
class PromptSentences:
    """Filled sentences of one mode; per state, one group per source (base, P-Prompts)."""

    mode: str
    normal: tuple[tuple[str, ...], ...]  # groups of sentences
    abnormal: tuple[tuple[str, ...], ...]

    def digest(self) -> str:
        """SHA-256 of the mode and every sentence, in order: the content part of a cache key."""
        text = json.dumps([self.mode, self.normal, self.abnormal], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def base_sentences(classname: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The base ensemble for one object name: 245 normal and 175 abnormal sentences.

    The name goes in as given: the published code appended "with defects" to industrial
    names even in normal sentences, a bug not reproduced here (METHOD §4).
    """

    def expand(states: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(t.replace("{}", s.replace("{}", classname)) for s in states for t in TEMPLATES)

    return expand(NORMAL_STATES), expand(ABNORMAL_STATES)


def prompt_sentences(mode: str, prompt_set: PromptSet | None = None, classname: str | None = None) -> PromptSentences:
    """The sentences of ``mode`` for one object name (default: the set's classname).

    Raises PromptError for an unknown mode, a mode that needs a set without one, or an object
    name that pushes a sentence past CLIP's 77 tokens.
    """
    if mode not in PROMPT_MODES:
        raise PromptError(f"unknown prompt mode {mode!r}; choose one of {', '.join(PROMPT_MODES)}")
    if mode != "base" and prompt_set is None:
        raise PromptError(f"prompt mode {mode!r} needs a prompt set; use mode 'base' without one")
    name = classname or (prompt_set.classname if prompt_set is not None else "")
    if not name.strip():
        raise PromptError("no object name for the prompts: give a classname or a prompt set")
    sources = [] if mode == "p-prompts" else [base_sentences(name)]  # (normal, abnormal) each
    if prompt_set is not None and mode != "base":
        sources.append(
            tuple(tuple(fill_classname(s, name) for s in state) for state in (prompt_set.normal, prompt_set.abnormal))
        )
    too_long = overlong((s for pair in sources for state in pair for s in state), name)  # filled in already
    if too_long:
        raise PromptError(
            f"{len(too_long)} prompt sentences exceed CLIP's {CONTEXT_LENGTH} "
            f"tokens with classname {name!r}, e.g. {too_long[0][0]!r}; "
            "use a shorter classname"
        )
    return PromptSentences(mode, tuple(p[0] for p in sources), tuple(p[1] for p in sources))


def text_prototypes(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    sentences: PromptSentences,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """T of METHOD §4: (D, 2) float32 on the CPU, column 0 normal, column 1 abnormal.

    Args:
        encode_text: token ids (n, 77) from ``tokenize``, on the CPU (move them to the model's
            device inside), to embeddings (n, D).
        tokenize: sentences to token ids (n, 77), e.g. ``open_clip.get_tokenizer(model_name)``.
        batch_size: sentences per ``encode_text`` call; the result does not depend on it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    with torch.no_grad():
        columns = [
            _state_prototype(encode_text, tokenize, groups, batch_size)
            for groups in (sentences.normal, sentences.abnormal)
        ]
    return torch.stack(columns, dim=1)  # (D, 2)


def _state_prototype(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenize: Callable[[list[str]], torch.Tensor],
    groups: tuple[tuple[str, ...], ...],
    batch_size: int,
) -> torch.Tensor:
    """One state's T column (D,), METHOD §4: every sentence of every source (base, P-Prompts)
    encoded and L2-normalised, then one average over them all, L2-normalised."""
    sentences = [s for group in groups for s in group]
    chunks = [
        encode_text(tokenize(sentences[i : i + batch_size])).float().cpu() for i in range(0, len(sentences), batch_size)
    ]
    return _mean_direction(torch.cat(chunks))  # (D,)


def _mean_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """(n, D) -> (D,): normalise rows, average, normalise."""
    return F.normalize(F.normalize(embeddings, dim=-1).mean(dim=0), dim=0)


# ---------------------------------------------------------------- prototype cache


def default_cache_dir() -> Path:
    """$CLIPMPCAD_CACHE if set (the folder of the prototype files), else the user cache."""
    configured = os.environ.get("CLIPMPCAD_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "clipmpcad" / "prototypes"


class PrototypeCache:
    """T per (backbone identity, mode and sentences), as small ``.pt`` files (METHOD §4).

    ``backbone_id``: the caller's image-independent identity of the text tower: model name,
    weights (tag or checkpoint hash) and anything else that changes ``encode_text`` (QuickGELU).
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def path_for(self, backbone_id: str, sentences: PromptSentences) -> Path:
        """The file of one entry: a hash of the identity, the mode and every sentence."""
        if not backbone_id:
            raise ValueError("backbone_id must be a non-empty string")
        # v2: base+p averages all its sentences at once (v1 averaged each source, then the two)
        key = hashlib.sha256(f"v2\0{backbone_id}\0{sentences.digest()}".encode()).hexdigest()
        return self.directory / f"{key[:40]}.pt"

    def get(self, backbone_id: str, sentences: PromptSentences) -> torch.Tensor | None:
        """The cached T, or None; an unreadable entry warns and counts as a miss."""
        path = self.path_for(backbone_id, sentences)
        if not path.is_file():
            return None
        try:
            prototypes = torch.load(path, map_location="cpu", weights_only=True)
            fits = isinstance(prototypes, torch.Tensor) and prototypes.ndim == 2 and prototypes.shape[1] == 2
            if fits and prototypes.dtype == torch.float32 and bool(torch.isfinite(prototypes).all()):
                return prototypes
            error: object = "not a finite float32 (D, 2) tensor"
        except Exception as caught:  # whatever a damaged file makes torch's reader raise: recomputed
            error = f"{type(caught).__name__}: {caught}"
        warnings.warn(f"{path}: unusable prototype cache entry ({error}); recomputing", stacklevel=2)
        return None

    def put(self, backbone_id: str, sentences: PromptSentences, prototypes: torch.Tensor) -> Path:
        """Stores T (D, 2), atomically; returns the file."""
        path = self.path_for(backbone_id, sentences)
        tensor = prototypes.detach().float().cpu().contiguous()
        save_torch(path, tensor)
        return path

    def get_or_compute(
        self, backbone_id: str, sentences: PromptSentences, compute: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        """The cached T, or ``compute()`` stored and returned (a cache that cannot be written
        warns); always float32 on the CPU."""
        cached = self.get(backbone_id, sentences)
        if cached is not None:
            return cached
        prototypes = compute().detach().float().cpu()
        try:
            self.put(backbone_id, sentences, prototypes)
        except OSError as error:
            warnings.warn(f"could not write the prototype cache in {self.directory}: {error}", stacklevel=2)
        return prototypes
