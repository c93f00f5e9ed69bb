"""Ranking metrics against scikit-learn and a brute-force F1 written out here."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from clipmpcad.metrics import curves_from_sorted, rank_scores, ranking_from_sorted
from clipmpcad.metrics.ranking import split_sorted


def brute_f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Best F1 of "score ≥ t" over every distinct t; on equal F1 the highest t."""
    best, best_t = -1.0, None
    for t in np.unique(scores):  # ascending, so ">=" keeps the highest t among equals
        predicted = scores >= t
        tp = np.sum(predicted & (labels == 1))
        fp = np.sum(predicted & (labels == 0))
        fn = np.sum(~predicted & (labels == 1))
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 >= best:
            best, best_t = f1, t
    return float(best), float(best_t)


def cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(6):  # continuous scores, varied balance
        n = int(rng.integers(20, 400))
        labels = (rng.random(n) < rng.uniform(0.05, 0.9)).astype(int)
        labels[:2] = [0, 1]
        scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
        out.append((f"random{i}", scores, labels))
    for i in range(4):  # quantised scores: many ties across and within classes
        n = int(rng.integers(50, 500))
        labels = (rng.random(n) < 0.3).astype(int)
        labels[:2] = [0, 1]
        scores = np.round(rng.random(n) + 0.3 * labels, 1)
        out.append((f"quantised{i}", scores, labels))
    hand = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.8, 0.2])
    out.append(("hand_ties", hand, np.array([0, 0, 1, 1, 1, 0, 1])))
    out.append(("all_equal", np.full(7, 0.5), np.array([0, 1, 0, 1, 1, 0, 0])))
    out.append(("perfect", np.array([0.0, 0.1, 0.9, 1.0]), np.array([0, 0, 1, 1])))
    out.append(("inverted", np.array([0.0, 0.1, 0.9, 1.0]), np.array([1, 1, 0, 0])))
    return out


@pytest.mark.parametrize(("name", "scores", "labels"), cases(), ids=[c[0] for c in cases()])
def test_ranking_matches_sklearn_and_brute_force(name, scores, labels):
    result = rank_scores(scores, labels)
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert result.ap == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    f1, threshold = brute_f1_max(scores, labels)
    assert result.f1_max == pytest.approx(f1, abs=1e-12)
    assert result.f1_threshold == threshold


def test_hand_made_values():
    # normal: 0.1, 0.4, 0.8; anomalous: 0.2, 0.4, 0.4, 0.8.
    # pairs (a > n) + ½ (a = n): 0.2 → 1; 0.4 → 1.5 each; 0.8 → 2.5; total 6.5 of 12
    scores = np.array([0.1, 0.4, 0.4, 0.4, 0.8, 0.8, 0.2])
    labels = np.array([0, 0, 1, 1, 1, 0, 1])
    result = rank_scores(scores, labels)
    assert result.auroc == pytest.approx(6.5 / 12)
    # thresholds 0.8 (tp 1, fp 1), 0.4 (tp 3, fp 2), 0.2 (tp 4, fp 2): AP = ¼·½ + ½·⅗ + ¼·⅔
    assert result.ap == pytest.approx(0.25 * 0.5 + 0.5 * 0.6 + 0.25 * 4 / 6)
    assert result.f1_max == pytest.approx(0.8)  # at 0.2: 2·4 / (2·4 + 2 + 0)
    assert result.f1_threshold == pytest.approx(0.2)


def test_one_class_gives_none_not_a_number():
    for labels in (np.zeros(5, int), np.ones(5, int)):
        result = rank_scores(np.arange(5.0), labels)
        assert (result.auroc, result.ap, result.f1_max, result.f1_threshold) == (None,) * 4
    assert curves_from_sorted(np.arange(3.0), np.empty(0)) is None


def test_chunked_loop_equals_one_chunk(monkeypatch):
    rng = np.random.default_rng(3)
    labels = (rng.random(5000) < 0.4).astype(int)
    scores = np.round(rng.random(5000) + 0.2 * labels, 2).astype(np.float32)
    whole = rank_scores(scores, labels)
    monkeypatch.setattr("clipmpcad.metrics.ranking.CHUNK", 97)
    chunked = rank_scores(scores, labels)
    assert chunked.auroc == whole.auroc
    assert chunked.ap == pytest.approx(whole.ap, abs=1e-12)
    assert (chunked.f1_max, chunked.f1_threshold) == (whole.f1_max, whole.f1_threshold)
    assert chunked.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("quantise", [False, True])
def test_exact_curves_equal_sklearn(quantise):
    rng = np.random.default_rng(11)
    labels = (rng.random(300) < 0.3).astype(int)
    scores = rng.random(300) + 0.4 * labels
    scores = np.round(scores, 1) if quantise else scores
    curves = curves_from_sorted(*split_sorted(scores, labels))
    assert curves.exact
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curves.fpr, fpr, atol=1e-15)
    np.testing.assert_allclose(curves.tpr, tpr, atol=1e-15)
    precision, recall, _ = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(curves.precision, precision[::-1], atol=1e-15)
    np.testing.assert_allclose(curves.recall, recall[::-1], atol=1e-15)


def test_thinned_curves_are_points_of_the_exact_curve():
    rng = np.random.default_rng(5)
    labels = (rng.random(20000) < 0.2).astype(int)
    scores = (rng.random(20000) + 0.5 * labels).astype(np.float32)
    normal, anomalous = np.sort(scores[labels == 0]), np.sort(scores[labels == 1])
    exact = curves_from_sorted(normal, anomalous)
    thin = curves_from_sorted(normal, anomalous, max_points=500)
    assert not thin.exact and len(thin.fpr) <= 502
    assert (thin.fpr[0], thin.tpr[0], thin.fpr[-1], thin.tpr[-1]) == (0, 0, 1, 1)
    exact_points = set(zip(exact.fpr.tolist(), exact.tpr.tolist(), strict=True))
    assert set(zip(thin.fpr.tolist(), thin.tpr.tolist(), strict=True)) <= exact_points
    thin_auc = np.trapezoid(thin.tpr, thin.fpr)
    assert thin_auc == pytest.approx(roc_auc_score(labels, scores), abs=2e-3)


def test_sorted_inputs_in_float32_keep_float32_ties():
    # 1 + 1e-9 rounds to 1.0 in float32: the two scores tie, as scikit-learn sees the same arrays
    scores = np.array([1.0, 1.0 + 1e-9, 0.5], dtype=np.float32)
    labels = np.array([0, 1, 0])
    normal, anomalous = np.sort(scores[labels == 0]), np.sort(scores[labels == 1])
    result = ranking_from_sorted(normal, anomalous)
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores)) == 0.75
