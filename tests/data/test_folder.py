"""Custom folder loader and the image listing for predict."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmpcad.data.fewshot import evaluation_samples, sample_shots
from clipmpcad.data.folder import FolderLayout, layout_from_options, list_images, load_category
from clipmpcad.data.sample import ANOMALOUS, NORMAL
from clipmpcad.errors import ConfigError, DataError


@pytest.fixture
def folder_root(tmp_path: Path, files) -> Path:
    """normal/ 4 images, abnormal/ 3 images, masks/ named <stem>.png and <stem>_mask.png."""
    for i in range(4):
        files.image(tmp_path / "normal" / f"n{i}.png")
    for i in range(3):
        files.image(tmp_path / "abnormal" / f"a{i}.jpg", mode="RGB")
    files.mask(tmp_path / "masks" / "a0.png")
    files.mask(tmp_path / "masks" / "a1_mask.png")
    files.mask(tmp_path / "masks" / "a2.bmp")
    return tmp_path


def test_shared_folders_without_test_folders(folder_root):
    data = load_category(folder_root, "circuit_board", FolderLayout(mask_dir=Path("masks")))
    assert (data.dataset, data.classname, data.prompt_set) == ("folder", "circuit board", "generic_industrial")
    assert data.has_masks and data.abnormal_pool_is_test
    assert [s.mask.name for s in data.abnormal_pool] == ["a0.png", "a1_mask.png", "a2.bmp"]
    assert len(data.test) == 7  # shots come from the test images themselves


def test_shots_leave_evaluation_when_pools_are_the_test_split(folder_root):
    data = load_category(folder_root, "part")
    shots = sample_shots(data, 2, seed=0)
    remaining = evaluation_samples(data, shots)
    assert shots.removed_from_test == 4 and len(remaining) == 3
    used = {s.image for s in shots.normal + shots.abnormal}
    assert not used & {s.image for s in remaining}


def test_separate_test_folders(folder_root, files):
    for i in range(2):
        files.image(folder_root / "test_ok" / f"t{i}.png")
        files.image(folder_root / "test_bad" / f"b{i}.png")
        files.mask(folder_root / "test_masks" / f"b{i}_gt.png")
    layout = FolderLayout(
        test_normal_dir=Path("test_ok"),
        test_abnormal_dir=Path("test_bad"),
        test_mask_dir=Path("test_masks"),
        mask_dir=Path("masks"),
        mask_suffix="_gt",
    )
    with pytest.raises(DataError, match=r"masks: 3 anomalous image\(s\) have no mask"):
        load_category(folder_root, "part", layout)  # the pool's masks lack the _gt suffix
    for p in (folder_root / "masks").iterdir():
        p.rename(p.with_name(p.stem.removesuffix("_mask") + "_gt" + p.suffix))
    data = load_category(folder_root, "part", layout)
    assert not data.abnormal_pool_is_test
    assert [s.label for s in data.test] == [NORMAL] * 2 + [ANOMALOUS] * 2
    assert [s.mask.name for s in data.test[2:]] == ["b0_gt.png", "b1_gt.png"]
    assert evaluation_samples(data, sample_shots(data, 2, seed=0)) == data.test


def test_layout_from_separate_string_options(folder_root):
    data = load_category(folder_root, "part", mask_dir="masks", test_normal_dir="normal")
    assert data.has_masks and len(data.test) == 7
    assert layout_from_options({"abnormal_dir": "", "mask_suffix": ""}) == FolderLayout(
        abnormal_dir=None, mask_suffix=""
    )
    with pytest.raises(ConfigError, match=r"unknown folder option\(s\) mask; choices: normal_dir"):
        layout_from_options({"mask": "m"})
    with pytest.raises(ConfigError, match="either as `layout` or as separate options"):
        load_category(folder_root, "part", FolderLayout(), mask_dir="masks")


def test_normal_only_folder_and_overrides(folder_root):
    layout = FolderLayout(normal_dir=folder_root / "normal", abnormal_dir=None)  # absolute stays
    data = load_category(folder_root, "lesion", layout, domain="medical", classname="skin")
    assert data.abnormal_pool == () and not data.has_masks
    assert (data.classname, data.prompt_set, data.domain) == ("skin", "generic_medical", "medical")


def test_missing_normal_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"normal: normal folder not found"):
        load_category(tmp_path, "part")


def test_anomalous_image_without_its_mask_is_a_data_error(folder_root):
    (folder_root / "masks" / "a2.bmp").unlink()
    with pytest.raises(DataError, match=r"masks: 1 anomalous image\(s\) have no mask .*: a2\.jpg"):
        load_category(folder_root, "part", FolderLayout(mask_dir=Path("masks")))
    seg = r"3 anomalous image\(s\) have no mask with the same stem \(for a0\.jpg: a0_seg\.\*\): a0\.jpg, a1"
    with pytest.raises(DataError, match=seg):
        load_category(folder_root, "part", FolderLayout(mask_dir=Path("masks"), mask_suffix="_seg"))


def test_images_sharing_a_stem_cannot_be_paired(folder_root, files):
    files.image(folder_root / "abnormal" / "a0.png")
    with pytest.raises(DataError, match=r"abnormal: images share a stem.*a0\.jpg, a0\.png"):
        load_category(folder_root, "part", FolderLayout(mask_dir=Path("masks")))


def test_empty_folder_is_a_data_error(folder_root):
    (folder_root / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: abnormal folder has no image files"):
        load_category(folder_root, "part", FolderLayout(abnormal_dir=Path("empty")))


def test_list_images_file_folder_recursive_and_glob(folder_root, files):
    files.image(folder_root / "normal" / "deeper" / "z.png")
    (folder_root / "normal" / "readme.txt").write_text("not an image")
    (folder_root / "normal" / ".hidden.png").write_bytes(b"")
    (folder_root / "normal" / "Thumbs.db").write_bytes(b"")
    files.image(folder_root / "normal" / ".ipynb_checkpoints" / "n0-checkpoint.png")
    left_out = r"normal: left out 1 file\(s\) of no supported image format \(readme\.txt\)"
    with pytest.warns(UserWarning, match=left_out + r" and 1 sub-folder\(s\), which are not searched \(deeper/\)$"):
        assert [p.name for p in list_images(folder_root / "normal")] == [f"n{i}.png" for i in range(4)]
    with pytest.warns(UserWarning, match=left_out + "$"):  # hidden folders are not searched either
        assert len(list_images(folder_root / "normal", recursive=True)) == 5
    assert list_images(folder_root / "normal" / "n1.png") == [folder_root / "normal" / "n1.png"]
    hidden = folder_root / "normal" / ".hidden.png"
    assert list_images(hidden) == [hidden]  # named outright: taken, though a folder listing passes it over
    assert [p.name for p in list_images(str(folder_root / "*" / "a*.jpg"))] == ["a0.jpg", "a1.jpg", "a2.jpg"]
    assert len(list_images(str(folder_root / "**" / "*.png"))) == 7  # normal 4+1, masks 2


def test_list_images_errors(folder_root):
    with pytest.raises(DataError, match=r"missing\.png: no such file or folder"):
        list_images(folder_root / "missing.png")
    (folder_root / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: not an image file"):
        list_images(folder_root / "notes.txt")
    with pytest.raises(DataError, match=r"\*\.gif: pattern matched no image files"):
        list_images(str(folder_root / "*.gif"))
    (folder_root / "void").mkdir()
    with pytest.raises(DataError, match=r"void: image folder has no image files \([^)]*\)$"):
        list_images(folder_root / "void")
    (folder_root / "void" / "2024").mkdir()
    with pytest.raises(
        DataError, match=r"void: image folder has no image files .*; it holds 2024/ \(sub-folders are not"
    ):
        list_images(folder_root / "void")
    (folder_root / "void" / "2024").rmdir()
    (folder_root / "void" / "scan.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match=r"void: image folder has no image files \(.*\); it holds scan\.gif$"):
        list_images(folder_root / "void")


def test_a_shot_leaves_evaluation_however_its_folder_is_spelled(folder_root):
    (folder_root / "same_normals").symlink_to(folder_root / "normal")  # the pool's folder, by another name
    layout = FolderLayout(
        test_normal_dir=Path("same_normals"), test_abnormal_dir=Path("abnormal"), mask_dir=Path("masks")
    )
    data = load_category(folder_root, "part", layout)
    shots = sample_shots(data, 2, seed=0)
    remaining = evaluation_samples(data, shots)
    assert shots.removed_from_test == 4 and len(remaining) == 3
    assert not {s.image.resolve() for s in shots.normal} & {s.image.resolve() for s in remaining}


def test_two_masks_of_one_stem_are_an_error_not_a_guess(folder_root, files):
    files.mask(folder_root / "masks" / "a0.bmp")  # beside a0.png
    with pytest.raises(DataError, match=r"masks: two masks for images named 'a0': a0\.bmp, a0\.png"):
        load_category(folder_root, "part", FolderLayout(mask_dir=Path("masks")))
