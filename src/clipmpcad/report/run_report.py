"""The HTML report of one test run: the worst cases, drawn from the maps the test pass kept (METHOD §11)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.dataset import read_original_mask
from ..data.imageio import read_image
from ..data.sample import Sample
from ..evaluation import REPORT_CASES
from ..metrics import report_picks, wrongness
from .figures import DISPLAY_RANGE
from .html import Case, write_report

if TYPE_CHECKING:  # import cycles: these modules import the report lazily
    from ..checkpoint import TrainedRun
    from ..config import RunConfig
    from ..evaluation import Evaluation
    from ..predict import Prediction


def case_for(
    sample: Sample, image: np.ndarray, pred: Prediction, has_masks: bool, outline: bool = True, root: Path | None = None
) -> Case:
    """One report case at the image's original size, from its prediction; outline: draw the
    predicted mask (not where the pixel threshold is only a placeholder). The case is named by
    its file's path below `root` (the dataset's), so a reader can find it; else by class and name."""
    name = f"{sample.defect}/{pred.name}"  # MVTec numbers each defect's images from 000: the class tells them apart
    if root is not None and sample.image.is_relative_to(root):
        name = sample.image.relative_to(root).as_posix()
    return Case(
        name=name,
        image=image,
        amap=pred.anomaly_map,
        gt_mask=read_original_mask(sample) if has_masks else None,
        label=int(sample.label),
        score=pred.score,
        threshold=pred.threshold,
        pixel_threshold=pred.pixel_threshold if outline else None,
        vmin=DISPLAY_RANGE[0],
        vmax=DISPLAY_RANGE[1],
    )


def write_run_report(
    run: TrainedRun,
    cfg: RunConfig,
    samples: Sequence[Sample],
    result: Evaluation,
    record: dict[str, Any],
    max_cases: int = REPORT_CASES,
) -> None:
    from ..predict import Predictor  # local: predict imports the report's figures lazily

    cal = run.detector.calibration
    # a test-set calibration without masks has no pixel threshold of its own (a 0.5 placeholder)
    outline = run.meta.has_masks or cal.source != "test"
    wrong = wrongness(result.labels, result.scores, cal.image_threshold)
    chosen = report_picks(result.labels, wrong, max_cases)  # picked before drawing: maps are costly
    predictor = Predictor(run, None, None)  # the run's own thresholds
    kept = result.worst_maps  # the maps the test pass kept (evaluation.WorstMaps): drawn as they are
    again = [i for i in chosen if i not in kept]  # the others are scored again, each image read once
    drawn = dict(zip(again, predictor.scored_items([samples[i].image for i in again], with_levels=False), strict=True))
    cases = []
    for i in chosen:
        sample = samples[i]
        if i in kept:
            image = read_image(sample.image)
            amap = torch.from_numpy(kept[i])
            pred = predictor.prediction(sample.image.name, float(result.scores[i]), amap, image.size, sample.image)
        else:
            image, pred = drawn[i]
        cases.append(case_for(sample, np.asarray(image), pred, run.meta.has_masks, outline, Path(cfg.data.root)))
    title = (
        f"{run.meta.dataset}/{run.meta.category}, {record['shot']}-shot, seed {record['seed']}, {record['protocol']}"
    )
    config = {**cfg.to_dict(), "test_selected": record["test_selected"], "backbone_info": record["backbone"]}
    write_report(
        run.run_dir / "report.html",
        title=title,
        config=config,
        metrics=record,
        curves={"image": result.curves.image, "pixel": result.curves.pixel},
        cases=cases,
        max_cases=max_cases,
        sigma=cfg.eval.sigma,
    )
