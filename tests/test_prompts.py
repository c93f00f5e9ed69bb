"""P-Prompts: the shipped sets, the schema and lint, the base ensemble, prototypes and cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F

from clipmpcad.errors import PromptError
from clipmpcad.prompts import (
    PROMPT_MODES,
    TEMPLATES,
    lint_prompt_files,
    list_prompt_sets,
    load_prompt_set,
    prompt_set_names,
    validate_prompt_set,
)
from clipmpcad.prototypes import (
    PromptSentences,
    PrototypeCache,
    base_sentences,
    default_cache_dir,
    prompt_sentences,
    text_prototypes,
)

MVTEC = [
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
]
MPDD = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]
VISA = [
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
]
EXPECTED_SETS = sorted(
    [
        "brain_mri",
        "liver_ct",
        "retina_resc",
        "retina_oct2017",
        "chest_xray",
        "histopathology",
        "generic_medical",
        "generic_industrial",
        "btad_01",
        "btad_02",
        "btad_03",
    ]
    + [f"mvtec_ad_{c}" for c in MVTEC]
    + [f"mpdd_{c}" for c in MPDD]
    + [f"visa_{c}" for c in VISA]
)


def _token_count(text: str) -> int:
    """Written apart from the package: OpenCLIP's own tokenize, SOT and EOT included."""
    ids = open_clip.tokenizer.tokenize([text], context_length=200)[0]
    return int((ids != 0).sum())


def _valid_set(**changes: object) -> dict:
    """A small valid set that each lint test breaks in one way."""
    obj = {
        "schema_version": 1,
        "name": "test_set",
        "domain": "industrial",
        "dataset": "custom",
        "category": "widget",
        "classname": "widget",
        "provenance": {"generator": "a test", "instruction": "none", "date": "2026-11-27", "reviewed": True},
        "normal": [f"a clean {{classname}} with finish number {i}" for i in range(30)],
        "abnormal": [f"a {{classname}} with defect number {i}" for i in range(30)],
    }
    obj.update(changes)
    return obj


# ---------------------------------------------------------------- shipped sets


def test_the_package_ships_every_expected_set():
    assert prompt_set_names() == EXPECTED_SETS


def test_the_package_sets_pass_lint():
    report = lint_prompt_files()
    assert len(report) == len(EXPECTED_SETS)
    assert {path: problems for path, problems in report.items() if problems} == {}


@pytest.mark.parametrize("prompt_set", list_prompt_sets(), ids=lambda s: s.name)
def test_each_package_set_has_30_unique_sentences_that_fit_clip(prompt_set):
    for state in (prompt_set.normal, prompt_set.abnormal):
        keys = {" ".join(s.lower().split()) for s in state}
        assert len(keys) == len(state) >= 30
        for sentence in state:
            filled = sentence.replace("{classname}", prompt_set.classname)
            assert "{" not in filled and "}" not in filled
            assert _token_count(filled) <= 77
    assert not {s.lower() for s in prompt_set.normal} & {s.lower() for s in prompt_set.abnormal}
    assert prompt_set.provenance["generator"] and prompt_set.provenance["reviewed"] is False


def test_load_by_name_and_by_path_give_the_same_set(tmp_path):
    by_name = load_prompt_set("mvtec_ad_metal_nut")
    path = tmp_path / "copy.json"
    path.write_text(json.dumps(by_name.to_dict()), encoding="utf-8")
    assert load_prompt_set(path) == by_name
    assert load_prompt_set(str(path)) == by_name
    assert by_name.classname == "metal nut" and by_name.domain == "industrial"


def test_an_unknown_name_lists_the_available_sets():
    with pytest.raises(PromptError, match=r"unknown prompt set 'brain'.*brain_mri.*visa_pcb4"):
        load_prompt_set("brain")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(PromptError, match=r"nothing\.json: no such prompt-set file"):
        load_prompt_set(tmp_path / "nothing.json")


def test_loading_a_bad_file_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_valid_set(domain="agricultural")), encoding="utf-8")
    with pytest.raises(PromptError, match=r"bad\.json: domain 'agricultural' must be one of"):
        load_prompt_set(path)


# ---------------------------------------------------------------- schema and lint

BROKEN = {
    "duplicate": (
        dict(normal=[*_valid_set()["normal"], "A clean  {classname} with FINISH number 3"]),
        r"normal\[30\] repeats normal\[3\]",
    ),
    "bare braces": (
        dict(abnormal=[*_valid_set()["abnormal"][:29], "a {} with a dent"]),
        r"abnormal\[29\] uses the placeholder \{\}",
    ),
    "wrong placeholder": (
        dict(normal=[*_valid_set()["normal"][:29], "a {class} without dents"]),
        r"normal\[29\] uses the placeholder \{class\}",
    ),
    "stray brace": (
        dict(normal=[*_valid_set()["normal"][:29], "a {classname without dents"]),
        r"normal\[29\] has a stray brace",
    ),
    "too long": (
        dict(abnormal=[*_valid_set()["abnormal"][:29], "a {classname} with " + "a very long scratch " * 20]),
        r"abnormal\[29\] is \d+ tokens with classname 'widget'; CLIP's context holds 77",
    ),
    "too long once filled": (dict(classname="widget " * 75), r"normal\[0\] is \d+ tokens"),
    "too few": (dict(normal=_valid_set()["normal"][:29]), r"'normal' has 29 unique sentences"),
    "list is a string": (dict(abnormal="a widget with a dent"), r"'abnormal' must be a list, not a string"),
    "sentence is a number": (
        dict(normal=[*_valid_set()["normal"], 7]),
        r"normal\[30\] must be a non-empty string, not an integer",
    ),
    "empty sentence": (dict(normal=[*_valid_set()["normal"], "  "]), r"normal\[30\] must be a"),
    "version is a string": (dict(schema_version="1"), r"'schema_version' must be an integer"),
    "version is a boolean": (dict(schema_version=True), r"'schema_version' must be an integer"),
    "future version": (dict(schema_version=2), r"schema_version is 2"),
    "reviewed is a string": (
        dict(provenance={**_valid_set()["provenance"], "reviewed": "no"}),
        r"'provenance.reviewed' must be a boolean, not a string",
    ),
    "bad date": (
        dict(provenance={**_valid_set()["provenance"], "date": "27/11/2026"}),
        r"provenance.date '27/11/2026' must be a date",
    ),
    "unknown key": (dict(prompts=[]), r"unknown key 'prompts'"),
    "bad name": (dict(name="Test Set"), r"name 'Test Set' must be lower-case"),
    "same sentence in both states": (
        dict(abnormal=[*_valid_set()["abnormal"], "A clean {classname} with finish number 0"]),
        r"normal\[0\] is also abnormal\[30\]",
    ),
}


def test_the_token_limit_counts_start_and_end_of_text():
    # "x" is one token: 75 of them plus SOT and EOT fill the 77-token context exactly
    at_limit = _valid_set(normal=[*_valid_set()["normal"][:29], "x " * 75])
    over = _valid_set(normal=[*_valid_set()["normal"][:29], "x " * 76])
    assert _token_count("x " * 75) == 77
    assert validate_prompt_set(at_limit) == []
    assert validate_prompt_set(over) == [
        f"normal[29] is 78 tokens with classname 'widget'; CLIP's context holds 77: {'x ' * 76!r}"
    ]


def test_the_unbroken_set_is_valid():
    assert validate_prompt_set(_valid_set()) == []


@pytest.mark.parametrize("case", list(BROKEN))
def test_lint_catches_each_defect_in_a_written_file(tmp_path, case):
    changes, message = BROKEN[case]
    path = tmp_path / "set.json"
    path.write_text(json.dumps(_valid_set(**changes)), encoding="utf-8")
    problems = lint_prompt_files([path])[str(path)]
    assert any(re.search(message, p) for p in problems), problems


def test_lint_catches_a_missing_key_invalid_json_and_a_repeated_key(tmp_path):
    obj = _valid_set()
    del obj["classname"]
    missing, invalid, repeated = (tmp_path / n for n in ("a.json", "b.json", "c.json"))
    missing.write_text(json.dumps(obj), encoding="utf-8")
    invalid.write_text('{"name": ', encoding="utf-8")
    repeated.write_text(json.dumps(_valid_set())[:-1] + ', "name": "again"}', encoding="utf-8")
    report = lint_prompt_files([missing, invalid, repeated, tmp_path / "absent.json"])
    assert report[str(missing)] == ["missing key 'classname'"]
    assert report[str(invalid)][0].startswith("not valid JSON: Expecting value at line 1")
    assert report[str(repeated)] == ["the key 'name' appears twice in one object"]
    assert report[str(tmp_path / "absent.json")][0].startswith("cannot read the file")


def test_lint_reports_a_clean_file_as_an_empty_list(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_valid_set()), encoding="utf-8")
    assert lint_prompt_files([path]) == {str(path): []}


# ---------------------------------------------------------------- base ensemble and modes


def test_the_base_ensemble_has_245_normal_and_175_abnormal_sentences():
    normal, abnormal = base_sentences("metal nut")
    assert len(TEMPLATES) == len(set(TEMPLATES)) == 35
    assert (len(normal), len(abnormal)) == (245, 175)
    assert len(set(normal)) == 245 and len(set(abnormal)) == 175
    # first and last of the published order: state-major, then template
    assert normal[0] == "a bad photo of a metal nut."
    assert normal[35] == "a bad photo of a flawless metal nut."
    assert abnormal[-1] == "this is one metal nut with damage in the scene."
    assert "a photo of the metal nut." in normal  # no "with defects" appended to the name
    assert not any("with defects" in s for s in normal)


def test_modes_pick_their_sources_and_fill_the_classname():
    prompt_set = load_prompt_set("brain_mri")
    base = prompt_sentences("base", prompt_set)
    own = prompt_sentences("p-prompts", prompt_set, classname="head")
    both = prompt_sentences("base+p", prompt_set)
    assert [len(g) for g in base.normal] == [245] and [len(g) for g in base.abnormal] == [175]
    assert [len(g) for g in own.normal] == [len(prompt_set.normal)]
    assert [len(g) for g in both.normal] == [245, len(prompt_set.normal)]
    assert (
        both.normal[0] == base.normal[0] and both.abnormal[1] == prompt_sentences("p-prompts", prompt_set).abnormal[0]
    )
    assert own.normal[0][0].startswith("an axial FLAIR MRI slice of a normal head ")
    assert prompt_sentences("base", None, classname="bolt").normal[0][0] == "a bad photo of a bolt."


def test_mode_errors_name_the_choices_and_the_problem():
    prompt_set = load_prompt_set("liver_ct")
    with pytest.raises(PromptError, match=r"unknown prompt mode 'both'.*base, p-prompts, base\+p"):
        prompt_sentences("both", prompt_set)
    with pytest.raises(PromptError, match="needs a prompt set"):
        prompt_sentences("base+p", None, classname="liver")
    with pytest.raises(PromptError, match="exceed CLIP's 77 tokens"):
        prompt_sentences("base", prompt_set, classname="liver " * 70)
    assert set(PROMPT_MODES) == {"base", "p-prompts", "base+p"}


# ---------------------------------------------------------------- prototypes


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=dict(layers=1, width=32, patch_size=8, image_size=32, head_width=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    )
    return model.eval()


class CountingEncoder:
    """encode_text that counts the sentences it was asked to encode."""

    def __init__(self, model):
        self.model, self.sentences = model, 0

    def __call__(self, tokens):
        self.sentences += tokens.shape[0]
        return self.model.encode_text(tokens)


def _plain_prototype(model, sentences):
    with torch.no_grad():
        e = model.encode_text(open_clip.tokenizer.tokenize(list(sentences)))
    e = e / e.norm(dim=-1, keepdim=True)
    p = e.mean(dim=0)
    return p / p.norm()


def test_prototypes_equal_a_plain_computation(tiny_clip):
    sentences = prompt_sentences("p-prompts", load_prompt_set("mvtec_ad_bottle"))
    t = text_prototypes(tiny_clip.encode_text, open_clip.tokenizer.tokenize, sentences, batch_size=7)
    assert t.shape == (32, 2) and t.dtype == torch.float32
    torch.testing.assert_close(t.norm(dim=0), torch.ones(2))
    expected = torch.stack(
        [_plain_prototype(tiny_clip, sentences.normal[0]), _plain_prototype(tiny_clip, sentences.abnormal[0])], dim=1
    )
    torch.testing.assert_close(t, expected, rtol=1e-5, atol=1e-6)


def test_base_plus_p_averages_every_sentence_of_both_sources(tiny_clip):
    prompt_set = load_prompt_set("mvtec_ad_bottle")
    both = prompt_sentences("base+p", prompt_set)
    t = text_prototypes(tiny_clip.encode_text, open_clip.tokenizer.tokenize, both, batch_size=100)
    base, own = both.normal
    pooled = _plain_prototype(tiny_clip, base + own)  # METHOD §4: one average over all sentences
    per_source = F.normalize(_plain_prototype(tiny_clip, base) + _plain_prototype(tiny_clip, own), dim=0)
    torch.testing.assert_close(t[:, 0], pooled, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(t[:, 0], per_source, atol=1e-4)


def test_each_mode_gives_a_different_t(tiny_clip):
    prompt_set = load_prompt_set("mvtec_ad_bottle")
    ts = [
        text_prototypes(tiny_clip.encode_text, open_clip.tokenizer.tokenize, prompt_sentences(mode, prompt_set))
        for mode in PROMPT_MODES
    ]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(ts[i], ts[j], atol=1e-4)


def test_prototypes_run_without_gradients(tiny_clip):
    sentences = prompt_sentences("base", None, classname="bolt")
    t = text_prototypes(tiny_clip.encode_text, open_clip.tokenizer.tokenize, sentences)
    assert not t.requires_grad


# ---------------------------------------------------------------- cache


def test_a_cache_hit_returns_the_same_t_without_encoding(tmp_path, tiny_clip):
    cache = PrototypeCache(tmp_path / "cache")
    encoder = CountingEncoder(tiny_clip)
    prompt_set = load_prompt_set("visa_candle")
    sentences = prompt_sentences("base+p", prompt_set)

    def compute():
        return text_prototypes(encoder, open_clip.tokenizer.tokenize, sentences)

    first = cache.get_or_compute("tiny-clip@seed0", sentences, compute)
    encoded = encoder.sentences
    assert encoded == 245 + 175 + len(prompt_set.normal) + len(prompt_set.abnormal)
    second = cache.get_or_compute("tiny-clip@seed0", sentences, compute)
    assert encoder.sentences == encoded
    assert torch.equal(first, second)
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".pt"]  # no temporary left


def test_a_change_of_sentences_mode_or_backbone_misses(tmp_path):
    cache = PrototypeCache(tmp_path)
    prompt_set = load_prompt_set("visa_candle")
    sentences = prompt_sentences("base+p", prompt_set)
    cache.put("vit-b-16@openai", sentences, torch.ones(8, 2))
    assert torch.equal(cache.get("vit-b-16@openai", sentences), torch.ones(8, 2))
    assert cache.get("vit-b-16@laion2b", sentences) is None
    assert cache.get("vit-b-16@openai", prompt_sentences("base", prompt_set)) is None
    assert cache.get("vit-b-16@openai", prompt_sentences("base+p", prompt_set, "tealight")) is None
    edited = PromptSentences("base+p", sentences.normal, (sentences.abnormal[0], sentences.abnormal[1][:-1]))
    assert cache.get("vit-b-16@openai", edited) is None


def test_the_mode_is_part_of_the_key_even_for_equal_sentences(tmp_path):
    cache = PrototypeCache(tmp_path)
    groups = (("a bolt",),)
    assert cache.path_for("m", PromptSentences("base", groups, groups)) != cache.path_for(
        "m", PromptSentences("p-prompts", groups, groups)
    )


def test_an_unreadable_cache_entry_warns_and_is_recomputed(tmp_path):
    cache = PrototypeCache(tmp_path)
    sentences = prompt_sentences("base", None, classname="bolt")
    cache.path_for("m", sentences).write_bytes(b"not a tensor file")
    with pytest.warns(UserWarning, match="unusable prototype cache entry"):
        t = cache.get_or_compute("m", sentences, lambda: torch.zeros(4, 2))
    assert torch.equal(t, torch.zeros(4, 2))
    assert torch.equal(cache.get("m", sentences), torch.zeros(4, 2))
    # bytes that make torch's weights-only reader raise a KeyError, and tensors that are no prototypes
    for damage in (b"hello", torch.full((4, 2), float("nan")), torch.zeros(4, 2, dtype=torch.float16)):
        path = cache.path_for("m", sentences)
        path.write_bytes(damage) if isinstance(damage, bytes) else torch.save(damage, path)
        with pytest.warns(UserWarning, match="unusable prototype cache entry"):
            assert cache.get("m", sentences) is None


def test_the_default_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPMPCAD_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert PrototypeCache().directory == tmp_path / "c"
    monkeypatch.delenv("CLIPMPCAD_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "clipmpcad" / "prototypes"
    assert os.environ.get("CLIPMPCAD_CACHE") is None
