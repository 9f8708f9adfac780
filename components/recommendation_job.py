"""The bulk inferrer's ``recommend`` job: every user of a play-log input → top-N next tracks.

Reading reuses ingestion: the play-log readers and the ExampleGen's session
rule (``playlog_sessions.split_into_sessions``); each user's most recent
session is the prefix given to the next-track model. Outputs and manifest:
:mod:`musicrec.components.inference_jobs`.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np

from musicrec.components import beam_io, inference_handler
from musicrec.components.bulk_inference_settings import (DEFAULT_EXCLUDE, DEFAULT_MAX_HISTORY_LENGTH,
                                                         DEFAULT_MAX_PREFIX_LENGTH, DEFAULT_NUM_SHARDS,
                                                         DEFAULT_TOP_N, EXCLUDE_MODES, JOB_BATCHING, Batching)
# Records are encoded by the ExampleGens' wire encoder: no TensorFlow in the writing steps.
from musicrec.components.example_wire import byte_strings, encode_example, floats
from musicrec.components.inference_jobs import (DEAD, REASON_INFERENCE, TALLY, RunSignature, tally,
                                                write_manifest, write_outputs)
from musicrec.components.playlog_params import PlaylogParams
from musicrec.components.playlog_readers import list_playlog_files, read_playlog
from musicrec.components.playlog_rows import Play
from musicrec.components.playlog_sessions import keyed_by_user, plays_of_user, split_into_sessions

RECOMMENDATIONS = "recommendations"
RECOMMENDATION_COLUMNS = ("user_id", "session_id", "rank", "track_key", "score")
RECOMMEND_SIGNATURE = "recommend"
REASON_ALL_EXCLUDED = "no candidate left after exclusion"


def user_request(user_plays: tuple[str, Iterable[Sequence[tuple]]], gap_seconds: int, max_prefix_length: int,
                 exclude: str, top_n: int = DEFAULT_TOP_N, max_history_length: int = DEFAULT_MAX_HISTORY_LENGTH,
                 personalised: bool = False
                 ) -> tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any]:
    """All of a user's plays → ``(key, model input)`` for their recommendations.

    ``user_plays`` is ``(user_id, chunks)``: lists of play fields
    (``playlog_sessions.keyed_by_user``), as :class:`ReadPlaysByUser`
    groups them per file, or those lists encoded by :func:`encode_user_plays`
    (as the job sends them through the grouping), in any order.

    The plays are split into sessions by the ExampleGen's own rule
    (``playlog_sessions.split_into_sessions``: a pause longer than
    ``gap_seconds`` starts a new one). The prefix is the most recent session's
    last ``max_prefix_length`` track keys.

    ``key`` is ``(user_id, session_id, prefix, excluded)``; ``excluded`` holds
    the keys never to recommend: every track the user played in the input
    (``"history"``), in the latest session (``"session"``) or none
    (``"none"``). The key rides through RunInference with the answer, so no
    join is needed afterwards.

    The model input is the prefix for ``serving_default``; with
    ``personalised`` it is ``(prefix, history, k, exclude_seen)`` for the
    ``recommend`` signature: ``history`` the last ``max_history_length`` plays
    before the latest session, ``exclude_seen`` set for ``"history"`` (the model
    drops the session's and history's tracks itself) and ``k`` the ``top_n``
    plus the excluded tracks the model does not see (older plays, or the
    session's in ``"session"`` mode, which are filtered out afterwards).
    """
    user_id, chunks = user_plays
    fields = [play for chunk in chunks
              for play in (decode_user_plays(chunk) if isinstance(chunk, bytes) else chunk)]
    sessions = split_into_sessions(plays_of_user(user_id, fields), gap_seconds)
    latest = sessions[-1]
    prefix = tuple(play.track_key for play in latest[-max_prefix_length:])
    if exclude == "history":
        excluded = {play.track_key for session in sessions for play in session}
    elif exclude == "session":
        excluded = {play.track_key for play in latest}
    else:
        excluded = set()
    session_id = f"{user_id}-{latest[0].timestamp}"  # as the ExampleGen names sessions
    key = (user_id, session_id, prefix, tuple(sorted(excluded)))
    if not personalised:
        return key, list(prefix)
    earlier = [play.track_key for session in sessions[:-1] for play in session]
    history = earlier[-max_history_length:] if max_history_length else []
    exclude_seen = exclude == "history"
    unseen_by_model = excluded - (set(prefix) | set(history)) if exclude_seen else excluded
    return key, (list(prefix), history, top_n + len(unseen_by_model), exclude_seen)


def encode_user_plays(fields: Sequence[tuple]) -> bytes:
    """One user's play fields (``playlog_sessions.keyed_by_user``) → compact UTF-8 JSON bytes.

    What crosses from the readers to the grouping by user: with
    ``multi_processing`` the runner process buffers every element of a
    shuffle, and a byte string costs it a copy where a list of tuples costs a
    decode and an encode per field. ``ms_played`` is dropped (no step after
    the grouping reads it); the file path is written once per element.
    """
    sources = sorted({source for _ts, _key, _ms, source, _line in fields})
    index = {source: number for number, source in enumerate(sources)}
    return json.dumps([sources, [[ts, key, index[source], line] for ts, key, _ms, source, line in fields]],
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode_user_plays(blob: bytes) -> list[tuple]:
    """Inverse of :func:`encode_user_plays` (``ms_played`` comes back as ``None``)."""
    sources, plays = json.loads(blob)
    return [(ts, key, None, sources[source], line) for ts, key, source, line in plays]


class ReadPlaysByUser(beam.DoFn):
    """``(path, format)`` → ``(user_id, [play fields])`` per user and chunk of the file, dead rows, tallies.

    Rows are read with the play-log ExampleGen's reader
    (``playlog_readers.read_playlog``) and grouped by user while the file is
    read, so one element per user (per ``chunk_plays`` plays read) crosses the
    shuffle instead of one per play: Beam's per-element cost was most of the
    recommendation job's overhead (docs/batch.md, "Throughput and workers"). A play
    is the ExampleGen's tuple of primitives (``keyed_by_user``); the job encodes
    each user's list into bytes (:func:`encode_user_plays`) in the same fused
    stage, before the grouping. The ``tally`` output holds ``("rows_in", n)``
    and ``("plays", n)`` per file; ``dead`` holds each bad row as a dict.
    """

    def __init__(self, progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS, chunk_plays: int = 200_000):
        super().__init__()
        self._progress_seconds = progress_seconds
        self._chunk_plays = chunk_plays

    def setup(self):
        self._progress = beam_io.ProgressLog("bulk_inferrer recommend read", self._progress_seconds)

    def process(self, file: tuple[str, str]):
        path, fmt = file
        by_user: dict[str, list[tuple]] = {}
        rows = plays = 0
        for record in read_playlog(path, fmt):
            rows += 1
            if isinstance(record, Play):
                user_id, fields = keyed_by_user(record)
                by_user.setdefault(user_id, []).append(fields)
                plays += 1
                if plays % self._chunk_plays == 0:  # bounds a worker's memory on a huge file
                    yield from by_user.items()
                    by_user = {}
            else:
                yield beam.pvalue.TaggedOutput(DEAD, record.to_dict())
            if rows % 10_000 == 0:
                self._progress.add("rows", 10_000)
        yield from by_user.items()
        self._progress.add("rows", rows % 10_000)
        yield beam.pvalue.TaggedOutput(TALLY, ("rows_in", rows))
        yield beam.pvalue.TaggedOutput(TALLY, ("plays", plays))

    def teardown(self):
        self._progress.flush()


def filter_recommendations(keys: Sequence[str], scores: Sequence[float], exclude: Iterable[str],
                           top_n: int) -> tuple[list[str], list[float]]:
    """The first ``top_n`` of ``keys`` (best first) that are not in ``exclude``, with their scores."""
    excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
    kept_keys: list[str] = []
    kept_scores: list[float] = []
    for key, score in zip(keys, scores):
        if key and key not in excluded:  # "" pads a row that asked for fewer tracks
            kept_keys.append(str(key))
            kept_scores.append(float(score))
            if len(kept_keys) == top_n:
                break
    return kept_keys, kept_scores


def recommend_user(key: tuple[str, str, tuple[str, ...], tuple[str, ...]], answer: Mapping[str, np.ndarray],
                   top_n: int = DEFAULT_TOP_N) -> Iterator[Any]:
    """A user's request key and the model's ranked answer → their recommendation record, or a dead letter."""
    user_id, session_id, prefix, excluded = key
    keys, scores = filter_recommendations(answer["track_keys"], answer["scores"], set(excluded), top_n)
    if not keys:
        yield beam.pvalue.TaggedOutput(DEAD, {
            "user_id": user_id, "reason": REASON_ALL_EXCLUDED,
            "detail": f"all {len(answer['track_keys'])} tracks the model returned are among the "
                      f"user's {len(excluded)} excluded tracks"})
        return
    yield {"user_id": user_id, "session_id": session_id, "prefix": list(prefix),
           "track_keys": keys, "scores": np.asarray(scores, dtype=np.float32)}


def recommendation_example(record: Mapping[str, Any]) -> bytes:
    """A recommendation record as a serialized ``tf.train.Example`` (fields in docs/batch.md)."""
    return encode_example({
        "user_id": byte_strings([record["user_id"]]),
        "session_id": byte_strings([record["session_id"]]),
        "prefix": byte_strings(record["prefix"]),
        "track_keys": byte_strings(record["track_keys"]),
        "scores": floats(record["scores"]),
    })


def recommendation_csv_rows(record: Mapping[str, Any]) -> list[list[Any]]:
    """The ``recommendations.csv`` rows of one user, one per rank (:data:`RECOMMENDATION_COLUMNS`)."""
    return [[record["user_id"], record["session_id"], rank, key, f"{float(score):.6f}"]
            for rank, (key, score) in enumerate(zip(record["track_keys"], record["scores"]), start=1)]


def build_recommendations(pipeline: beam.Pipeline, playlog_paths: Sequence[str], output_uri: str,
                          saved_model_dir: str, top_n: int = DEFAULT_TOP_N, exclude: str = DEFAULT_EXCLUDE,
                          max_prefix_length: int = DEFAULT_MAX_PREFIX_LENGTH,
                          playlog_params: PlaylogParams | None = None, num_shards: int = DEFAULT_NUM_SHARDS,
                          batching: Batching = JOB_BATCHING["recommend"],
                          model_info: Mapping[str, Any] | None = None,
                          progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS,
                          max_history_length: int = DEFAULT_MAX_HISTORY_LENGTH,
                          signature: str | None = None) -> dict[str, Any]:
    """Adds precomputed recommendations to ``pipeline``: every user → top-N next tracks.

    Play logs are read and sessionized by the play-log ExampleGen's own steps
    (readers, gap-based sessions); each user's most recent session is the
    prefix given to the next-track model. A model with the ``recommend``
    signature (docs/architecture.md) gets the user's earlier plays as history
    and excludes them itself, with ``k`` as asked; an older model gets the
    prefix through ``serving_default`` and the excluded tracks are removed
    from its ranked answer, which holds the model's exported ``k``, so a user
    may then get fewer than ``top_n``.

    Args:
        playlog_paths: files, folders or globs (``playlog_readers.list_playlog_files``).
        output_uri: folder; gets ``recommendations/``, ``recommendations.csv``,
            ``dead_letters.jsonl`` (bad rows, users without a recommendation), ``manifest.json``.
        saved_model_dir: the next-track SavedModel.
        top_n: recommendations per user.
        exclude: ``"history"``, ``"session"`` or ``"none"`` (see :func:`user_request`).
        max_prefix_length: plays of the latest session given to the model (the most recent).
        playlog_params: ``format`` and ``session_gap_seconds`` (other fields are
            ignored: every play counts, and a session of one play is a prefix too).
        max_history_length: earlier plays given to ``recommend`` (the most recent ones).
        signature: ``"recommend"`` or ``"serving_default"``; ``None`` picks
            ``recommend`` when the model has it.

    Returns:
        ``{"recommendations": dicts, "dead_letters": dicts, "manifest": one dict}``.
    """
    if exclude not in EXCLUDE_MODES:
        raise ValueError(f"exclude must be one of {EXCLUDE_MODES}, got {exclude!r}")
    if top_n < 1 or max_prefix_length < 1:
        raise ValueError(f"top_n and max_prefix_length must be >= 1, got {top_n} and {max_prefix_length}")
    if signature is None:
        names = inference_handler.signature_names(saved_model_dir)
        signature = RECOMMEND_SIGNATURE if RECOMMEND_SIGNATURE in names else "serving_default"
    personalised = signature == RECOMMEND_SIGNATURE
    given = playlog_params or PlaylogParams()
    files, skipped = list_playlog_files(playlog_paths, given.format)
    # Files spread over workers; each is read with its plays grouped by user, so one
    # shuffle of one element per user and file brings a user's plays together.
    # (Create spreads them.) A user's plays of one file cross to the grouping as one string of
    # bytes (encode_user_plays), which the runner moves without decoding.
    routed = (pipeline
              | "ListFiles" >> beam.Create(files)
              | "ReadByUser" >> beam.ParDo(ReadPlaysByUser(progress_seconds))
              .with_output_types(beam.typehints.Tuple[str, Any]).with_outputs(DEAD, TALLY, main="plays"))
    requests = (routed.plays
                | "EncodePlays" >> beam.MapTuple(lambda user_id, fields: (user_id, encode_user_plays(fields)))
                .with_output_types(beam.typehints.Tuple[str, bytes])
                | "GroupByUser" >> beam.GroupByKey()
                | "LatestSession" >> beam.Map(user_request, given.session_gap_seconds, max_prefix_length,
                                              exclude, top_n, max_history_length, personalised))
    collate = inference_handler.collate_recommend if personalised else inference_handler.collate_track_keys
    inferred = requests | "NextTrack" >> RunSignature(
        saved_model_dir, inference_handler.SignatureInference(signature, collate, ["track_keys", "scores"]),
        batching, "recommend", progress_seconds)
    recommended = (inferred["predictions"]
                   | "Recommend" >> beam.FlatMapTuple(recommend_user, top_n).with_outputs(DEAD, main="users"))
    written = write_outputs(recommended.users, output_uri, RECOMMENDATIONS, "user_id", recommendation_example,
                             recommendation_csv_rows, RECOMMENDATION_COLUMNS, num_shards)
    failed = inferred["failed"] | "FailedUsers" >> beam.MapTuple(
        lambda key, detail: {"user_id": key[0], "reason": REASON_INFERENCE, "detail": detail})

    dead_letters = (routed[DEAD], recommended[DEAD], failed) | "AllDeadLetters" >> beam.Flatten()
    static = {"job": "recommend", "model": dict(model_info or {"path": saved_model_dir}),
              "signature": signature, "top_n": top_n, "exclude": exclude,
              "max_prefix_length": max_prefix_length,
              "max_history_length": max_history_length if personalised else None,
              "session_gap_seconds": given.session_gap_seconds, "num_shards": num_shards,
              "files": [{"path": path, "format": fmt} for path, fmt in files], "skipped_files": skipped,
              "outputs": {"records": f"{RECOMMENDATIONS}/data-*.tfrecord.gz",
                          "summary": f"{RECOMMENDATIONS}.csv"}}
    # Rows and users each reconcile: rows_in = plays + bad rows, users = recommended + users
    # without recommendations; both kinds of dead letter are in the one file.
    manifest = write_manifest(pipeline, output_uri, static, [
        ("rows_in", ("plays", "dead_rows")), ("users", ("users_recommended", "dead_users")),
        ("dead_letters", ("dead_rows", "dead_users")),
        (f"{RECOMMENDATIONS}_written", ("users_recommended",))], dead_letters, [written,
        routed[TALLY], tally(routed[DEAD], "dead_rows"), tally(requests, "users"),
        tally(recommended.users, "users_recommended"), tally(recommended[DEAD], "dead_users"),
        tally(failed, "dead_users", label="TallyFailedUsers")])
    return {"recommendations": recommended.users, "dead_letters": dead_letters, "manifest": manifest}


__all__ = ["build_recommendations", "user_request", "encode_user_plays", "decode_user_plays", "ReadPlaysByUser",
           "filter_recommendations", "recommend_user", "recommendation_example", "recommendation_csv_rows",
           "RECOMMENDATIONS", "RECOMMENDATION_COLUMNS", "RECOMMEND_SIGNATURE", "REASON_ALL_EXCLUDED"]
