"""Robust image and mask reading: formats, bit depths, EXIF orientation, DICOM (METHOD §10).

Decisions, so that every loader and `predict` see the same pixels:
- 16-bit (and 32-bit integer or float) grayscale is scaled to 8 bits by the image's *actual*
  range (min → 0, max → 255). Medical scanners often store 10–12 bit data in 16-bit files,
  which a fixed division by 65535 would turn nearly black. A constant image becomes all 0.
  (16-bit *colour* PNGs are reduced by Pillow itself to their high byte.)
- Transparency is composited on black (RGBA, LA, palette with a transparent index), so a
  transparent background reads as black rather than as whatever colour hides under alpha 0.
- The EXIF orientation is applied (`ImageOps.exif_transpose`) to images *and* masks, so a
  mask drawn on the displayed picture lines up with it.
- Multi-page TIFFs are read at their first page. NaN or infinite values (float images) read as
  black, with a warning naming the file; the range is that of the finite values.
- DICOM (`.dcm`, via pydicom, imported only when needed): modality and VOI LUTs are applied
  when present, MONOCHROME1 is inverted, then the range is scaled to 8 bits as above.
- Masks are binarised as `value > 0`: gray levels for grayscale masks (0/1 and 0/255 alike),
  any channel for colour and palette masks (judged by the colours shown, not by palette
  indices; luma would lose very dark colours). Alpha is ignored. JPEG masks are cut at half
  their largest value instead: compression leaves faint nonzero halos around every edge.
- Every failure (missing, not an image, truncated, corrupt) is a DataError naming the file.
  `image_size` reads headers only (used to check masks when a category loads); truncation
  shows only on a full decode, i.e. when `read_image` or `read_mask` reads the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipmpcad.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm")
LOSSY_SUFFIXES = (".jpg", ".jpeg")  # masks stored this way are thresholded at half their maximum
_HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix (any case) is one that `read_image` handles."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(path: str | Path) -> Image.Image:
    """Read an image file fully and return it as 8-bit RGB, EXIF orientation applied."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        values = _read_dicom_array(path)
        if values.dtype != np.uint8:
            values = _scale_to_uint8(values, path)
        return Image.fromarray(values).convert("RGB")
    return to_rgb(_open_decoded(path), path)


def to_rgb(img: Image.Image, source: str | Path = "image") -> Image.Image:
    """A decoded, oriented image as 8-bit RGB by this module's rules (high bit depths scaled by
    their own range, transparency composited on black): files, and PIL images given to predict,
    alike. `source` names the image in errors."""
    if img.mode in _HIGH_DEPTH_MODES:
        img = Image.fromarray(_scale_to_uint8(np.asarray(img), Path(source)))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        img = _composite_on_black(img.convert("RGBA"))
    return img.convert("RGB")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as a bool array (H, W): True where the grayscale value is > 0 (for a JPEG,
    above half its largest value: its compression smears the edges into faint nonzero halos)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        values = _read_dicom_array(path)
        return (values.max(axis=-1) if values.ndim == 3 else values) > 0
    img = _open_decoded(path)
    if img.mode in _HIGH_DEPTH_MODES or img.mode == "1":
        values = np.asarray(img)
    elif img.mode in ("L", "LA", "La"):
        values = np.asarray(img.convert("L"))
    else:
        values = np.asarray(img.convert("RGB")).max(axis=-1)  # colour: any channel, not luma
    lossy = path.suffix.lower() in LOSSY_SUFFIXES
    return values > (float(values.max()) / 2 if lossy else 0)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as `read_image` will return it, from the header only (no decode)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        ds = _dcmread(path, stop_before_pixels=True)
        if "Rows" not in ds or "Columns" not in ds:
            raise DataError(f"{path}: DICOM file holds no image (no Rows/Columns)")
        return int(ds.Columns), int(ds.Rows)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = _header_orientation(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def _header_orientation(img: Image.Image) -> int:
    """EXIF orientation without decoding pixels. A PNG's getexif() decodes the whole image to
    look for an eXIf chunk after the pixel data; here only an eXIf chunk ahead of it counts."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(0x0112, 1))


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode (img.load()) so truncation is caught here, then orient by EXIF."""
    try:
        with Image.open(path) as img:
            img.load()  # full decode: a truncated file fails now, not later in a worker
            return ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc})") from None


def _composite_on_black(rgba: Image.Image) -> Image.Image:
    """RGBA → RGB with alpha applied against a black background."""
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def _scale_to_uint8(values: np.ndarray, path: Path) -> np.ndarray:
    """Scale by the actual range to 0..255 (see module docstring); (H, W[, 3]) → uint8."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise DataError(f"{path}: image has no pixels")
    finite = np.isfinite(values)
    if not finite.all():
        if not finite.any():
            raise DataError(f"{path}: image has no finite pixel value (all NaN or infinite)")
        warnings.warn(
            f"{path}: {int((~finite).sum())} of {values.size} pixel values are NaN or infinite; they read as "
            "black and the others are scaled by their own range",
            stacklevel=3,
        )
        values = np.where(finite, values, values[finite].min())  # the lowest finite value: black
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _dcmread(path: Path, stop_before_pixels: bool = False):  # -> pydicom.Dataset
    try:
        import pydicom  # lazy: DICOM support is optional
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # pydicom raises many types for a bad file
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from None


def _read_dicom_array(path: Path) -> np.ndarray:
    """Pixel data of a single-frame DICOM: (H, W) float for grayscale, (H, W, 3) for colour."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _dcmread(path)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # missing pixel data or an unsupported compression
        raise DataError(f"{path}: cannot decode DICOM pixel data ({exc})") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DataError(f"{path}: multi-frame DICOM ({frames} frames); export one frame per file")
    if pixels.ndim == 3:
        return pixels
    values = apply_modality_lut(pixels, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds)
    values = np.asarray(values, dtype=np.float64)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        values = values.max() - values  # MONOCHROME1: low values display bright
    return values
