"""Cold start: recommending tracks that have audio but no plays (content-based).

In the way of van den Oord, Dieleman and Schrauwen (2013) and Dieleman's 2014
Spotify work, a regressor maps a track's audio to the next-track model's
track-embedding space, trained on the warm tracks (audio and plays). A cold
track (audio, no plays) then gets predicted parameters and joins the catalogue.

- Audio side: the genre SavedModel's ``serving_default`` output ``embedding``
  ``[d_audio]`` per track (the model's answer for the track's segments together).
- Target side, per track id, every per-track weight of the next-track model:
  the input embedding row and what ranking uses (the output layer's kernel
  column and bias, or the tied embedding and its bias), so a cold track can be
  both recommended and part of a prefix.
- Regressor: ridge regression on z-scored audio embeddings, one per weight
  tensor, its penalty picked from ``alphas`` by exact leave-one-out error
  (closed form, :class:`RidgeRegressor`); predicted vectors are then scaled
  to the warm tracks' mean length (:func:`match_warm_norm`), since ranking is
  by dot product and ridge's conditional mean is far shorter than any track.

Evaluation protocol (:data:`PROTOCOL`): the held-out sessions (demo data:
``holdout/cold_plays.csv``) are cut into next-item cases exactly as test
sessions are (:func:`musicrec.models.next_track.evaluate.next_item_cases`);
a case counts when its target is a held-out play. The extended SavedModel
ranks the full extended catalogue (warm + cold tracks). Cold HR@k is the share
of those cases with the target in the top ``k``; the warm HR@k is the same
model's HR@k on the regular test split; random HR@k = ``k / catalogue size``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from typing import Iterable, Mapping, Sequence

import numpy as np

from musicrec.atomic import write_json_atomic, write_text_atomic
from musicrec.models.next_track.ridge import DEFAULT_ALPHAS, RidgeRegressor
from musicrec.models.next_track.track_weights import read_rows, track_weights, write_rows

logger = logging.getLogger(__name__)

COLD_START_DIR = "cold_start"          # inside the extended model's folder
SUMMARY_FILE = "summary.json"          # what was fitted and appended
CASES_FILE = "holdout_cases.jsonl"     # {"prefix": [keys], "target": key} per cold case
PROTOCOL = (
    "cold start: every session of the held-out plays file is cut into next-item cases as test "
    "sessions are (prefix = its last {max_prefix_length} plays); a case counts when its target is "
    "a held-out play (a track with no play in the training logs); targets outside the extended "
    "catalogue are skipped and counted; the extended model ranks the full extended catalogue "
    "(warm + cold tracks); cold HR@{k} = share of cases with the target in the top {k}; warm "
    "HR@{k} = the same model's HR@{k} on the regular test split; random HR@{k} = {k} / catalogue "
    "size.")


# --------------------------------------------------------------------------- audio side


def audio_embeddings(genre_saved_model_dir: str, audio_files: Sequence[str],
                     batch_size: int = 8) -> tuple[list[str], np.ndarray]:
    """Every track's genre-model ``embedding``: the model's answer for the track's segments together.

    Args:
        genre_saved_model_dir: the genre SavedModel (``serving_default`` takes
            ``log_mel`` float32 ``[tracks, segments, frames, n_mels]`` and
            returns ``embedding`` per track).
        audio_files: GZIP TFRecords of ``AudioExamples`` (any splits).
        batch_size: tracks per signature call.

    Returns:
        track ids (first-seen order) and float32 ``[n_tracks, d_audio]``.

    Raises:
        ValueError: the files hold no segment.
    """
    import tensorflow as tf

    from musicrec.models.genre.evaluate import predict_tracks, read_tracks

    signature = tf.saved_model.load(genre_saved_model_dir).signatures["serving_default"]
    n_mels = int(signature.structured_input_signature[1]["log_mel"].shape[-1])
    segments_by_track, _labels = read_tracks(list(audio_files), n_mels)
    track_ids = list(segments_by_track)
    embeddings = predict_tracks(signature, [segments_by_track[t] for t in track_ids], batch_size,
                                outputs=("embedding",))["embedding"]
    return track_ids, embeddings.astype(np.float32)


# --------------------------------------------------------------------------- extending a model


@dataclasses.dataclass
class ColdStartResult:
    """What :func:`extend_with_cold_tracks` did.

    Attributes:
        model: the extended core Keras model (``vocabulary`` ids).
        vocabulary: the trained model's tokens, then the appended cold tracks.
        warm_tracks: tracks with plays and audio (the regressor's training set).
        cold_tracks: tracks with audio but no plays, now in the vocabulary.
        regressors: one fitted regressor per per-track weight, by ``TrackWeight.name``.
        hparams: the trained model's ``NextTrackHParams``.
    """

    model: object
    hparams: object
    vocabulary: list[str]
    warm_tracks: list[str]
    cold_tracks: list[str]
    regressors: dict[str, RidgeRegressor]
    warm_norm: bool = True

    def summary(self) -> dict:
        return {
            "vocabulary_size": len(self.vocabulary), "n_warm_tracks": len(self.warm_tracks),
            "n_cold_tracks": len(self.cold_tracks), "cold_tracks": self.cold_tracks,
            "max_prefix_length": self.hparams.max_prefix_length, "warm_norm": self.warm_norm,
            "regressors": {name: {"alpha": r.alpha, "loo_r2": r.loo_r2,
                                  "inputs": int(r.coefficients.shape[0]),
                                  "outputs": int(r.coefficients.shape[1])}
                           for name, r in self.regressors.items()},
        }


def match_warm_norm(predicted: np.ndarray, warm_rows: np.ndarray) -> np.ndarray:
    """Scales each predicted row ``[n, d]`` to the mean length of the warm tracks' rows ``[m, d]``.

    Ridge predicts the conditional mean of a track's vector given its audio,
    which averages away everything the audio does not determine (here, a
    track's place in its playlists) and so comes out much shorter than any
    trained vector. Scores are dot products, so a short vector scores like
    the average track of its genre (near the bottom of a confident ranking).
    Keeping the direction the audio gives and the length of a typical trained
    track makes a cold track score like one of its genre's tracks.
    Rows of width 1 (biases) are returned unchanged.
    """
    if predicted.shape[1] < 2 or len(predicted) == 0:
        return predicted
    target = float(np.mean(np.linalg.norm(warm_rows, axis=1)))
    lengths = np.linalg.norm(predicted, axis=1, keepdims=True)
    return predicted * (target / np.maximum(lengths, 1e-12))


def extend_with_cold_tracks(checkpoint_dir: str, played_tracks: Iterable[str],
                            audio_track_ids: Sequence[str], audio_vectors: np.ndarray,
                            alphas: Iterable[float] = DEFAULT_ALPHAS,
                            warm_norm: bool = True) -> ColdStartResult:
    """The trained next-track model with every audio-only track appended and its weights predicted.

    Args:
        checkpoint_dir: the trained next-track model's folder (its
            ``checkpoint/``, see :mod:`musicrec.models.warm_start`).
        played_tracks: tracks with training plays (the Sessions ``vocab.txt``).
        audio_track_ids: tracks with audio, rows of ``audio_vectors``.
        audio_vectors: ``[n_audio, d_audio]`` averaged genre-model embeddings.
        alphas: ridge penalties to choose from.
        warm_norm: rescale predicted vectors to the warm tracks' mean length
            (:func:`match_warm_norm`); ``False`` keeps ridge's raw predictions.

    Returns:
        a :class:`ColdStartResult`. Cold tracks already in the checkpoint (a
        model warm-started from an earlier cold-start model) keep their ids and
        get freshly predicted weights, since training without plays only pushed
        them down.

    Raises:
        ValueError: no checkpoint, or fewer than 3 warm tracks to fit on.
    """
    from musicrec.models import warm_start
    from musicrec.models.next_track.hparams import NextTrackHParams
    from musicrec.models.next_track.layout import NUM_RESERVED_IDS
    from musicrec.models.next_track.model import build_model
    from musicrec.models.next_track.train import grow_from_checkpoint

    checkpoint = warm_start.load_checkpoint(checkpoint_dir)
    if checkpoint is None:
        raise ValueError(f"{checkpoint_dir} holds no next-track checkpoint to extend")
    hparams = NextTrackHParams.from_dict(checkpoint.hparams)
    played = set(played_tracks)
    known = set(checkpoint.tokens)
    row_of = {track_id: row for row, track_id in enumerate(audio_track_ids)}
    warm = [t for t in checkpoint.tokens if t in played and t in row_of]
    cold = [t for t in audio_track_ids if t not in played]
    if len(warm) < 3:
        raise ValueError(f"only {len(warm)} tracks have both audio and plays; the regressor needs 3 "
                         "(do the audio track ids match the play logs' track keys?)")
    vocabulary = warm_start.merge_vocabulary(checkpoint.tokens, cold)
    model = build_model(len(vocabulary), hparams)
    grow_from_checkpoint(model, checkpoint, hparams)

    id_of = {token: NUM_RESERVED_IDS + i for i, token in enumerate(vocabulary)}
    warm_x = audio_vectors[[row_of[t] for t in warm]]
    cold_x = audio_vectors[[row_of[t] for t in cold]]
    regressors = {}
    for weight in track_weights(model, len(vocabulary) + NUM_RESERVED_IDS):
        warm_rows = read_rows(model, weight, [id_of[t] for t in warm])
        regressor = RidgeRegressor.fit(warm_x, warm_rows, alphas)
        regressors[weight.name] = regressor
        if cold:
            predicted = regressor.predict(cold_x)
            if warm_norm:
                predicted = match_warm_norm(predicted, warm_rows)
            write_rows(model, weight, [id_of[t] for t in cold], predicted)
        logger.info("cold start: %s from audio, alpha %g, leave-one-out R² %.3f",
                    weight.name, regressor.alpha, regressor.loo_r2)
    logger.info("cold start: %d warm tracks fitted, %d cold tracks appended (%d already known)",
                len(warm), len(cold), sum(t in known for t in cold))
    return ColdStartResult(model, hparams, vocabulary, warm, cold, regressors, warm_norm)


def export_extended(result: ColdStartResult, model_dir: str) -> None:
    """Writes the extended model as a trainer would: ``serving/``, ``checkpoint/`` and ``cold_start/``.

    The SavedModel is built and checked by the next-track model's own export
    code (``serving.export_saved_model``), so its signatures are the trainer's.
    """
    from musicrec.models import warm_start
    from musicrec.models.next_track.serving import export_saved_model

    export_saved_model(result.model, result.vocabulary, result.hparams,
                       os.path.join(model_dir, "serving"))
    warm_start.save_checkpoint(result.model, model_dir, result.vocabulary, result.hparams.to_dict())
    folder = os.path.join(model_dir, COLD_START_DIR)
    os.makedirs(folder, exist_ok=True)
    write_json_atomic(os.path.join(folder, SUMMARY_FILE), {
        **result.summary(), "regressor_weights": {n: r.to_dict() for n, r in result.regressors.items()}})


# --------------------------------------------------------------------------- evaluation


def read_holdout_sessions(path: str) -> list[tuple[list[str], list[bool]]]:
    """Sessions of a held-out plays CSV: ``(track keys, held out?)`` per session, in play order.

    The file has a header with at least ``session_id``, ``timestamp``,
    ``track_id`` and ``held_out`` (1 for a play missing from the training logs,
    0 for a context play); see docs/cold_start.md. Rows are grouped by
    ``session_id`` and ordered by ``timestamp`` (ISO-8601 text sorts in time order).

    Raises:
        ValueError: a required column is missing, or a ``held_out`` value is not 0 or 1.
    """
    required = {"session_id", "timestamp", "track_id", "held_out"}
    sessions: dict[str, list[tuple[str, str, bool]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            if row["held_out"] not in ("0", "1"):
                raise ValueError(f"{path} line {line}: held_out must be 0 or 1, got {row['held_out']!r}")
            sessions.setdefault(row["session_id"], []).append(
                (row["timestamp"], row["track_id"].strip(), row["held_out"] == "1"))
    ordered = []
    for plays in sessions.values():
        plays.sort(key=lambda play: play[0])
        ordered.append(([key for _, key, _ in plays], [held for _, _, held in plays]))
    return ordered


def holdout_cases(sessions: Iterable[tuple[list[str], list[bool]]],
                  max_prefix_length: int) -> Iterable[tuple[list[str], str]]:
    """Yields ``(prefix keys, target key)`` for every next-item case whose target was held out.

    Cases are cut by :func:`musicrec.models.next_track.evaluate.next_item_cases`,
    as the regular test cases are.
    """
    from musicrec.models.next_track.evaluate import next_item_cases

    for plays, held_out in sessions:
        for (prefix, target), held in zip(next_item_cases([plays], max_prefix_length), held_out[1:]):
            if held:
                yield [key.decode("utf-8") for key in prefix if key], target


def write_holdout_cases(plays_csv: str, model_dir: str, max_prefix_length: int) -> int:
    """Cuts ``plays_csv`` into cold cases and writes them to ``<model_dir>/cold_start/holdout_cases.jsonl``; returns
    their number."""
    cases = holdout_cases(read_holdout_sessions(plays_csv), max_prefix_length)
    lines = [json.dumps({"prefix": prefix, "target": target}) + "\n" for prefix, target in cases]
    write_text_atomic(os.path.join(model_dir, COLD_START_DIR, CASES_FILE), "".join(lines))
    return len(lines)


def evaluate_extended(model_dir: str, warm_metrics: Mapping[str, float], k: int = 20,
                      batch_size: int = 256) -> dict | None:
    """Cold HR@k and MRR@k of an extended model on its held-out cases, beside warm and random HR@k.

    Args:
        model_dir: a cold-start model folder (``serving/`` and ``cold_start/``).
        warm_metrics: the same model's metrics on the regular test split
            (``{"hr@k": ...}``), from the next-item evaluation.
        k: the cutoff; the SavedModel must return at least ``k`` tracks.
        batch_size: prefixes per signature call.

    Returns:
        ``None`` when ``model_dir`` is not a cold-start model or has no held-out
        cases; else ``{"cold": {"hr@k", "mrr@k"}, "warm": {"hr@k"}, "random":
        {"hr@k"}, "cold_over_warm", "cold_over_random", "n_cases",
        "skipped_unknown_targets", "n_cold_tracks", "catalogue_size", "protocol"}``.
    """
    import tensorflow as tf

    from musicrec.models import warm_start
    from musicrec.models.next_track.evaluate import RankingMetrics

    folder = os.path.join(model_dir, COLD_START_DIR)
    cases_path = os.path.join(folder, CASES_FILE)
    if not os.path.isfile(cases_path):
        return None
    with open(os.path.join(folder, SUMMARY_FILE), encoding="utf-8") as handle:
        summary = json.load(handle)
    catalogue = set(warm_start.load_checkpoint(model_dir).tokens)
    with open(cases_path, encoding="utf-8") as handle:
        cases = [json.loads(line) for line in handle if line.strip()]
    if not cases:
        return None
    signature = tf.saved_model.load(os.path.join(model_dir, "serving")).signatures["serving_default"]
    metrics = RankingMetrics([k])
    known = [case for case in cases if case["target"] in catalogue]
    skipped = len(cases) - len(known)
    for start in range(0, len(known), batch_size):
        batch = known[start:start + batch_size]
        width = max(1, max(len(case["prefix"]) for case in batch))
        prefixes = np.array([case["prefix"] + [""] * (width - len(case["prefix"])) for case in batch],
                            dtype=object)
        ranked = signature(track_keys=tf.constant(prefixes))["track_keys"].numpy()
        for keys, case in zip(ranked, batch):
            metrics.add([key.decode("utf-8") for key in keys[:k]], case["target"])
    cold = metrics.result() if metrics.count else {f"hr@{k}": 0.0, f"mrr@{k}": 0.0}
    random_hr = min(k, len(catalogue)) / len(catalogue)
    warm_hr = float(warm_metrics[f"hr@{k}"])
    return {
        "cold": cold, "warm": {f"hr@{k}": warm_hr}, "random": {f"hr@{k}": random_hr},
        "cold_over_warm": cold[f"hr@{k}"] / warm_hr if warm_hr else None,
        "cold_over_random": cold[f"hr@{k}"] / random_hr,
        "n_cases": metrics.count, "skipped_unknown_targets": skipped,
        "n_cold_tracks": summary["n_cold_tracks"], "n_warm_tracks": summary["n_warm_tracks"],
        "catalogue_size": len(catalogue),
        "protocol": PROTOCOL.format(k=k, max_prefix_length=summary.get("max_prefix_length", "T")),
    }
