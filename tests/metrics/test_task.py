"""Task metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lowdose.metrics import task

# 6 samples, 3 classes. Predictions (argmax): 0, 0, 1, 2, 2, 1.
Y = np.array([0, 0, 1, 1, 2, 2])
P = np.array([
    [0.7, 0.2, 0.1],  # true 0, pred 0, conf .7
    [0.5, 0.3, 0.2],  # true 0, pred 0, conf .5
    [0.1, 0.8, 0.1],  # true 1, pred 1, conf .8
    [0.2, 0.3, 0.5],  # true 1, pred 2, conf .5
    [0.1, 0.3, 0.6],  # true 2, pred 2, conf .6
    [0.3, 0.4, 0.3],  # true 2, pred 1, conf .4
])


def test_confusion_matrix_and_accuracy() -> None:
    assert task.confusion_matrix(Y, P).tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]
    assert task.accuracy(Y, P) == pytest.approx(4 / 6)


def test_recall_balanced_accuracy_f1() -> None:
    np.testing.assert_allclose(task.per_class_recall(Y, P), [1.0, 0.5, 0.5])
    # Unbalanced classes: recall 1/1 and 1/3 -> balanced 2/3, accuracy 2/4.
    y2 = np.array([0, 1, 1, 1])
    p2 = np.eye(2)[[0, 1, 0, 0]]
    assert task.balanced_accuracy(y2, p2) == pytest.approx((1.0 + 1 / 3) / 2)
    assert task.accuracy(y2, p2) == pytest.approx(0.5)
    # F1: class 0: tp 2, fp 0, fn 0 -> 1; class 1: tp 1, fp 1, fn 1 -> .5; class 2 same.
    assert task.macro_f1(Y, P) == pytest.approx((1 + 0.5 + 0.5) / 3)


def test_auroc_by_hand() -> None:
    # Class 0 scores: positives .7, .5; negatives .1, .2, .1, .3 -> all pairs won -> 1.
    # Class 1 scores: positives .8, .3; negatives .2, .3, .3, .4.
    #   .8 beats all 4; .3 beats .2, ties .3 and .3 (2 x 0.5), loses to .4 -> 2 -> (4+2)/8.
    # Class 2 scores: positives .6, .3; negatives .1, .2, .1, .5.
    #   .6 beats 4; .3 beats .1, .2, .1 -> 3 -> 7/8.
    np.testing.assert_allclose(task.auroc_ovr(Y, P), [1.0, 6 / 8, 7 / 8])
    assert task.macro_auroc(Y, P) == pytest.approx((1 + 0.75 + 0.875) / 3)
    assert np.isnan(task.binary_auroc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_ece_by_hand() -> None:
    # 10 bins. Confidences .7 .5 .8 .5 .6 .4; correct 1 1 1 0 1 0.
    # bin (.3,.4]: {.4 wrong} -> |0-.4| * 1/6
    # bin (.4,.5]: {.5 right, .5 wrong} -> |.5-.5| * 2/6 = 0
    # bin (.5,.6]: {.6 right} -> .4/6 ; bin (.6,.7]: .3/6 ; bin (.7,.8]: .2/6
    expected = (0.4 + 0 + 0.4 + 0.3 + 0.2) / 6
    assert task.expected_calibration_error(Y, P, n_bins=10) == pytest.approx(expected)


def test_bootstrap_interval_is_seeded_and_brackets_value() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    logits = rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = task.task_metrics(y, p, n_boot=200, seed=3)
    b = task.task_metrics(y, p, n_boot=200, seed=3)
    assert a == b
    acc = a["accuracy"]
    assert acc["ci95"][0] < acc["value"] < acc["ci95"][1]
    # A binomial proportion near .7 with n=200 has a 95% half-width near .063.
    assert 0.04 < (acc["ci95"][1] - acc["ci95"][0]) / 2 < 0.09
    assert len(a["per_class_recall"]["value"]) == 4
    assert np.sum(a["confusion_matrix"]) == 200


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        task.accuracy(np.array([0, 1]), np.ones((3, 2)) / 2)
    with pytest.raises(ValueError):
        task.accuracy(np.array([0, 5]), np.ones((2, 2)) / 2)


@pytest.mark.parametrize(("lost", "gained", "expected"), [
    (10, 0, 2 / 1024),          # 2 * 0.5**10
    (5, 2, 2 * 29 / 128),       # 2 * (1 + 7 + 21) / 2**7
    (3, 11, 2 * 470 / 16384),   # symmetric in lost and gained
    (4, 4, 1.0),
    (0, 0, 1.0),                # no discordant slice: no evidence of a change
])
def test_mcnemar_exact_by_hand(lost: int, gained: int, expected: float) -> None:
    assert task.mcnemar_exact_p(lost, gained) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_matches_scipy_binomtest() -> None:
    stats = pytest.importorskip("scipy.stats")
    for lost, gained in [(7, 3), (1, 12), (20, 9)]:
        ref = stats.binomtest(min(lost, gained), lost + gained, 0.5).pvalue
        assert task.mcnemar_exact_p(lost, gained) == pytest.approx(ref, rel=1e-9)
    with pytest.raises(ValueError):
        task.mcnemar_exact_p(-1, 2)


@pytest.mark.parametrize("steps", [[3, -1, 2, 2, -3, 1, 1], [2, 2, 0, -1, 1], [1, 1, 1], [0, 0]])
def test_sign_flip_exact_matches_enumeration(steps: list[int]) -> None:
    import itertools

    a = np.array(steps)
    sizes = np.abs(a[a != 0])
    flips = list(itertools.product([-1, 1], repeat=len(sizes)))
    hits = sum(abs(int((sizes * np.array(f)).sum())) >= abs(int(a.sum())) for f in flips)
    assert task.sign_flip_exact_p(a) == pytest.approx(hits / len(flips), rel=1e-12)


@pytest.mark.parametrize(("lost", "gained"), [(10, 0), (5, 2), (3, 11), (4, 4), (0, 0)])
def test_sign_flip_of_unit_steps_is_mcnemar(lost: int, gained: int) -> None:
    steps = np.array([-1] * lost + [1] * gained + [0] * 50)
    assert task.sign_flip_exact_p(steps) == pytest.approx(task.mcnemar_exact_p(lost, gained),
                                                          rel=1e-12)
    # The same change seen by two identical classifiers: every step doubled, the same test.
    assert task.sign_flip_exact_p(2 * steps) == pytest.approx(
        task.mcnemar_exact_p(lost, gained), rel=1e-12)


def test_paired_change_across_classifiers() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    ref_a = np.eye(3)[[0, 1, 2, 0, 0, 0]]    # right on 0-3
    new_a = np.eye(3)[[1, 1, 2, 0, 1, 0]]    # loses 0, gains 4
    ref_b = np.eye(3)[[0, 0, 2, 0, 1, 2]]    # right on 0, 2-5
    new_b = np.eye(3)[[0, 1, 1, 0, 1, 2]]    # gains 1, loses 2
    out = task.paired_change_across(y, [ref_a, ref_b], [new_a, new_b])
    assert (out["lost"], out["gained"], out["classifiers"], out["n"]) == (1.0, 1.0, 2, 6)
    assert out["change"] == 0.0 and out["p_value"] == 1.0
    # Per-slice sums: -1, +1, -1, 0, +1, 0: four slices of size 1, sum 0.
    one = task.paired_change_across(y, [ref_a], [new_a])
    assert one == {"n": 6, "classifiers": 1, "lost": 1.0, "gained": 1.0, "change": 0.0,
                   "p_value": task.paired_change(y, ref_a, new_a)["p_value"]}
    better = np.eye(3)[[0, 1, 2, 0, 1, 2]]   # right everywhere
    gain = task.paired_change_across(y, [ref_a, ref_b], [better, better])
    assert gain["gained"] == 1.5 and gain["change"] == pytest.approx(3 / 12)
    # Slices 1 and 5 gain one each, slice 4 gains two: steps 1, 1, 2 -> P(|S| >= 4) = 2/8.
    assert gain["p_value"] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        task.paired_change_across(y, [ref_a], [new_a, new_b])


def test_holm_adjustment() -> None:
    assert task.holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert task.holm_adjust([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert task.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert task.holm_adjust([0.04, 0.2, 0.03]) == pytest.approx([0.09, 0.2, 0.09])  # monotone
    assert task.holm_adjust([]) == []


def test_paired_change_counts_discordant_slices() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    ref = np.eye(3)[[0, 1, 2, 0, 0, 0]]      # right on slices 0-3
    new = np.eye(3)[[1, 1, 2, 0, 1, 0]]      # loses slice 0, gains slice 4
    out = task.paired_change(y, ref, new)
    assert (out["lost"], out["gained"], out["n"]) == (1, 1, 6)
    assert out["p_value"] == 1.0
    same = task.paired_change(y, ref, ref)
    assert (same["lost"], same["gained"]) == (0, 0)
    with pytest.raises(ValueError):
        task.paired_change(y, ref, new[:4])
