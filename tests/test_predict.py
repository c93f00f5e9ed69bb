"""Predictor and predict_to_folder on tiny trained runs: inputs, sizes, decisions, files, thresholds."""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipmpcad import experiment
from clipmpcad.cli import main
from clipmpcad.config import RunConfig
from clipmpcad.data.dataset import image_to_tensor
from clipmpcad.data.synthetic import generate_benchmark
from clipmpcad.errors import ConfigError, DataError
from clipmpcad.predict import Predictor, check_options, predict_to_folder, unique_stems
from clipmpcad.report import png16_to_anomaly_map
from clipmpcad.scoring import Calibration, Scale, quantile_table, upper_quantile


def _train(bench, index: int, out: Path, protocol: str = "clean", views: int = 11) -> Path:
    s = bench.sets[index]
    cfg = RunConfig.from_dict(
        {
            "protocol": protocol,
            "data": {"dataset": s.dataset, "root": str(s.root), "category": s.category, "shot": 2},
            "backbone": {"model": "clipmpcad-tiny", "weights": "random", "image_size": 64},
            "train": {"epochs": 1, "views": views},
        }
    )
    return experiment.train_run(cfg, out, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_benchmark(tmp_path_factory.mktemp("predict") / "data", seed=0)


@pytest.fixture(scope="module")
def brain_run(bench, tmp_path_factory) -> Path:  # SynthBrain: a dataset with masks
    return _train(bench, 0, tmp_path_factory.mktemp("runs") / "brain")


@pytest.fixture(scope="module")
def predictor(brain_run) -> Predictor:
    return Predictor.from_run(brain_run, device="cpu")


@pytest.fixture(scope="module")
def brain_images(bench) -> list[Path]:
    root = bench.sets[0].root / "SynthBrain_AD" / "test"
    return sorted((root / "good" / "img").glob("*.png"))[:3] + sorted((root / "Ungood" / "img").glob("*.png"))[:4]


@pytest.fixture(scope="module")
def odd_images(brain_images, tmp_path_factory) -> list[Path]:
    """Non-square images of odd sizes (W, H), larger and smaller than the model's 64 px."""
    folder = tmp_path_factory.mktemp("odd")
    paths = []
    for path, size in zip(brain_images[-3:], [(97, 67), (71, 129), (45, 23)], strict=True):
        paths.append(folder / f"odd_{size[0]}x{size[1]}.png")
        Image.open(path).convert("RGB").resize(size, Image.Resampling.BILINEAR).save(paths[-1])
    return paths


def _scores(predictions) -> np.ndarray:
    return np.array([p.score for p in predictions])


def test_pil_path_and_tensor_inputs_give_the_same_predictions(predictor, brain_images):
    by_path = predictor.predict(brain_images)
    pils = [Image.open(p) for p in brain_images]
    by_pil = predictor.predict(pils)
    tensors = [torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1) for im in pils]
    by_list = predictor.predict(tensors)
    by_batch = predictor.predict(torch.stack(tensors))  # (B, 3, H, W)
    by_one = [predictor.predict(str(p))[0] for p in brain_images[:2]]
    for other in (by_pil, by_list, by_batch):
        np.testing.assert_allclose(_scores(other), _scores(by_path), rtol=0, atol=1e-6)
        np.testing.assert_allclose(other[-1].anomaly_map, by_path[-1].anomaly_map, rtol=0, atol=1e-6)
    np.testing.assert_allclose(_scores(by_one), _scores(by_path[:2]), rtol=0, atol=1e-6)
    assert [p.name for p in by_pil] == [p.name for p in by_path] == [p.name for p in brain_images]
    assert [p.name for p in by_batch] == [f"image_{i}" for i in range(len(brain_images))]
    assert by_path[0].path == brain_images[0] and by_batch[0].path is None


def test_a_pil_image_is_read_as_its_file_alpha_depth_and_orientation_included(predictor, brain_images, tmp_path):
    gray = np.asarray(Image.open(brain_images[-1]).convert("L"))
    rgba = Image.open(brain_images[-1]).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))))
    deep = Image.fromarray(gray.astype(np.uint16) * 16)  # 12 bits in a 16-bit file, as scanners store them
    turned = Image.open(brain_images[-1]).convert("RGB").resize((64, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    files = [tmp_path / "alpha.png", tmp_path / "deep.png", tmp_path / "turned.jpg"]
    rgba.save(files[0])
    deep.save(files[1])
    turned.save(files[2], exif=exif, quality=95)
    by_file = predictor.predict(files)
    by_pil = predictor.predict([Image.open(f) for f in files])
    np.testing.assert_allclose(_scores(by_pil), _scores(by_file), rtol=0, atol=1e-6)
    assert by_pil[2].anomaly_map.shape == by_file[2].anomaly_map.shape == (64, 40)  # displayed upright


def test_inputs_that_are_not_images_are_data_errors(predictor, brain_images):
    with pytest.raises(DataError, match="no numpy arrays"):
        predictor.predict(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="input 0 is a NoneType"):
        predictor.predict([None])
    with pytest.raises(DataError, match="not a NoneType"):
        predictor.predict(None)
    with pytest.raises(DataError, match="no input images"):
        predictor.predict([])
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        predictor.predict(brain_images[:1], batch_size=2.5)
    assert len(predictor.predict(p for p in brain_images[:2])) == 2  # a generator, e.g. Path.glob's


def test_iter_predict_yields_predicts_results_one_batch_at_a_time(predictor, brain_images):
    with pytest.raises(DataError, match=r"nowhere\.png"):  # checked when called, not at the first result
        predictor.iter_predict([brain_images[0], Path("nowhere.png")])
    stream = predictor.iter_predict(brain_images, batch_size=2)
    first = next(stream)  # the first result comes before the later batches are scored
    rest = list(stream)
    whole = predictor.predict(brain_images, batch_size=2)
    assert [p.name for p in [first, *rest]] == [p.name for p in whole]
    for a, b in zip([first, *rest], whole, strict=True):
        assert a.score == b.score and np.array_equal(a.anomaly_map, b.anomaly_map)


def test_results_do_not_depend_on_batch_size(predictor, brain_images, odd_images):
    inputs = brain_images + odd_images
    runs = [predictor.predict(inputs, batch_size=b, with_levels=True) for b in (1, 3, 16)]
    for other in runs[1:]:
        np.testing.assert_allclose(_scores(other), _scores(runs[0]), rtol=0, atol=1e-5)
        for a, b in zip(runs[0], other, strict=True):
            np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=1e-5)
            np.testing.assert_allclose(a.level_maps, b.level_maps, rtol=0, atol=1e-5)
    assert len(set(np.round(_scores(runs[0]), 5))) > 1  # distinct images, distinct scores


def test_maps_come_back_at_the_original_odd_non_square_size(predictor, odd_images):
    for path, pred in zip(odd_images, predictor.predict(odd_images, with_levels=True), strict=True):
        w, h = Image.open(path).size
        assert pred.anomaly_map.shape == (h, w) and pred.anomaly_map.dtype == np.float32
        assert pred.mask.shape == (h, w) and pred.mask.dtype == np.bool_
        assert pred.level_maps.shape[1:] == (h, w) and pred.level_maps.shape[0] == 4
        run = predictor.run
        if min(w, h) < run.prep.image_size:  # PIL shrinks with antialiasing; the report's resize does not
            continue
        # independent resize: PIL's bilinear on the model's own S×S map
        x = image_to_tensor(Image.open(path), run.prep.image_size, run.prep.normalize, run.prep.mean, run.prep.std)
        small = run.detector.score(x[None]).anomaly_map[0].float().numpy()
        expected = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(pred.anomaly_map, expected, rtol=0, atol=1e-4)
        assert pred.anomaly_map.max() <= pred.score + 1e-6  # masks: the score is the S×S map's max


def test_decision_is_score_at_or_above_the_threshold(predictor, brain_images):
    preds = predictor.predict(brain_images)
    for p in preds:
        assert p.anomalous == (p.score >= p.threshold) and p.threshold == predictor.threshold
        np.testing.assert_array_equal(p.mask, p.anomaly_map >= predictor.pixel_threshold)
    chosen = predictor.predict(brain_images[3])[0]  # alone, as below: other batches differ by float noise
    original = predictor.run.detector.calibration
    try:  # a threshold equal to a score calls that image anomalous; the next float up does not
        for threshold, expected in ((chosen.score, True), (float(np.nextafter(chosen.score, 2.0)), False)):
            predictor.run.detector.calibration = dataclasses.replace(original, image_threshold=threshold)
            assert predictor.predict(brain_images[3])[0].anomalous is expected
    finally:
        predictor.run.detector.calibration = original


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_folder_outputs_have_the_expected_names_and_rows(predictor, brain_images, odd_images, tmp_path):
    inputs = brain_images[:2] + odd_images
    out = tmp_path / "pred"
    csv_path = predict_to_folder(
        predictor, inputs, out, save_maps="npy", save_levels=True, batch_size=3, progress=False
    )
    assert csv_path == out / "predictions.csv"
    stems = [p.stem for p in inputs]
    expected = {"predictions.csv"} | {
        f"{s}_{kind}" for s in stems for kind in ("overlay.png", "mask.png", "map.npy", "levels.npy")
    }
    assert {p.name for p in out.iterdir()} == expected
    rows = _read_csv(csv_path)
    preds = predictor.predict(inputs, with_levels=True)
    assert [r["file"] for r in rows] == [str(p) for p in inputs] and [r["name"] for r in rows] == stems
    for row, pred, stem in zip(rows, preds, stems, strict=True):
        assert float(row["score"]) == pytest.approx(pred.score, abs=1e-6)
        assert row["anomalous"] == str(pred.anomalous) and float(row["threshold"]) == predictor.threshold
        assert float(row["image_fpr"]) == 0.05 and row["calibration"] == "reference" and row["test_selected"] == "False"
        assert (row["overlay"], row["mask"], row["map"], row["levels"]) == (
            f"{stem}_overlay.png",
            f"{stem}_mask.png",
            f"{stem}_map.npy",
            f"{stem}_levels.npy",
        )
        mask = np.asarray(Image.open(out / row["mask"]))
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, pred.mask)
        assert float(row["anomalous_area_fraction"]) == pytest.approx(pred.mask.mean())
        np.testing.assert_allclose(np.load(out / row["map"]), pred.anomaly_map, rtol=0, atol=1e-5)
        np.testing.assert_allclose(np.load(out / row["levels"]), pred.level_maps, rtol=0, atol=1e-5)
        overlay = np.asarray(Image.open(out / row["overlay"]))
        assert overlay.shape == (*pred.anomaly_map.shape, 3)
        if pred.mask.any():  # the predicted outline is drawn in red, as in the report
            assert (overlay[pred.mask] == (255, 0, 0)).all(axis=1).any()


def test_png16_maps_round_trip_within_quantisation(predictor, odd_images, tmp_path):
    out = tmp_path / "pred16"
    predict_to_folder(predictor, odd_images, out, save_maps="png16", save_levels=True, progress=False)
    rows = _read_csv(out / "predictions.csv")
    for row, pred in zip(rows, predictor.predict(odd_images, with_levels=True), strict=True):
        amap = pred.anomaly_map
        decoded = png16_to_anomaly_map((out / row["map"]).read_bytes())
        step = (amap.max() - amap.min()) / 65535
        np.testing.assert_allclose(decoded, amap, rtol=0, atol=step / 2 + 1e-6)
        levels = row["levels"].split(";")
        assert levels == [f"{Path(row['file']).stem}_level{i}.png" for i in range(1, 5)]
        first = png16_to_anomaly_map((out / levels[0]).read_bytes())
        np.testing.assert_allclose(first, pred.level_maps[0], rtol=0, atol=1 / 65535 + 1e-6)


def test_an_existing_folder_is_refused_and_left_alone(predictor, brain_images, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"busy exists and is not empty.*--overwrite"):
        predict_to_folder(predictor, brain_images[:1], out, progress=False)
    with pytest.raises(ConfigError, match=r"busy holds no predictions.csv"):
        predict_to_folder(predictor, brain_images[:1], out, overwrite=True, progress=False)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_an_earlier_prediction_folder_but_never_its_inputs(predictor, brain_images, tmp_path):
    out = tmp_path / "again"
    predict_to_folder(predictor, brain_images[:2], out, progress=False)
    predict_to_folder(predictor, brain_images[2:3], out, overwrite=True, progress=False)
    assert len(_read_csv(out / "predictions.csv")) == 1
    assert not (out / f"{brain_images[0].stem}_overlay.png").exists()  # nothing stale is left
    inside = out / "mine.png"
    Image.open(brain_images[0]).save(inside)
    with pytest.raises(ConfigError, match=r"mine.png lies in .*again"):
        predict_to_folder(predictor, [inside], out, overwrite=True, progress=False)
    assert inside.is_file()


def test_unique_stems_are_deterministic_and_case_insensitive():
    paths = [Path("a/x.png"), Path("b/x.png"), Path("c/x_2.jpg"), Path("d/X.tif"), Path("e/y.png")]
    assert unique_stems(paths) == ["x", "x_3", "x_2", "X_4", "y"]
    assert unique_stems(paths) == unique_stems(list(paths))


def test_long_names_are_cut_with_a_hash_and_stay_apart():
    long = "肺" * 100  # 300 bytes in UTF-8: with "_overlay.png" more than a file name may hold
    names = unique_stems([Path(f"{long}a.png"), Path(f"{long}b.png"), Path("short.png")])
    assert all(len(n.encode()) <= 150 for n in names) and len(set(names)) == 3 and names[2] == "short"
    assert names[0].startswith("肺" * 47) and names[0] != names[1]


def test_names_that_are_not_utf8_and_long_names_are_written(predictor, brain_images, tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")  # bytes this system cannot decode as UTF-8
    odd.write_bytes(brain_images[0].read_bytes())
    long = tmp_path / ("肺" * 78 + ".png")  # 238 bytes: fits, but not with "_overlay.png" and a temporary name
    long.write_bytes(brain_images[1].read_bytes())
    out = tmp_path / "out"
    csv_path = predict_to_folder(predictor, [odd, long], out, progress=False)
    assert os.fsencode(odd) in csv_path.read_bytes()  # the file's own bytes, as the file system has them
    assert len(list(out.glob("*_overlay.png"))) == 2


def test_a_recursive_folder_leaves_out_earlier_predictions_and_names_links(brain_images, tmp_path):
    from clipmpcad.data.folder import list_images
    from clipmpcad.predict import without_earlier_predictions

    root = tmp_path / "scans"
    for name in ("a.png", "sub/b.png", "out/a_overlay.png", "out/deep/c.png", "elsewhere/d.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(brain_images[0].read_bytes())
    (root / "out" / "predictions.csv").write_text("file\n")
    (root / "linked").symlink_to(root / "elsewhere")
    with pytest.warns(
        UserWarning, match=r"scans: left out .* 1 linked sub-folder\(s\), which are not followed \(linked/\)"
    ):
        found = list_images(root, recursive=True)
    with pytest.warns(UserWarning, match=r"scans: left out earlier prediction folders .*: out/$"):
        kept = without_earlier_predictions(root, found)
    assert [p.relative_to(root).as_posix() for p in kept] == ["a.png", "elsewhere/d.png", "sub/b.png"]


def test_same_stems_from_two_folders_do_not_overwrite_each_other(predictor, brain_images, tmp_path):
    first, second = tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png"
    for source, target in ((brain_images[0], first), (brain_images[-1], second)):
        target.parent.mkdir()
        target.write_bytes(source.read_bytes())
    out = tmp_path / "dups"
    rows = _read_csv(predict_to_folder(predictor, [first, second], out, save_maps="npy", progress=False))
    assert [r["name"] for r in rows] == ["scan", "scan_2"]
    preds = predictor.predict([first, second])
    assert preds[0].score != preds[1].score  # different images, so a clash would show
    for row, pred in zip(rows, preds, strict=True):
        np.testing.assert_allclose(np.load(out / row["map"]), pred.anomaly_map, rtol=0, atol=1e-5)


def test_a_bad_file_is_named_and_nothing_is_written(predictor, brain_images, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    out = tmp_path / "never"
    with pytest.raises(DataError, match=r"junk\.png"):
        predict_to_folder(predictor, [*brain_images[:2], junk], out, progress=False)
    with pytest.raises(DataError, match=r"junk\.png"):
        predictor.predict([brain_images[0], junk])
    truncated = tmp_path / "cut.png"  # a good header: caught only while decoding, mid-run
    truncated.write_bytes(brain_images[0].read_bytes()[:300])
    with pytest.raises(DataError, match=r"cut\.png"):
        predict_to_folder(predictor, [*brain_images, truncated], out, batch_size=2, progress=False)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.png", "junk.png"]  # no partial folder either


def test_skip_errors_keeps_the_good_files_and_names_the_bad_ones(predictor, brain_images, tmp_path):
    from clipmpcad.predict import failed_rows

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")  # fails on its header, before scoring
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(brain_images[0].read_bytes()[:300])  # fails only while decoding, mid-batch
    inputs = [brain_images[0], junk, *brain_images[1:4], truncated, brain_images[4]]
    out = tmp_path / "kept"
    csv_path = predict_to_folder(predictor, inputs, out, batch_size=3, skip_errors=True, progress=False)
    rows = _read_csv(csv_path)
    assert [r["file"] for r in rows] == [str(p) for p in inputs]  # every input, in input order
    bad = {r["name"]: r["error"] for r in rows if r["error"]}
    assert set(bad) == {"junk", "cut"} and "junk.png" in bad["junk"] and "cut.png" in bad["cut"]
    assert failed_rows(csv_path) == 2 and all(r["score"] == "" for r in rows if r["error"])
    good = [p for p in inputs if p not in (junk, truncated)]
    alone = predictor.predict(good)
    scored = [r for r in rows if not r["error"]]
    np.testing.assert_allclose([float(r["score"]) for r in scored], [p.score for p in alone], rtol=1e-5, atol=1e-6)
    assert len(list(out.glob("*_overlay.png"))) == len(good)
    assert main(["predict", str(predictor.run.run_dir), *map(str, inputs), "--out", str(tmp_path / "cli"),
                 "--skip-errors", "--quiet"]) == 1  # fmt: skip
    from clipmpcad import Unreadable

    results = predictor.predict([*inputs, torch.rand(2, 8, 8)], batch_size=3, skip_errors=True)  # the API alike
    failed = [r for r in results if isinstance(r, Unreadable)]
    assert [(r.name, r.path) for r in failed] == [("junk.png", junk), ("cut.png", truncated), ("image_7", None)]
    assert "junk.png" in failed[0].error and "expected a float tensor" in failed[2].error
    kept = [r.score for r in results if not isinstance(r, Unreadable)]
    np.testing.assert_allclose(kept, [p.score for p in alone], rtol=1e-5, atol=1e-6)
    with pytest.raises(DataError, match=r"junk\.png"):
        predictor.predict(inputs)  # without skip_errors: refused before any scoring


def test_bad_tensors_and_options_are_refused(predictor, tmp_path):
    with pytest.raises(DataError, match=r"input 0: values span .*\[0, 1\]"):
        predictor.predict(torch.full((3, 20, 30), -1.5))  # already normalised: refused
    with pytest.raises(DataError, match=r"input 1: expected a float tensor \(3, H, W\) of RGB, or \(1, H, W\)"):
        predictor.predict([torch.rand(3, 8, 8), torch.rand(2, 8, 8)])
    with pytest.raises(ConfigError, match="save_maps"):
        check_options(None, True, None, 16)
    with pytest.raises(ConfigError, match="npy, png16"):
        check_options("tiff", False, None, 16)
    with pytest.raises(ConfigError, match="sigma must be a finite number"):
        check_options(None, False, float("inf"), 16)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"would lie under .*file, which is a file"):
        predict_to_folder(predictor, [tmp_path / "file"], tmp_path / "file" / "out", progress=False)
    with pytest.raises(ConfigError, match="tiff"):  # checked before the folder is made
        predict_to_folder(predictor, [], tmp_path / "x", save_maps="tiff", progress=False)
    assert not (tmp_path / "x").exists()


def test_a_lower_image_fpr_gives_a_higher_threshold(brain_run, predictor):
    reference = np.asarray(predictor.calibration.reference_scores)
    assert reference.size == 2 * 11  # k = 2 normal shots × 11 views
    thresholds = []
    for fpr in (0.5, 0.2, 0.05, 0.01):
        p = Predictor.from_run(brain_run, device="cpu", image_fpr=fpr)
        assert p.image_fpr == fpr and (reference >= p.threshold).mean() <= fpr
        thresholds.append(p.threshold)
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]
    assert thresholds[2] == predictor.threshold  # 0.05 is the run's own eval.image_fpr
    loose = Predictor.from_run(brain_run, device="cpu", pixel_fpr=0.2)
    assert loose.pixel_threshold < predictor.pixel_threshold
    assert loose.user == (False, False) and loose.pixel_fpr == 0.2  # refitted: calibration's, not the user's
    with pytest.raises(ConfigError, match=r"brain: the image false-positive target must be in \(0, 1\)"):
        Predictor.from_run(brain_run, device="cpu", image_fpr=1.5)


def test_the_pixel_quantile_table_follows_upper_quantile(rng):
    pixels = rng.normal(size=20_000).astype(np.float32)
    cal = Calibration("reference", {}, 0.0, 0.0, 1, (0.0,), quantile_table(pixels))
    for fpr in (0.5, 0.05, 0.01, 0.001):  # on the table's levels: exactly the full-data rule
        assert cal.pixel_threshold_for(fpr) == upper_quantile(pixels, fpr)
    for fpr in rng.uniform(0.001, 0.3, size=20):  # between levels: at most fpr, within one step
        share = (pixels >= cal.pixel_threshold_for(fpr)).mean()
        assert fpr - 0.0011 <= share <= fpr
    with pytest.warns(
        UserWarning, match=r"cannot resolve a pixel false-positive target of 0.04% \(the finest is 0.1%\)"
    ):
        threshold = cal.pixel_threshold_for(0.0004)
    # above the highest pixel where maps are compared, in float32 (a float64 step rounds back there)
    assert not (pixels >= threshold).any() and not (torch.from_numpy(pixels) >= threshold).any()
    assert not (pixels >= upper_quantile(pixels, 1e-6)).any()


def test_a_target_finer_than_the_reference_scores_says_so(rng):
    scores = rng.normal(size=11)  # one shot's 11 views
    cal = Calibration("reference", {}, 0.0, 0.0, 1, tuple(scores), (0.0,))
    for fpr in (0.05, 0.095):
        with pytest.warns(UserWarning, match=r"11 reference scores cannot resolve .* \(the finest is 10\.0%\)"):
            assert cal.threshold_for(fpr) == np.nextafter(scores.max(), np.inf)  # above every reference score
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (scores >= cal.threshold_for(0.1)).sum() == 1  # 1/10 is resolved: no warning


def test_calibrations_without_reference_tables_load_but_cannot_move():
    old = {
        "source": "reference",
        "scales": {"zero_map": {"lo": 0.0, "hi": 1.0}},
        "image_threshold": 0.7,
        "pixel_threshold": 0.6,
        "n_reference": 2,
    }  # a checkpoint saved before the tables existed
    cal = Calibration.from_dict(old)
    assert cal.scales == {"zero_map": Scale(0.0, 1.0)} and cal.reference_scores == ()
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert "pixel_quantiles" not in cal.to_dict(tables=False)
    with pytest.raises(ConfigError, match="no normal reference image scores"):
        cal.threshold_for(0.1)


def test_a_constant_reference_statistic_is_shifted_not_blown_up():
    from clipmpcad.scoring import BranchMaps, RangeTracker

    tracker = RangeTracker()
    flat = torch.full((2, 4, 4), 0.3)
    tracker.add(BranchMaps(flat, flat + torch.linspace(0, 2, 16).view(1, 4, 4), None, None))
    with pytest.warns(UserWarning, match="zero_map was constant"):
        scales = tracker.scales()
    x = torch.tensor([0.3, 0.8])
    torch.testing.assert_close(scales["zero_map"].apply(x), torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(scales["few_map"].apply(x), (x - 0.3) / 2.0)  # a range is still a range


def test_a_paper_run_predicts_at_its_test_calibration_and_refuses_another_fpr(bench, tmp_path):
    run = _train(bench, 0, tmp_path / "paper", protocol="paper", views=1)
    with pytest.raises(ConfigError, match=r"run `clipmpcad test .*paper` first"):
        Predictor.from_run(run, device="cpu")
    experiment.test_run(run, device="cpu", progress=False, report=False)
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.calibration.source == "test" and predictor.test_selected and predictor.image_fpr is None
    image = next((bench.sets[0].root / "SynthBrain_AD/test/good/img").glob("*.png"))
    rows = _read_csv(predict_to_folder(predictor, [image], tmp_path / "out", progress=False))
    assert rows[0]["calibration"] == "test" and rows[0]["test_selected"] == "True" and rows[0]["image_fpr"] == ""
    with pytest.raises(ConfigError, match=r"`paper` run are fitted on its test set.*drop --image-fpr"):
        Predictor.from_run(run, device="cpu", image_fpr=0.1)
    assert Predictor.from_run(run, device="cpu", image_threshold=0.25).threshold == 0.25  # any run takes one


def test_thresholds_set_outright_decide_and_are_recorded(brain_run, predictor, brain_images, tmp_path):
    calibrated = predictor.predict(brain_images)
    scores = np.array([p.score for p in calibrated])
    middle = float(np.median(scores))
    pixel = float(np.median(calibrated[0].anomaly_map))
    mine = Predictor.from_run(brain_run, device="cpu", image_threshold=middle, pixel_threshold=pixel)
    preds = mine.predict(brain_images)
    assert [p.anomalous for p in preds] == [bool(s >= middle) for s in scores]  # scores unchanged, decisions moved
    assert np.array_equal(preds[0].mask, calibrated[0].anomaly_map >= pixel)
    rows = _read_csv(predict_to_folder(mine, brain_images[:1], tmp_path / "mine", progress=False))
    assert (rows[0]["threshold_from"], rows[0]["pixel_threshold_from"]) == ("user", "user")
    assert rows[0]["image_fpr"] == rows[0]["pixel_fpr"] == "" and float(rows[0]["threshold"]) == middle
    only_image = Predictor.from_run(brain_run, device="cpu", image_threshold=middle)
    assert only_image.user == (True, False) and only_image.pixel_fpr == 0.01 and only_image.image_fpr is None
    with pytest.raises(ConfigError, match="give the image threshold or its false-positive target, not both"):
        Predictor.from_run(brain_run, device="cpu", image_threshold=0.5, image_fpr=0.1)
    with pytest.raises(ConfigError, match="pixel threshold must be a finite number"):
        Predictor.from_run(brain_run, device="cpu", pixel_threshold=float("nan"))


def test_a_classification_only_run_maps_its_det_branch(bench, tmp_path):
    run = _train(bench, 1, tmp_path / "chest", views=1)  # SynthChest: no masks
    predictor = Predictor.from_run(run, device="cpu")
    assert not predictor.run.meta.has_masks and predictor.run.detector.map_branch == "det"
    root = bench.sets[1].root / "SynthChest_AD" / "test"
    images = sorted((root / "good" / "img").glob("*.png"))[:2] + sorted((root / "Ungood" / "img").glob("*.png"))[:2]
    preds = predictor.predict(images, with_levels=True)
    for p in preds:
        assert p.anomaly_map.shape == (128, 128) and np.isfinite(p.anomaly_map).all()
        assert p.anomalous == (p.score >= p.threshold)
    assert any(abs(p.score - float(p.anomaly_map.max())) > 1e-3 for p in preds)  # the det score, not the map's max
    rows = _read_csv(predict_to_folder(predictor, images, tmp_path / "out", progress=False))
    assert [r["anomalous"] for r in rows] == [str(p.anomalous) for p in preds]


def test_a_grey_tensor_scores_as_its_grey_file(predictor, tmp_path):
    grey = torch.rand(40, 52)
    path = tmp_path / "grey.png"
    Image.fromarray((grey * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
    want = predictor.predict(path)[0].score
    for x in (grey, grey[None], grey[None, None], grey.expand(3, -1, -1)):  # (H,W), (1,H,W), (B,1,H,W), RGB
        assert predictor.predict(x)[0].score == pytest.approx(want, abs=1e-6)


def test_a_threshold_stepped_in_float64_by_an_older_run_is_stepped_again_on_load(rng):
    pixels = rng.normal(size=5000).astype(np.float32)
    new = Calibration("reference", {}, 0.0, 0.0, 1, (0.0,), quantile_table(pixels))
    q = float(np.quantile(pixels.astype(np.float64), 0.99, method="higher"))
    old = {**new.to_dict(), "image_threshold": float(np.nextafter(q, np.inf)), "pixel_threshold": 0.25}
    assert (pixels >= old["image_threshold"]).sum() == (pixels >= q).sum()  # float32: the old step is lost
    loaded = Calibration.from_dict(old)
    assert loaded.image_threshold == upper_quantile(pixels, 0.01) and loaded.pixel_threshold == 0.25  # 0.25 as is
    assert (pixels >= loaded.image_threshold).sum() == (pixels > q).sum()
    assert Calibration.from_dict({**old, "source": "test"}).image_threshold == old["image_threshold"]
