"""Prediction for deployment: a trained run scores PIL images, tensors or files at its calibrated
thresholds, and writes overlays, masks, maps and a CSV (METHOD §7, §11).

The decision rule is the one used everywhere: an image is anomalous when score ≥ image threshold,
a pixel when its map value ≥ pixel threshold. `clean` and `normal-only` runs fit both thresholds on
normal reference views (eval.image_fpr / eval.pixel_fpr false positives there) and keep the
reference scores, so other targets can be chosen here. `paper` runs are calibrated on their test set
by `clipmpcad test` (read back from metrics.json and flagged test-selected); training-free
zero-shot runs have fixed thresholds. Neither can move to another false-positive target.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .atomic import sole_writer, staged_folder, write_bytes
from .checkpoint import TrainedRun, load_run
from .config import MAP_FORMATS
from .data.dataset import image_to_tensor
from .data.imageio import image_size, read_image, to_rgb
from .decoder import resize_maps
from .errors import CheckpointError, ConfigError, DataError
from .protocols import get_protocol
from .runs import check_output_folder, read_json
from .scoring import Calibration

CSV_NAME = "predictions.csv"
CSV_COLUMNS = (
    "file",
    "name",
    "score",
    "threshold",
    "anomalous",
    "image_fpr",
    "pixel_threshold",
    "pixel_fpr",
    "anomalous_area_fraction",
    "calibration",
    "test_selected",
    "overlay",
    "mask",
    "map",
    "levels",
    "threshold_from",
    "pixel_threshold_from",
    "error",
)
_FIXED_BY = {"test": "fitted on its test set by `clipmpcad test`", "fixed": "fixed at probability 0.5"}

Input = Image.Image | torch.Tensor | str | Path


@dataclass(frozen=True, eq=False)
class Prediction:
    """What the run makes of one image; maps at the image's own size (H, W).

    Runs without masks (classification-only data) still give a map: the det branch's, a coarse
    localisation that no mask trained or validated; their decision rests on the image score alone.
    The image itself is not kept (memory); the caller has it, and predict_to_folder re-reads files.
    """

    name: str  # file name, a PIL image's file name, or "image_<i>" (position in the call)
    score: float  # image score (METHOD §7)
    threshold: float  # image threshold in effect
    anomalous: bool  # score ≥ threshold
    anomaly_map: np.ndarray  # (H, W) float32 fused map, bilinear from the model's S×S map
    pixel_threshold: float  # pixel threshold in effect
    mask: np.ndarray  # (H, W) bool: anomaly_map ≥ pixel_threshold
    level_maps: np.ndarray | None = None  # (L, H, W) float32 zero-shot map of each level, on request
    path: Path | None = None  # the input file, for path inputs

    @property
    def anomalous_area_fraction(self) -> float:
        return float(self.mask.mean())


@dataclass(frozen=True)
class Unreadable:
    """An input that could not be read or scored, in its place among the results when errors are
    skipped (predict / iter_predict with skip_errors=True): why, instead of a Prediction."""

    name: str  # as Prediction.name
    error: str  # the DataError's message, naming the file
    path: Path | None = None  # the input file, for path inputs


class Predictor:
    """A trained run that scores images at its thresholds; build it with `from_run`."""

    def __init__(
        self,
        run: TrainedRun,
        image_fpr: float | None,
        pixel_fpr: float | None,
        user: tuple[bool, bool] = (False, False),
    ) -> None:
        self.run = run
        self.image_fpr = image_fpr  # false-positive target of the image threshold; None: not a reference fit
        self.pixel_fpr = pixel_fpr
        self.user = user  # (image, pixel): the threshold was given by the user, not calibrated

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        image_fpr: float | None = None,
        pixel_fpr: float | None = None,
        precision: str | None = None,
        weights: str | None = None,
        image_threshold: float | None = None,
        pixel_threshold: float | None = None,
    ) -> Predictor:
        """Load a run folder (checkpoint.load_run) on `device` at `precision` (default: the run's);
        weights: where its backbone weights are now, if they moved.

        image_fpr / pixel_fpr refit a threshold for another false-positive target on the normal
        reference scores stored with the run; a lower target gives a higher threshold. A `paper` run
        uses the test-set calibration that `clipmpcad test` stored in its metrics.json.
        image_threshold / pixel_threshold set a threshold outright, on the scale of the scores and
        maps predictions report, for any run (an operating point chosen on data of one's own).
        """
        for threshold, fpr, name in ((image_threshold, image_fpr, "image"), (pixel_threshold, pixel_fpr, "pixel")):
            if threshold is not None and fpr is not None:
                raise ConfigError(f"give the {name} threshold or its false-positive target, not both")
            if threshold is not None and not math.isfinite(threshold):
                raise ConfigError(f"the {name} threshold must be a finite number, got {threshold}")
        run = load_run(run_dir, device, precision, weights)
        calibration = run.detector.calibration or _test_calibration(run)
        reference = calibration.source == "reference"
        if not reference and (image_fpr is not None or pixel_fpr is not None):
            raise ConfigError(
                f"{run.run_dir}: the thresholds of this `{run.config.protocol}` run are "
                f"{_FIXED_BY.get(calibration.source, calibration.source)}, with no normal reference scores "
                "to refit them for another false-positive target; drop --image-fpr/--pixel-fpr"
            )
        try:
            if image_fpr is not None:
                calibration = dataclasses.replace(calibration, image_threshold=calibration.threshold_for(image_fpr))
            if pixel_fpr is not None:
                refitted = calibration.pixel_threshold_for(pixel_fpr)  # not `pixel_threshold`: that is the user's
                calibration = dataclasses.replace(calibration, pixel_threshold=refitted)
        except ConfigError as error:
            raise ConfigError(f"{run.run_dir}: {error}") from None
        if image_threshold is not None:
            calibration = dataclasses.replace(calibration, image_threshold=float(image_threshold))
        if pixel_threshold is not None:
            calibration = dataclasses.replace(calibration, pixel_threshold=float(pixel_threshold))
        run.detector.calibration = calibration
        user = (image_threshold is not None, pixel_threshold is not None)
        if not reference:
            return cls(run, None, None, user)
        image_fpr = run.config.eval.image_fpr if image_fpr is None and not user[0] else image_fpr
        pixel_fpr = run.config.eval.pixel_fpr if pixel_fpr is None and not user[1] else pixel_fpr
        return cls(run, image_fpr, pixel_fpr, user)

    @property
    def calibration(self) -> Calibration:
        return self.run.detector.calibration

    @property
    def threshold(self) -> float:
        return self.calibration.image_threshold

    @property
    def pixel_threshold(self) -> float:
        return self.calibration.pixel_threshold

    @property
    def test_selected(self) -> bool:
        """Thresholds or epoch were chosen on test data (`paper`): flag every output."""
        return get_protocol(self.run.config.protocol).test_selected

    @property
    def batch_size(self) -> int:
        """Images per forward pass unless a call says otherwise: the run's test batch on its device
        (EvalConfig.batch_for: 64 on a GPU, 16 on a CPU, or the configured one)."""
        return self.run.config.eval.batch_for(self.run.detector.device.type)

    def predict(
        self,
        inputs: Input | Sequence[Input],
        *,
        with_levels: bool = False,
        batch_size: int | None = None,
        skip_errors: bool = False,
    ) -> list[Prediction | Unreadable]:
        """Score images, in input order; batch_size changes results only by float rounding (~1e-7).

        Args:
            inputs: a PIL image, a path, a tensor (3, H, W) or (B, 3, H, W), or a list of these
                (grey tensors: (1, H, W), (H, W) or (B, 1, H, W)).
                Tensors hold unnormalised RGB in [0, 1] at any H, W: they are rounded to 8 bits,
                then resized and normalised as the run's images were (run.prep), so a tensor, a PIL
                image and a file of the same picture score alike: files are read by data.imageio
                (EXIF, 16-bit scaling, alpha on black, DICOM) and PIL images converted by its same
                rules (imageio.to_rgb).
            with_levels: also return each level's zero-shot map (Prediction.level_maps).
            batch_size: images per forward pass (memory, not results); None: self.batch_size.
            skip_errors: an input that cannot be read comes back as an Unreadable in its place
                (the others are scored as they would be alone) instead of raising a DataError.
        """
        return list(self.iter_predict(inputs, with_levels=with_levels, batch_size=batch_size, skip_errors=skip_errors))

    def iter_predict(
        self,
        inputs: Input | Sequence[Input],
        *,
        with_levels: bool = False,
        batch_size: int | None = None,
        skip_errors: bool = False,
    ) -> Iterator[Prediction | Unreadable]:
        """predict's results one at a time, as each batch is scored: for many or large images,
        only a batch's maps are held at once (predict keeps them all). The inputs are checked here,
        before the first result is asked for (without skip_errors, every file's header too)."""
        check_batch_size(batch_size)
        items = _as_list(inputs)
        if not skip_errors:
            check_readable([x for x in items if isinstance(x, Path)])
        scored = self.scored_items(items, with_levels=with_levels, batch_size=batch_size, skip_errors=skip_errors)
        return (result for _, result in scored)

    def scored_items(
        self,
        items: Sequence[Image.Image | torch.Tensor | Path],
        *,
        with_levels: bool,
        batch_size: int | None = None,
        skip_errors: bool = False,
    ) -> Iterator[tuple[Image.Image | None, Prediction | Unreadable]]:
        """Each item as read (RGB) with its prediction, in input order, batch_size (None:
        self.batch_size) at a time, so that a caller can draw on the image without reading it again.
        With skip_errors a batch that fails is scored again item by item, and an item that fails
        alone comes back as (None, Unreadable)."""
        batch_size = self.batch_size if batch_size is None else batch_size
        for start in range(0, len(items), batch_size):
            yield from self._scored_chunk(
                list(enumerate(items[start : start + batch_size], start)), with_levels, skip_errors
            )

    def _scored_chunk(
        self, chunk: list[tuple[int, Image.Image | torch.Tensor | Path]], with_levels: bool, skip: bool
    ) -> Iterator[tuple[Image.Image | None, Prediction | Unreadable]]:
        """One forward pass over (position, item) pairs; see scored_items."""
        try:
            images = [_to_rgb(item, i) for i, item in chunk]
            names = [_name(item, i) for i, item in chunk]
            paths = [item if isinstance(item, Path) else None for _, item in chunk]
            preds = self.score_images(images, names, with_levels=with_levels, paths=paths)
        except DataError as error:
            if not skip:
                raise
            if len(chunk) == 1:
                index, item = chunk[0]
                yield None, Unreadable(_name(item, index), str(error), item if isinstance(item, Path) else None)
                return
            for one in chunk:
                yield from self._scored_chunk([one], with_levels, skip)
            return
        yield from zip(images, preds, strict=True)

    def score_images(
        self,
        images: Sequence[Image.Image],
        names: Sequence[str],
        *,
        with_levels: bool = False,
        paths: Sequence[Path | None] | None = None,
    ) -> list[Prediction]:
        """One forward pass over RGB PIL images of any sizes; maps come back at each image's size."""
        prep, detector = self.run.prep, self.run.detector
        tensors = [image_to_tensor(im, prep.image_size, prep.normalize, prep.mean, prep.std) for im in images]
        batch = torch.stack(tensors)  # (B, 3, S, S)
        scores = detector.score(batch, with_levels=with_levels)  # maps (B, S, S), levels (B, L, S, S)
        paths = paths or [None] * len(images)
        levels = scores.level_maps
        return [
            self.prediction(
                names[i],
                float(scores.image_score[i]),
                scores.anomaly_map[i],
                image.size,
                paths[i],
                None if levels is None else levels[i],
            )
            for i, image in enumerate(images)
        ]

    def prediction(
        self,
        name: str,
        score: float,
        amap: torch.Tensor,
        size: tuple[int, int],
        path: Path | None = None,
        level_maps: torch.Tensor | None = None,
    ) -> Prediction:
        """An image's Prediction from its model-size map (S, S) (and level maps (L, S, S)), resized to
        its own size = (W, H) and thresholded by the calibration."""
        cal = self.calibration
        w, h = size
        full = resize_maps(amap, (h, w))  # (H, W)
        levels = None if level_maps is None else resize_maps(level_maps, (h, w))  # (L, H, W)
        return Prediction(
            name,
            score,
            cal.image_threshold,
            score >= cal.image_threshold,
            full,
            cal.pixel_threshold,
            full >= cal.pixel_threshold,
            levels,
            path,
        )


def _test_calibration(run: TrainedRun) -> Calibration:
    """A `paper` run's test-set calibration, which `clipmpcad test` stores in metrics.json."""
    if get_protocol(run.config.protocol).calibration != "test":
        raise CheckpointError(f"{run.run_dir / 'model.pt'} holds no calibration; train the run again")
    path = run.run_dir / "metrics.json"
    record = read_json(path) if path.is_file() else {}
    saved = record.get("calibration") if isinstance(record, dict) else None
    if not saved:
        raise ConfigError(
            f"{run.run_dir} has no calibration in model.pt: a `{run.config.protocol}` run is calibrated on its "
            f"test set; run `clipmpcad test {run.run_dir}` first (it stores the calibration in metrics.json)"
        )
    return Calibration.from_dict(saved)


def _as_list(inputs: Input | Sequence[Input]) -> list[Image.Image | torch.Tensor | Path]:
    """The inputs one by one; anything but PIL images, paths and tensors is a DataError (a numpy
    array above all: its channel order cannot be known), and so is nothing at all."""
    if isinstance(inputs, torch.Tensor):
        items = list(inputs) if inputs.ndim == 4 else [inputs]
    elif isinstance(inputs, (Image.Image, str, Path)):
        items = [inputs]
    elif isinstance(inputs, np.ndarray):
        raise DataError(
            "predict takes no numpy arrays (their channel order is unknown): pass Image.fromarray(array) "
            "for an 8-bit (H, W, 3) array, or a float tensor (3, H, W) in [0, 1]"
        )
    elif isinstance(inputs, Iterable) and not isinstance(inputs, (bytes, bytearray)):
        items = list(inputs)  # a list, a tuple, a generator such as Path.glob's
    else:
        raise DataError(f"predict takes a PIL image, a path, a tensor or a list of them, not a {type(inputs).__name__}")
    if not items:
        raise DataError("no input images to predict")
    for i, item in enumerate(items):
        if not isinstance(item, (Image.Image, torch.Tensor, str, Path)):
            raise DataError(f"input {i} is a {type(item).__name__}; predict takes PIL images, paths or tensors")
    return [Path(item) if isinstance(item, str) else item for item in items]


def _to_rgb(item: Image.Image | torch.Tensor | Path, index: int) -> Image.Image:
    if isinstance(item, Path):
        return read_image(item)
    if isinstance(item, Image.Image):  # as a file of it would be read: EXIF, bit depth, alpha
        return to_rgb(ImageOps.exif_transpose(item), _name(item, index))
    return tensor_to_image(item, f"input {index}")


def _name(item: Image.Image | torch.Tensor | Path, index: int) -> str:
    if isinstance(item, Path):
        return item.name
    filename = getattr(item, "filename", "") if isinstance(item, Image.Image) else ""
    return Path(filename).name if filename else f"image_{index}"


def tensor_to_image(x: torch.Tensor, where: str) -> Image.Image:
    """(3, H, W) float RGB in [0, 1] → 8-bit RGB PIL image, rounded as an 8-bit file would store it;
    a grey image (1, H, W) or (H, W) gets its one channel three times, as a grey file is read."""
    if x.ndim == 2 or (x.ndim == 3 and x.shape[0] == 1):
        x = x.reshape(1, *x.shape[-2:]).expand(3, -1, -1)
    if x.ndim != 3 or x.shape[0] != 3 or 0 in x.shape or not x.is_floating_point():
        raise DataError(
            f"{where}: expected a float tensor (3, H, W) of RGB, or (1, H, W) or (H, W) of grey, in [0, 1], "
            f"got {x.dtype} {tuple(x.shape)}"
        )
    x = x.detach()
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= -1e-6 and hi <= 1.0 + 1e-6):  # also catches NaN
        raise DataError(
            f"{where}: values span [{lo:.4g}, {hi:.4g}]; pass unnormalised RGB in [0, 1] "
            "(the predictor resizes and normalises as the run did)"
        )
    array = (x.detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0)  # (H, W, 3)
    return Image.fromarray(array.numpy())


def without_earlier_predictions(folder: Path, paths: Sequence[Path]) -> list[Path]:
    """`paths` found under `folder`, less those in sub-folders holding a predictions.csv: the
    outputs of an earlier `predict` into a folder below the one scored are not inputs (a warning
    names the folders left out)."""
    marked = functools.cache(lambda sub: (sub / CSV_NAME).is_file())  # each folder looked at once
    kept, skipped = [], set()
    for path in paths:
        parts = path.parent.relative_to(folder).parts  # the sub-folders between `folder` and the file
        below = [folder.joinpath(*parts[:depth]) for depth in range(1, len(parts) + 1)]
        found = next((p for p in below if marked(p)), None)
        if found is None:
            kept.append(path)
        else:
            skipped.add(found)
    if skipped:
        names = sorted(p.relative_to(folder).as_posix() + "/" for p in skipped)
        warnings.warn(
            f"{folder}: left out earlier prediction folders (they hold {CSV_NAME}): {', '.join(names)}", stacklevel=2
        )
    return kept


def check_readable(paths: Sequence[Path]) -> None:
    """Read every file's header; the first that is missing or no image raises a DataError naming it."""
    for path in paths:
        image_size(path)


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output name stems, unique even on case-insensitive file systems: the first file of a stem keeps
    it, later ones get _2, _3, … in input order, skipping any stem that another input has."""
    stems = [short_stem(p.stem) for p in paths]
    reserved = {stem.casefold() for stem in stems}
    used: set[str] = set()
    names = []
    for stem in stems:
        name, n = stem, 1
        while name.casefold() in used or (n > 1 and name.casefold() in reserved):
            n += 1
            name = f"{stem}_{n}"
        used.add(name.casefold())
        names.append(name)
    return names


STEM_BYTES = 150  # an output name is its stem and up to ~30 bytes more; file systems allow 255


def short_stem(stem: str) -> str:
    """`stem`, or a cut of it with a hash of the whole where its bytes pass STEM_BYTES."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= STEM_BYTES:
        return stem
    cut = raw[: STEM_BYTES - 9].decode("utf-8", "ignore")  # whole characters only
    return f"{cut}~{hashlib.sha1(raw).hexdigest()[:8]}"


def predict_to_folder(  # noqa: PLR0913 - the `predict` verb's options, one keyword each
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    save_maps: str | None = None,
    save_levels: bool = False,
    sigma: float | None = None,
    overwrite: bool = False,
    batch_size: int | None = None,
    progress: bool = True,
    skip_errors: bool = False,
) -> Path:
    """Score image files into `out`; returns the path of its predictions.csv.

    Per image (names from unique_stems): <stem>_overlay.png (heatmap and predicted-mask outline,
    drawn as in the report), <stem>_mask.png (0/255), and on request the map (save_maps "npy":
    <stem>_map.npy float32; "png16": <stem>_map.png, 16-bit over the map's own range, kept in its
    text chunks) and the level maps (save_levels: <stem>_levels.npy (L, H, W) or <stem>_level<l>.png).
    sigma smooths the overlays only (pixels; None: the run's eval.sigma); batch_size None: the
    predictor's (the run's test batch on its device). Options, every input's
    header and the folder are checked before any scoring; the folder is built aside and moved into
    place when complete, so a failure leaves nothing behind. `overwrite` replaces an earlier
    prediction folder (one holding predictions.csv) as a whole. skip_errors: a file that cannot be
    read gets a row with its `error` instead of stopping the run (count them with `failed_rows`).
    """
    check_options(save_maps, save_levels, sigma, batch_size)
    paths, out = list(dict.fromkeys(Path(p) for p in inputs)), Path(out)  # a file named twice: scored once
    if not paths:
        raise DataError("no input images to predict")
    check_output_folder(out, overwrite, what="prediction", markers=(CSV_NAME,), inputs=paths)
    errors = _header_errors(paths, skip_errors)
    names = dict(zip(paths, unique_stems(paths), strict=True))
    sigma = predictor.run.config.eval.sigma if sigma is None else sigma
    rows = {path: _error_row(path, names[path], error) for path, error in errors.items()}
    readable = [p for p in paths if p not in errors]
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress, leave=False)
    bar.update(len(errors))
    # checked above; another process writing `out` now stops this one before any scoring
    with sole_writer(out), staged_folder(out, last=(CSV_NAME,), replace=overwrite) as stage:
        scored = predictor.scored_items(
            readable, with_levels=save_levels, batch_size=batch_size, skip_errors=skip_errors
        )
        for path, (image, result) in zip(readable, scored, strict=True):
            if isinstance(result, Unreadable):  # the file failed while decoding
                rows[path] = _error_row(path, names[path], result.error)
            else:
                files = write_outputs(stage, names[path], np.asarray(image), result, save_maps, sigma)
                rows[path] = _csv_row(predictor, result, names[path], files)
            bar.update(1)
        # file names that are not UTF-8 (the system's bytes) go back into the CSV as those bytes
        text = _csv_text([rows[p] for p in paths])
        write_bytes(stage / CSV_NAME, text.encode("utf-8", "surrogateescape"))
    bar.close()
    return out / CSV_NAME


def failed_rows(csv_path: str | Path) -> int:
    """Rows of a predictions.csv whose file could not be read (predict_to_folder's skip_errors)."""
    with open(csv_path, encoding="utf-8", errors="surrogateescape", newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if row.get("error"))


def _header_errors(paths: Sequence[Path], skip: bool) -> dict[Path, str]:
    """Each file's header read before any scoring: the first bad one raises, or with `skip` every
    bad one is kept with its reason."""
    if not skip:
        check_readable(paths)
        return {}
    errors = {}
    for path in paths:
        try:
            image_size(path)
        except DataError as error:
            errors[path] = str(error)
    return errors


def _error_row(path: Path, name: str, error: str) -> dict[str, Any]:
    return {"file": str(path), "name": name, "error": error}


def check_options(save_maps: str | None, save_levels: bool, sigma: float | None, batch_size: int | None) -> None:
    """predict_to_folder's options, checked before any work."""
    if save_maps not in (None, *MAP_FORMATS):
        raise ConfigError(f"unknown map format {save_maps!r}; choose one of {', '.join(MAP_FORMATS)}")
    if save_levels and save_maps is None:
        raise ConfigError("saving level maps needs a map format: give save_maps (--save-maps npy or png16)")
    if sigma is not None and not 0 <= sigma < math.inf:
        raise ConfigError(f"sigma must be a finite number ≥ 0, got {sigma}")
    check_batch_size(batch_size)


def check_batch_size(batch_size: int | None) -> None:
    """None (the predictor's) or an integer ≥ 1; else a ConfigError."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")


def write_outputs(
    folder: Path, name: str, image: np.ndarray, pred: Prediction, save_maps: str | None, sigma: float
) -> dict[str, str]:
    """Write one image's files into `folder`; returns their names by CSV column ("" when not written)."""
    from .report.figures import DISPLAY_RANGE, RED, draw_contour, heatmap_overlay, save_png  # local: matplotlib

    overlay = heatmap_overlay(image, pred.anomaly_map, *DISPLAY_RANGE, sigma=sigma)  # as the report
    files = {"overlay": f"{name}_overlay.png", "mask": f"{name}_mask.png", "map": "", "levels": ""}
    save_png(draw_contour(overlay, pred.mask, RED, thickness=2), folder / files["overlay"])
    save_png(pred.mask.astype(np.uint8) * 255, folder / files["mask"])
    if save_maps is not None:
        files["map"] = _save_map(folder / f"{name}_map", pred.anomaly_map, save_maps)
    if pred.level_maps is not None and save_maps == "npy":
        files["levels"] = _save_map(folder / f"{name}_levels", pred.level_maps, "npy")
    elif pred.level_maps is not None and save_maps == "png16":
        saved = [_save_map(folder / f"{name}_level{i + 1}", m, "png16") for i, m in enumerate(pred.level_maps)]
        files["levels"] = ";".join(saved)
    return files


def _save_map(stem: Path, values: np.ndarray, fmt: str) -> str:
    """float32 .npy, or a 16-bit .png spanning this map's own [min, max] (kept in its text chunks)."""
    from .report.figures import anomaly_map_to_png16

    if fmt == "npy":
        buffer = io.BytesIO()
        np.save(buffer, values.astype(np.float32))
        path = write_bytes(stem.with_name(stem.name + ".npy"), buffer.getvalue())
    else:
        data = anomaly_map_to_png16(values, float(values.min()), float(values.max()))
        path = write_bytes(stem.with_name(stem.name + ".png"), data)
    return path.name


def _csv_row(predictor: Predictor, pred: Prediction, name: str, files: dict[str, str]) -> dict[str, Any]:
    blank = "" if predictor.image_fpr is None else predictor.image_fpr
    return {
        "file": str(pred.path),
        "name": name,
        "score": pred.score,
        "threshold": pred.threshold,
        "anomalous": pred.anomalous,
        "image_fpr": blank,
        "pixel_threshold": pred.pixel_threshold,
        "pixel_fpr": "" if predictor.pixel_fpr is None else predictor.pixel_fpr,
        "anomalous_area_fraction": pred.anomalous_area_fraction,
        "calibration": predictor.calibration.source,
        "test_selected": predictor.test_selected,
        **files,
        "threshold_from": "user" if predictor.user[0] else "calibration",
        "pixel_threshold_from": "user" if predictor.user[1] else "calibration",
    }


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
