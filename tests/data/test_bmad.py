"""BMAD loader: MVFA's layout, BMAD's original layouts, names, and every bad-input error."""

from __future__ import annotations

import shutil

import pytest

from clipmpcad.data import bmad
from clipmpcad.data.sample import ANOMALOUS, NORMAL
from clipmpcad.errors import DataError


def test_mvfa_layout_with_masks(bmad_root):
    data = bmad.load_category(bmad_root, "Brain")
    assert (data.dataset, data.category, data.domain) == ("bmad", "Brain", "medical")
    assert (data.classname, data.prompt_set, data.has_masks) == ("Brain", "brain_mri", True)
    assert [s.image.name for s in data.normal_pool] == [f"valid_n{i}.png" for i in range(4)]
    assert [s.image.name for s in data.abnormal_pool] == [f"valid_a{i}.png" for i in range(3)]
    assert [s.label for s in data.test] == [NORMAL] * 2 + [ANOMALOUS] * 2
    assert all(
        s.mask.name == s.image.name and s.mask.parent.name == "anomaly_mask" for s in data.abnormal_pool + data.test[2:]
    )
    assert not data.abnormal_pool_is_test
    assert data.shot_lists == bmad_root / "fewshot_seed" / "Brain"


def test_shot_lists_from_another_folder(bmad_root, tmp_path):
    moved = tmp_path / "mvfa_checkout" / "fewshot_seed"
    moved.parent.mkdir()
    (bmad_root / "fewshot_seed").rename(moved)
    assert bmad.load_category(bmad_root, "Brain").shot_lists is None
    data = bmad.load_category(bmad_root, "Brain", shot_lists=moved)
    assert data.shot_lists == moved / "Brain"


def test_classification_only_set(bmad_root):
    data = bmad.load_category(bmad_root, "Chest")
    assert (data.classname, data.prompt_set, data.has_masks) == ("Chest X-ray film", "chest_xray", False)
    assert all(s.mask is None for s in data.test) and data.shot_lists is None


def test_list_categories(bmad_root):
    (bmad_root / "notes").mkdir()  # folders without splits are not categories
    assert bmad.list_categories(bmad_root) == ["Brain", "Chest"]


def test_unknown_set_uses_its_name_and_finds_masks(tmp_path, files):
    for split in ("valid", "test"):
        files.image(tmp_path / "Knee_AD" / split / "good" / "img" / "n.png")
        files.image(tmp_path / "Knee_AD" / split / "Ungood" / "img" / "a.png")
        files.mask(tmp_path / "Knee_AD" / split / "Ungood" / "anomaly_mask" / "a.png")
    data = bmad.load_category(tmp_path, "Knee")
    assert (data.classname, data.prompt_set, data.has_masks) == ("Knee", "generic_medical", True)


def test_original_layout_with_label_folders(tmp_path, files):
    base = tmp_path / "Brain_AD" / "BraTS2021_slice"
    files.image(base / "train" / "good" / "t.png")
    for split in ("valid", "test"):
        files.image(base / split / "good" / "img" / "n.png")
        files.image(base / split / "Ungood" / "img" / "a.png")
        files.mask(base / split / "Ungood" / "label" / "a.png")
    assert bmad.list_categories(tmp_path) == ["Brain"]
    data = bmad.load_category(tmp_path, "Brain")
    assert data.prompt_set == "brain_mri" and data.test[1].mask.parent.name == "label"
    assert bmad.load_category(tmp_path, "BraTS2021_slice").category == "Brain"


def test_original_liver_layout_img_and_label_above_groups(tmp_path, files):
    base = tmp_path / "hist_DIY"
    for split in ("valid", "test"):
        files.image(base / split / "img" / "good" / "n.png")
        files.image(base / split / "img" / "Ungood" / "a.png")
        files.mask(base / split / "label" / "Ungood" / "a.png")
    data = bmad.load_category(tmp_path, "Liver")
    assert data.classname == "Liver"
    assert data.test[1].mask == base / "test" / "label" / "Ungood" / "a.png"


def test_original_resc_layout_val_and_lowercase_ungood(tmp_path, files):
    base = tmp_path / "Retina_RESC_AD" / "RESC"
    for split in ("val", "test"):
        files.image(base / split / "good" / "img" / "n.png")
        files.image(base / split / "ungood" / "img" / "a.png")
        files.mask(base / split / "ungood" / "label" / "a.png")
    data = bmad.load_category(tmp_path, "Retina_RESC")
    assert data.classname == "retinal OCT" and len(data.abnormal_pool) == 1 and data.has_masks


def test_original_flat_classification_layout(tmp_path, files):
    base = tmp_path / "camelyon16_256"
    for split in ("valid", "test"):
        files.image(base / split / "good" / "1.png")
        files.image(base / split / "Ungood" / "2.png")
    data = bmad.load_category(tmp_path, "Histopathology")
    assert data.classname == "histopathological image" and not data.has_masks
    assert [s.image.name for s in data.test] == ["1.png", "2.png"]


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: BMAD dataset folder not found"):
        bmad.load_category(tmp_path / "nowhere", "Brain")


def test_unknown_category_lists_those_found(bmad_root):
    with pytest.raises(DataError, match=r"no BMAD category 'Lung'; found: Brain, Chest"):
        bmad.load_category(bmad_root, "Lung")


def test_missing_mask_folder_is_a_data_error(bmad_root):
    shutil.rmtree(bmad_root / "Brain_AD" / "valid" / "Ungood" / "anomaly_mask")
    with pytest.raises(DataError, match=r"img: no mask folder .* valid_a0\.png"):
        bmad.load_category(bmad_root, "Brain")


def test_anomalous_image_without_its_mask_is_a_data_error(bmad_root):
    (bmad_root / "Brain_AD" / "test" / "Ungood" / "anomaly_mask" / "test_a1.png").unlink()
    with pytest.raises(DataError, match=r"1 anomalous image\(s\) have no mask .*: test_a1\.png"):
        bmad.load_category(bmad_root, "Brain")


def test_missing_valid_split_is_a_data_error(bmad_root):
    shutil.rmtree(bmad_root / "Chest_AD" / "valid")
    with pytest.raises(DataError, match=r"Chest_AD: split folder not found \(.*valid or val"):
        bmad.load_category(bmad_root, "Chest")


def test_empty_image_folder_is_a_data_error(bmad_root):
    for p in (bmad_root / "Chest_AD" / "test" / "good" / "img").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"good/img: image folder has no image files"):
        bmad.load_category(bmad_root, "Chest")


def test_a_named_shot_list_folder_that_does_not_hold_the_set_is_an_error(bmad_root):
    wrong = bmad_root / "fewshot_seed" / "Brain"  # the per-set folder instead of the one above it
    with pytest.raises(DataError, match=r"fewshot_seed/Brain/Brain: no shot-list folder for Brain"):
        bmad.load_category(bmad_root, "Brain", shot_lists=wrong)


def test_two_folders_of_one_set_are_an_error(bmad_root):
    shutil.copytree(bmad_root / "Brain_AD", bmad_root / "BraTS2021_slice")  # the original release's name
    with pytest.raises(DataError, match=r"two folders hold the BMAD set Brain: .*BraTS2021_slice and .*Brain_AD"):
        bmad.list_categories(bmad_root)
