"""Exact ranking metrics: AUROC, average precision and F1-max from one sorted pass.

All three are functions of the per-distinct-score counts of positives and negatives, so the
inputs are split into a positive and a negative score array (one copy of the scores in total,
filled blockwise), each sorted in place, and every distinct positive score is visited once:

- AUROC = Mann-Whitney U / (P * N) with half credit for ties (equals ``roc_auc_score``);
  U is accumulated in integers (``2U = sum_v p_v * (#neg < v + #neg <= v)``), so it is exact.
- AP = sum_v (p_v / P) * TP(v) / (TP(v) + FP(v)) over distinct scores v, positives ``score >= v``
  (equals ``average_precision_score``: recall only moves at scores held by positives).
- F1-max = max_v 2 TP(v) / (TP(v) + FP(v) + P); between two positive scores F1 only falls as
  FP grows, so the maximum over all distinct thresholds is attained at a positive score.

Memory: the caller's arrays plus one copy of the scores (4 B/px for float32) plus O(block)
temporaries; no int64 argsort over all samples, no float cumsums. Counts are int64.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jad.metrics.errors import MetricError

BLOCK = 1 << 20  # elements per block of the blockwise passes (temporaries ~100 B per element)


def score_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype scores are stored in: float32/float64/integers kept, narrower floats -> float32.

    Widening is exact, so the ranking (and every metric) is unchanged; float64 scores are never
    narrowed (that would create ties and change the metrics).
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        return dtype
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    if "float" in dtype.name:  # ml_dtypes bfloat16 / float8 (jax arrays)
        return np.dtype(np.float32)
    raise MetricError(f"scores have dtype {dtype}; pass real-valued (float or integer) scores.")


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(-1)


def check_no_nan_labels(labels: np.ndarray, what: str = "labels") -> None:
    """Raise when float labels contain NaN (NaN != 0 would silently count as positive)."""
    if labels.dtype.kind == "f":
        flat = labels.reshape(-1)
        for start in range(0, flat.size, BLOCK):
            if np.isnan(flat[start : start + BLOCK]).any():
                raise MetricError(f"{what} contain NaN; pass binary labels (positive iff != 0).")


def split_by_label(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Copy the scores of positives (``label != 0``) and negatives into two new arrays.

    Args:
      labels: any shape, bool / integer / float; positive iff ``!= 0``.
      scores: same number of elements, higher = more anomalous.

    Returns:
      ``(pos, neg)``: 1-D unsorted copies in :func:`score_dtype` of the scores' dtype.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    if labels.size != scores.size:
        raise MetricError(
            f"labels have {labels.size} elements ({labels.shape}) but scores have {scores.size} "
            f"({scores.shape}); pass one label per score."
        )
    if scores.size == 0:
        raise MetricError(
            "labels and scores are empty; pass at least one positive and one negative."
        )
    check_no_nan_labels(labels)
    dtype = score_dtype(scores.dtype)
    lab, sc = _flat(labels), _flat(scores)
    n_pos = int(np.count_nonzero(lab))
    n = sc.size
    if n_pos == 0 or n_pos == n:
        kind = "negatives" if n_pos == 0 else "positives"
        raise MetricError(
            f"all {n} labels are {kind}; AUROC/AP/F1 need both classes, pass data with at least "
            "one positive and one negative."
        )
    pos = np.empty(n_pos, dtype)
    neg = np.empty(n - n_pos, dtype)
    ip = ineg = 0
    for start in range(0, n, BLOCK):
        m = lab[start : start + BLOCK]
        m = m if m.dtype == np.bool_ else m != 0
        s = sc[start : start + BLOCK]
        k = int(np.count_nonzero(m))
        pos[ip : ip + k] = s[m]
        neg[ineg : ineg + s.size - k] = s[~m]
        ip += k
        ineg += s.size - k
    return pos, neg


def sort_scores(a: np.ndarray, what: str = "scores") -> np.ndarray:
    """Sort ``a`` in place (ascending) and raise if it holds NaN (NaNs sort last)."""
    a.sort()
    if a.size and a.dtype.kind == "f" and np.isnan(a[-1]):
        raise MetricError(f"{what} contain NaN; replace or drop them before computing metrics.")
    return a


def runs(a: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tie runs of sorted ``a`` whose LAST index lies in ``[start, stop)``.

    Returns ``(values, lo, hi)``: each run is ``a[lo:hi] == value``; int64 indices. Every run of
    ``a`` is returned by exactly one block when the blocks tile ``[0, len(a))``.
    """
    n = a.size
    seg = a[start : min(stop + 1, n)]
    is_end = np.empty(stop - start, np.bool_)
    np.not_equal(seg[1:], seg[:-1], out=is_end[: seg.size - 1])
    if stop == n:
        is_end[-1] = True
    idx = np.flatnonzero(is_end)
    idx += start
    values = a[idx]
    return values, np.searchsorted(a, values, "left").astype(np.int64), idx + 1


def iter_runs(a: np.ndarray, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`runs` over blocks of :data:`BLOCK` elements from ``start`` to the end of ``a``."""
    for s in range(start, a.size, BLOCK):
        yield runs(a, s, min(s + BLOCK, a.size))


def _count_blocks(
    pos: np.ndarray, neg: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per block of the distinct positive scores ``v`` (ascending): the counts every ranking
    metric and curve is made of.

    Yields ``(values, lo, hi, neg_lt, neg_le)`` plus ``count = hi - lo``: ``#pos < v = lo``,
    ``#pos <= v = hi``, ``#neg < v = neg_lt``, ``#neg <= v = neg_le`` (int64).
    """
    for values, lo, hi in iter_runs(pos):
        if values.size == 0:  # a block inside one long tie run
            continue
        neg_lt = np.searchsorted(neg, values, "left").astype(np.int64)
        neg_le = np.searchsorted(neg, values, "right").astype(np.int64)
        yield values, lo, hi, neg_lt, neg_le, hi - lo


def ranking_from_sorted(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """AUROC, AP, F1-max from ascending-sorted positive and negative scores (both non-empty).

    Returns a dict with ``auroc``, ``ap``, ``f1_max``, ``f1_threshold`` (the highest threshold
    reaching F1-max; several may tie), ``n_pos``, ``n_neg``.
    """
    n_pos, n_neg = int(pos.size), int(neg.size)
    assert n_pos > 0 and n_neg > 0, (pos.shape, neg.shape)
    u2 = 0  # 2 * Mann-Whitney U, a Python int (exact, no overflow)
    ap_sum = 0.0
    best_f1, best_t = -1.0, None
    for values, lo, _, neg_lt, neg_le, count in _count_blocks(pos, neg):
        u2 += int(np.dot(count, neg_lt + neg_le))
        tp = (n_pos - lo).astype(np.float64)
        fp = (n_neg - neg_lt).astype(np.float64)
        ap_sum += float(np.dot(count.astype(np.float64), tp / (tp + fp)))
        f1 = 2.0 * tp / (tp + fp + n_pos)
        j = f1.size - 1 - int(np.argmax(f1[::-1]))  # last max = highest threshold in the block
        if f1[j] >= best_f1:
            best_f1, best_t = float(f1[j]), values[j].item()
    return {
        "auroc": u2 / (2.0 * n_pos * n_neg),
        "ap": ap_sum / n_pos,
        "f1_max": best_f1,
        "f1_threshold": best_t,
        "n_pos": n_pos,
        "n_neg": n_neg,
    }


def curves_from_sorted(pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    """The ROC and precision-recall curves behind :func:`ranking_from_sorted` (same counts).

    Args:
      pos, neg: ascending-sorted positive / negative scores, both non-empty.

    Returns:
      float64 arrays:

      - ``roc_fpr``, ``roc_tpr``: from (0, 0) to (1, 1), FPR non-decreasing. For every distinct
        positive score v (descending) two points: the threshold just above v and v itself
        (``score >= t``), so tied negatives give the diagonal step. The trapezoid area under it
        is the Mann-Whitney AUROC (half credit for ties) of :func:`ranking_from_sorted`.
      - ``pr_recall``, ``pr_precision``, ``pr_threshold``: one point per distinct positive score
        (descending threshold, recall non-decreasing); ``sum(diff(recall, prepend=0) *
        precision)`` is the AP and ``max 2PR/(P+R)`` the F1-max of :func:`ranking_from_sorted`.
    """
    n_pos, n_neg = int(pos.size), int(neg.size)
    assert n_pos > 0 and n_neg > 0, (pos.shape, neg.shape)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("t", "lo", "hi", "lt", "le")}
    for values, lo, hi, neg_lt, neg_le, _ in _count_blocks(pos, neg):
        for k, v in zip(parts, (values, lo, hi, neg_lt, neg_le), strict=True):
            parts[k].append(v)
    t, lo, hi, lt, le = (np.concatenate(parts[k])[::-1] for k in parts)  # descending thresholds
    tp, fp = (n_pos - lo).astype(np.float64), (n_neg - lt).astype(np.float64)
    tp_above, fp_above = (n_pos - hi).astype(np.float64), (n_neg - le).astype(np.float64)
    roc_fpr = np.concatenate([[0.0], np.stack([fp_above, fp], 1).reshape(-1) / n_neg, [1.0]])
    roc_tpr = np.concatenate([[0.0], np.stack([tp_above, tp], 1).reshape(-1) / n_pos, [1.0]])
    return {
        "roc_fpr": roc_fpr,
        "roc_tpr": roc_tpr,
        "pr_recall": tp / n_pos,
        "pr_precision": tp / (tp + fp),
        "pr_threshold": t.astype(np.float64),
    }


def ranking_curves(labels: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """ROC and precision-recall curves of ``scores`` against binary ``labels``.

    Same inputs, checks and tie handling as :func:`ranking_metrics`; the returned arrays are
    described in :func:`curves_from_sorted` (their areas are that function's AUROC and AP).
    """
    pos, neg = split_by_label(labels, scores)
    sort_scores(pos)
    sort_scores(neg)
    return curves_from_sorted(pos, neg)


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = 1000) -> tuple[np.ndarray, ...]:
    """At most ``max_points`` points of a curve for drawing: evenly spaced indices, the first and
    last point kept. The metrics are never computed from a thinned curve."""
    x, y = np.asarray(x), np.asarray(y)
    if x.size <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, x.size - 1, max_points).round().astype(np.int64))
    return x[idx], y[idx]


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUROC, AP and F1-max of ``scores`` against binary ``labels`` in one shared sorted pass.

    Args:
      labels: any shape (image labels [N] or masks [N, H, W]); positive iff ``!= 0``.
      scores: same number of elements; float or integer; higher = more anomalous. Ties are merged
        (every distinct score is one threshold, predictions are ``score >= t``).

    Returns:
      ``{"auroc", "ap", "f1_max", "f1_threshold", "n_pos", "n_neg"}``; metrics are fractions in
      [0, 1] with scikit-learn semantics (``roc_auc_score``, ``average_precision_score``, max F1
      over ``precision_recall_curve`` with 0/0 = 0).

    Raises:
      MetricError: empty input, one class only, NaN labels or scores, mismatched sizes.
    """
    pos, neg = split_by_label(labels, scores)
    sort_scores(pos)
    sort_scores(neg)
    return ranking_from_sorted(pos, neg)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact AUROC (Mann-Whitney, ties half credit) = ``sklearn.metrics.roc_auc_score``."""
    return ranking_metrics(labels, scores)["auroc"]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact AP = ``sklearn.metrics.average_precision_score`` (step sum, no interpolation)."""
    return ranking_metrics(labels, scores)["ap"]


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """Max F1 over every distinct threshold t with predictions ``score >= t`` (0/0 = 0)."""
    return ranking_metrics(labels, scores)["f1_max"]
