"""Offline next-item evaluation of an exported next-track SavedModel.

Protocol (as in GRU4Rec's ``evaluation.py``, stated in :data:`PROTOCOL`): for
every test session with at least two plays and every position ``i >= 1``, the
prefix is ``plays[:i]`` (its last ``max_prefix_length`` plays) and the target
is ``plays[i]``. Targets outside the training vocabulary cannot be ranked and
are skipped and counted. Each recommender ranks the full catalogue of training
tracks; a case scores a hit at ``k`` when the target is among the first ``k``,
and a reciprocal rank ``1 / rank`` (0 past ``k``). HR@k and MRR@k are the means
over all cases. The SavedModel (through its ``serving_default`` signature, in
batches) and the baselines answer the same cases in the same loop.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from musicrec.models.baselines import NextTrackBaseline, PopularityBaseline
from musicrec.models.next_track import data
from musicrec.models.next_track.model import PADDING_TOKEN, NextTrackHParams

STANDARD_CUTOFFS = (1, 5, 10)
PROTOCOL = (
    "next-item: for each test session with >= 2 plays and each position i >= 1, "
    "prefix = plays[:i] (last {max_prefix_length} plays), target = plays[i]; targets not in the "
    "training vocabulary are skipped and counted; the full catalogue of training tracks is "
    "ranked; HR@k = share of cases with the target in the top k, MRR@k = mean of 1/rank "
    "(0 when rank > k); ties in the popularity baseline are broken by track key.")


class RankingMetrics:
    """Accumulates HR@k and MRR@k over (ranked list, target) cases."""

    def __init__(self, cutoffs: Sequence[int]):
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self._hits = {k: 0 for k in self.cutoffs}
        self._reciprocal_ranks = {k: 0.0 for k in self.cutoffs}
        self.count = 0

    def add(self, ranked: Sequence[str], target: str) -> None:
        """Scores one case; ``ranked`` is best first and at least ``max(cutoffs)`` long when it can be."""
        rank = list(ranked).index(target) + 1 if target in ranked else None
        self.count += 1
        for k in self.cutoffs:
            if rank is not None and rank <= k:
                self._hits[k] += 1
                self._reciprocal_ranks[k] += 1.0 / rank

    def result(self) -> dict[str, float]:
        """``{"hr@k": ..., "mrr@k": ...}`` for every cutoff (0.0 before any case)."""
        denominator = max(self.count, 1)
        metrics = {}
        for k in self.cutoffs:
            metrics[f"hr@{k}"] = self._hits[k] / denominator
            metrics[f"mrr@{k}"] = self._reciprocal_ranks[k] / denominator
        return metrics


def next_item_cases(sessions: Iterable[list[str]],
                    max_prefix_length: int) -> Iterator[tuple[np.ndarray, str]]:
    """Yields ``(prefix bytes [max_prefix_length] right-padded with b"", target key)`` per case.

    Uses :func:`data.training_pairs`, so evaluation prefixes are cut exactly as
    training prefixes; sessions of fewer than two plays give no case.
    """
    for plays in sessions:
        if len(plays) < 2:
            continue
        prefixes, targets = data.training_pairs(
            tf.constant(plays), max_prefix_length, padding=PADDING_TOKEN)
        for prefix, target in zip(prefixes.numpy(), targets.numpy()):
            yield prefix, target.decode("utf-8")


def evaluate(saved_model_dir: str, test_files: Sequence[str], train_files: Sequence[str],
             examples_dir: str, k: int = 20, batch_size: int = 256,
             max_prefix_length: int = NextTrackHParams.max_prefix_length,
             output_dir: str | None = None) -> dict:
    """HR and MRR at 1, 5, 10 and ``k`` of the SavedModel and the baselines.

    Args:
        saved_model_dir: SavedModel with the ``next_track`` ``serving_default``
            signature; it must return at least ``k`` tracks.
        test_files: GZIP TFRecords of test sessions.
        train_files: GZIP TFRecords of training sessions (baselines fit on them).
        examples_dir: Sessions artifact holding ``vocab.txt`` (the training catalogue).
        k: the main cutoff.
        batch_size: prefixes per signature call.
        max_prefix_length: plays kept per prefix; use the value the model trained with.
        output_dir: where plots go (PNG); ``None`` writes none.

    Returns:
        ``{"model": {"hr@k": ..., "mrr@k": ...}, "baselines": {"popularity": {...}},
        "n_predictions": N, "skipped_oov_targets": M, "protocol": "..."}``.

    Raises:
        ValueError: the signature returns fewer than ``k`` tracks, or no test
            case has an in-vocabulary target.
    """
    signature = tf.saved_model.load(saved_model_dir).signatures["serving_default"]
    returned = signature.structured_outputs["track_keys"].shape[-1]
    if returned is not None and returned < k:
        raise ValueError(f"{saved_model_dir} returns {returned} tracks per prefix, fewer than k={k}")
    cutoffs = [cutoff for cutoff in STANDARD_CUTOFFS if cutoff < k] + [k]

    vocabulary = set(data.read_vocabulary(examples_dir))
    baselines: dict[str, NextTrackBaseline] = {
        "popularity": PopularityBaseline().fit(data.read_sessions(train_files)),
    }
    model_metrics = RankingMetrics(cutoffs)
    baseline_metrics = {name: RankingMetrics(cutoffs) for name in baselines}

    def score_batch(prefixes: list[np.ndarray], targets: list[str]) -> None:
        ranked_keys = signature(track_keys=tf.constant(np.stack(prefixes)))["track_keys"].numpy()
        for prefix, ranked, target in zip(prefixes, ranked_keys, targets):
            model_metrics.add([key.decode("utf-8") for key in ranked[:k]], target)
            plays = [key.decode("utf-8") for key in prefix if key]
            for name, baseline in baselines.items():
                baseline_metrics[name].add(baseline.recommend(plays, k), target)

    skipped_oov_targets = 0
    prefixes: list[np.ndarray] = []
    targets: list[str] = []
    for prefix, target in next_item_cases(data.read_sessions(test_files), max_prefix_length):
        if target not in vocabulary:
            skipped_oov_targets += 1
            continue
        prefixes.append(prefix)
        targets.append(target)
        if len(prefixes) == batch_size:
            score_batch(prefixes, targets)
            prefixes, targets = [], []
    if prefixes:
        score_batch(prefixes, targets)
    if model_metrics.count == 0:
        raise ValueError(f"no test case with an in-vocabulary target in {list(test_files)} "
                         f"({skipped_oov_targets} skipped out-of-vocabulary targets)")

    return {
        "model": model_metrics.result(),
        "baselines": {name: metrics.result() for name, metrics in baseline_metrics.items()},
        "n_predictions": model_metrics.count,
        "skipped_oov_targets": skipped_oov_targets,
        "protocol": PROTOCOL.format(max_prefix_length=max_prefix_length),
    }
