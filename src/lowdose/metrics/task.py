"""Task metrics of a classifier: accuracy, balanced accuracy, macro-F1, per-class recall,
one-vs-rest AUROC, confusion matrix and expected calibration error, each with a seeded
bootstrap 95% interval; and the paired per-slice comparison of two conditions (exact McNemar).

Inputs are integer labels ``y_true`` of shape ``(N,)`` in ``[0, K)`` and class probabilities
``probs`` of shape ``(N, K)`` (rows sum to 1); predictions are ``argmax(probs)``.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1, 1, 2])
    >>> p = np.eye(3)[[0, 1, 2, 2]]
    >>> round(accuracy(y, p), 2), round(balanced_accuracy(y, p), 3)
    (0.75, 0.833)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _check(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs shape {p.shape} does not match {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]}), got {y.min()}..{y.max()}")
    return y, p


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(K, K)`` counts: row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(np.array([0, 1]), np.array([[0.9, 0.1], [0.6, 0.4]])).tolist()
        [[1, 0], [1, 0]]
    """
    y, p = _check(y_true, probs)
    k = p.shape[1]
    pred = p.argmax(axis=1)
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Fraction of samples whose argmax is the true class."""
    y, p = _check(y_true, probs)
    return float(np.mean(p.argmax(axis=1) == y)) if y.size else float("nan")


def per_class_recall(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Recall (sensitivity) of each class; NaN for a class with no samples."""
    cm = confusion_matrix(y_true, probs).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true``."""
    rec = per_class_recall(y_true, probs)
    return float(np.nanmean(rec)) if np.isfinite(rec).any() else float("nan")


def per_class_f1(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """F1 of each class (0 where a class is neither present nor predicted)."""
    cm = confusion_matrix(y_true, probs).astype(np.float64)
    tp = np.diag(cm)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, 0.0)


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` or predicted."""
    y, p = _check(y_true, probs)
    f1 = per_class_f1(y, p)
    used = np.zeros(p.shape[1], bool)
    used[np.unique(y)] = True
    used[np.unique(p.argmax(axis=1))] = True
    return float(f1[used].mean()) if used.any() else float("nan")


def binary_auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with one class.

    Example:
        >>> binary_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    pos = np.asarray(positive, bool)
    s = np.asarray(score, np.float64)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # ties get their mean rank
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auroc_ovr(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of each class (NaN where a class is absent or alone)."""
    y, p = _check(y_true, probs)
    return np.array([binary_auroc(y == k, p[:, k]) for k in range(p.shape[1])])


def macro_auroc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over the classes where it is defined."""
    a = auroc_ovr(y_true, probs)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of ``|acc - conf| * n_bin / N``.

    Bins are ``(i/n, (i+1)/n]`` (the first also holds 0).

    Example:
        >>> y = np.array([0, 1]); p = np.array([[0.8, 0.2], [0.6, 0.4]])
        >>> round(expected_calibration_error(y, p, n_bins=10), 3)  # |1-.8|/2 + |0-.6|/2
        0.4
    """
    y, p = _check(y_true, probs)
    if not y.size:
        return float("nan")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += abs(correct[sel].mean() - conf[sel].mean()) * sel.sum() / len(y)
    return float(ece)


SCALAR_METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": macro_f1,
    "macro_auroc": macro_auroc,
    "ece": expected_calibration_error,
}
"""The scalar metrics reported for every study cell, by name."""


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], Any],
    y_true: np.ndarray,
    probs: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``metric`` (scalar or array valued), resampling samples.

    Resamples where a value is NaN (e.g. AUROC without a class) are ignored per entry.

    Example:
        >>> y = np.array([0, 1] * 20); p = np.eye(2)[y]
        >>> lo, hi = bootstrap_ci(accuracy, y, p, n_boot=50)
        >>> float(lo), float(hi)
        (1.0, 1.0)
    """
    y, p = _check(y_true, probs)
    rng = np.random.default_rng(seed)
    n = len(y)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        values.append(np.asarray(metric(y[idx], p[idx]), np.float64))
    arr = np.stack(values)
    alpha = (1.0 - level) / 2
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanquantile(arr, alpha, axis=0)
            hi = np.nanquantile(arr, 1 - alpha, axis=0)
    return lo, hi


def mcnemar_exact_p(lost: int, gained: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of a paired comparison.

    Under the null hypothesis each discordant slice is lost or gained with probability 1/2, so
    ``min(lost, gained)`` follows a binomial law over ``lost + gained`` trials.

    Example:
        >>> round(mcnemar_exact_p(10, 0), 4), mcnemar_exact_p(3, 3)
        (0.002, 1.0)
    """
    import math

    if lost < 0 or gained < 0:
        raise ValueError(f"counts must be >= 0, got {lost} and {gained}")
    n, k = lost + gained, min(lost, gained)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def paired_change(y_true: np.ndarray, probs_ref: np.ndarray, probs: np.ndarray
                  ) -> dict[str, Any]:
    """Slices a condition turns wrong or right against a reference on the same slices.

    Paired per slice, this is far more sensitive than comparing two accuracies' intervals:
    ``lost`` slices are right under the reference and wrong under ``probs``, ``gained`` the
    reverse; ``p_value`` is the exact McNemar test of ``lost == gained`` (not corrected for
    the several comparisons of a study).

    Example:
        >>> y = np.array([0, 1, 1, 0])
        >>> ref = np.eye(2)[[0, 1, 1, 1]]; new = np.eye(2)[[1, 1, 1, 0]]
        >>> paired_change(y, ref, new)
        {'n': 4, 'lost': 1, 'gained': 1, 'p_value': 1.0}
    """
    y, p_ref = _check(y_true, probs_ref)
    _, p = _check(y, probs)
    right_ref, right = p_ref.argmax(axis=1) == y, p.argmax(axis=1) == y
    lost, gained = int(np.sum(right_ref & ~right)), int(np.sum(~right_ref & right))
    return {"n": len(y), "lost": lost, "gained": gained,
            "p_value": mcnemar_exact_p(lost, gained)}


def sign_flip_exact_p(steps: np.ndarray) -> float:
    """Two-sided exact p-value of a sum of integer steps whose signs are fair coins.

    The null law of ``S = sum(s_i * |steps_i|)`` with independent ``s_i = +-1`` is built
    exactly by convolution; the p-value is ``P(|S| >= |observed sum|)``. With every step in
    ``{-1, 0, 1}`` this is the exact McNemar (sign) test.

    Example:
        >>> sign_flip_exact_p(np.array([1] * 10)) == mcnemar_exact_p(0, 10)
        True
    """
    a = np.asarray(steps, dtype=np.int64).reshape(-1)
    observed = abs(int(a.sum()))
    sizes = np.abs(a[a != 0])
    if sizes.size == 0:
        return 1.0
    total = int(sizes.sum())
    law = np.zeros(2 * total + 1)  # law[total + s] = P(S = s)
    law[total] = 1.0
    for size in sizes:
        law = 0.5 * (np.roll(law, int(size)) + np.roll(law, -int(size)))
    values = np.arange(-total, total + 1)
    return float(min(1.0, law[np.abs(values) >= observed].sum()))


def paired_change_across(y_true: np.ndarray, probs_ref: Sequence[np.ndarray],
                         probs: Sequence[np.ndarray]) -> dict[str, Any]:
    """The paired change of :func:`paired_change` averaged over several classifiers.

    Classifier ``k`` gives ``probs_ref[k]`` (the reference condition) and ``probs[k]`` on the
    same slices. Per slice, the change is the number of classifiers that turn it right minus
    those that turn it wrong; the p-value tests a zero mean change by flipping each slice's
    sign (:func:`sign_flip_exact_p`): the slices are the sampled units, the classifiers (e.g.
    training seeds) fixed. One classifier gives the exact McNemar test. ``lost``/``gained``
    are means per classifier; ``change`` is the mean change of accuracy.

    Example:
        >>> y = np.array([0, 1, 1, 0])
        >>> ref = np.eye(2)[[0, 1, 1, 1]]; new = np.eye(2)[[1, 1, 1, 0]]
        >>> paired_change_across(y, [ref, ref], [new, ref])["lost"]
        0.5
    """
    if len(probs_ref) != len(probs) or not probs:
        raise ValueError(f"need one reference per classifier, got {len(probs_ref)} "
                         f"references and {len(probs)} conditions")
    steps = np.zeros(np.asarray(y_true).reshape(-1).shape[0], np.int64)
    lost = gained = 0
    for ref, new in zip(probs_ref, probs, strict=True):
        y, p_ref = _check(y_true, ref)
        _, p = _check(y, new)
        right_ref, right = p_ref.argmax(axis=1) == y, p.argmax(axis=1) == y
        steps += right.astype(np.int64) - right_ref.astype(np.int64)
        lost += int(np.sum(right_ref & ~right))
        gained += int(np.sum(~right_ref & right))
    k = len(probs)
    return {"n": len(steps), "classifiers": k, "lost": lost / k, "gained": gained / k,
            "change": float(steps.sum()) / (k * max(len(steps), 1)),
            "p_value": sign_flip_exact_p(steps)}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (family-wise error), in input order.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return [round(float(v), 15) for v in adjusted]


def _clean(x: Any) -> Any:
    """NaN-free, JSON-friendly floats/lists (NaN -> None)."""
    arr = np.asarray(x, np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return None if not np.isfinite(v) else v
    return [_clean(v) for v in arr]


def task_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every task metric with its bootstrap 95% interval, as a JSON-friendly dict.

    Returns ``{"n": N, "accuracy": {"value": v, "ci95": [lo, hi]}, ..., "per_class_recall":
    {"value": [...], "ci95": [[lo...], [hi...]]}, "auroc_ovr": {...}, "confusion_matrix":
    [[...]], "classes": [...]}``. Intervals use one seeded resampling per metric.

    Example:
        >>> y = np.array([0, 1, 1, 0]); p = np.array([[.9, .1], [.2, .8], [.6, .4], [.7, .3]])
        >>> m = task_metrics(y, p, n_boot=100)
        >>> m["accuracy"]["value"], m["confusion_matrix"]
        (0.75, [[2, 0], [1, 1]])
    """
    y, p = _check(y_true, probs)
    out: dict[str, Any] = {"n": len(y)}
    if class_names is not None:
        out["classes"] = list(class_names)
    for name, fn in SCALAR_METRICS.items():
        lo, hi = bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed)
        out[name] = {"value": _clean(fn(y, p)), "ci95": [_clean(lo), _clean(hi)]}
    for name, fn in (("per_class_recall", per_class_recall), ("auroc_ovr", auroc_ovr)):
        lo, hi = bootstrap_ci(fn, y, p, n_boot=n_boot, seed=seed)
        out[name] = {"value": _clean(fn(y, p)), "ci95": [_clean(lo), _clean(hi)]}
    out["confusion_matrix"] = confusion_matrix(y, p).tolist()
    return out
