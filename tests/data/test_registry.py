"""The DATASETS registry: names, options, and the checks load_category adds."""

from __future__ import annotations

from importlib import resources

import pytest

from clipmpcad.data import DATASETS, list_categories, load_category
from clipmpcad.data.folder import FolderLayout
from clipmpcad.data.naming import (
    BMAD_CATEGORIES,
    INDUSTRIAL_CATEGORIES,
    generic_prompt_set,
    industrial_names,
)
from clipmpcad.errors import ConfigError, DataError


def test_registry_names():
    assert list(DATASETS) == ["bmad", "mvtec", "mpdd", "btad", "visa", "folder"]
    assert all(spec.description for spec in DATASETS.values())


def test_each_loader_through_the_registry(synth_bench, mvtec_root, tmp_path, files):
    for s in synth_bench.sets:
        assert load_category(s.dataset, s.root, s.category).category == s.category
    assert load_category("mpdd", mvtec_root, "bottle").dataset == "mpdd"
    assert load_category("btad", mvtec_root, "bottle").dataset == "btad"
    files.image(tmp_path / "f" / "normal" / "n.png")
    layout = FolderLayout(abnormal_dir=None)
    assert load_category("folder", tmp_path / "f", "thing", layout=layout).classname == "thing"
    assert list_categories("mvtec", mvtec_root) == ["bottle"]
    assert list_categories("bmad", synth_bench.root / "bmad") == ["SynthBrain", "SynthChest"]


def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'kitti'; choices: bmad, mvtec, mpdd, "
        r"btad, visa, folder",
    ):
        load_category("kitti", tmp_path, "x")
    with pytest.raises(DataError, match=r"unknown dataset 'kitti'"):
        list_categories("kitti", tmp_path)


def test_unknown_option_lists_the_options(mvtec_root):
    with pytest.raises(
        ConfigError,
        match=r"'mvtec' takes no option\(s\) split_file; its "
        r"options: domain",
    ):
        load_category("mvtec", mvtec_root, "bottle", split_file="x.csv")
    with pytest.raises(ConfigError, match=r"options: split_file, domain"):
        load_category("visa", mvtec_root, "bottle", dataset="mvtec")
    with pytest.raises(
        ConfigError,
        match=r"'folder' takes no option\(s\) masks; its options: "
        r"layout, domain, classname, normal_dir, abnormal_dir",
    ):
        load_category("folder", mvtec_root, "bottle", masks="m")


def test_unknown_domain_is_a_config_error(mvtec_root):
    with pytest.raises(ConfigError, match=r"unknown domain 'space'; choices: medical, industrial"):
        load_category("mvtec", mvtec_root, "bottle", domain="space")


def test_mask_of_another_size_is_caught_at_load_time(mvtec_root, files):
    files.mask(mvtec_root / "bottle" / "ground_truth" / "broken" / "2_mask.png", size=(16, 16))
    with pytest.raises(DataError, match=r"2_mask\.png: mask is 16x16 .*2\.png is 32x24"):
        load_category("mvtec", mvtec_root, "bottle")


def test_unreadable_image_is_caught_at_load_time(mvtec_root):
    (mvtec_root / "bottle" / "test" / "broken" / "10.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"10\.png: not a readable image"):
        load_category("mvtec", mvtec_root, "bottle")


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nothing: dataset folder not found"):
        list_categories("mvtec", tmp_path / "nothing")


def test_every_prompt_set_the_loaders_name_is_shipped():
    shipped = {p.name.removesuffix(".json") for p in resources.files("clipmpcad").joinpath("prompt_sets").iterdir()}
    named = {prompt for _, prompt, _ in BMAD_CATEGORIES.values()}
    for dataset, (prefix, known) in INDUSTRIAL_CATEGORIES.items():
        named |= {industrial_names(dataset, c, "industrial")[1] for c in known}
        assert all(industrial_names(dataset, c, "industrial")[1].startswith(prefix) for c in known)
    named |= {generic_prompt_set(d) for d in ("medical", "industrial")}
    assert named <= shipped, sorted(named - shipped)
