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
  (``inputs == outputs + dead_letters``, and every output in the shards),
  the model and the parameters.

Few values cross between Beam workers and the runner: the files to read go
out, and the records are written by the worker that ran the model, one part
file per bundle (:class:`WriteRecordParts`), joined into shards at the end;
only a user's plays cross once, to be grouped, as bytes. With
``--direct_running_mode=multi_processing`` everything that crosses is
encoded and decoded by the runner process (docs/batch.md, "Throughput and
workers").

Reading and decoding reuse ingestion: the audio ExampleGen's duplicate-id
check and :class:`~musicrec.components.audio_example_gen.DecodeTrack` (with
its dead-letter reasons), the play-log readers and the ExampleGen's session
rule (``playlog_example_gen.split_into_sessions``). Track-level
genre probabilities are the genre model's answer for the track's segments
together (its ``serving_default`` answers per track), as the evaluator
reads them; the features are those stored with the model.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from musicrec.atomic import write_atomic
from musicrec.components import audio_example_gen, beam_io, inference_handler, tfrecord_shards
# Records are encoded by the ExampleGens' wire encoder: no TensorFlow in the writing steps, and
# a third of the time of building tf.train.Example messages in Python.
from musicrec.components.example_wire import byte_strings, encode_example, floats, int64s
from musicrec.components.audio_example_gen import AudioSource
from musicrec.components.bulk_inferrer import DEFAULT_MAX_HISTORY_LENGTH, EXCLUDE_MODES
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


class _UnwrapWithProgress(beam_io.LogProgress):
    """``(key, PredictionResult)`` → ``(key, outputs)``, counted for the progress log (one step, not two)."""

    def process(self, element):
        key, result = element
        self._progress.add(self._what)
        yield key, result.inference


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
        predictions = main | "Unwrap" >> beam.ParDo(_UnwrapWithProgress(
            f"bulk_inferrer {self._stage}", "inferred", self._progress_seconds))
        failed = other.failed_inferences | "FailedKeys" >> beam.FlatMap(_failed_keys)
        return {"predictions": predictions, "failed": failed}


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """CSV lines of ``rows``, without the final newline (``WriteToText`` adds it)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()[:-1]


@dataclasses.dataclass(frozen=True)
class RecordParts:
    """What one bundle of :class:`WriteRecordParts` wrote: small enough to cross to the finishing step.

    Attributes:
        first_key: the key of the bundle's first record (orders the parts, so reruns give the same files).
        records: the TFRecord part (:class:`tfrecord_shards.Part`).
        csv_path: the CSV part (rows without a header, UTF-8).
    """

    first_key: str
    records: tfrecord_shards.Part
    csv_path: str


class WriteRecordParts(beam.DoFn):
    """Records (dicts) → this bundle's two part files; one :class:`RecordParts` per bundle.

    Each record is encoded and written by the worker that produced it, in the
    stage that ran the model: a GZIP TFRecord part
    (:class:`tfrecord_shards.PartWriter`, compressed in a background thread)
    and a CSV part. Nothing but the parts' paths and counts crosses to the
    runner, which with ``--direct_running_mode=multi_processing`` would
    otherwise decode and re-encode every record twice (docs/batch.md,
    "Throughput and workers"). :func:`join_record_parts` makes the shards.
    """

    def __init__(self, parts_dir: str, key_field: str, to_example: Callable[[dict], bytes],
                 to_csv_rows: Callable[[dict], list[list[Any]]]):
        super().__init__()
        self._parts_dir = parts_dir
        self._key_field = key_field
        self._to_example = to_example
        self._to_csv_rows = to_csv_rows

    def start_bundle(self):
        self._abort()  # a bundle that failed leaves its parts unfinished: the runner retries it
        self._open = None

    def _abort(self):
        opened, self._open = getattr(self, "_open", None), None
        if opened:
            first_key, writer, text, _rows, csv_path = opened
            writer.abort()
            text.close()
            tfrecord_shards.delete_quietly([csv_path])

    def process(self, record: Mapping[str, Any]):
        if self._open is None:
            stem = f"{self._parts_dir}/{uuid.uuid4().hex}"
            # One CSV writer per part: a writer (and a buffer) per record cost more than the rows.
            text = io.TextIOWrapper(
                FileSystems.create(f"{stem}.csv", compression_type=CompressionTypes.UNCOMPRESSED),
                encoding="utf-8", newline="")
            self._open = (str(record[self._key_field]),
                          tfrecord_shards.PartWriter(f"{stem}.tfrecord.gz", background=True),
                          text, csv.writer(text, lineterminator="\n"), f"{stem}.csv")
        _first, writer, _text, rows, _path = self._open
        writer.write_record(self._to_example(record))
        rows.writerows(self._to_csv_rows(record))

    def finish_bundle(self):
        opened, self._open = self._open, None
        if opened:
            first_key, writer, text, _rows, csv_path = opened
            text.close()
            yield WindowedValue(RecordParts(first_key, writer.close(), csv_path),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])

    def teardown(self):
        self._abort()


def record_shard_path(output_uri: str, name: str, shard: int, num_shards: int) -> str:
    """``<output_uri>/<name>/data-SSSSS-of-NNNNN.tfrecord.gz``, as Beam's file sinks name shards."""
    return f"{output_uri}/{name}/data-{shard:05d}-of-{num_shards:05d}.tfrecord.gz"


def join_record_parts(parts: Sequence[RecordParts], output_uri: str, name: str, columns: Sequence[str],
                      num_shards: int, parts_dir: str) -> int:
    """Turns the bundles' parts into ``<name>/data-*.tfrecord.gz`` and ``<name>.csv``; returns the records.

    Parts are ordered by their first key; shard ``i`` of ``n`` joins parts
    ``i, i + n, ...`` without recompressing (``num_shards`` 0: one shard per
    part). The CSV gets the header and every part's rows. Both are written
    under temporary names and renamed; the parts folder is deleted.
    """
    ordered = sorted(parts, key=lambda part: (part.first_key, part.csv_path))
    shards = num_shards or max(1, len(ordered))
    records = 0
    for shard in range(shards):
        destination = record_shard_path(output_uri, name, shard, shards)
        shard_parts = [part.records for part in ordered[shard::shards]]
        if shard_parts:
            records += tfrecord_shards.join_parts(shard_parts, destination)
        else:
            if not FileSystems.exists(f"{output_uri}/{name}"):
                FileSystems.mkdirs(f"{output_uri}/{name}")
            tfrecord_shards.write_empty(destination)
    csv_destination = f"{output_uri}/{name}.csv"
    temporary = f"{output_uri}/.tmp-{uuid.uuid4().hex}-{name}.csv"
    try:
        with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write((_csv_text([columns]) + "\n").encode("utf-8"))
            for part in ordered:
                with FileSystems.open(part.csv_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                    while chunk := handle.read(4 << 20):
                        out.write(chunk)
        FileSystems.rename([temporary], [csv_destination])
    except BaseException:
        tfrecord_shards.delete_quietly([temporary])
        raise
    tfrecord_shards.delete_quietly([parts_dir])
    return records


def _write_outputs(records, output_uri: str, name: str, key_field: str, to_example: Callable[[dict], bytes],
                   to_csv_rows: Callable[[dict], list[list[Any]]], columns: Sequence[str], num_shards: int):
    """Writes ``records`` (dicts) as sharded GZIP TFRecords and a one-file CSV summary.

    The records are written where they are made (:class:`WriteRecordParts`);
    one step joins the parts (:func:`join_record_parts`).

    Returns:
        A PCollection of one ``(f"{name}_written", n)`` tally: the records in the shards.
    """
    parts_dir = f"{output_uri}/.tmp-parts-{name}-{uuid.uuid4().hex}"
    return (records
            | f"Write{name}Parts" >> beam.ParDo(WriteRecordParts(parts_dir, key_field, to_example, to_csv_rows))
            | f"Collect{name}Parts" >> beam.combiners.ToList()
            | f"Join{name}Parts" >> beam.Map(
                lambda parts: (f"{name}_written",
                               join_record_parts(parts, output_uri, name, columns, num_shards, parts_dir))))


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
    # a count the driver knows (e.g. the files listed) is in ``static``; the tallies add the rest
    counts = {name: int(totals.get(name, static.get(name, 0))) for name in names}
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


def tag_track(key: tuple[str, str, str, int], prediction: Mapping[str, np.ndarray],
              top_genres: int = 3) -> dict[str, Any]:
    """One track's answer → its tag record.

    Args:
        key: ``(track_id, path, label, n_segments)``; ``label`` is the genre
            the input listed, ``""`` when unknown.
        prediction: the genre signature's outputs for the track:
            ``probabilities`` and ``classes`` ``[n_genres]``, ``embedding``
            ``[d]``.
        top_genres: genres kept.

    Returns:
        ``track_id``, ``path``, ``label``, ``n_segments``, ``classes``
        ``[n_genres]``, ``probabilities`` ``[n_genres]`` (the model's
        track-level answer, as the evaluator scores it), ``genre`` (argmax,
        ties to the first class, as ``musicrec classify``), ``top_genres`` and
        ``top_probabilities`` ``[top_genres]`` best first, ``embedding`` ``[d]``.
    """
    track_id, path, label, n_segments = key
    probabilities = np.asarray(prediction["probabilities"], dtype=np.float32)
    classes = [str(name) for name in prediction["classes"]]
    order = np.argsort(-probabilities, kind="stable")[:top_genres]
    return {
        "track_id": track_id, "path": path, "label": label, "n_segments": int(n_segments),
        "classes": classes, "probabilities": probabilities,
        "genre": classes[order[0]], "top_genres": [classes[i] for i in order],
        "top_probabilities": probabilities[order],
        "embedding": np.asarray(prediction["embedding"], dtype=np.float32),
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

    Files are decoded with the ingestion code (same dead-letter reasons) and
    cut into segments with the feature parameters stored with the model
    (``assets.extra``, ``models.genre.signatures.read_model_features``);
    several tracks go into each call of the genre model's ``serving_default``
    signature, one row per track, and each track's answer comes back as its
    own row.

    Args:
        pipeline: a Beam pipeline.
        sources: the files (``audio_example_gen.list_sources`` or
            ``bulk_inferrer.list_catalogue``); a repeated track id is a dead letter.
        output_uri: folder; gets ``tags/``, ``tags.csv``, ``dead_letters.jsonl``, ``manifest.json``.
        saved_model_dir: the genre SavedModel.
        params: log-mel parameters overriding those stored with the model (for
            tests of failing models; a model reads only its own).
        top_genres: genres per track in ``top_genres`` (at most the model's classes).
        num_shards: TFRecord shards (0 lets the runner choose).
        batching: segments per signature call.
        model_info: recorded in the manifest (model name, version, path).

    Returns:
        ``{"tags": records (dicts, see :func:`tag_track`), "dead_letters": dicts, "manifest": one dict}``.
    """
    if top_genres < 1:
        raise ValueError(f"top_genres must be >= 1, got {top_genres}")
    if params is None:
        from musicrec.models.genre.signatures import read_model_features

        params = read_model_features(saved_model_dir)[1]
    # Duplicate ids are found here, in the driver that holds the list anyway; only paths go to the
    # workers (Create spreads them), and one fused stage per worker decodes, runs the model and
    # writes the records: only counts and part-file paths come back (docs/batch.md).
    kept, duplicates = audio_example_gen.drop_duplicate_track_ids(list(sources))
    decoded = (pipeline
               | "ListSources" >> beam.Create(kept)
               | "Decode" >> beam.ParDo(audio_example_gen.DecodeTrack(params, progress_seconds))
               .with_outputs(DEAD, main="tracks"))
    # One element per track, weighted by its segments: a signature call takes several tracks
    # (up to batching.max_batch_size segments), one row each.
    inferred = (decoded.tracks
                | "KeyByTrack" >> beam.Map(
                    lambda track: ((track[0].track_id, track[0].path, track[0].genre,
                                    int(track[1].shape[0])), track[1]))
                | "Genre" >> RunSignature(saved_model_dir, inference_handler.SignatureInference(
                    "serving_default", inference_handler.collate_tracks,
                    ["probabilities", "classes", "embedding"]), batching, "tag", progress_seconds,
                    element_size_fn=inference_handler.keyed_segment_count))
    tags = inferred["predictions"] | "TagTracks" >> beam.MapTuple(tag_track, top_genres)
    written = _write_outputs(tags, output_uri, TAGS, "track_id", tag_example, tag_csv_rows, TAG_COLUMNS,
                             num_shards)
    failed = inferred["failed"] | "FailedTracks" >> beam.MapTuple(
        lambda key, detail: {"path": key[1], "reason": REASON_INFERENCE, "detail": detail})

    listed_dead = pipeline | "DuplicateIds" >> beam.Create(duplicates, reshuffle=False)
    dead_letters = (listed_dead, decoded[DEAD], failed) | "AllDeadLetters" >> beam.Flatten()
    static = {"job": "tag", "model": dict(model_info or {"path": saved_model_dir}),
              "feature_params": params.to_dict(), "top_genres": top_genres, "num_shards": num_shards,
              "inputs": len(sources),
              "outputs": {"records": f"{TAGS}/data-*.tfrecord.gz", "summary": f"{TAGS}.csv"}}
    manifest = _write_manifest(pipeline, output_uri, static, [
        ("inputs", ("tracks", "dead_letters")), (f"{TAGS}_written", ("tracks",))], dead_letters, [
        _tally(tags, "tracks"), _tally(tags, "segments", lambda record: record["n_segments"]), written])
    return {"tags": tags, "dead_letters": dead_letters, "manifest": manifest}


# --------------------------------------------------------------------------- recommendations


RECOMMEND_SIGNATURE = "recommend"


def user_request(user_plays: tuple[str, Iterable[Sequence[tuple]]], gap_seconds: int, max_prefix_length: int,
                 exclude: str, top_n: int = 10, max_history_length: int = DEFAULT_MAX_HISTORY_LENGTH,
                 personalised: bool = False
                 ) -> tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any]:
    """All of a user's plays → ``(key, model input)`` for their recommendations.

    ``user_plays`` is ``(user_id, chunks)``: lists of play fields
    (``playlog_example_gen.keyed_by_user``), as :class:`ReadPlaysByUser`
    groups them per file, or those lists encoded by :func:`encode_user_plays`
    (as the job sends them through the grouping), in any order.

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
    """One user's play fields (``playlog_example_gen.keyed_by_user``) → compact UTF-8 JSON bytes.

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
                          progress_seconds: float = 30.0,
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
    written = _write_outputs(recommended.users, output_uri, RECOMMENDATIONS, "user_id", recommendation_example,
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
        ("dead_letters", ("dead_rows", "dead_users")),
        (f"{RECOMMENDATIONS}_written", ("users_recommended",))], dead_letters, [written,
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
