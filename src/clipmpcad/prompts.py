"""P-Prompts: the base ensemble, the prompt-set files, their schema and lint (prototypes.py turns
sentences into text prototypes).

METHOD §4; the base ensemble is WinCLIP's, as April-GAN and MVFA use it. ``validate_prompt_set``
is the one schema function that loading, ``prompts lint`` and ``prompts generate`` share.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import DOMAINS
from .errors import PromptError

if TYPE_CHECKING:
    from open_clip.tokenizer import SimpleTokenizer

PROMPT_MODES = {
    "base": "the base ensemble only",
    "p-prompts": "the prompt set's sentences only",
    "base+p": "both sources pooled: every sentence encoded, normalised and averaged with the others",
}

# METHOD §4 base ensemble: states, then the 35 CLIP photo templates, in the published order.
NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES = ("damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage")
TEMPLATES = (
    "a bad photo of a {}.",
    "a low resolution photo of the {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a bright photo of a {}.",
    "a dark photo of the {}.",
    "a photo of my {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a photo of one {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of a large {}.",
    "a blurry photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "a dark photo of a {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "this is a {} in the scene.",
    "this is the {} in the scene.",
    "this is one {} in the scene.",
)

SCHEMA_VERSION = 1
MIN_SENTENCES = 30  # per state, unique ignoring case and spaces
CONTEXT_LENGTH = 77  # CLIP's text context in tokens, start- and end-of-text included
PLACEHOLDER = "{classname}"
_FIELDS: dict[str, type] = {
    "schema_version": int,
    "name": str,
    "domain": str,
    "dataset": str,
    "category": str,
    "classname": str,
    "provenance": dict,
    "normal": list,
    "abnormal": list,
}
_OPTIONAL_FIELDS: dict[str, type] = {"description": str}
_PROVENANCE_FIELDS: dict[str, type] = {"generator": str, "instruction": str, "date": str, "reviewed": bool}
_NAME = re.compile(r"[a-z0-9][a-z0-9_]*")
_BRACED = re.compile(r"\{[^{}]*\}")
_DATE = re.compile(r"\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])")


@dataclass(frozen=True)
class PromptSet:
    """One domain's P-Prompts, as read from a JSON file that passed ``validate_prompt_set``."""

    name: str  # file stem for package sets, e.g. "brain_mri"
    domain: str  # "medical" or "industrial"
    dataset: str  # e.g. "BMAD", "MVTec-AD", "custom"
    category: str  # e.g. "Brain", "metal_nut"
    classname: str  # default object name for {classname} and the base ensemble
    normal: tuple[str, ...]  # sentences, {classname} not yet filled
    abnormal: tuple[str, ...]
    provenance: dict[str, Any] = field(hash=False)  # generator, instruction, date, reviewed, …
    description: str = ""
    source: str = field(default="", compare=False)  # where it was read from

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file format (schema_version 1)."""
        head = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "domain": self.domain,
            "dataset": self.dataset,
            "category": self.category,
            "classname": self.classname,
        }
        return (
            head
            | ({"description": self.description} if self.description else {})
            | {"provenance": dict(self.provenance), "normal": list(self.normal), "abnormal": list(self.abnormal)}
        )

    @classmethod
    def from_dict(cls, obj: object, source: str) -> PromptSet:
        """Validates ``obj`` and builds the set; PromptError names ``source`` and the problem."""
        problems = validate_prompt_set(obj)
        if problems or not isinstance(obj, dict):  # not a dict: already among the problems
            raise PromptError(_one_line(source, problems))
        return cls(
            name=obj["name"],
            domain=obj["domain"],
            dataset=obj["dataset"],
            category=obj["category"],
            classname=obj["classname"],
            normal=tuple(obj["normal"]),
            abnormal=tuple(obj["abnormal"]),
            provenance=dict(obj["provenance"]),
            description=obj.get("description", ""),
            source=source,
        )


# ---------------------------------------------------------------- schema (used by lint too)


@lru_cache(maxsize=1)
def _tokenizer() -> SimpleTokenizer:
    from open_clip.tokenizer import SimpleTokenizer  # here: importing open_clip takes seconds

    return SimpleTokenizer()


def token_count(text: str) -> int:
    """Tokens OpenCLIP's CLIP tokenizer makes of ``text``, start- and end-of-text included."""
    return len(_tokenizer().encode(text)) + 2


def overlong(sentences: Iterable[str], classname: str) -> list[tuple[str, int]]:
    """(sentence, tokens) of the sentences longer than CLIP's context once `classname` fills them in."""
    counted = ((s, token_count(fill_classname(s, classname))) for s in sentences)
    return [(s, n) for s, n in counted if n > CONTEXT_LENGTH]


def fill_classname(sentence: str, classname: str) -> str:
    """Puts the object name in place of every ``{classname}``."""
    return sentence.replace(PLACEHOLDER, classname)


def sentence_key(sentence: str) -> str:
    """The form under which two sentences count as duplicates: case and spacing ignored."""
    return " ".join(sentence.split()).casefold()


def validate_prompt_set(obj: object) -> list[str]:
    """Every problem of a prompt-set JSON object, one line each; [] means valid: keys, types,
    values, ≥ MIN_SENTENCES unique sentences per state, duplicates within and across states,
    {classname} the only placeholder, CONTEXT_LENGTH tokens once it holds the classname."""
    if not isinstance(obj, dict):
        return [f"the top level must be a JSON object, not {_json_type(obj)}"]
    problems = _check_fields(obj, _FIELDS, _OPTIONAL_FIELDS, "")
    problems += _check_values(obj)
    classname = obj.get("classname") if _is_text(obj.get("classname")) else None
    seen: dict[str, dict[str, int]] = {}
    for state in ("normal", "abnormal"):
        if isinstance(obj.get(state), list):
            state_problems, seen[state] = _check_sentences(state, obj[state], classname)
            problems += state_problems
    for key, i in seen.get("normal", {}).items():
        if key in seen.get("abnormal", {}):
            problems.append(f"normal[{i}] is also abnormal[{seen['abnormal'][key]}]: {key!r}")
    return problems


def _check_fields(obj: dict, required: dict[str, type], optional: dict[str, type], where: str) -> list[str]:
    problems = [f"missing key {where + key!r}" for key in required if key not in obj]
    allowed = required | optional
    for key, value in obj.items():
        kind = allowed.get(key)
        if kind is None and where:  # provenance may carry more, as plain JSON values
            if isinstance(value, (dict, list)):
                problems.append(f"{where + key!r} must be a string, number or boolean")
        elif kind is None:
            problems.append(f"unknown key {key!r}; the keys are {', '.join(allowed)}")
        elif not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            problems.append(f"{where + key!r} must be {_JSON_NAMES[kind]}, not {_json_type(value)}")
    return problems


def _check_values(obj: dict) -> list[str]:
    problems = []
    version = obj.get("schema_version")
    if type(version) is int and version != SCHEMA_VERSION:
        problems.append(f"schema_version is {version}; this clipmpcad reads {SCHEMA_VERSION}")
    if _is_text(obj.get("name")) and not _NAME.fullmatch(obj["name"]):
        problems.append(f"name {obj['name']!r} must be lower-case letters, digits and '_'")
    if _is_text(obj.get("domain")) and obj["domain"] not in DOMAINS:
        problems.append(f"domain {obj['domain']!r} must be one of {', '.join(DOMAINS)}")
    for key in ("dataset", "category", "classname"):
        if isinstance(obj.get(key), str) and not obj[key].strip():
            problems.append(f"{key!r} is empty")
    if _is_text(obj.get("classname")) and ("{" in obj["classname"] or "}" in obj["classname"]):
        problems.append(f"classname {obj['classname']!r} must not contain braces")
    provenance = obj.get("provenance")
    if isinstance(provenance, dict):
        problems += _check_fields(provenance, _PROVENANCE_FIELDS, {}, "provenance.")
        date = provenance.get("date")
        if isinstance(date, str) and not _DATE.fullmatch(date):
            problems.append(f"provenance.date {date!r} must be a date as YYYY-MM-DD")
    return problems


def _check_sentences(state: str, sentences: list, classname: str | None) -> tuple[list[str], dict[str, int]]:
    problems: list[str] = []
    seen: dict[str, int] = {}  # duplicate key -> first index
    for i, sentence in enumerate(sentences):
        where = f"{state}[{i}]"
        if not _is_text(sentence):
            problems.append(f"{where} must be a non-empty string, not {_json_type(sentence)}")
            continue
        problems += _placeholder_problems(where, sentence)
        key = sentence_key(sentence)
        if key in seen:
            problems.append(f"{where} repeats {state}[{seen[key]}] (case and spaces ignored): {sentence!r}")
            continue
        seen[key] = i
        if classname is not None:
            tokens = token_count(fill_classname(sentence, classname))
            if tokens > CONTEXT_LENGTH:
                problems.append(
                    f"{where} is {tokens} tokens with classname {classname!r}; "
                    f"CLIP's context holds {CONTEXT_LENGTH}: {sentence!r}"
                )
    if len(seen) < MIN_SENTENCES:
        problems.append(f"{state!r} has {len(seen)} unique sentences; at least {MIN_SENTENCES} are required")
    return problems, seen


def _placeholder_problems(where: str, sentence: str) -> list[str]:
    others = [m for m in _BRACED.findall(sentence) if m != PLACEHOLDER]
    if others:
        return [f"{where} uses the placeholder {others[0]}; the only one is {PLACEHOLDER}: {sentence!r}"]
    rest = sentence.replace(PLACEHOLDER, "")
    if "{" in rest or "}" in rest:
        return [f"{where} has a stray brace (write {PLACEHOLDER} exactly): {sentence!r}"]
    return []


def _is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


_JSON_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _json_type(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _one_line(source: str, problems: list[str]) -> str:
    more = len(problems) - 1
    tail = f" (and {more} more; `clipmpcad prompts lint {source}` lists them)" if more else ""
    return f"{source}: {problems[0]}{tail}"


# ---------------------------------------------------------------- files: load, list, lint


def _package_dir() -> Any:  # a Traversable
    return resources.files("clipmpcad") / "prompt_sets"


def prompt_set_names() -> list[str]:
    """Names of the prompt sets shipped in the package, sorted."""
    return sorted(p.name[:-5] for p in _package_dir().iterdir() if p.name.endswith(".json"))


def names_a_file(text: str) -> bool:
    """A prompt-set value that is a file's path (it ends in .json or holds a separator), not a
    package set's name: the one rule for loading it and for storing it in a run's config."""
    return text.endswith(".json") or "/" in text or os.sep in text


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """A package set by name (``"brain_mri"``), or a JSON file: a Path, or a string ending in
    ``.json`` or holding a path separator. PromptError for an unknown name (listing the
    available ones), a missing file, invalid JSON or a set that fails the schema."""
    names = prompt_set_names()
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or names_a_file(text):
        path = Path(name_or_path)
        if not path.is_file():
            raise PromptError(
                f"{path}: no such prompt-set file; give a JSON file or one of the package sets: {', '.join(names)}"
            )
        return PromptSet.from_dict(_read_json(path), str(path))
    if text not in names:
        raise PromptError(
            f"unknown prompt set {text!r}; available: {', '.join(names)} (or give the path of a JSON file)"
        )
    resource = _package_dir() / f"{text}.json"
    return PromptSet.from_dict(_read_json(resource), str(resource))


def list_prompt_sets() -> list[PromptSet]:
    """Every package set, loaded and validated, sorted by name."""
    return [load_prompt_set(name) for name in prompt_set_names()]


def lint_prompt_files(paths: Iterable[str | Path] | None = None) -> dict[str, list[str]]:
    """Problems per file by ``validate_prompt_set``, [] for a clean file; unreadable files and
    invalid JSON are problems too, never raised. ``None``: the package's own files, whose
    ``name`` must also match the file name."""
    if paths is None:
        files = [(_package_dir() / f"{name}.json", name) for name in prompt_set_names()]
    else:
        files = [(Path(path), None) for path in paths]
    return {str(file): _lint_file(file, name) for file, name in files}


def _lint_file(file: Any, expected_name: str | None) -> list[str]:
    try:
        obj = _read_json(file)
    except PromptError as error:
        return [str(error).removeprefix(f"{file}: ")]
    problems = validate_prompt_set(obj)
    if expected_name is not None and isinstance(obj, dict) and obj.get("name") != expected_name:
        problems.append(f"name {obj.get('name')!r} differs from the file name {expected_name!r}")
    return problems


def _read_json(file: Any) -> object:  # a Path or an importlib Traversable
    """The file's JSON, refusing repeated keys; PromptError names the file and the problem."""
    try:
        return json.loads(file.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except ValueError as error:  # from _unique_keys
        reason = str(error)
    except OSError as error:
        reason = f"cannot read the file ({error.strerror})"
    raise PromptError(f"{file}: {reason}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"the key {key!r} appears twice in one object")
    return dict(pairs)
