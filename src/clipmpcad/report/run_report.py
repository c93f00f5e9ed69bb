"""The HTML report of one test run: the worst cases are scored again and drawn (METHOD §11)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.dataset import read_original_mask
from ..data.imageio import read_image
from ..data.sample import Sample
from ..decoder import resize_maps
from .html import Case, write_report, wrongness

if TYPE_CHECKING:  # import cycles: these modules import the report lazily
    from ..checkpoint import TrainedRun
    from ..config import RunConfig
    from ..evaluation import Evaluation

DISPLAY_RANGE = (0.0, 1.0)  # fused maps: 0–1 spans the normal references (clean) or the test set (paper)


def case_for(
    sample: Sample, amap: torch.Tensor, score: float, has_masks: bool, threshold: float, pixel_threshold: float
) -> Case:
    """One report case at the image's original size."""
    image = np.asarray(read_image(sample.image))
    return Case(
        name=sample.image.name,
        image=image,
        amap=resize_maps(amap, image.shape[:2]),
        gt_mask=read_original_mask(sample) if has_masks else None,
        label=int(sample.label),
        score=score,
        threshold=threshold,
        pixel_threshold=pixel_threshold,
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
    from ..evaluation import batches  # local: evaluation imports the detector

    cal = run.detector.calibration
    wrong = wrongness(result.labels, result.scores, cal.image_threshold)  # pick before drawing: maps are costly
    chosen = [samples[i] for i in np.argsort(-wrong, kind="stable")[:max_cases]]
    cases = []
    for batch in batches(chosen, run.prep, cfg.eval.batch_for(run.detector.device.type), 0):
        scores = run.detector.score(batch.images)
        for i, index in enumerate(batch.indices.tolist()):
            cases.append(
                case_for(
                    chosen[index],
                    scores.anomaly_map[i],
                    float(scores.image_score[i]),
                    run.meta.has_masks,
                    cal.image_threshold,
                    cal.pixel_threshold,
                )
            )
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
        sigma=cfg.eval.sigma or None,
    )
