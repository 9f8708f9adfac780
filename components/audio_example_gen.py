"""``audio_example_gen``: audio files to log-mel segment examples (Apache Beam).

Reads a folder-per-genre tree or a metadata CSV
(:mod:`~musicrec.components.audio_sources`), decodes every file with
:mod:`musicrec.models.features` (the one source of truth for log-mel
parameters), cuts it into fixed-length segments and writes one
``tf.train.Example`` per segment (:mod:`~musicrec.components.audio_records`)
as sharded GZIP TFRecords, split into ``train`` / ``eval`` / ``test`` by a
stable hash of the artist (or the track id when the artist is unknown).
Layout and record format follow ``docs/architecture.md`` ("Audio examples").

Files that are empty, unreadable, not audio, corrupt, shorter than one
segment, silent, or repeat a track id become dead-letter records
``{"path", "reason", "detail"}`` with ``reason`` one exact string of
:data:`~musicrec.components.audio_decoding.DEAD_LETTER_REASONS`
(docs/ingestion.md); the manifest counts are computed inside the pipeline
(:mod:`~musicrec.components.audio_statistics`) and always satisfy
``inputs == tracks + dead_letters``. ``statistics.json`` holds per-split
counts and the log-mel mean and standard deviation per mel band.
"""
from __future__ import annotations

import json
import uuid
import zlib
from typing import Any, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from musicrec.components import beam_io, tfrecord_shards
from musicrec.components.audio_decoding import DecodeTrack, drop_duplicate_track_ids
from musicrec.components.audio_records import encode_segment, track_features
from musicrec.components.audio_sources import (DEFAULT_SPLIT_FRACTIONS, AudioSource, assign_split,
                                               check_split_fractions, list_sources)
from musicrec.components.audio_statistics import (SUMMARY, WRITTEN, IngestSummaryFn, build_manifest,
                                                  split_statistics, track_band_sums)
from musicrec.components.base import Artifact, ComponentSpec, given_params
from musicrec.models import features

LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
STATISTICS_FILE = "statistics.json"
DEAD_LETTERS_FILE = "dead_letters.jsonl"


def build_pipeline(pipeline: beam.Pipeline, sources: Sequence[AudioSource], labels: Sequence[str],
                   output_uri: str, params: features.AudioFeatureParams | None = None,
                   split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
                   num_shards: int = 1, baseline_vectors: bool = True) -> dict[str, Any]:
    """Adds the audio-to-examples steps to ``pipeline``; nothing runs until it does.

    Few, fused steps on purpose (a Beam job's fixed cost grows with its
    stages, and on a few thousand files it is most of the job), and no
    example crosses a process boundary:

    1. duplicate track ids are found while listing (here, in the driver,
       which holds the list anyway) and become dead letters;
    2. ``Create`` spreads the files over the workers;
    3. one DoFn per file decodes, computes the log-mels, cuts segments,
       assigns the split and shard, and appends each segment's serialised
       ``tf.train.Example`` to this bundle's part file of that shard
       (:class:`TrackToExamples`, :mod:`tfrecord_shards`); it emits only
       small facts: per track its counts and per-band sums, per failure a
       dead letter, per part file written its path and CRC;
    4. one combine gathers every fact (:class:`IngestSummaryFn`);
    5. the last step joins each shard's parts (a rename when there is one)
       into ``Split-<split>/data-SSSSS-of-NNNNN.tfrecord.gz``, writes the
       empty shards, ``dead_letters.jsonl``, ``statistics.json``,
       ``labels.txt`` and, last, ``manifest.json``, then deletes the parts
       folder (with any part a retried bundle left behind).

    Args:
        pipeline: a Beam pipeline (``TestPipeline`` in tests).
        sources: the files, from :func:`list_sources`.
        labels: label names; a source's genre must be one of them.
        output_uri: the ``AudioExamples`` artifact URI; gets ``Split-*/``,
            ``labels.txt``, ``manifest.json``, ``statistics.json`` and ``dead_letters.jsonl``.
        params: log-mel parameters (defaults when ``None``).
        split_fractions: ``{"train", "eval", "test"}`` fractions summing to 1.
        num_shards: TFRecord shards per split.
        baseline_vectors: also store each track's classical-baseline clip
            vector in its examples (``baseline_features``, computed from the
            file at 22 050 Hz; the evaluator's baseline reads it), about
            30 ms of CPU per 30 s track.

    Returns:
        The PCollections tests assert on: ``"dead_letters"`` (dicts) and
        ``"manifest"`` (one dict); the examples are the files.

    Raises:
        ValueError: bad split fractions, ``num_shards < 1``, or a genre not in ``labels``.
    """
    params = params or features.AudioFeatureParams()
    fractions = check_split_fractions(split_fractions)
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    label_ids = {label: index for index, label in enumerate(labels)}
    unknown = sorted({s.genre for s in sources} - set(label_ids))
    if unknown:
        raise ValueError(f"genres missing from labels: {unknown}")

    kept, duplicates = drop_duplicate_track_ids(sources)
    parts_dir = f"{output_uri}/.tmp-parts-{uuid.uuid4().hex}"
    summary = (pipeline
               | "ListSources" >> beam.Create(kept)
               | "ToExamples" >> beam.ParDo(TrackToExamples(params, label_ids, fractions, num_shards, parts_dir,
                                                        baseline_vectors=baseline_vectors))
               | "Summarise" >> beam.CombineGlobally(IngestSummaryFn()))
    manifest = summary | "Finish" >> beam.Map(
        _finish, output_uri, parts_dir, len(sources), duplicates, labels, params, fractions, num_shards)
    dead_letters = summary | "DeadLetters" >> beam.FlatMap(
        lambda facts: list(duplicates) + facts["dead_letters"])
    return {"dead_letters": dead_letters, "manifest": manifest}


class TrackToExamples(DecodeTrack):
    """One file to its examples, appended to this bundle's shard part files, in one step.

    Segment ``i`` of a track goes to shard ``(crc32(track_id) + i) % num_shards``
    of its split, so shards fill evenly and the same input always fills the
    same shards. Each bundle writes at most one part file per ``(split,
    shard)`` under ``parts_dir`` (:class:`tfrecord_shards.PartWriter`).

    Output, one stream of small facts: ``(SUMMARY, (split, genre,
    n_segments, (frames, band sums, band sums of squares)))`` per track,
    ``(DEAD, record)`` per dead letter, and when the bundle ends ``(WRITTEN,
    (split, shard, first path, Part))`` per part file (``first path``: the
    first source written to it, which orders the parts of a shard).
    """

    def __init__(self, params: features.AudioFeatureParams, label_ids: Mapping[str, int],
                 fractions: Mapping[str, float], num_shards: int, parts_dir: str,
                 progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS,
                 baseline_vectors: bool = True):
        super().__init__(params, progress_seconds, baseline_vectors)
        self._label_ids = dict(label_ids)
        self._fractions = dict(fractions)
        self._num_shards = num_shards
        self._parts_dir = parts_dir

    def start_bundle(self):
        self._abort_writers()  # left by a bundle that failed: the runner retries its elements
        self._writers: dict[tuple[str, int], tuple[str, tfrecord_shards.PartWriter]] = {}

    def _abort_writers(self):
        for _first_path, writer in getattr(self, "_writers", {}).values():
            writer.abort()  # an unfinished bundle's parts; the finishing step never sees them
        self._writers = {}

    def _writer(self, split: str, shard: int, source_path: str) -> tfrecord_shards.PartWriter:
        """This bundle's part writer for ``(split, shard)``, opened by the first source it gets."""
        if (split, shard) not in self._writers:
            part_path = f"{self._parts_dir}/{split}-{shard:05d}-{uuid.uuid4().hex}.tfrecord.gz"
            self._writers[split, shard] = (source_path, tfrecord_shards.PartWriter(part_path, background=True))
        return self._writers[split, shard][1]

    def process(self, source: AudioSource):
        for output in super().process(source):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield output.tag, output.value
                continue
            source, segments, *baseline_vector = output
            split = assign_split(source, self._fractions)
            shared = track_features(self._label_ids[source.genre], source, *baseline_vector)
            first_shard = zlib.crc32(source.track_id.encode("utf-8"))
            for index, segment in enumerate(segments):
                writer = self._writer(split, (first_shard + index) % self._num_shards, source.path)
                writer.write_record(encode_segment(segment, index, shared))
            _split, band_sums = track_band_sums((split, source, segments))
            yield SUMMARY, (split, source.genre, int(segments.shape[0]), band_sums)

    def finish_bundle(self):
        writers, self._writers = self._writers, {}
        for (split, shard), (first_path, writer) in sorted(writers.items()):
            yield WindowedValue((WRITTEN, (split, shard, first_path, writer.close())),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])

    def teardown(self):
        self._abort_writers()
        super().teardown()


def _finish(summary: Mapping[str, Any], output_uri: str, parts_dir: str, inputs: int,
            duplicates: Sequence[Mapping[str, str]], labels: Sequence[str],
            params: features.AudioFeatureParams, fractions: Mapping[str, float], num_shards: int) -> dict:
    """Writes the shards from their parts and what follows them (see :func:`build_pipeline`);
    returns the manifest.

    Raises:
        RuntimeError: the parts hold another number of records than the
            segments counted (a bug: an example was lost or doubled).
    """
    dead_letters = list(duplicates) + summary["dead_letters"]
    reasons: dict[str, int] = {}
    for record in dead_letters:
        reasons[record["reason"]] = reasons.get(record["reason"], 0) + 1
    manifest = build_manifest(inputs, len(dead_letters), summary["tracks"], labels, params, fractions,
                              num_shards, reasons)
    _write_shards(output_uri, num_shards, summary["parts"], manifest["segments"])
    tfrecord_shards.delete_quietly([parts_dir])
    beam_io.write_dead_letter_records(f"{output_uri}/{DEAD_LETTERS_FILE}", dead_letters)
    _write_metadata(manifest, output_uri, summary["band_sums"])
    return manifest


def _write_shards(output_uri: str, num_shards: int, parts: Sequence[tuple], segments: int) -> None:
    """Joins each ``(split, shard)``'s parts, in first-path order, into its numbered shard;
    shards with no part are written empty."""
    by_shard: dict[tuple[str, int], list] = {}
    for split, shard, first_path, part in parts:
        by_shard.setdefault((split, shard), []).append((first_path, part.path, part))
    records = sum(part.records for *_key, part in parts)
    if records != segments:
        raise RuntimeError(f"audio_example_gen: parts hold {records} records for {segments} segments")
    for split in beam_io.SPLITS:
        for shard in range(num_shards):
            destination = beam_io.shard_path(output_uri, split, shard, num_shards)
            shard_parts = [part for *_order, part in sorted(by_shard.get((split, shard), []),
                                                           key=lambda item: item[:2])]
            if shard_parts:
                tfrecord_shards.join_parts(shard_parts, destination)
            else:
                tfrecord_shards.write_empty(destination)


def _write_metadata(manifest: Mapping[str, Any], output_uri: str,
                    band_sums: Mapping[str, tuple[int, np.ndarray, np.ndarray]]) -> None:
    beam_io.write_text_atomic(f"{output_uri}/{STATISTICS_FILE}", json.dumps(
        split_statistics(manifest, band_sums), indent=1, sort_keys=True) + "\n")
    beam_io.write_text_atomic(f"{output_uri}/{LABELS_FILE}", "".join(f"{label}\n" for label in manifest["labels"]))
    beam_io.write_text_atomic(f"{output_uri}/{MANIFEST_FILE}",
                              json.dumps(manifest, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- component


def run(inputs: Mapping[str, Artifact], outputs: Mapping[str, Artifact], params: Mapping[str, Any]) -> None:
    """Executor: lists the audio, runs the Beam job, records counts on the artifact.

    Params:
        audio_dir | metadata_csv: where the audio is (see :func:`list_sources`).
        feature_params: dict for ``AudioFeatureParams.from_dict`` (optional).
        split_fractions: ``{"train", "eval", "test"}`` (default 0.8 / 0.1 / 0.1).
        num_shards: TFRecord shards per split (default: :func:`build_pipeline`'s).
        baseline_vectors: store the classical baseline's clip vectors (default: :func:`build_pipeline`'s).
        beam_args: pass-through Beam flags (see ``beam_io.pipeline_options``).
    """
    known = {"audio_dir", "metadata_csv", "feature_params", "split_fractions", "num_shards",
             "baseline_vectors", "beam_args"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"audio_example_gen: unknown params {unknown}")
    examples = outputs["examples"]
    sources, labels = list_sources(audio_dir=params.get("audio_dir"), metadata_csv=params.get("metadata_csv"))
    if not sources:
        raise ValueError("audio_example_gen: no audio files listed")
    feature_params = features.AudioFeatureParams.from_dict(params.get("feature_params") or {})
    with beam.Pipeline(options=beam_io.pipeline_options(params.get("beam_args"))) as pipeline:
        build_pipeline(pipeline, sources, labels, examples.uri, feature_params,
                       split_fractions=params.get("split_fractions") or DEFAULT_SPLIT_FRACTIONS,
                       **given_params(params, "baseline_vectors", num_shards=int))
    manifest = json.loads(beam_io.read_text(f"{examples.uri}/{MANIFEST_FILE}"))
    examples.properties.update({key: manifest[key] for key in
                                ("inputs", "tracks", "dead_letters", "segments", "labels", "segment_shape")})


SPEC = ComponentSpec(name="audio_example_gen", inputs={}, outputs={"examples": "AudioExamples"}, executor=run)

__all__ = ["SPEC", "run", "build_pipeline", "TrackToExamples", "LABELS_FILE", "MANIFEST_FILE", "STATISTICS_FILE",
           "DEAD_LETTERS_FILE"]
