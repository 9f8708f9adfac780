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
# The accuracy metrics at the main cutoff, by the name results carry.
RANKED_METRICS = tuple(f"{name}@{COVERAGE_CUTOFF}" for name in ("hr", "mrr", "ndcg"))


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


class DensePrior:
    """A score vector shared by many cases, prepared for :func:`rank_with_evidence`.

    Most baselines score a case as this prior (popularity, or a tiny
    popularity tie-break) plus a few non-zero *evidence* entries (the
    successors of the last play, the neighbours' tracks). Ranking such a
    score needs no catalogue-sized work per case: ``O(evidence + log n)``.

    Args:
        prior: ``[n_tracks]`` float scores every case starts from.
    """

    def __init__(self, prior: np.ndarray):
        self.prior = np.asarray(prior, dtype=np.float64)
        self.sorted = np.sort(self.prior)
        # Best first, ties by the lower index: the top-k list's own tie rule.
        self.order = np.lexsort((np.arange(len(self.prior)), -self.prior))
        self._marked = np.zeros(len(self.prior), dtype=bool)

    def __len__(self) -> int:
        return len(self.prior)

    def best_without(self, tracks: np.ndarray, count: int) -> np.ndarray:
        """The ``count`` best tracks by prior (best first) that are not in ``tracks``."""
        self._marked[tracks] = True
        try:
            length = count + len(tracks)
            while True:
                head = self.order[:length]
                kept = head[~self._marked[head]]
                if len(kept) >= count or length >= len(self.order):
                    return kept[:count]
                length *= 2
        finally:
            self._marked[tracks] = False


def _best(tracks: np.ndarray, scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` best ``(tracks, scores)`` pairs, every pair tied with the last one included."""
    if len(scores) > count:
        threshold = np.partition(scores, len(scores) - count)[len(scores) - count]
        keep = scores >= threshold
        tracks, scores = tracks[keep], scores[keep]
    return tracks, scores


def rank_with_evidence(prior: DensePrior, tracks: np.ndarray, evidence: np.ndarray,
                       target: int, list_cutoff: int = COVERAGE_CUTOFF) -> tuple[int, np.ndarray]:
    """The pessimistic rank of ``target`` and the top-``list_cutoff`` list of ``prior + evidence``.

    Exactly what :func:`pessimistic_rank` and :func:`top_k_indices` give on
    the dense vector ``prior.prior`` with ``evidence`` added at ``tracks``.

    Args:
        prior: the shared dense part.
        tracks: int ``[m]`` distinct catalogue indices holding evidence.
        evidence: float ``[m]`` what each of them adds to its prior score.
        target: the target's catalogue index.
        list_cutoff: length of the top list.

    Returns:
        ``(rank, top)``: 1-based rank; int64 ``[list_cutoff]`` indices, best first.
    """
    tracks = np.asarray(tracks, dtype=np.int64)
    scores = prior.prior[tracks] + np.asarray(evidence, dtype=np.float64)
    hit = np.flatnonzero(tracks == target)
    target_score = float(scores[hit[0]]) if len(hit) else float(prior.prior[target])
    # Tracks without evidence keep their prior: count those at or above the target's score...
    at_or_above = len(prior) - int(np.searchsorted(prior.sorted, target_score, side="left"))
    at_or_above -= int(np.count_nonzero(prior.prior[tracks] >= target_score))
    if not len(hit):
        at_or_above -= 1  # ...but not the target itself,
    # ...then the tracks with evidence, the target excepted.
    at_or_above += int(np.count_nonzero(scores >= target_score)) - (1 if len(hit) else 0)
    best_tracks, best_scores = _best(tracks, scores, list_cutoff)
    plain = prior.best_without(tracks, list_cutoff)
    candidates = np.concatenate([best_tracks, plain])
    candidate_scores = np.concatenate([best_scores, prior.prior[plain]])
    top = candidates[np.lexsort((candidates, -candidate_scores))][:list_cutoff]
    return 1 + at_or_above, top


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

    def add_evidence(self, prior: DensePrior, tracks: np.ndarray, evidence: np.ndarray, target: int) -> None:
        """One case scored as ``prior`` plus sparse ``evidence`` (see :func:`rank_with_evidence`)."""
        self.add_rank(*rank_with_evidence(prior, tracks, evidence, target, self.list_cutoff))

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
