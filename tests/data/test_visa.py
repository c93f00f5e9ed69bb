"""VisA loader: the split CSV, its pools, names, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmpcad.data import visa
from clipmpcad.data.dataset import read_original_mask
from clipmpcad.data.sample import ANOMALOUS, NORMAL
from clipmpcad.errors import DataError

HEADER = "object,split,label,image,mask\n"


@pytest.fixture
def visa_root(tmp_path: Path, files) -> Path:
    """candle: 3 train normals, 1 test normal, 2 test anomalies; chewinggum: 1 of each."""
    rows = [HEADER]
    for obj, n_train, n_test, n_bad in (("candle", 3, 1, 2), ("chewinggum", 1, 1, 1)):
        images = tmp_path / obj / "Data" / "Images"
        for i in range(n_train + n_test):
            files.image(images / "Normal" / f"{i:04d}.JPG", mode="RGB")
            split = "train" if i < n_train else "test"
            rows.append(f"{obj},{split},normal,{obj}/Data/Images/Normal/{i:04d}.JPG,\n")
        for i in range(n_bad):
            files.image(images / "Anomaly" / f"{i:03d}.JPG", mode="RGB")
            files.mask(tmp_path / obj / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png", on=1)
            rows.append(
                f"{obj},test,anomaly,{obj}/Data/Images/Anomaly/{i:03d}.JPG,{obj}/Data/Masks/Anomaly/{i:03d}.png\n"
            )
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("".join(rows), encoding="utf-8-sig")
    return tmp_path


def test_visa_category(visa_root):
    data = visa.load_category(visa_root, "candle")
    assert (data.dataset, data.classname, data.prompt_set) == ("visa", "candle", "visa_candle")
    assert len(data.normal_pool) == 3 and data.has_masks and data.abnormal_pool_is_test
    assert [s.label for s in data.test] == [NORMAL, ANOMALOUS, ANOMALOUS]
    assert data.abnormal_pool == data.test[1:]
    assert data.test[1].mask == visa_root / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"


def test_visa_masks_with_value_1_are_foreground(visa_root):
    sample = visa.load_category(visa_root, "candle").abnormal_pool[0]
    assert read_original_mask(sample).sum() == 64  # the 8×8 box written with value 1


def test_list_categories_and_plain_names(visa_root):
    assert visa.list_categories(visa_root) == ["candle", "chewinggum"]
    assert visa.load_category(visa_root, "chewinggum").classname == "chewing gum"


def test_train_anomalies_become_the_abnormal_pool(visa_root):
    csv = visa_root / "split_csv" / "1cls.csv"
    text = csv.read_text(encoding="utf-8-sig").replace(
        "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG",
        "candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG",
    )
    csv.write_text(text)
    data = visa.load_category(visa_root, "candle")
    assert not data.abnormal_pool_is_test
    assert [s.image.name for s in data.abnormal_pool] == ["000.JPG"]
    assert len(data.test) == 2


def test_missing_split_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"1cls\.csv: VisA split file not found"):
        visa.load_category(tmp_path, "candle")


def test_split_file_without_a_column_is_a_data_error(visa_root):
    csv = visa_root / "split_csv" / "1cls.csv"
    csv.write_text("object,split,label,image\ncandle,train,normal,x\n")
    with pytest.raises(DataError, match=r"1cls\.csv: split file lacks column\(s\) mask"):
        visa.load_category(visa_root, "candle")


def test_split_file_naming_absent_images_is_a_data_error(visa_root):
    (visa_root / "candle" / "Data" / "Images" / "Normal" / "0001.JPG").unlink()
    with pytest.raises(DataError, match=r"1cls\.csv: names 1 file\(s\) that do not exist: .*0001"):
        visa.load_category(visa_root, "candle")


def test_bad_label_is_a_data_error(visa_root):
    with (visa_root / "split_csv" / "1cls.csv").open("a") as f:
        f.write("candle,test,broken,candle/x.JPG,\n")
    with pytest.raises(DataError, match=r"1cls\.csv:\d+: split must be train/test and label"):
        visa.load_category(visa_root, "candle")


def test_unknown_object_lists_those_found(visa_root):
    with pytest.raises(DataError, match=r"no VisA object 'pcb9'; found: candle, chewinggum"):
        visa.load_category(visa_root, "pcb9")


def test_anomaly_without_mask_is_a_data_error(visa_root):
    csv = visa_root / "split_csv" / "1cls.csv"
    csv.write_text(csv.read_text(encoding="utf-8-sig").replace(",candle/Data/Masks/Anomaly/001.png", ","))
    with pytest.raises(DataError, match=r"1 anomalous image\(s\) have no mask: 001\.JPG"):
        visa.load_category(visa_root, "candle")


def test_an_image_listed_twice_is_a_data_error(visa_root):
    with (visa_root / "split_csv" / "1cls.csv").open("a") as f:
        f.write("candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n")
    with pytest.raises(DataError, match=r"1cls\.csv:\d+: image candle/Data/Images/Normal/0000\.JPG is already listed"):
        visa.load_category(visa_root, "candle")


def test_categories_follow_the_split_file_a_run_loads_with(visa_root):
    from clipmpcad.benchmark import SuiteSpec, plan
    from clipmpcad.data import list_categories

    rows = (visa_root / "split_csv" / "1cls.csv").read_text(encoding="utf-8-sig").splitlines(keepends=True)
    (visa_root / "split_csv" / "gum.csv").write_text("".join(r for r in rows if not r.startswith("candle")))
    assert list_categories("visa", visa_root) == ["candle", "chewinggum"]
    assert list_categories("visa", visa_root, split_file="split_csv/gum.csv", domain="industrial") == ["chewinggum"]
    spec = SuiteSpec(datasets=(("visa", str(visa_root)),), shots=(1,), seeds=(1,))
    assert [c.category for c in plan(spec, {"split_file": "split_csv/gum.csv"})] == ["chewinggum"]
    assert [c.category for c in plan(spec)] == ["candle", "chewinggum"]
