"""read_image / read_mask / image_size: decoded pixels of every format, and the failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from clipmpcad.data.imageio import image_size, read_image, read_mask
from clipmpcad.errors import DataError


def _rgb(path: Path) -> np.ndarray:
    img = read_image(path)
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def test_8bit_grayscale_becomes_equal_rgb_channels(tmp_path):
    values = np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)
    Image.fromarray(values).save(tmp_path / "g.png")
    out = _rgb(tmp_path / "g.png")
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], values)


def test_16bit_png_is_scaled_by_its_actual_range(tmp_path):
    values = np.linspace(1000, 5000, 16 * 8).reshape(8, 16).astype(np.uint16)  # 12-bit data
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as check:
        assert check.mode.startswith("I")  # really written as a 16-bit file
    out = _rgb(tmp_path / "deep.png")[..., 0]
    expected = np.round((values.astype(float) - 1000) * 255 / 4000)
    np.testing.assert_array_equal(out, expected)
    assert out.min() == 0 and out.max() == 255


def test_float_tiff_with_nan_is_scaled_by_its_finite_values_and_named(tmp_path):
    values = np.linspace(-2.0, 6.0, 12 * 10, dtype=np.float32).reshape(10, 12)
    values[2:4, 3:6] = np.nan
    values[9, 11] = np.inf
    Image.fromarray(values, mode="F").save(tmp_path / "scan.tif")
    with pytest.warns(UserWarning, match=r"scan\.tif: 7 of 120 pixel values are NaN or infinite"):
        out = _rgb(tmp_path / "scan.tif")[..., 0]
    finite = np.isfinite(values)
    low, high = values[finite].min(), values[finite].max()
    expected = np.round((np.where(finite, values, low).astype(float) - low) * 255 / (high - low))
    np.testing.assert_array_equal(out, expected)  # the rest keeps its contrast, not all black
    assert out.max() == 255 and (out[~finite] == 0).all()
    Image.fromarray(np.full((3, 3), np.nan, np.float32), mode="F").save(tmp_path / "void.tif")
    with pytest.raises(DataError, match=r"void\.tif: image has no finite pixel value"):
        read_image(tmp_path / "void.tif")


def test_constant_16bit_image_reads_as_black(tmp_path):
    Image.fromarray(np.full((4, 4), 3000, dtype=np.uint16)).save(tmp_path / "flat.png")
    assert _rgb(tmp_path / "flat.png").max() == 0


def test_palette_png_shows_its_palette_colours(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 2, 2, 0, 1])
    img.save(tmp_path / "pal.png")
    out = _rgb(tmp_path / "pal.png")
    assert out[0, 1].tolist() == [255, 0, 0]
    assert out[0, 2].tolist() == [0, 255, 0]
    assert out[1, 2].tolist() == [0, 0, 0]


def test_rgba_is_composited_on_black(tmp_path):
    values = np.zeros((1, 3, 4), dtype=np.uint8)
    values[0, :, :3] = (200, 100, 50)
    values[0, :, 3] = (255, 0, 128)
    Image.fromarray(values, mode="RGBA").save(tmp_path / "a.png")
    out = _rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 100, 50]  # opaque: unchanged
    assert out[0, 1].tolist() == [0, 0, 0]  # transparent: black, not the hidden colour
    np.testing.assert_allclose(out[0, 2], [100, 50, 25], atol=1)  # half: half


@pytest.mark.parametrize("suffix", [".tif", ".bmp"])
def test_tiff_and_bmp_round_trip_exactly(tmp_path, suffix):
    values = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(_rgb(tmp_path / f"x{suffix}"), values)


def test_16bit_tiff_is_scaled_like_16bit_png(tmp_path):
    values = np.array([[0, 100], [300, 400]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.tif")
    assert _rgb(tmp_path / "d.tif")[..., 0].tolist() == [[0, 64], [191, 255]]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    raw = np.zeros((20, 40), dtype=np.uint8)
    raw[:, 20:] = 255  # left half black, right half white, 40 wide × 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # display = raw rotated 90° clockwise
    Image.fromarray(raw).save(tmp_path / "o.jpg", quality=95, exif=exif)
    out = _rgb(tmp_path / "o.jpg")[..., 0]
    assert out.shape == (40, 20)  # height and width swapped
    assert out[:20].mean() < 20 and out[20:].mean() > 235  # left column is now the top row
    assert image_size(tmp_path / "o.jpg") == (20, 40)  # header-only size agrees


def _write_dicom(path: Path, values: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = values.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_is_read_and_scaled(tmp_path):
    values = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    _write_dicom(tmp_path / "s.dcm", values)
    assert _rgb(tmp_path / "s.dcm")[..., 0].tolist() == [[0, 64], [128, 255]]
    assert image_size(tmp_path / "s.dcm") == (2, 2)


def test_dicom_monochrome1_is_inverted(tmp_path):
    _write_dicom(tmp_path / "m1.dcm", np.array([[0, 4095]], dtype=np.uint16), "MONOCHROME1")
    assert _rgb(tmp_path / "m1.dcm")[..., 0].tolist() == [[255, 0]]


def test_large_odd_sized_image_is_read(tmp_path):
    Image.new("L", (1999, 3), 7).save(tmp_path / "wide.png")
    assert read_image(tmp_path / "wide.png").size == (1999, 3)


@pytest.mark.parametrize("on", [1, 255])
def test_mask_binarised_from_0_1_and_0_255(tmp_path, on):
    values = np.zeros((4, 5), dtype=np.uint8)
    values[1:3, 2:4] = on
    Image.fromarray(values).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.shape == (4, 5)
    np.testing.assert_array_equal(mask, values > 0)


def test_palette_mask_is_judged_by_its_colours(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([0, 0, 0, 1, 0, 0] + [0] * (254 * 3))  # index 1: red 1, luma rounds to 0
    img.putdata([0, 1, 0])
    img.save(tmp_path / "pm.png")
    assert read_mask(tmp_path / "pm.png").tolist() == [[False, True, False]]


def test_16bit_and_rgb_masks(tmp_path):
    Image.fromarray(np.array([[0, 65535, 1]], dtype=np.uint16)).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").tolist() == [[False, True, True]]
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = (0, 0, 255)
    Image.fromarray(rgb).save(tmp_path / "mrgb.png")
    assert read_mask(tmp_path / "mrgb.png").tolist() == [[False, True]]


def test_truncated_png_is_a_data_error(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png: truncated or corrupt"):
        read_image(tmp_path / "t.png")


def test_truncated_jpeg_is_a_data_error(tmp_path):
    values = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg: truncated or corrupt"):
        read_mask(tmp_path / "t.jpg")


def test_unreadable_file_is_a_data_error(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DataError, match=r"notes\.png: not an image format"):
        read_image(tmp_path / "notes.png")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: file not found"):
        read_image(tmp_path / "gone.png")


def test_bad_dicom_is_a_data_error(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match=r"bad\.dcm: not a readable DICOM"):
        read_image(tmp_path / "bad.dcm")


def test_a_jpeg_mask_keeps_its_shape_despite_compression_halos(tmp_path):
    box = np.zeros((60, 60), np.uint8)
    box[20:40, 20:40] = 255  # 400 pixels
    Image.fromarray(box).save(tmp_path / "m.jpg", quality=75)
    assert (np.asarray(Image.open(tmp_path / "m.jpg")) > 0).sum() > 400  # the halo a > 0 cut would keep
    mask = read_mask(tmp_path / "m.jpg")
    assert abs(int(mask.sum()) - 400) <= 20 and mask[30, 30] and not mask[5, 5]
