"""Offline next-item evaluation of an exported next-track SavedModel against the baselines.

Protocol (stated in :data:`PROTOCOL` and docs/recommender.md):

- Split: whatever the ``Sessions`` artifact holds; on real logs the
  per-listener time split (a session is test when it starts in the last
  share of its listener's time span).
- Cases: for every test session with at least two plays and every position
  ``i >= 1``, the prefix is ``plays[:i]`` and the target ``plays[i]``.
  Targets outside the training vocabulary (the catalogue) cannot be ranked
  and are skipped and counted.
- Inputs: the model reads the prefix's last ``max_prefix_length`` plays (its
  graph cuts them) and the listener's plays of the *training* sessions
  strictly before the session starts (its history), through the
  ``recommend`` signature (``serving_default`` for models without one, which
  gets no history). Baselines see the whole prefix and the listener id.
- Ranking: every recommender ranks the full catalogue of training tracks;
  ties never favour the target (see :mod:`musicrec.models.ranking_metrics`).
- Metrics: HR@k, MRR@k, NDCG@k for k in 1, 5, 10, 20, coverage@20 and
  popularity bias@20, for the model and every baseline, from the same cases.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import ranking_metrics
from musicrec.models.next_track import data
from musicrec.models.next_track.history import ListeningHistory, read_session_records
from musicrec.models.next_track.model import PADDING_TOKEN, NextTrackHParams
from musicrec.models.session_baselines import Baseline, default_baselines

logger = logging.getLogger(__name__)

STANDARD_CUTOFFS = (1, 5, 10)
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"
FALLBACK_HISTORY_PLAYS = 10_000
PROTOCOL = (
    "next-item: for each test session with >= 2 plays and each position i >= 1, "
    "prefix = plays[:i] (the model reads its last {max_prefix_length} plays, plus the listener's "
    "training plays strictly before the session start as history), target = plays[i]; targets not "
    "in the training vocabulary are skipped and counted; the full catalogue of {catalogue} training "
    "tracks is ranked; rank = 1 + #higher scores + #other tracks with an equal score (ties never "
    "favour the target); HR@k = share of cases with rank <= k, MRR@k = mean 1/rank (0 when "
    "rank > k), NDCG@k = mean 1/log2(rank+1) (0 when rank > k); coverage@20 = share of the "
    "catalogue in any top-20 list; popularity bias@20 = mean over cases of the mean (play count / "
    "max play count) of the top-20 list.")


class RankingMetrics:
    """HR@k and MRR@k over (best-first list of keys, target) cases, for callers that have only lists."""

    def __init__(self, cutoffs: Sequence[int]):
        self.cutoffs = tuple(sorted(set(cutoffs)))
        self._hits = {k: 0 for k in self.cutoffs}
        self._reciprocal_ranks = {k: 0.0 for k in self.cutoffs}
        self.count = 0

    def add(self, ranked: Sequence[str], target: str) -> None:
        """Scores one case; ``ranked`` is best first and at least ``max(cutoffs)`` long when it can be."""
        rank = ranking_metrics.rank_in_list(ranked, None, target)
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

    Uses :func:`data.training_pairs`; sessions of fewer than two plays give no case.
    """
    for plays in sessions:
        if len(plays) < 2:
            continue
        prefixes, targets = data.training_pairs(
            tf.constant(plays), max_prefix_length, padding=PADDING_TOKEN)
        for prefix, target in zip(prefixes.numpy(), targets.numpy()):
            yield prefix, target.decode("utf-8")


def _padded(rows: Sequence[Sequence[str]]) -> np.ndarray:
    width = max((len(row) for row in rows), default=0)
    return np.array([list(row) + [PADDING_TOKEN] * (width - len(row)) for row in rows],
                    dtype=object).reshape(len(rows), width)


class SavedModelRecommender:
    """Top-``k`` lists from a next-track SavedModel (``recommend``, else ``serving_default``)."""

    def __init__(self, saved_model_dir: str, k: int):
        loaded = tf.saved_model.load(saved_model_dir)
        self.personalised = "recommend" in loaded.signatures
        self._signature = loaded.signatures["recommend" if self.personalised else "serving_default"]
        self._loaded = loaded  # keeps the signature's variables alive
        self.k = k
        if not self.personalised:
            returned = self._signature.structured_outputs["track_keys"].shape[-1]
            if returned is not None and returned < k:
                raise ValueError(f"{saved_model_dir} returns {returned} tracks per prefix, fewer than k={k}")

    def top_k(self, prefixes: Sequence[Sequence[str]], histories: Sequence[Sequence[str]]
              ) -> tuple[np.ndarray, np.ndarray]:
        """Keys (``str`` objects) and scores, ``[batch, k]`` each, best first."""
        inputs = {"track_keys": tf.constant(_padded(prefixes), tf.string)}
        if self.personalised:
            inputs.update(history_keys=tf.constant(_padded(histories), tf.string),
                          k=tf.fill([len(prefixes)], self.k),
                          exclude_seen=tf.zeros([len(prefixes)], tf.bool))
        outputs = self._signature(**inputs)
        keys = np.vectorize(lambda key: key.decode("utf-8"), otypes=[object])(
            outputs["track_keys"].numpy()[:, :self.k])
        return keys, outputs["scores"].numpy()[:, :self.k]


def _trained_history_length(saved_model_dir: str) -> int:
    """The ``history_length`` in ``<model>/checkpoint/hparams.json`` beside ``<model>/serving``."""
    from musicrec.models import warm_start

    checkpoint = warm_start.load_checkpoint(os.path.dirname(os.path.normpath(saved_model_dir)))
    if checkpoint is None or "history_length" not in checkpoint.hparams:
        return FALLBACK_HISTORY_PLAYS
    return int(checkpoint.hparams["history_length"])


def evaluate(saved_model_dir: str, test_files: Sequence[str], train_files: Sequence[str],
             examples_dir: str, k: int = 20, batch_size: int = 256,
             max_prefix_length: int = NextTrackHParams.max_prefix_length,
             output_dir: str | None = None, baselines: Sequence[Baseline] | None = None,
             history_plays: int | None = None) -> dict:
    """Ranking metrics of the SavedModel and every baseline on the same next-item cases.

    Args:
        saved_model_dir: SavedModel with the ``next_track`` signatures.
        test_files: GZIP TFRecords of test sessions.
        train_files: GZIP TFRecords of training sessions (baselines fit on
            them; the listener histories come from them).
        examples_dir: Sessions artifact holding ``vocab.txt`` (the catalogue).
        k: the main cutoff (coverage and popularity bias use it too).
        batch_size: cases per signature call.
        max_prefix_length: only stated in the protocol; the model's graph cuts
            the prefix to the length it was trained with.
        output_dir: where ``comparison.json`` and ``comparison.png`` go;
            ``None`` writes nothing.
        baselines: defaults to :func:`session_baselines.default_baselines`.
        history_plays: the listener's most recent training plays sent as
            history (the graph keeps the ones it reads); ``None``: the
            model's ``history_length`` from its checkpoint beside the
            SavedModel, else 10 000.

    Returns:
        ``{"model": {metric: value}, "baselines": {name: {metric: value}},
        "best_baseline": {metric: name}, "n_predictions", "skipped_oov_targets",
        "catalogue_size", "personalised", "protocol"}``; metrics are
        ``hr@k``, ``mrr@k``, ``ndcg@k`` (k = 1, 5, 10 and ``k``),
        ``coverage@k``, ``popularity_bias@k`` and ``cases``.

    Raises:
        ValueError: ``serving_default`` returns fewer than ``k`` tracks, or no
            test case has an in-vocabulary target.
    """
    recommender = SavedModelRecommender(saved_model_dir, k)
    if history_plays is None:
        history_plays = _trained_history_length(saved_model_dir)
    cutoffs = sorted({cutoff for cutoff in STANDARD_CUTOFFS if cutoff < k} | {k})
    vocabulary = data.read_vocabulary(examples_dir)
    index = {key: position for position, key in enumerate(vocabulary)}
    train_sessions = read_session_records(train_files)
    history = ListeningHistory(train_sessions)
    baselines = list(baselines) if baselines is not None else default_baselines()
    for baseline in baselines:
        baseline.fit(train_sessions, index)
    popularity = baselines[0].popularity if baselines else None

    def accumulator():
        return ranking_metrics.RankingAccumulator(len(vocabulary), popularity, cutoffs, k)

    model_metrics = accumulator()
    baseline_metrics = {baseline.name: accumulator() for baseline in baselines}
    pending: list[tuple[list[str], list[str], int]] = []

    def score_model() -> None:
        keys, scores = recommender.top_k([p for p, _, _ in pending],
                                         [h for _, h, _ in pending] if recommender.personalised else [])
        for row_keys, row_scores, (_, _, target) in zip(keys, scores, pending):
            listed = [index.get(key, -1) for key in row_keys]
            model_metrics.add_rank(ranking_metrics.rank_in_list(listed, list(row_scores), target), listed)
        pending.clear()

    skipped_oov_targets = 0
    for session in read_session_records(test_files):
        ids = [index.get(key, -1) for key in session.track_keys]
        if len(ids) < 2:
            continue
        earlier = (history.before(session.user_id, session.start_time, history_plays)
                   if recommender.personalised else [])
        for position in range(1, len(ids)):
            target = ids[position]
            if target < 0:
                skipped_oov_targets += 1
                continue
            for baseline in baselines:
                baseline_metrics[baseline.name].add_scores(
                    baseline.scores(ids[:position], session.user_id), target)
            pending.append((list(session.track_keys[:position]), earlier, target))
            if len(pending) == batch_size:
                score_model()
    if pending:
        score_model()
    if model_metrics.count == 0:
        raise ValueError(f"no test case with an in-vocabulary target in {list(test_files)} "
                         f"({skipped_oov_targets} skipped out-of-vocabulary targets)")

    baseline_results = {name: metrics.result() for name, metrics in baseline_metrics.items()}
    report = {
        "model": model_metrics.result(),
        "baselines": baseline_results,
        "best_baseline": {metric: max(baseline_results, key=lambda name: baseline_results[name][metric])
                          for metric in (f"hr@{k}", f"mrr@{k}", f"ndcg@{k}")} if baseline_results else {},
        "n_predictions": model_metrics.count,
        "skipped_oov_targets": skipped_oov_targets,
        "catalogue_size": len(vocabulary),
        "personalised": recommender.personalised,
        "protocol": PROTOCOL.format(max_prefix_length=max_prefix_length, catalogue=len(vocabulary)),
    }
    if output_dir:
        write_comparison(report, output_dir, k)
    return report


def write_comparison(report: dict, output_dir: str, k: int = 20) -> None:
    """``comparison.json`` (every recommender's metrics) and ``comparison.png`` (HR, MRR, NDCG at ``k``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(output_dir, exist_ok=True)
    rows = {"model": report["model"], **report["baselines"]}
    write_json_atomic(os.path.join(output_dir, COMPARISON_JSON),
                      {"k": k, "n_predictions": report["n_predictions"], "recommenders": rows,
                       "protocol": report["protocol"]})
    metrics = [f"hr@{k}", f"mrr@{k}", f"ndcg@{k}"]
    names = list(rows)
    width = 0.8 / len(metrics)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0))
    for offset, metric in enumerate(metrics):
        positions = np.arange(len(names)) + (offset - (len(metrics) - 1) / 2) * width
        axes.bar(positions, [rows[name][metric] for name in names], width, label=metric)
    axes.set_xticks(np.arange(len(names)), names, rotation=20)
    axes.set_ylabel("score")
    axes.set_title(f"next track: model vs baselines ({report['n_predictions']} cases)")
    axes.legend()
    figure.tight_layout()
    staging = os.path.join(output_dir, f".tmp-{COMPARISON_PNG}")
    figure.savefig(staging, format="png", dpi=100)
    plt.close(figure)
    os.replace(staging, os.path.join(output_dir, COMPARISON_PNG))
