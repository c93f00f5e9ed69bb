"""MVTec-layout loader (MVTec-AD, MPDD, BTAD), the two shared real sets, and bad input."""

from __future__ import annotations

import shutil

import pytest

from clipmpcad.data import load_category, mvtec
from clipmpcad.data.sample import ANOMALOUS, NORMAL
from clipmpcad.errors import DataError


def test_mvtec_category(mvtec_root):
    data = mvtec.load_category(mvtec_root, "bottle")
    assert (data.dataset, data.domain, data.classname, data.prompt_set) == (
        "mvtec",
        "industrial",
        "bottle",
        "mvtec_ad_bottle",
    )
    assert data.has_masks and data.abnormal_pool_is_test and data.shot_lists is None
    assert [s.image.name for s in data.normal_pool] == ["000.png", "001.png", "002.png"]
    assert [s.label for s in data.test] == [NORMAL] * 2 + [ANOMALOUS] * 3
    assert data.abnormal_pool == data.test[2:]
    assert {s.defect for s in data.abnormal_pool} == {"broken"}


def test_masks_are_paired_by_stem_not_position(mvtec_root):
    data = mvtec.load_category(mvtec_root, "bottle")
    pairs = {s.image.name: s.mask.name for s in data.abnormal_pool}
    assert pairs == {"1.png": "1_mask.png", "2.png": "2_mask.png", "10.png": "10_mask.png"}


def test_known_and_unknown_names(mvtec_root):
    shutil.copytree(mvtec_root / "bottle", mvtec_root / "metal_nut")
    shutil.copytree(mvtec_root / "bottle", mvtec_root / "odd_widget")
    assert mvtec.load_category(mvtec_root, "metal_nut").classname == "metal nut"
    unknown = mvtec.load_category(mvtec_root, "odd_widget")
    assert (unknown.classname, unknown.prompt_set) == ("odd widget", "generic_industrial")
    medical = mvtec.load_category(mvtec_root, "odd_widget", domain="medical")
    assert (medical.domain, medical.prompt_set) == ("medical", "generic_medical")
    assert mvtec.list_categories(mvtec_root) == ["bottle", "metal_nut", "odd_widget"]


def test_mpdd_prompt_set(mvtec_root):
    shutil.copytree(mvtec_root / "bottle", mvtec_root / "bracket_black")
    data = mvtec.load_category(mvtec_root, "bracket_black", dataset="mpdd")
    assert (data.dataset, data.classname, data.prompt_set) == ("mpdd", "black bracket", "mpdd_bracket_black")


@pytest.mark.parametrize(("category", "mask_suffix"), [("01", ".png"), ("03", ".bmp")])
def test_btad_ok_ko_and_bmp(tmp_path, files, category, mask_suffix):
    cat = tmp_path / category
    files.image(cat / "train" / "ok" / "0000.bmp")
    files.image(cat / "test" / "ok" / "0001.bmp")
    files.image(cat / "test" / "ko" / "0002.bmp")
    files.mask(cat / "ground_truth" / "ko" / f"0002{mask_suffix}")
    data = mvtec.load_category(tmp_path, category, dataset="btad")
    assert (data.prompt_set, len(data.normal_pool), len(data.test)) == (f"btad_{category}", 1, 2)
    assert data.abnormal_pool[0].mask.name == f"0002{mask_suffix}"
    assert data.abnormal_pool[0].defect == "ko"


def test_without_ground_truth_is_classification_only(mvtec_root):
    shutil.rmtree(mvtec_root / "bottle" / "ground_truth")
    data = mvtec.load_category(mvtec_root, "bottle")
    assert not data.has_masks and all(s.mask is None for s in data.test)


def test_anomalous_image_without_its_mask_is_a_data_error(mvtec_root):
    (mvtec_root / "bottle" / "ground_truth" / "broken" / "10_mask.png").unlink()
    with pytest.raises(DataError, match=r"broken: 1 anomalous image\(s\) have no mask .*: 10\.png"):
        mvtec.load_category(mvtec_root, "bottle")


def test_a_mask_without_its_image_is_named_in_a_warning(mvtec_root):
    (mvtec_root / "bottle" / "test" / "broken" / "2.png").unlink()
    with pytest.warns(UserWarning, match=r"broken: 1 mask\(s\) have no image .* not used: 2_mask\.png$"):
        data = mvtec.load_category(mvtec_root, "bottle")
    assert sorted(s.image.name for s in data.abnormal_pool) == ["1.png", "10.png"]


def test_missing_defect_mask_folder_is_a_data_error(mvtec_root):
    shutil.rmtree(mvtec_root / "bottle" / "ground_truth" / "broken")
    with pytest.raises(DataError, match=r"ground_truth/broken: mask folder not found .* 1\.png"):
        mvtec.load_category(mvtec_root, "bottle")


def test_unknown_category_lists_those_found(mvtec_root):
    with pytest.raises(DataError, match=r"no mvtec category 'cable'; found: bottle$"):
        mvtec.load_category(mvtec_root, "cable")


def test_a_root_one_level_off_says_where_the_categories_are(mvtec_root):
    category = mvtec_root / "bottle"
    with pytest.raises(
        DataError, match=rf"{category} is itself a category folder: use --root {mvtec_root} --category bottle"
    ):
        mvtec.load_category(category, "bottle")
    above = mvtec_root.parent
    with pytest.raises(
        DataError, match=rf"found: none .*; {mvtec_root} holds categories \(bottle\): use --root {mvtec_root}$"
    ):
        mvtec.load_category(above, "bottle")


def test_missing_train_good_is_a_data_error(mvtec_root):
    shutil.rmtree(mvtec_root / "bottle" / "train" / "good")
    with pytest.raises(DataError, match=r"train: normal image folder not found"):
        mvtec.load_category(mvtec_root, "bottle")


def test_empty_defect_folder_is_a_data_error(mvtec_root):
    (mvtec_root / "bottle" / "test" / "empty").mkdir()
    with pytest.raises(DataError, match=r"test/empty: image folder has no image files"):
        mvtec.load_category(mvtec_root, "bottle")


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"absent: dataset folder not found"):
        mvtec.load_category(tmp_path / "absent", "bottle")


def test_shared_magnetic_tile_loads_with_its_counts(shared_data):
    root = shared_data / "magnetic_tile"
    data = load_category("mvtec", root, "magnetic_tile")  # also checks every mask's size
    normal_test = [s for s in data.test if s.label == NORMAL]
    assert (len(data.normal_pool), len(normal_test), len(data.abnormal_pool)) == (300, 200, 386)
    defects = {s.defect for s in data.abnormal_pool}
    assert defects == {"blowhole", "break", "crack", "fray", "uneven"}
    assert all(s.mask.stem == f"{s.image.stem}_mask" for s in data.abnormal_pool)
    assert (data.classname, data.domain) == ("magnetic tile", "industrial")


def test_shared_busi_loads_as_medical(shared_data):
    root = shared_data / "busi"
    data = load_category("mvtec", root, "breast_ultrasound", domain="medical")
    normal_test = [s for s in data.test if s.label == NORMAL]
    assert (len(data.normal_pool), len(normal_test), len(data.abnormal_pool)) == (53, 80, 120)
    assert (data.domain, data.prompt_set, data.classname) == ("medical", "generic_medical", "breast ultrasound")


def test_a_hidden_folder_in_test_is_not_a_defect_class(mvtec_root):
    before = mvtec.load_category(mvtec_root, "bottle").test
    (mvtec_root / "bottle" / "test" / ".ipynb_checkpoints").mkdir()
    assert mvtec.load_category(mvtec_root, "bottle").test == before


def test_split_folders_in_another_case_are_found(mvtec_root):
    before = mvtec.load_category(mvtec_root, "bottle")
    for name, other in (("train", "Train"), ("test", "TEST")):
        (mvtec_root / "bottle" / name).rename(mvtec_root / "bottle" / other)
    assert "bottle" in mvtec.list_categories(mvtec_root)
    again = mvtec.load_category(mvtec_root, "bottle")
    assert [s.image.name for s in again.test] == [s.image.name for s in before.test]
    assert len(again.normal_pool) == len(before.normal_pool)


def test_an_image_outside_the_class_folders_is_a_data_error(mvtec_root, files):
    files.image(mvtec_root / "bottle" / "test" / "stray.png")
    with pytest.raises(DataError, match=r"test: 1 image\(s\) lie outside its class folders \(stray\.png\)"):
        mvtec.load_category(mvtec_root, "bottle")
