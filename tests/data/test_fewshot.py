"""Few-shot selection: list files, the seeded sampler, removal from evaluation, JSON records."""

from __future__ import annotations

import json

import pytest

from clipmpcad.data import bmad, folder, mvtec
from clipmpcad.data.fewshot import (
    check_k,
    evaluation_samples,
    read_shot_list,
    read_shots,
    sample_shots,
    select_shots,
    shots_from_json,
    shots_from_list,
    shots_to_json,
)
from clipmpcad.errors import ConfigError, DataError


def _names(samples):
    return [s.image.name for s in samples]


def test_allowed_k_and_the_error_listing_them():
    assert [check_k(k) for k in (1, 2, 4, 8, 16)] == [1, 2, 4, 8, 16]
    with pytest.raises(ConfigError, match=r"k=3 is not one of 1, 2, 4, 8, 16"):
        check_k(3)
    with pytest.raises(ConfigError, match="positive integer"):
        check_k(0)


def test_mvfa_list_file_is_parsed_exactly(tmp_path):
    path = tmp_path / "4-shot.txt"
    path.write_text(
        "a-0: 01388_60.png 01471_60.png 00154_60.png 01646_90.png\n"
        "n-0: 01325_99.png 00250_60.png 01555_60.png 01181_99.png"
    )
    normal, abnormal = read_shot_list(path)
    assert normal == ["01325_99.png", "00250_60.png", "01555_60.png", "01181_99.png"]
    assert abnormal == ["01388_60.png", "01471_60.png", "00154_60.png", "01646_90.png"]


def test_list_file_picks_its_iteration(tmp_path):
    path = tmp_path / "1-shot.txt"
    path.write_text("n-0: a.png\na-0: b.png\n\nn-1: c.png\na-1: d.png\n")
    assert read_shot_list(path, iterate=1) == (["c.png"], ["d.png"])


def test_shots_from_the_category_list_file(bmad_root):
    data = bmad.load_category(bmad_root, "Brain")
    shots = select_shots(data, 2, seed=5)  # auto: the list file exists for k=2
    assert shots.source == f"list:{bmad_root / 'fewshot_seed' / 'Brain' / '2-shot.txt'}#0"
    assert shots.seed is None
    assert _names(shots.normal) == ["valid_n3.png", "valid_n1.png"]  # in the list's order
    assert _names(shots.abnormal) == ["valid_a2.png", "valid_a0.png"]
    assert all(s.mask is not None for s in shots.abnormal)
    assert shots.removed_from_test == 0 and evaluation_samples(data, shots) == data.test


def test_sampler_when_no_list_or_when_asked(bmad_root):
    data = bmad.load_category(bmad_root, "Brain")
    assert select_shots(data, 1, seed=5).source == "sampler"  # no 1-shot.txt
    assert select_shots(data, 2, seed=5, source="sample").source == "sampler"
    with pytest.raises(ConfigError, match=r"unknown shot source 'random'; choices: auto, list"):
        select_shots(data, 2, seed=5, source="random")
    with pytest.raises(DataError, match=r"1-shot\.txt: shot list file not found"):
        select_shots(data, 1, seed=5, source="list")


def test_sampler_is_reproducible_and_seeds_differ(synth_bench):
    data = mvtec.load_category(synth_bench.root / "mvtec", "synth_tile")
    a, b = sample_shots(data, 4, seed=7), sample_shots(data, 4, seed=7)
    assert a == b and a.seed == 7 and len(a.normal) == len(a.abnormal) == 4
    others = [sample_shots(data, 4, seed=s) for s in (8, 9)]
    assert all(_names(o.normal) != _names(a.normal) for o in others)
    assert all(o.abnormal != a.abnormal for o in others)


def test_normal_only_mode_keeps_the_same_normal_shots(synth_bench):
    data = mvtec.load_category(synth_bench.root / "mvtec", "synth_tile")
    full, only = sample_shots(data, 8, seed=3), sample_shots(data, 8, seed=3, normal_only=True)
    assert only.normal == full.normal and only.abnormal == () and only.removed_from_test == 0


def test_industrial_abnormal_shots_leave_evaluation(synth_bench):
    data = mvtec.load_category(synth_bench.root / "mvtec", "synth_tile")
    shots = sample_shots(data, 4, seed=0)
    remaining = evaluation_samples(data, shots)
    assert shots.removed_from_test == 4 and len(remaining) == len(data.test) - 4
    assert not {s.image for s in shots.abnormal} & {s.image for s in remaining}


def test_k_larger_than_the_pool_is_a_data_error(bmad_root):
    data = bmad.load_category(bmad_root, "Brain")
    with pytest.raises(DataError, match=r"valid/Ungood/img: k=4 abnormal shots .* only 3 image\(s\)$"):
        sample_shots(data, 4, seed=0)


def test_empty_pool_is_a_data_error_naming_the_dataset(tmp_path, files):
    files.image(tmp_path / "normal" / "n.png")
    data = folder.load_category(tmp_path, "part", folder.FolderLayout(abnormal_dir=None))
    with pytest.raises(
        DataError,
        match=r"\(folder/part\): k=1 abnormal shots .* has only 0 image\(s\); without abnormal "
        r"images, --protocol normal-only trains on synthetic anomalies",
    ):
        sample_shots(data, 1, seed=0)
    assert sample_shots(data, 1, seed=0, normal_only=True).normal[0].image.name == "n.png"


def test_list_file_naming_absent_images_is_a_data_error(bmad_root):
    path = bmad_root / "fewshot_seed" / "Brain" / "2-shot.txt"
    path.write_text("n-0: valid_n0.png gone.png\na-0: valid_a0.png valid_a1.png\n")
    data = bmad.load_category(bmad_root, "Brain")
    with pytest.raises(DataError, match=r"2-shot\.txt: 1 normal shot\(s\) not found .*: gone\.png"):
        shots_from_list(data, 2, path)


def test_list_line_with_the_wrong_count_is_a_data_error(bmad_root):
    path = bmad_root / "fewshot_seed" / "Brain" / "2-shot.txt"
    data = bmad.load_category(bmad_root, "Brain")
    with pytest.raises(DataError, match=r"2-shot\.txt: the normal line names 2 image\(s\)"):
        shots_from_list(data, 4, path)


def test_malformed_list_file_is_a_data_error(tmp_path):
    (tmp_path / "2-shot.txt").write_text("n-0: a.png b.png\nnormal: c.png\n")
    with pytest.raises(DataError, match=r"2-shot\.txt:2: not a shot-list line"):
        read_shot_list(tmp_path / "2-shot.txt")
    (tmp_path / "4-shot.txt").write_text("a-0: a.png\n")
    with pytest.raises(DataError, match=r"4-shot\.txt: no line 'n-0:'"):
        read_shot_list(tmp_path / "4-shot.txt")


def test_shots_round_trip_through_json(synth_bench, tmp_path):
    data = mvtec.load_category(synth_bench.root / "mvtec", "synth_tile")
    shots = sample_shots(data, 4, seed=11)
    record = json.loads(json.dumps(shots_to_json(shots, data)))
    assert record["normal"][0].startswith("synth_tile/train/good/")
    assert record["removed_from_test"] == 4
    assert shots_from_json(record, data) == shots
    (tmp_path / "shots.json").write_text(json.dumps(record))
    assert read_shots(tmp_path / "shots.json", data) == shots
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: cannot read shots JSON"):
        read_shots(tmp_path / "bad.json", data)


def test_json_naming_absent_shots_is_a_data_error(synth_bench):
    data = mvtec.load_category(synth_bench.root / "mvtec", "synth_tile")
    record = shots_to_json(sample_shots(data, 2, seed=0), data)
    record["abnormal"][1] = "synth_tile/test/stain/999.png"
    with pytest.raises(DataError, match=r"shots\.json: 1 abnormal shot\(s\) .*999\.png"):
        shots_from_json(record, data, where="shots.json")
    record["category"] = "other"
    with pytest.raises(DataError, match=r"shots of mvtec/other, not of mvtec/synth_tile"):
        shots_from_json(record, data)
