"""Exact AUROC, AP and F1-max of two score populations, ties merged, in bounded memory.

METHOD §11 and LANDSCAPE "Metrics done right". Every metric is read off the two classes' scores
sorted once (ascending), so pixel scores are never argsorted or copied to float64 as a whole:

- AUROC is the Mann–Whitney statistic P(s_anomalous > s_normal) + ½ P(equal), which is exactly the
  trapezoidal area under the ROC curve with tied scores merged into one point;
- AP is Σ_n (R_n − R_{n−1}) P_n over descending distinct thresholds (scikit-learn's definition);
  recall only moves at anomalous scores, so the sum runs over anomalous scores alone;
- F1-max is the best F1 over all distinct thresholds "score ≥ t"; for a fixed true-positive count
  a higher threshold has fewer false positives, so the best thresholds are anomalous scores.

Each anomalous score needs only two binary searches, done in chunks of CHUNK elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 21  # elements per chunk: bounds the int64/float64 temporaries to a few 16 MiB arrays


@dataclass(frozen=True)
class Ranking:
    """Threshold-free metrics of one score population; None when a class is missing."""

    auroc: float | None
    ap: float | None
    f1_max: float | None
    f1_threshold: float | None  # predict anomalous when score ≥ this; picked on the test set


@dataclass(frozen=True)
class Curves:
    """ROC and precision–recall curves, points ordered from the highest threshold down."""

    fpr: np.ndarray  # (P,) from 0 to 1
    tpr: np.ndarray  # (P,) from 0 to 1
    precision: np.ndarray  # (Q,) starts at 1 (recall 0, scikit-learn's convention)
    recall: np.ndarray  # (Q,) from 0 to 1
    exact: bool  # False when points were thinned for plotting (pixel curves)


NO_RANKING = Ranking(None, None, None, None)


def ranking_from_sorted(normal: np.ndarray, anomalous: np.ndarray) -> Ranking:
    """AUROC, AP and F1-max from each class's scores sorted ascending.

    Args:
        normal: (N0,) scores of normal samples (label 0), ascending.
        anomalous: (N1,) scores of anomalous samples (label 1), ascending, same dtype.

    Returns:
        A Ranking; all fields None when N0 or N1 is 0 (one class only: the metrics are undefined).
    """
    n0, n1 = len(normal), len(anomalous)
    if n0 == 0 or n1 == 0:
        return NO_RANKING
    twice_wins = 0  # Σ over anomalous of 2·#(normal < s) + #(normal = s): exact in int64
    precision_sum = 0.0
    best_f1, best_threshold = -1.0, 0.0
    for start in range(0, n1, CHUNK):
        a = anomalous[start : start + CHUNK]  # (c,)
        below = np.searchsorted(normal, a, side="left")  # #normal < s
        at_or_below = np.searchsorted(normal, a, side="right")  # #normal ≤ s
        twice_wins += int(below.sum(dtype=np.int64) + at_or_below.sum(dtype=np.int64))
        tp = n1 - np.searchsorted(anomalous, a, side="left")  # #anomalous ≥ s, ties included
        fp = n0 - below  # #normal ≥ s
        precision_sum += float(np.sum(tp / (tp + fp)))  # each anomalous sample adds 1/N1 of recall
        f1 = 2.0 * tp / (tp + fp + n1)  # 2TP / (2TP + FP + FN) with FN = N1 − TP
        last = len(f1) - 1 - int(np.argmax(f1[::-1]))  # ties in F1: keep the highest threshold
        if f1[last] >= best_f1:
            best_f1, best_threshold = float(f1[last]), float(a[last])
    return Ranking(
        auroc=twice_wins / (2.0 * n0 * n1),
        ap=precision_sum / n1,
        f1_max=best_f1,
        f1_threshold=best_threshold,
    )


def split_sorted(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) scores and 0/1 labels → (normal ascending, anomalous ascending), as float64."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel().astype(bool)
    return np.sort(scores[~positive]), np.sort(scores[positive])


def rank_scores(scores: np.ndarray, labels: np.ndarray) -> Ranking:
    """AUROC, AP and F1-max of (N,) scores against (N,) 0/1 labels (1 = anomalous)."""
    return ranking_from_sorted(*split_sorted(scores, labels))


def curves_from_sorted(normal: np.ndarray, anomalous: np.ndarray, max_points: int | None = None) -> Curves | None:
    """ROC and PR curves from each class's ascending scores; None when a class is missing.

    Args:
        normal: (N0,) ascending normal scores.
        anomalous: (N1,) ascending anomalous scores.
        max_points: None for every distinct threshold (exact curves); otherwise about this many
            thresholds, taken at evenly spaced ranks of each class. The points kept lie exactly
            on the curves; only points in between are left out. For plotting only.
    """
    n0, n1 = len(normal), len(anomalous)
    if n0 == 0 or n1 == 0:
        return None
    if max_points is None or n0 + n1 <= max_points:
        thresholds = np.union1d(normal, anomalous)
    else:
        half = max(max_points // 2, 2)
        thresholds = np.union1d(_evenly(normal, half), _evenly(anomalous, half))
    thresholds = thresholds[::-1]  # (T,) descending distinct
    tp = (n1 - np.searchsorted(anomalous, thresholds, side="left")).astype(np.float64)
    fp = (n0 - np.searchsorted(normal, thresholds, side="left")).astype(np.float64)
    fpr = np.concatenate([[0.0], fp / n0])
    tpr = np.concatenate([[0.0], tp / n1])
    precision = np.concatenate([[1.0], tp / (tp + fp)])  # every threshold is a score: TP + FP ≥ 1
    recall = np.concatenate([[0.0], tp / n1])
    exact = max_points is None or n0 + n1 <= max_points
    return Curves(fpr=fpr, tpr=tpr, precision=precision, recall=recall, exact=exact)


def _evenly(values: np.ndarray, count: int) -> np.ndarray:
    """About `count` elements of a sorted array at evenly spaced ranks, first and last included."""
    return values[np.linspace(0, len(values) - 1, min(count, len(values))).astype(np.int64)]


def wrongness(labels: np.ndarray | int, scores: np.ndarray | float, threshold: float) -> np.ndarray:
    """How far each score lies on the wrong side of the threshold (negative: right side)."""
    return np.where(np.asarray(labels) == 1, threshold - np.asarray(scores), np.asarray(scores) - threshold)


def report_picks(labels: np.ndarray, wrong: np.ndarray, count: int) -> list[int]:
    """The indices of the `count` cases a report shows, worst first by `wrong` (wrongness): up to
    half from each label, each label's furthest on the wrong side (of equals, the earlier), the
    other label's next ones where one has too few. So missed anomalies cannot crowd out every
    false alarm."""
    labels, wrong = np.asarray(labels), np.asarray(wrong)
    order = np.argsort(-wrong, kind="stable")  # worst first; ties keep index order
    by_label = [[int(i) for i in order if labels[i] == label] for label in (1, 0)]
    quota = [min(len(by_label[0]), max(count // 2, count - len(by_label[1])))]
    quota.append(min(len(by_label[1]), count - quota[0]))
    chosen = by_label[0][: quota[0]] + by_label[1][: quota[1]]
    return sorted(chosen, key=lambda i: (-wrong[i], i))


def decision_counts(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int]:
    """How the decision "anomalous when score ≥ threshold" fares on a labelled set."""
    labels, flagged = np.asarray(labels), np.asarray(scores) >= threshold
    return {
        "image_threshold": float(threshold),
        "anomalous": int((labels == 1).sum()),
        "missed_anomalies": int(((labels == 1) & ~flagged).sum()),
        "normal": int((labels == 0).sum()),
        "false_alarms": int(((labels == 0) & flagged).sum()),
    }
