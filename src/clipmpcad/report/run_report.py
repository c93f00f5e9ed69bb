"""The HTML report of one test run: the worst cases are scored again and drawn (METHOD §11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.dataset import read_original_mask
from ..data.sample import Sample
from .figures import DISPLAY_RANGE
from .html import Case, write_report, wrongness

if TYPE_CHECKING:  # import cycles: these modules import the report lazily
    from ..checkpoint import TrainedRun
    from ..config import RunConfig
    from ..evaluation import Evaluation
    from ..predict import Prediction


def case_for(sample: Sample, image: np.ndarray, pred: Prediction, has_masks: bool) -> Case:
    """One report case at the image's original size, from its prediction."""
    return Case(
        name=pred.name,
        image=image,
        amap=pred.anomaly_map,
        gt_mask=read_original_mask(sample) if has_masks else None,
        label=int(sample.label),
        score=pred.score,
        threshold=pred.threshold,
        pixel_threshold=pred.pixel_threshold,
        vmin=DISPLAY_RANGE[0],
        vmax=DISPLAY_RANGE[1],
    )


def write_run_report(
    run: TrainedRun,
    cfg: RunConfig,
    samples: Sequence[Sample],
    result: Evaluation,
    record: dict[str, Any],
    max_cases: int = 48,
) -> None:
    from ..predict import Predictor  # local: predict imports the report's figures lazily

    cal = run.detector.calibration
    wrong = wrongness(result.labels, result.scores, cal.image_threshold)  # pick before drawing: maps are costly
    chosen = [samples[i] for i in np.argsort(-wrong, kind="stable")[:max_cases]]
    predictor = Predictor(run, None, None)  # the run's own thresholds
    batch = cfg.eval.batch_for(run.detector.device.type)
    # each image read once: scored and drawn from the same copy
    scored = predictor.scored_batches([s.image for s in chosen], with_levels=False, batch_size=batch)
    pairs = (pair for part in scored for pair in part)
    cases = [
        case_for(sample, np.asarray(image), pred, run.meta.has_masks)
        for sample, (image, pred) in zip(chosen, pairs, strict=True)
    ]
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
