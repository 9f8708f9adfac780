"""The bulk inferrer's Beam jobs: catalogue tagging, precomputed recommendations, embedding export.

Every job runs a pushed SavedModel through Beam's ``RunInference`` with the
TensorFlow model handler (:mod:`musicrec.components.inference_handler`), so
it scales out on the same runners as ingestion, and writes, under one output
folder:

- ``<job>/data-SSSSS-of-NNNNN.tfrecord.gz``: GZIP TFRecords of ``tf.train.Example``
  (one per track or user; fields in docs/batch.md);
- ``<job>.csv``: a summary a data analyst opens with ``pandas.read_csv``;
- ``dead_letters.jsonl``: every input that gave no output, with its ``reason``;
- ``manifest.json``: the counts, checked to reconcile
  (``inputs == outputs + dead_letters``), the model and the parameters.

Reading and decoding reuse ingestion: the audio ExampleGen's duplicate-id
check and :class:`~musicrec.components.audio_example_gen.DecodeTrack` (with
its dead-letter reasons), the play-log readers and the ExampleGen's session
rule (``playlog_example_gen.split_into_sessions``). Track-level
genre probabilities are the mean of the segment probabilities, as the
evaluator computes them (``models.genre.evaluate.average_segment_probabilities``).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from musicrec.atomic import write_atomic
from musicrec.components import audio_example_gen, beam_io, inference_handler
# Records are encoded by the ExampleGens' wire encoder: no TensorFlow in the writing steps, and
# a third of the time of building tf.train.Example messages in Python.
from musicrec.components.example_wire import byte_strings, encode_example, floats, int64s
from musicrec.components.audio_example_gen import AudioSource
from musicrec.components.bulk_inferrer import EXCLUDE_MODES
from musicrec.components.playlog_example_gen import (PlaylogParams, keyed_by_user, plays_of_user,
                                                     split_into_sessions)
from musicrec.components.playlog_readers import Play, list_playlog_files, read_playlog
from musicrec.models import features

DEAD = audio_example_gen.DEAD
TALLY = "tally"
MANIFEST_FILE = "manifest.json"
DEAD_LETTERS_FILE = "dead_letters.jsonl"
TAGS = "tags"
RECOMMENDATIONS = "recommendations"
EMBEDDINGS = "embeddings"
EMBEDDINGS_NPY = "embeddings.npy"
EMBEDDING_KEYS = "embedding_keys.txt"

REASON_INFERENCE = "inference failed"
REASON_ALL_EXCLUDED = "no candidate left after exclusion"

TAG_COLUMNS = ("track_id", "path", "label", "genre", "probability", "top_genres", "n_segments")
RECOMMENDATION_COLUMNS = ("user_id", "session_id", "rank", "track_key", "score")


@dataclasses.dataclass(frozen=True)
class Batching:
    """Elements per signature call: Beam's ``BatchElements`` adapts between the two."""

    min_batch_size: int = 8
    max_batch_size: int = 64

    def __post_init__(self):
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, got "
                             f"{self.min_batch_size} and {self.max_batch_size}")


# --------------------------------------------------------------------------- shared steps


def _failed_keys(failure: tuple[Any, Any]) -> Iterator[tuple[Any, str]]:
    """A failed batch from RunInference's dead-letter output → ``(key, detail)`` per element.

    Beam gives ``(batch, (exception type, repr(exception), traceback lines))``.
    """
    batch, error = failure
    if isinstance(error, tuple) and len(error) == 3:
        # the traceback's last entry is "Type: message"; repr() of a TF error has no message
        error = (error[2][-1] if error[2] else error[1]).strip()
    detail = " ".join(str(error).split())[:500]
    for element in (batch if isinstance(batch, (list, tuple)) else [batch]):
        key = element[0] if isinstance(element, tuple) and len(element) == 2 else repr(element)[:100]
        yield key, detail


class RunSignature(beam.PTransform):
    """``(key, element)`` → ``{"predictions": (key, {output: array}), "failed": (key, detail)}``.

    ``RunInference`` with :class:`~musicrec.components.inference_handler.SignatureModelHandler`;
    a batch the model rejects goes to ``failed`` instead of stopping the job.
    Progress is logged per worker every ``progress_seconds``.
    """

    def __init__(self, saved_model_dir: str, inference: inference_handler.SignatureInference,
                 batching: Batching, stage: str, progress_seconds: float = 30.0, **handler_args):
        super().__init__()
        self._handler = KeyedModelHandler(inference_handler.SignatureModelHandler(
            saved_model_dir, inference, min_batch_size=batching.min_batch_size,
            max_batch_size=batching.max_batch_size, **handler_args))
        self._stage = stage
        self._progress_seconds = progress_seconds

    def expand(self, keyed):
        main, other = keyed | "RunInference" >> RunInference(self._handler).with_exception_handling()
        predictions = (main
                       | "Unwrap" >> beam.MapTuple(lambda key, result: (key, result.inference))
                       | "Progress" >> beam.ParDo(beam_io.LogProgress(
                           f"bulk_inferrer {self._stage}", "inferred", self._progress_seconds)))
        failed = other.failed_inferences | "FailedKeys" >> beam.FlatMap(_failed_keys)
        return {"predictions": predictions, "failed": failed}


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """CSV lines of ``rows``, without the final newline (``WriteToText`` adds it)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()[:-1]


def _write_outputs(records, output_uri: str, name: str, to_example: Callable[[dict], bytes],
                   to_csv_rows: Callable[[dict], list[list[Any]]], columns: Sequence[str],
                   num_shards: int) -> None:
    """Writes ``records`` (dicts) as sharded GZIP TFRecords and a one-file CSV summary.

    A record's CSV rows travel as one text element (ten rows per user cost one
    element, not ten).
    """
    _ = (records
         | f"{name}ToExample" >> beam.Map(to_example)
         | f"Write{name}Records" >> beam.io.WriteToTFRecord(
             f"{output_uri}/{name}/data", file_name_suffix=".tfrecord.gz", num_shards=num_shards,
             compression_type=beam.io.filesystem.CompressionTypes.GZIP))
    _ = (records
         | f"{name}ToCsv" >> beam.Map(lambda record: _csv_text(to_csv_rows(record)))
         | f"Write{name}Csv" >> beam.io.WriteToText(
             f"{output_uri}/{name}.csv", shard_name_template="", num_shards=1,
             header=_csv_text([columns])))


def _tally(pcoll, name: str, weight: Callable[[Any], int] | None = None, label: str | None = None):
    """``(name, weight)`` per element (weight 1 by default), for :func:`_write_manifest` to sum."""
    return pcoll | (label or f"Tally_{name}") >> beam.Map(
        lambda element: (name, weight(element) if weight else 1))


_REASON_PREFIX = "reason:"


def _finish_manifest(_, output_uri: str, static: dict, names: Sequence[str],
                     balances: Sequence[tuple[str, Sequence[str]]], totals: Mapping[str, int]) -> dict:
    """Builds ``manifest.json`` from the job's tallies, checks that they reconcile, writes it atomically.

    Each balance ``(total, parts)`` requires ``counts[total] == sum(counts[part])``
    (``inputs == outputs + dead_letters``); a failed check is a bug (something was lost).
    """
    counts = {name: int(totals.get(name, 0)) for name in names}
    counts.update({name: int(count) for name, count in totals.items() if not name.startswith(_REASON_PREFIX)})
    reasons = {name[len(_REASON_PREFIX):]: int(count) for name, count in totals.items()
               if name.startswith(_REASON_PREFIX)}
    manifest = {**static, **counts, "dead_letters_per_reason": dict(sorted(reasons.items()))}
    for total, parts in balances:
        if manifest[total] != sum(manifest[part] for part in parts):
            raise RuntimeError(f"bulk_inferrer counts do not reconcile: {total}={manifest[total]} but "
                               + " + ".join(f"{part}={manifest[part]}" for part in parts))
    beam_io.write_text_atomic(f"{output_uri}/{MANIFEST_FILE}",
                              json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _write_manifest(pipeline, output_uri: str, static: dict, balances: Sequence[tuple[str, Sequence[str]]],
                    dead_letters, tallies: Sequence[Any]):
    """Writes the dead letters and the manifest.

    ``tallies`` are PCollections of ``(count name, n)`` pairs (:func:`_tally`);
    every count, ``dead_letters`` and the per-reason counts are summed in one
    combine, so the counting adds two stages to the job whatever their number.
    """
    dead_letters | "WriteDeadLetters" >> beam_io.WriteDeadLetters(f"{output_uri}/{DEAD_LETTERS_FILE}")
    dead_tally = dead_letters | "TallyDeadLetters" >> beam.FlatMap(
        lambda record: [("dead_letters", 1), (_REASON_PREFIX + record["reason"], 1)])
    totals = ((*tallies, dead_tally)
              | "AllTallies" >> beam.Flatten()
              | "SumTallies" >> beam.CombinePerKey(sum))
    names = sorted({name for total, parts in balances for name in (total, *parts)})
    return (pipeline
            | "ManifestTrigger" >> beam.Create([None])
            | "WriteManifest" >> beam.Map(_finish_manifest, output_uri, static, names, balances,
                                          beam.pvalue.AsDict(totals)))


# --------------------------------------------------------------------------- catalogue tagging


def tag_track(key: tuple[str, str, str], prediction: Mapping[str, np.ndarray], top_genres: int = 3
              ) -> dict[str, Any]:
    """One track's segment answers → its tag record.

    Args:
        key: ``(track_id, path, label)``; ``label`` is the genre the input
            listed, ``""`` when unknown.
        prediction: the genre signature's outputs for the track's segments:
            ``probabilities`` and ``classes`` ``[n_segments, n_genres]``,
            ``embedding`` ``[n_segments, d]``.
        top_genres: genres kept.

    Returns:
        ``track_id``, ``path``, ``label``, ``n_segments``, ``classes``
        ``[n_genres]``, ``probabilities`` ``[n_genres]`` (mean over segments,
        as the evaluator computes it), ``genre`` (argmax, ties to the first
        class, as ``musicrec classify``), ``top_genres`` and
        ``top_probabilities`` ``[top_genres]`` best first, ``embedding`` ``[d]``
        (mean of the segment embeddings).
    """
    from musicrec.models.genre.evaluate import average_segment_probabilities

    track_id, path, label = key
    probabilities = average_segment_probabilities(prediction["probabilities"])
    classes = [str(name) for name in prediction["classes"][0]]
    order = np.argsort(-probabilities, kind="stable")[:top_genres]
    return {
        "track_id": track_id, "path": path, "label": label,
        "n_segments": int(prediction["probabilities"].shape[0]),
        "classes": classes, "probabilities": probabilities.astype(np.float32),
        "genre": classes[order[0]], "top_genres": [classes[i] for i in order],
        "top_probabilities": probabilities[order].astype(np.float32),
        "embedding": prediction["embedding"].mean(axis=0).astype(np.float32),
    }


def tag_example(record: Mapping[str, Any]) -> bytes:
    """A tag record as a serialized ``tf.train.Example`` (fields in docs/batch.md)."""
    return encode_example({
        "track_id": byte_strings([record["track_id"]]), "path": byte_strings([record["path"]]),
        "label": byte_strings([record["label"]]), "genre": byte_strings([record["genre"]]),
        "top_genres": byte_strings(record["top_genres"]),
        "top_probabilities": floats(record["top_probabilities"]),
        "classes": byte_strings(record["classes"]),
        "probabilities": floats(record["probabilities"]),
        "embedding": floats(record["embedding"]),
        "n_segments": int64s([record["n_segments"]]),
    })


def tag_csv_rows(record: Mapping[str, Any]) -> list[list[Any]]:
    """The ``tags.csv`` row of a tag record (:data:`TAG_COLUMNS`)."""
    top = ";".join(f"{g}:{p:.6f}" for g, p in zip(record["top_genres"], record["top_probabilities"]))
    return [[record["track_id"], record["path"], record["label"], record["genre"],
             f"{float(record['top_probabilities'][0]):.6f}", top, record["n_segments"]]]


def build_tagging(pipeline: beam.Pipeline, sources: Sequence[AudioSource], output_uri: str,
                  saved_model_dir: str, params: features.AudioFeatureParams | None = None,
                  top_genres: int = 3, num_shards: int = 1, batching: Batching = Batching(),
                  model_info: Mapping[str, Any] | None = None, progress_seconds: float = 30.0
                  ) -> dict[str, Any]:
    """Adds catalogue tagging to ``pipeline``: every audio file → its genres and embedding.

    Files are decoded with the ingestion code (same dead-letter reasons), cut
    into segments, and the segments of all files are batched together into the
    genre model's ``serving_default`` signature; each track's answer is the mean
    of its segments' probabilities (and embeddings).

    Args:
        pipeline: a Beam pipeline.
        sources: the files (``audio_example_gen.list_sources`` or
            ``bulk_inferrer.list_catalogue``); a repeated track id is a dead letter.
        output_uri: folder; gets ``tags/``, ``tags.csv``, ``dead_letters.jsonl``, ``manifest.json``.
        saved_model_dir: the genre SavedModel.
        params: log-mel parameters; must be those the model was trained with.
        top_genres: genres per track in ``top_genres`` (at most the model's classes).
        num_shards: TFRecord shards (0 lets the runner choose).
        batching: segments per signature call.
        model_info: recorded in the manifest (model name, version, path).

    Returns:
        ``{"tags": records (dicts, see :func:`tag_track`), "dead_letters": dicts, "manifest": one dict}``.
    """
    params = params or features.AudioFeatureParams()
    if top_genres < 1:
        raise ValueError(f"top_genres must be >= 1, got {top_genres}")
    listed = pipeline | "ListSources" >> beam.Create(list(sources))
    unique = (listed
              | "KeyByTrackId" >> beam.Map(lambda source: (source.track_id, source))
              | "GroupByTrackId" >> beam.GroupByKey()
              | "DropDuplicateIds" >> beam.FlatMap(audio_example_gen.keep_first_per_track_id)
              .with_outputs(DEAD, main="kept"))
    decoded = (unique.kept
               | "SpreadFiles" >> beam.Reshuffle()
               | "Decode" >> beam.ParDo(audio_example_gen.DecodeTrack(params, progress_seconds))
               .with_outputs(DEAD, main="tracks"))
    # One element per track, weighted by its segments: a signature call takes the segments
    # of several tracks (up to batching.max_batch_size segments), and each track's answers
    # come back together, so no regrouping by track is needed.
    inferred = (decoded.tracks
                | "KeyByTrack" >> beam.Map(
                    lambda track: ((track[0].track_id, track[0].path, track[0].genre), track[1]))
                | "Genre" >> RunSignature(saved_model_dir, inference_handler.SignatureInference(
                    "serving_default", inference_handler.collate_log_mel,
                    ["probabilities", "classes", "embedding"]), batching, "tag", progress_seconds,
                    element_size_fn=inference_handler.keyed_segment_count))
    tags = inferred["predictions"] | "TagTracks" >> beam.MapTuple(tag_track, top_genres)
    _write_outputs(tags, output_uri, TAGS, tag_example, tag_csv_rows, TAG_COLUMNS, num_shards)
    failed = inferred["failed"] | "FailedTracks" >> beam.MapTuple(
        lambda key, detail: {"path": key[1], "reason": REASON_INFERENCE, "detail": detail})

    dead_letters = (unique[DEAD], decoded[DEAD], failed) | "AllDeadLetters" >> beam.Flatten()
    static = {"job": "tag", "model": dict(model_info or {"path": saved_model_dir}),
              "feature_params": params.to_dict(), "top_genres": top_genres, "num_shards": num_shards,
              "outputs": {"records": f"{TAGS}/data-*.tfrecord.gz", "summary": f"{TAGS}.csv"}}
    manifest = _write_manifest(pipeline, output_uri, static, [("inputs", ("tracks", "dead_letters"))],
                               dead_letters, [
        _tally(listed, "inputs"), _tally(tags, "tracks"),
        _tally(tags, "segments", lambda record: record["n_segments"])])
    return {"tags": tags, "dead_letters": dead_letters, "manifest": manifest}


# --------------------------------------------------------------------------- recommendations


RECOMMEND_SIGNATURE = "recommend"


def user_request(user_plays: tuple[str, Iterable[Sequence[tuple]]], gap_seconds: int, max_prefix_length: int,
                 exclude: str, top_n: int = 10, max_history_length: int = 100, personalised: bool = False
                 ) -> tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any]:
    """All of a user's plays → ``(key, model input)`` for their recommendations.

    ``user_plays`` is ``(user_id, chunks)``: lists of play fields
    (``playlog_example_gen.keyed_by_user``), as :class:`ReadPlaysByUser`
    groups them per file, in any order.

    The plays are split into sessions by the ExampleGen's own rule
    (``playlog_example_gen.split_into_sessions``: a pause longer than
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
    fields = [play for chunk in chunks for play in chunk]
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


class ReadPlaysByUser(beam.DoFn):
    """``(path, format)`` → ``(user_id, [play fields])`` per user and chunk of the file, dead rows, tallies.

    Rows are read with the play-log ExampleGen's reader
    (``playlog_readers.read_playlog``) and grouped by user while the file is
    read, so one element per user (per ``chunk_plays`` plays read) crosses the
    shuffle instead of one per play: Beam's per-element cost was most of the
    recommendation job's overhead (docs/batch.md, "Throughput and workers"). A play
    travels as the ExampleGen's tuple of primitives (``keyed_by_user``), which
    Beam's fast coder encodes. The ``tally`` output holds ``("rows_in", n)``
    and ``("plays", n)`` per file; ``dead`` holds each bad row as a dict.
    """

    def __init__(self, progress_seconds: float = 30.0, chunk_plays: int = 200_000):
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
                   top_n: int = 10) -> Iterator[Any]:
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
                          saved_model_dir: str, top_n: int = 10, exclude: str = "history",
                          max_prefix_length: int = 20, playlog_params: PlaylogParams | None = None,
                          num_shards: int = 1, batching: Batching = Batching(),
                          model_info: Mapping[str, Any] | None = None,
                          progress_seconds: float = 30.0, max_history_length: int = 100,
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
    routed = (pipeline
              | "ListFiles" >> beam.Create(files)
              | "SpreadFiles" >> beam.Reshuffle()
              | "ReadByUser" >> beam.ParDo(ReadPlaysByUser(progress_seconds))
              .with_output_types(beam.typehints.Tuple[str, Any]).with_outputs(DEAD, TALLY, main="plays"))
    requests = (routed.plays
                | "GroupByUser" >> beam.GroupByKey()
                | "LatestSession" >> beam.Map(user_request, given.session_gap_seconds, max_prefix_length,
                                              exclude, top_n, max_history_length, personalised))
    collate = inference_handler.collate_recommend if personalised else inference_handler.collate_track_keys
    inferred = requests | "NextTrack" >> RunSignature(
        saved_model_dir, inference_handler.SignatureInference(signature, collate, ["track_keys", "scores"]),
        batching, "recommend", progress_seconds)
    recommended = (inferred["predictions"]
                   | "Recommend" >> beam.FlatMapTuple(recommend_user, top_n).with_outputs(DEAD, main="users"))
    _write_outputs(recommended.users, output_uri, RECOMMENDATIONS, recommendation_example,
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
    manifest = _write_manifest(pipeline, output_uri, static, [
        ("rows_in", ("plays", "dead_rows")), ("users", ("users_recommended", "dead_users")),
        ("dead_letters", ("dead_rows", "dead_users"))], dead_letters, [
        routed[TALLY], _tally(routed[DEAD], "dead_rows"), _tally(requests, "users"),
        _tally(recommended.users, "users_recommended"), _tally(recommended[DEAD], "dead_users"),
        _tally(failed, "dead_users", label="TallyFailedUsers")])
    return {"recommendations": recommended.users, "dead_letters": dead_letters, "manifest": manifest}


# --------------------------------------------------------------------------- embedding export


def _write_embedding_table(rows: list[tuple[int, str, np.ndarray]], output_uri: str) -> int:
    """Writes ``embeddings.npy`` (float32 ``[n, d]``, rows in key order) and ``embedding_keys.txt``."""
    rows = sorted(rows, key=lambda row: row[0])
    if not rows:
        raise RuntimeError("no track embedding was exported")
    matrix = np.stack([np.asarray(vector, dtype=np.float32) for _, _, vector in rows])
    # np.save keeps a name ending in .npy as it is; the table is written where the job runs
    write_atomic(f"{output_uri}/{EMBEDDINGS_NPY}",
                 lambda tmp_path: np.save(tmp_path, matrix, allow_pickle=False), suffix=".npy")
    beam_io.write_text_atomic(f"{output_uri}/{EMBEDDING_KEYS}", "".join(f"{key}\n" for _, key, _ in rows))
    return len(rows)


def build_embedding_export(pipeline: beam.Pipeline, track_keys: Sequence[str], output_uri: str,
                           saved_model_dir: str, batching: Batching = Batching(64, 1024),
                           model_info: Mapping[str, Any] | None = None,
                           progress_seconds: float = 30.0) -> dict[str, Any]:
    """Adds the track-embedding export to ``pipeline``: keys → ``embeddings.npy`` + ``embedding_keys.txt``.

    Calls the next-track model's ``track_embeddings`` signature (``track_keys``
    string ``[n]`` → ``embedding`` float32 ``[n, d]``). Row ``i`` of the matrix is
    line ``i`` of the keys file, in the order of ``track_keys`` (a key that
    fails is left out and becomes a dead letter). The pair loads straight into
    an ANN index (``numpy.load`` then e.g. ``faiss.IndexFlatIP.add``).
    """
    if not track_keys:
        raise ValueError("no track keys to embed")
    if len(set(track_keys)) != len(track_keys):
        raise ValueError("track keys repeat")
    keyed = pipeline | "ListKeys" >> beam.Create(
        [(index, key) for index, key in enumerate(track_keys)])
    inferred = (keyed
                | "KeyByIndex" >> beam.MapTuple(lambda index, key: ((index, key), key))
                | "Embed" >> RunSignature(saved_model_dir, inference_handler.SignatureInference(
                    "track_embeddings", inference_handler.collate_key_list, ["embedding"]),
                    batching, "embeddings", progress_seconds))
    rows = inferred["predictions"] | "Rows" >> beam.MapTuple(
        lambda key, prediction: (key[0], key[1], prediction["embedding"]))
    written = (rows
               | "Collect" >> beam.combiners.ToList()
               | "WriteTable" >> beam.Map(_write_embedding_table, output_uri))
    dead_letters = inferred["failed"] | "DeadKeys" >> beam.MapTuple(
        lambda key, detail: {"track_key": key[1], "reason": REASON_INFERENCE, "detail": detail})
    static = {"job": "embeddings", "model": dict(model_info or {"path": saved_model_dir}),
              "outputs": {"matrix": EMBEDDINGS_NPY, "keys": EMBEDDING_KEYS}}
    manifest = _write_manifest(pipeline, output_uri, static, [("inputs", ("tracks", "dead_letters"))],
                               dead_letters, [_tally(keyed, "inputs"), _tally(rows, "tracks"),
                                              written | "TallyWritten" >> beam.Map(lambda n: ("written", n))])
    return {"rows": rows, "dead_letters": dead_letters, "manifest": manifest}


__all__ = ["build_tagging", "build_recommendations", "build_embedding_export", "Batching", "RunSignature",
           "tag_track", "user_request", "filter_recommendations", "recommend_user", "EXCLUDE_MODES",
           "MANIFEST_FILE", "DEAD_LETTERS_FILE", "TAGS", "RECOMMENDATIONS", "EMBEDDINGS_NPY",
           "EMBEDDING_KEYS", "RECOMMEND_SIGNATURE", "TAG_COLUMNS", "RECOMMENDATION_COLUMNS", "REASON_INFERENCE",
           "REASON_ALL_EXCLUDED"]
