"""Asks an OpenAI-compatible chat-completions endpoint for a new domain's P-Prompts (METHOD §4).

The only network code of the package, on the standard library's urllib. The answer passes the
same schema function as the shipped sets (prompts.validate_prompt_set) before anything is
written, and the file is written atomically: a failure leaves no file behind.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .atomic import write_text
from .errors import PromptError
from .prompts import (
    CONTEXT_LENGTH,
    DOMAINS,
    MIN_SENTENCES,
    PLACEHOLDER,
    PromptSet,
    overlong,
    sentence_key,
    validate_prompt_set,
)

ENV_BASE_URL, ENV_MODEL, ENV_API_KEY = "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_SENTENCES = 200  # per state, the most one request asks for
SYSTEM_MESSAGE = (
    "You write text prompts for CLIP-based visual anomaly detection. Answer with one JSON object and nothing else."
)
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)  # reasoning models' preamble


@dataclass(frozen=True)
class ChatEndpoint:
    """Where and how to ask: an OpenAI-compatible ``{base_url}/chat/completions``."""

    base_url: str  # e.g. "https://api.openai.com/v1", "http://localhost:11434/v1"
    model: str
    api_key: str = field(default="", repr=False)  # sent as a Bearer token; never printed
    timeout_s: float = 60.0  # per connection attempt and per read

    @classmethod
    def resolve(
        cls, base_url: str | None = None, model: str | None = None, api_key: str | None = None, timeout_s: float = 60.0
    ) -> ChatEndpoint:
        """Options first, then $OPENAI_BASE_URL, $OPENAI_MODEL and $OPENAI_API_KEY.

        The base URL defaults to OpenAI's; the model has no default; the key may be empty
        for local servers that need none.
        """
        base_url = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
        model = model or os.environ.get(ENV_MODEL)
        if not model:
            raise PromptError(f"no model for prompt generation: pass --model or set {ENV_MODEL}")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).hostname:
            raise PromptError(
                f"base URL {base_url!r} must be an http:// or https:// URL, e.g. https://api.openai.com/v1"
            )
        if not 0 < timeout_s < float("inf"):
            raise PromptError(f"timeout must be a finite number of seconds above 0, got {timeout_s}")
        key = api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")
        return cls(base_url.rstrip("/"), model, key, float(timeout_s))

    @property
    def host(self) -> str:
        """Host and port of the endpoint, for provenance (no path, no credentials)."""
        parts = urlsplit(self.base_url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def generate_prompt_set(
    domain: str,
    out: str | Path,
    *,
    endpoint: ChatEndpoint | None = None,
    kind: str | None = None,
    classname: str | None = None,
    n: int = 40,
    overwrite: bool = False,
) -> Path:
    """Asks ``endpoint`` for a prompt set of ``domain`` and writes it to ``out``; returns ``out``.

    Args:
        domain: the new domain in words, e.g. "dental panoramic radiograph".
        endpoint: None resolves one from the environment (``ChatEndpoint.resolve()``).
        kind: "medical" or "industrial"; None lets the model say which.
        classname: object name for {classname} and the base ensemble; None: the model's
            suggestion, else ``domain``.
        n: sentences asked for per state, MIN_SENTENCES to MAX_SENTENCES.

    Repeated sentences (case and spaces ignored) are dropped, and so are sentences that the
    model put in both states; the set fails if fewer than MIN_SENTENCES remain. Sentences over
    CLIP's 77 tokens are never dropped: they fail the set and the error lists them. Every
    failure raises a one-line PromptError, and ``out`` is written only by the final rename.
    """
    out = Path(out)
    if out.is_dir():  # checked before the (paid) request, as every option is
        raise PromptError(f"{out} is a folder; give the prompt-set file to write, e.g. {out / 'my_set.json'}")
    if out.exists() and not overwrite:
        raise PromptError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    if not MIN_SENTENCES <= n <= MAX_SENTENCES:
        raise PromptError(f"n must be between {MIN_SENTENCES} and {MAX_SENTENCES}, got {n}")
    if kind is not None and kind not in DOMAINS:
        raise PromptError(f"kind {kind!r} must be one of {', '.join(DOMAINS)}")
    if not domain.strip():
        raise PromptError("the domain to generate prompts for is empty")
    endpoint = endpoint or ChatEndpoint.resolve()
    instruction = build_instruction(domain, n, kind, classname)
    answer = parse_answer(ask(endpoint, instruction))
    prompt_set = _prompt_set(answer, domain, out, kind, classname, provenance=_provenance(endpoint, instruction))
    return write_prompt_set(prompt_set, out, overwrite=overwrite)


def build_instruction(domain: str, n: int, kind: str | None, classname: str | None) -> str:
    """The user message: what to write, in which vocabulary, and the JSON to answer with."""
    name = f'"{classname}"' if classname else "a short object name you choose"
    kind_line = f'"domain": "{kind}"' if kind else '"domain": "medical" or "industrial"'
    return (
        f"Domain: {domain}.\n"
        f"Write {n} sentences that describe NORMAL images of this domain and {n} sentences "
        "that describe ABNORMAL images. Use the domain's own professional vocabulary: name "
        "real findings or defect types with their appearance, location, size and texture for "
        "the abnormal ones, and the specific signs of a healthy or flawless specimen for the "
        "normal ones. Make every sentence different in content, not the same phrase with "
        "one word changed. Each sentence is a short image caption of at most 25 words (CLIP "
        f"reads at most {CONTEXT_LENGTH} tokens). A sentence may contain the placeholder "
        f"{PLACEHOLDER}, which is replaced by {name}; use no other curly braces.\n"
        f'Answer with JSON only: {{{kind_line}, "classname": "<object name>", '
        '"normal": ["..."], "abnormal": ["..."]}'
    )


def ask(endpoint: ChatEndpoint, instruction: str) -> str:
    """POSTs one chat-completions request; returns the reply's text, or raises PromptError."""
    body = json.dumps(
        {
            "model": endpoint.model,
            "messages": [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": instruction}],
        }
    ).encode("utf-8")
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    url = f"{endpoint.base_url}/chat/completions"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=endpoint.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        hint = f" (check --api-key or ${ENV_API_KEY})" if error.code in (401, 403) else ""
        raise PromptError(f"{url} answered HTTP {error.code}{hint}: {_excerpt(_read_body(error))}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise PromptError(_connection_problem(url, error, endpoint.timeout_s)) from None
    return _reply_text(raw, url)


def parse_answer(reply: str) -> dict:
    """The JSON object in the model's reply (a ```json fenced block is accepted, as is text
    around the object), with ``normal`` and ``abnormal`` lists of strings."""
    answer = _first_answer(_THINKING.sub("", reply))
    if not isinstance(answer, dict):
        raise PromptError(f"the model's reply is not a JSON object: {_excerpt(reply)}")
    missing = [key for key in ("normal", "abnormal") if key not in answer]
    if missing:
        raise PromptError(
            f"the model's JSON lacks {' and '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, answer)) or 'no keys'}"
        )
    for key in ("normal", "abnormal"):
        if not isinstance(answer[key], list) or not all(isinstance(s, str) for s in answer[key]):
            raise PromptError(f"the model's {key!r} is not a list of strings")
    return answer


def _first_answer(text: str) -> dict | None:
    """The first JSON object in `text` (fenced blocks first) that has ``normal`` and ``abnormal``;
    else the first JSON object at all (for the error that names its keys), else None. Braces in
    prose around it ({classname} mentioned before or after) do not get in the way."""
    candidates = [m.group(1) for m in _FENCED.finditer(text)] + [text]
    decoder, first = json.JSONDecoder(), None
    for candidate in candidates:
        for start in (i for i, c in enumerate(candidate) if c == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except ValueError:
                continue
            if isinstance(value, dict):
                if "normal" in value and "abnormal" in value:
                    return value
                first = first if first is not None else value
    return first


def write_prompt_set(prompt_set: PromptSet, path: str | Path, *, overwrite: bool = False) -> Path:
    """Writes ``prompt_set`` as JSON, atomically, after validating it; refuses to overwrite."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise PromptError(f"{path} exists; pass --overwrite (overwrite=True) to replace it")
    obj = prompt_set.to_dict()
    problems = validate_prompt_set(obj)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PromptError(f"{path} not written: the set fails the schema: {problems[0]}{more}")
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    write_text(path, text)
    return path


def _prompt_set(
    answer: dict, domain: str, out: Path, kind: str | None, classname: str | None, provenance: dict
) -> PromptSet:
    kind = kind or answer.get("domain")
    if kind not in DOMAINS:
        raise PromptError(
            f"the model's 'domain' is {kind!r}, not one of {', '.join(DOMAINS)}; "
            "pass --kind medical or --kind industrial"
        )
    suggested = answer.get("classname")
    name = classname or (suggested.strip() if isinstance(suggested, str) else "") or domain
    normal, abnormal = _distinct(answer["normal"]), _distinct(answer["abnormal"])
    shared = {sentence_key(s) for s in normal} & {sentence_key(s) for s in abnormal}
    normal = [s for s in normal if sentence_key(s) not in shared]
    abnormal = [s for s in abnormal if sentence_key(s) not in shared]
    _require_fit(normal + abnormal, name)
    for state, sentences in (("normal", normal), ("abnormal", abnormal)):
        if len(sentences) < MIN_SENTENCES:
            raise PromptError(
                f"the model gave {len(sentences)} distinct {state} sentences "
                f"(repeats dropped); at least {MIN_SENTENCES} are needed"
            )
    slug = re.sub(r"[^a-z0-9]+", "_", out.stem.lower()).strip("_") or "custom"
    return PromptSet(
        name=slug,
        domain=kind,
        dataset="custom",
        category=domain.strip(),
        classname=name,
        normal=tuple(normal),
        abnormal=tuple(abnormal),
        provenance=provenance,
        description=f"Generated for: {domain.strip()}",
    )


def _distinct(sentences: list[str]) -> list[str]:
    """Stripped, empty ones dropped, repeats (case and spaces ignored) dropped after the first."""
    kept: dict[str, str] = {}
    for sentence in (s.strip() for s in sentences):
        if sentence:
            kept.setdefault(sentence_key(sentence), sentence)
    return list(kept.values())


def _require_fit(sentences: list[str], classname: str) -> None:
    too_long = overlong(sentences, classname)
    if too_long:
        listed = "; ".join(f"{_excerpt(s, 60)} ({k} tokens)" for s, k in too_long[:5])
        more = f"; and {len(too_long) - 5} more" if len(too_long) > 5 else ""
        raise PromptError(
            f"{len(too_long)} sentences exceed CLIP's {CONTEXT_LENGTH}-token "
            f"context with classname {classname!r}: {listed}{more}; nothing was "
            "written: ask again, or a shorter classname"
        )


def _provenance(endpoint: ChatEndpoint, instruction: str) -> dict:
    return {
        "generator": f"{endpoint.model} via an OpenAI-compatible chat-completions API",
        "model": endpoint.model,
        "base_url_host": endpoint.host,
        "system": SYSTEM_MESSAGE,
        "instruction": instruction,
        "date": datetime.date.today().isoformat(),
        "reviewed": False,
        "tool": "clipmpcad prompts generate",
    }


def _reply_text(raw: bytes, url: str) -> str:
    try:
        payload = json.loads(raw)
        content = payload["choices"][0]["message"]["content"]
    except (ValueError, UnicodeDecodeError):
        raise PromptError(f"{url} did not answer with JSON: {_excerpt(raw)}") from None
    except (KeyError, IndexError, TypeError):
        raise PromptError(f"{url} answered without choices[0].message.content: {_excerpt(raw)}") from None
    if not isinstance(content, str) or not content.strip():
        raise PromptError(f"{url} answered with an empty message")
    return content


def _connection_problem(url: str, error: Exception, timeout_s: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"{url} did not answer within {timeout_s:g} s (timed out); raise --timeout"
    if isinstance(reason, ConnectionRefusedError):
        return f"{url}: connection refused; is the server running at that address?"
    return f"cannot reach {url}: {reason}"


def _read_body(error: urllib.error.HTTPError) -> bytes:
    try:
        return error.read()
    except (OSError, http.client.HTTPException):
        return b""


def _excerpt(text: str | bytes, limit: int = 200) -> str:
    """One line, at most ``limit`` characters, for error messages."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
