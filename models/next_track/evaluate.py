"""Offline next-item evaluation of an exported next-track SavedModel against the baselines.

Protocol (stated in :data:`PROTOCOL` and docs/recommender.md):

- Split: whatever the ``Sessions`` artifact holds; on real logs the
  per-listener time split (a session is test when it starts in the last
  share of its listener's time span).
- Cases: for every test session with at least two plays and every position
  ``i >= 1``, the prefix is ``plays[:i]`` and the target ``plays[i]``.
  Targets never played in the training sessions (which no recommender could
  have learned) are skipped and counted.
- Inputs: the model reads the prefix's last ``max_prefix_length`` plays (its
  graph cuts them) and the listener's plays strictly before the session
  starts, whatever their split (its history: what a serving client sends),
  through the ``recommend`` signature (``serving_default`` for models
  without one, which gets no history). Baselines see the whole prefix, the
  listener and every earlier play (never less than the model).
- Ranking: every recommender ranks the full catalogue (``vocab.txt``); ties
  never favour the target (see :mod:`musicrec.models.ranking_metrics`).
- Metrics: HR@k, MRR@k, NDCG@k for k in 1, 5, 10, 20, coverage@20 and
  popularity bias@20, for the model and every baseline, from the same cases.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from musicrec.atomic import write_json_atomic
from musicrec.models import ranking_metrics
from musicrec.models.next_track import data
from musicrec.models.next_track.history import ListeningHistory
from musicrec.models.next_track.hparams import NextTrackHParams
from musicrec.models.next_track.layout import PADDING_TOKEN
from musicrec.models.next_track.sessions import SessionRecord, read_session_records
from musicrec.models.session_baselines import Baseline, default_baselines

logger = logging.getLogger(__name__)

STANDARD_CUTOFFS = (1, 5, 10)
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"
FALLBACK_HISTORY_PLAYS = 10_000
PROTOCOL = (
    "next-item: for each test session with >= 2 plays and each position i >= 1, "
    "prefix = plays[:i] (the model reads its last {max_prefix_length} plays, plus the listener's "
    "plays strictly before the session start as history; the baselines get every such play), target = "
    "plays[i]; targets never played in the training sessions are skipped and counted; the full "
    "catalogue of {catalogue} tracks is ranked; rank = 1 + #higher scores + #other tracks with an equal score "
    "(ties never "
    "favour the target); HR@k = share of cases with rank <= k, MRR@k = mean 1/rank (0 when "
    "rank > k), NDCG@k = mean 1/log2(rank+1) (0 when rank > k); coverage@20 = share of the "
    "catalogue in any top-20 list; popularity bias@20 = mean over cases of the mean (play count / "
    "max play count) of the top-20 list.")


class NoTestCasesError(ValueError):
    """The test sessions hold no case to score (no session of 2+ plays with a learnable target)."""


PROGRESS_SECONDS = 30.0


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

    def top_k(self, prefixes: Sequence[Sequence[str]], histories: Sequence[Sequence[str]],
              history_rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keys (``str`` objects) and scores, ``[batch, k]`` each, best first.

        Args:
            prefixes: each row's session so far.
            histories: the distinct histories of the batch (plays, oldest first).
            history_rows: which of ``histories`` each prefix has (``None``: one each, in order).
                Rows share their history tensor instead of each converting thousands of keys.
        """
        inputs = {"track_keys": tf.constant(_padded(prefixes), tf.string)}
        if self.personalised:
            rows = list(range(len(prefixes))) if history_rows is None else list(history_rows)
            inputs.update(history_keys=tf.gather(tf.constant(_padded(histories), tf.string), rows),
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
             history_plays: int | None = None, history_files: Sequence[str] | None = None,
             max_sessions: int = 0) -> dict:
    """Ranking metrics of the SavedModel and every baseline on the same next-item cases.

    Args:
        saved_model_dir: SavedModel with the ``next_track`` signatures.
        test_files: GZIP TFRecords of test sessions.
        train_files: GZIP TFRecords of training sessions (the baselines fit on
            them; only their tracks can be targets).
        examples_dir: Sessions artifact holding ``vocab.txt`` (the catalogue).
        k: the main cutoff (coverage and popularity bias use it too).
        batch_size: cases per signature call.
        max_prefix_length: only stated in the protocol; the model's graph cuts
            the prefix to the length it was trained with.
        output_dir: where ``comparison.json`` and ``comparison.png`` go;
            ``None`` writes nothing.
        baselines: defaults to :func:`session_baselines.default_baselines`.
        history_plays: the listener's most recent plays sent as history (the
            graph keeps the ones it reads); ``None``: the model's
            ``history_length`` from its checkpoint beside the SavedModel, else 10 000.
        history_files: the sessions whose plays make up listeners' histories
            (every play strictly before a test session's start counts, as a
            serving client would send it); ``None``: ``train_files`` and ``test_files``.
        max_sessions: score at most this many test sessions, a stable sample
            (:func:`sample_sessions`); 0: all of them.

    Returns:
        See :func:`evaluate_sessions`; with a sample, also ``test_sessions``
        ``{"total", "scored"}``.
    """
    train_sessions = read_session_records(train_files)
    every_test_session = read_session_records(test_files)
    test_sessions = sample_sessions(every_test_session, max_sessions)
    sampled = len(test_sessions) < len(every_test_session)
    if sampled:
        logger.info("next_track evaluation: a stable sample of %d of the %d test sessions "
                    "(max_sessions)", len(test_sessions), len(every_test_session))
    history_sessions = (read_session_records(history_files) if history_files is not None
                        else train_sessions + test_sessions)
    report = evaluate_sessions(
        SavedModelRecommender(saved_model_dir, k), test_sessions, train_sessions,
        ListeningHistory(history_sessions), data.read_vocabulary(examples_dir),
        history_plays=_trained_history_length(saved_model_dir) if history_plays is None else history_plays,
        k=k, batch_size=batch_size, max_prefix_length=max_prefix_length, output_dir=output_dir,
        baselines=baselines)
    if sampled:
        report["test_sessions"] = {"total": len(every_test_session), "scored": len(test_sessions)}
    return report


def sample_sessions(sessions: Sequence[SessionRecord], max_sessions: int) -> list[SessionRecord]:
    """The ``max_sessions`` sessions with the lowest :func:`data.session_hash`, in their order.

    A uniform sample that stays put: the same sessions are drawn for every
    model scored on them, and a session keeps its place as others are added.
    All of them when ``max_sessions`` is 0 or no fewer.
    """
    if max_sessions <= 0 or len(sessions) <= max_sessions:
        return list(sessions)
    drawn = set(sorted(range(len(sessions)),
                       key=lambda row: data.session_hash(sessions[row].session_id))[:max_sessions])
    return [session for row, session in enumerate(sessions) if row in drawn]


def evaluate_sessions(recommender: "SavedModelRecommender", test_sessions: Sequence[SessionRecord],
                      fit_sessions: Sequence[SessionRecord], history: ListeningHistory,
                      vocabulary: Sequence[str], history_plays: int, k: int = 20, batch_size: int = 256,
                      max_prefix_length: int = NextTrackHParams.max_prefix_length,
                      output_dir: str | None = None, baselines: Sequence[Baseline] | None = None,
                      per_user: bool = False) -> dict:
    """The harness: the model and every baseline on every next-item case of ``test_sessions``.

    Args:
        recommender: the model under test.
        test_sessions: sessions whose positions are the cases.
        fit_sessions: what the baselines fit on (the model's training data);
            a target without a play in them is skipped and counted.
        history: every listener's plays; a case's history is the listener's
            plays strictly before its session starts: the model gets the last
            ``history_plays`` of them (what it reads), the baselines all of them.
        vocabulary: the catalogue, ranked whole by every recommender.
        per_user: also report ``hr@k`` and ``mrr@k`` per listener (``per_user``).

    Returns:
        ``{"model": {metric: value}, "baselines": {name: {metric: value}},
        "best_baseline": {metric: name}, "n_predictions", "skipped_targets",
        "catalogue_size", "personalised", "protocol"}`` (and ``per_user``);
        metrics are ``hr@k``, ``mrr@k``, ``ndcg@k`` (k = 1, 5, 10 and ``k``),
        ``coverage@k``, ``popularity_bias@k`` and ``cases``.

    Raises:
        ValueError: no test case has a target the recommenders could learn.
    """
    cutoffs = sorted({cutoff for cutoff in STANDARD_CUTOFFS if cutoff < k} | {k})
    index = {key: position for position, key in enumerate(vocabulary)}
    baselines = list(baselines) if baselines is not None else default_baselines()
    for baseline in baselines:
        baseline.fit(fit_sessions, index)
    popularity = np.zeros(len(vocabulary))
    for session in fit_sessions:
        np.add.at(popularity, [index[key] for key in session.track_keys if key in index], 1)
    recommenders = ["model", *(baseline.name for baseline in baselines)]
    groups = [None, *sorted({session.user_id for session in test_sessions})] if per_user else [None]
    accumulators = {(group, name): ranking_metrics.RankingAccumulator(len(vocabulary), popularity, cutoffs, k)
                    for group in groups for name in recommenders}
    pending: list[tuple[list[str], int, int, str]] = []  # (prefix keys, history row, target, user)
    pending_histories: list[list[str]] = []

    def model_metrics_count() -> int:
        return accumulators[(None, "model")].count

    def add(name: str, user: str, add_case) -> None:
        add_case(accumulators[(None, name)])
        if per_user:
            add_case(accumulators[(user, name)])

    def score_model() -> None:
        keys, scores = recommender.top_k([prefix for prefix, _, _, _ in pending],
                                         pending_histories, [row for _, row, _, _ in pending])
        for row_keys, row_scores, (_, _, target, user) in zip(keys, scores, pending):
            listed = [index.get(key, -1) for key in row_keys]
            rank = ranking_metrics.rank_in_list(listed, list(row_scores), target)
            add("model", user, lambda accumulator: accumulator.add_rank(rank, listed))
        pending.clear()
        pending_histories.clear()

    skipped_targets = 0
    progress_at = time.monotonic() + PROGRESS_SECONDS
    for number, session in enumerate(test_sessions):
        if time.monotonic() > progress_at:
            logger.info("next_track evaluation: %d of %d test sessions, %d cases so far",
                        number, len(test_sessions), model_metrics_count() + len(pending))
            progress_at = time.monotonic() + PROGRESS_SECONDS
        ids = [index.get(key, -1) for key in session.track_keys]
        if len(ids) < 2:
            continue
        # The baselines read every earlier play, whatever the model asks for: a model that
        # reads less must not weaken the rules it is compared with.
        every_earlier = history.before(session.user_id, session.start_time, len(history.plays_of(session.user_id)))
        earlier = every_earlier[-history_plays:] if history_plays > 0 else []
        every_earlier_ids = [index.get(key, -1) for key in every_earlier]
        for baseline in baselines:
            baseline.start_session(session.user_id, every_earlier_ids)
        history_row = None
        for position in range(1, len(ids)):
            target = ids[position]
            if target < 0 or popularity[target] == 0:
                skipped_targets += 1
                continue
            for baseline in baselines:
                tracks, values = baseline.evidence(ids[:position])
                add(baseline.name, session.user_id, lambda accumulator: accumulator.add_evidence(
                    baseline.prior, tracks, values, target))
            if history_row is None:
                pending_histories.append(earlier if recommender.personalised else [])
                history_row = len(pending_histories) - 1
            pending.append((list(session.track_keys[:position]), history_row, target, session.user_id))
            if len(pending) == batch_size:
                score_model()
                history_row = None
    if pending:
        score_model()
    model_metrics = accumulators[(None, "model")]
    if model_metrics.count == 0:
        raise NoTestCasesError(
            f"no test case among {len(test_sessions)} test sessions: a case needs a session of 2 or "
            f"more plays whose next track was played in training ({skipped_targets} targets were not)")

    baseline_results = {baseline.name: accumulators[(None, baseline.name)].result() for baseline in baselines}
    report = {
        "model": model_metrics.result(),
        "baselines": baseline_results,
        "best_baseline": {metric: max(baseline_results, key=lambda name: baseline_results[name][metric])
                          for metric in (f"hr@{k}", f"mrr@{k}", f"ndcg@{k}")} if baseline_results else {},
        "n_predictions": model_metrics.count,
        "skipped_targets": skipped_targets,
        "catalogue_size": len(vocabulary),
        "personalised": recommender.personalised,
        "protocol": PROTOCOL.format(max_prefix_length=max_prefix_length, catalogue=len(vocabulary)),
    }
    if per_user:
        report["per_user"] = {
            user: {name: {metric: value for metric, value in accumulators[(user, name)].result().items()
                          if metric in (f"hr@{k}", f"mrr@{k}", "cases")} for name in recommenders}
            for user in groups[1:]}
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
