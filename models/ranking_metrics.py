"""Next-item ranking metrics: HR@k, MRR@k, NDCG@k, coverage@k and popularity bias@k.

Protocol (the one every recommender in the evaluation harness is scored by):

- A *case* is one (prefix, target) pair; a recommender answers it with a
  score for every catalogue track (or a best-first list with scores).
- The target's rank is **pessimistic on ties**: ``rank = 1 + #(tracks scoring
  strictly higher) + #(other tracks scoring exactly the same)``. A tie can
  therefore never lift the target; a recommender that scores every track
  equally ranks the target last.
- ``HR@k`` is the share of cases with ``rank <= k``; ``MRR@k`` the mean of
  ``1 / rank`` (0 when ``rank > k``); ``NDCG@k`` the mean of
  ``1 / log2(rank + 1)`` (0 when ``rank > k``; one relevant track, so the
  ideal DCG is 1).
- ``coverage@k``: the share of the catalogue that appears in at least one
  top-``k`` list; ``popularity_bias@k``: the mean, over cases, of the mean
  training popularity (play count / the largest play count) of the top-``k``
  list (as in Ludewig et al. 2021). Top-``k`` lists break ties by catalogue
  index (most popular first), a rule blind to the target.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CUTOFFS = (1, 5, 10, 20)
COVERAGE_CUTOFF = 20


def pessimistic_rank(scores: np.ndarray, target: int) -> int:
    """1-based rank of ``target`` in ``scores`` ``[n_tracks]``, every tie counted against it."""
    target_score = scores[target]
    if np.isnan(target_score):
        return len(scores)
    higher = int(np.count_nonzero(scores > target_score))
    tied_others = int(np.count_nonzero(scores == target_score)) - 1
    return 1 + higher + tied_others


def rank_in_list(ranked: Sequence[int], scores: Sequence[float] | None, target: int) -> int | None:
    """1-based rank of ``target`` in a best-first list, or ``None`` when it is absent.

    With ``scores``, listed tracks that tie with the target all count as
    ranked before it (pessimistic), as :func:`pessimistic_rank` does.
    """
    ranked = list(ranked)
    if target not in ranked:
        return None
    position = ranked.index(target)
    if scores is None:
        return position + 1
    target_score = scores[position]
    return 1 + sum(1 for i, s in enumerate(scores) if i != position and s >= target_score)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties broken by the lower index."""
    k = min(k, len(scores))
    # argpartition then a stable sort on (-score, index) keeps the tie rule exact.
    candidates = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    threshold = scores[candidates].min()
    candidates = np.flatnonzero(scores >= threshold)
    order = np.lexsort((candidates, -scores[candidates]))
    return candidates[order][:k]


class RankingAccumulator:
    """Accumulates the metrics of one recommender over cases.

    Args:
        catalogue_size: tracks in the ranked catalogue (for coverage).
        popularity: ``[catalogue_size]`` training play counts (for popularity bias).
        cutoffs: the ``k`` of HR/MRR/NDCG.
        list_cutoff: the ``k`` of coverage and popularity bias.
    """

    def __init__(self, catalogue_size: int, popularity: np.ndarray | None = None,
                 cutoffs: Sequence[int] = CUTOFFS, list_cutoff: int = COVERAGE_CUTOFF):
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self.list_cutoff = list_cutoff
        self.catalogue_size = catalogue_size
        self._popularity = None
        if popularity is not None:
            popularity = np.asarray(popularity, dtype=np.float64)
            self._popularity = popularity / max(float(popularity.max()), 1.0)
        self._hits = dict.fromkeys(self.cutoffs, 0)
        self._reciprocal = dict.fromkeys(self.cutoffs, 0.0)
        self._ndcg = dict.fromkeys(self.cutoffs, 0.0)
        self._recommended = np.zeros(catalogue_size, dtype=bool)
        self._popularity_sum = 0.0
        self.count = 0

    def add_rank(self, rank: int | None, top_list: Sequence[int] = ()) -> None:
        """One case: the target's 1-based ``rank`` (``None`` = not ranked) and its top-k list."""
        self.count += 1
        for k in self.cutoffs:
            if rank is not None and rank <= k:
                self._hits[k] += 1
                self._reciprocal[k] += 1.0 / rank
                self._ndcg[k] += 1.0 / math.log2(rank + 1)
        top = np.asarray(list(top_list)[:self.list_cutoff], dtype=np.int64)
        top = top[(top >= 0) & (top < self.catalogue_size)]
        if len(top):
            self._recommended[top] = True
            if self._popularity is not None:
                self._popularity_sum += float(self._popularity[top].mean())

    def add_scores(self, scores: np.ndarray, target: int) -> None:
        """One case given every catalogue track's score ``[catalogue_size]`` and the target's index."""
        self.add_rank(pessimistic_rank(scores, target), top_k_indices(scores, self.list_cutoff))

    def result(self) -> dict[str, float]:
        """``hr@k``, ``mrr@k``, ``ndcg@k`` per cutoff, ``coverage@K``, ``popularity_bias@K``, ``cases``."""
        n = max(self.count, 1)
        metrics: dict[str, float] = {}
        for k in self.cutoffs:
            metrics[f"hr@{k}"] = self._hits[k] / n
            metrics[f"mrr@{k}"] = self._reciprocal[k] / n
            metrics[f"ndcg@{k}"] = self._ndcg[k] / n
        metrics[f"coverage@{self.list_cutoff}"] = float(self._recommended.mean()) if self.catalogue_size else 0.0
        metrics[f"popularity_bias@{self.list_cutoff}"] = self._popularity_sum / n
        metrics["cases"] = self.count
        return metrics
