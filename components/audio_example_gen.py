"""``audio_example_gen``: audio files to log-mel segment examples (Apache Beam).

Reads a folder-per-genre tree or a metadata CSV, decodes every file with
:mod:`musicrec.models.features` (the one source of truth for log-mel
parameters), cuts it into fixed-length segments and writes one
``tf.train.Example`` per segment as sharded GZIP TFRecords, split into
``train`` / ``eval`` / ``test`` by a stable hash of the artist (or the track id
when the artist is unknown). Layout and record format follow
``docs/architecture.md`` ("Audio examples").

Files that are empty, unreadable, not audio, corrupt, shorter than one
segment, silent, or repeat a track id become dead-letter records
``{"path", "reason", "detail"}`` with ``reason`` one exact string of
:data:`DEAD_LETTER_REASONS` (docs/ingestion.md); the manifest counts are
computed inside the pipeline and always satisfy
``inputs == tracks + dead_letters``. ``statistics.json`` holds per-split
counts and the log-mel mean and standard deviation per mel band.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import posixpath
import uuid
import zlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from musicrec.components import beam_io, example_wire, tfrecord_shards
from musicrec.components.base import Artifact, ComponentSpec
from musicrec.models import audio_files, features

DEFAULT_SPLIT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "eval": 0.1, "test": 0.1}
LABELS_FILE = "labels.txt"
MANIFEST_FILE = "manifest.json"
STATISTICS_FILE = "statistics.json"
DEAD_LETTERS_FILE = "dead_letters.jsonl"


@dataclasses.dataclass(frozen=True)
class AudioSource:
    """One input audio file and what is known about it.

    Attributes:
        path: local path or any URI ``tf.io.gfile`` reads (``gs://...``).
        genre: label name.
        track_id: stable id of the track (the file stem unless given).
        artist: artist name, ``""`` when unknown.
        split: a split given with the file (``train``, ``eval`` or ``test``,
            from the metadata CSV), which wins over the hash; ``""``: none.
    """

    path: str
    genre: str
    track_id: str
    artist: str = ""
    split: str = ""


# --------------------------------------------------------------------------- listing


def list_sources(audio_dir: str | None = None,
                 metadata_csv: str | None = None) -> tuple[list[AudioSource], list[str]]:
    """Lists the input files and the label vocabulary.

    Exactly one of the arguments is given.

    Args:
        audio_dir: folder-per-genre tree: every non-hidden regular file directly
            in ``<audio_dir>/<genre>/`` is a track of that genre; its track id is
            the file stem and its artist is unknown.
        metadata_csv: CSV with a header and columns ``path``, ``genre`` and
            optionally ``artist``, ``track_id`` and ``split``; relative paths
            are relative to the CSV's folder; a missing ``track_id`` is the
            file stem; a ``split`` (``train``, ``eval``, ``test``) pins the
            row's split (a predefined split, or cross-validation folds), an
            empty one leaves it to the hash.

    Returns:
        ``(sources, labels)``: sources sorted by path, and the sorted distinct
        genres (line index in ``labels.txt`` = label id).

    Raises:
        ValueError: both or neither argument given, the folder has no genre
            sub-folders, or a CSV row lacks its path or genre or names an
            unknown split.
        FileNotFoundError: ``audio_dir`` or ``metadata_csv`` does not exist.
    """
    if (audio_dir is None) == (metadata_csv is None):
        raise ValueError("give exactly one of audio_dir or metadata_csv")
    sources = _list_genre_folders(audio_dir) if audio_dir is not None else _read_metadata_csv(metadata_csv)
    sources.sort(key=lambda source: source.path)
    labels = sorted({source.genre for source in sources})
    return sources, labels


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]


def _list_genre_folders(audio_dir: str) -> list[AudioSource]:
    import tensorflow as tf

    if not tf.io.gfile.isdir(audio_dir):
        raise FileNotFoundError(f"audio_dir {audio_dir!r} is not a directory")
    sources = []
    genres = [name.rstrip("/") for name in tf.io.gfile.listdir(audio_dir)]
    genre_dirs = [g for g in genres
                  if not _is_hidden(g) and tf.io.gfile.isdir(posixpath.join(audio_dir, g))]
    if not genre_dirs:
        raise ValueError(f"audio_dir {audio_dir!r} holds no genre sub-folders")
    for genre in genre_dirs:
        genre_dir = posixpath.join(audio_dir, genre)
        for name in tf.io.gfile.listdir(genre_dir):
            path = posixpath.join(genre_dir, name.rstrip("/"))
            if _is_hidden(name) or tf.io.gfile.isdir(path):
                continue
            sources.append(AudioSource(path=path, genre=genre, track_id=_stem(path)))
    return sources


def _read_metadata_csv(metadata_csv: str) -> list[AudioSource]:
    import tensorflow as tf

    if not tf.io.gfile.exists(metadata_csv):
        raise FileNotFoundError(f"metadata_csv {metadata_csv!r} does not exist")
    base_dir = posixpath.dirname(metadata_csv)
    with tf.io.gfile.GFile(metadata_csv, "r") as handle:
        reader = csv.DictReader(io.StringIO(handle.read()))
        missing = {"path", "genre"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{metadata_csv}: missing columns {sorted(missing)}")
        sources = []
        for line_number, row in enumerate(reader, start=2):
            path, genre = (row.get("path") or "").strip(), (row.get("genre") or "").strip()
            if not path or not genre:
                raise ValueError(f"{metadata_csv}:{line_number}: empty path or genre")
            if "://" not in path and not posixpath.isabs(path):
                path = posixpath.join(base_dir, path)
            split = (row.get("split") or "").strip()
            if split and split not in beam_io.SPLITS:
                raise ValueError(f"{metadata_csv}:{line_number}: split {split!r} is none of "
                                 f"{list(beam_io.SPLITS)}")
            sources.append(AudioSource(
                path=path, genre=genre,
                track_id=(row.get("track_id") or "").strip() or _stem(path),
                artist=(row.get("artist") or "").strip(), split=split))
    return sources


# --------------------------------------------------------------------------- splitting


def check_split_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validates split fractions: exactly the splits in ``beam_io.SPLITS``, >= 0, sum 1."""
    if set(fractions) != set(beam_io.SPLITS):
        raise ValueError(f"split fractions need exactly {list(beam_io.SPLITS)}, got {sorted(fractions)}")
    values = {split: float(fractions[split]) for split in beam_io.SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {values}")
    return values


def split_key(source: AudioSource) -> str:
    """What decides the split: the artist when known, else the track id."""
    return f"artist:{source.artist}" if source.artist else f"track:{source.track_id}"


def assign_split(source: AudioSource, fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS) -> str:
    """Split of a track: the one it was listed with, else from an MD5 of :func:`split_key`.

    The hash is stable across runs and machines: the first 8 bytes of the
    digest map to a point in [0, 1), compared with the cumulative fractions
    in ``beam_io.SPLITS`` order.
    """
    if source.split:
        return source.split
    digest = hashlib.md5(split_key(source).encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    cumulative = 0.0
    for split in beam_io.SPLITS:
        cumulative += fractions[split]
        if point < cumulative:
            return split
    return beam_io.SPLITS[-1]  # rounding when the fractions sum to 1 - epsilon


# --------------------------------------------------------------------------- records


def segment_example_bytes(segment: np.ndarray, label_id: int, source: AudioSource, segment_index: int) -> bytes:
    """The serialised ``tf.train.Example`` of one ``[frames, n_mels]`` float32 log-mel segment.

    Written by :mod:`example_wire` (no TensorFlow in Beam workers); the
    features are the contract's (docs/architecture.md, "Audio examples").
    """
    return _encode_segment(segment, segment_index, _track_features(label_id, source))


def _encode_segment(segment: np.ndarray, segment_index: int,
                    shared: Mapping[str, example_wire.EncodedFeature]) -> bytes:
    """:func:`segment_example_bytes` with the track's features already encoded (once per track)."""
    frames, n_mels = segment.shape
    return example_wire.encode_example({
        **shared,
        "log_mel": example_wire.floats(segment),
        "frames": example_wire.int64s([frames]),
        "n_mels": example_wire.int64s([n_mels]),
        "segment_index": example_wire.int64s([segment_index]),
    })


def _track_features(label_id: int, source: AudioSource) -> dict[str, example_wire.EncodedFeature]:
    """The encoded features every segment of a track shares."""
    return {
        "label": example_wire.int64s([label_id]),
        "genre": example_wire.byte_strings([source.genre]),
        "track_id": example_wire.byte_strings([source.track_id]),
        "artist": example_wire.byte_strings([source.artist]),
    }


def segment_example(segment: np.ndarray, label_id: int, source: AudioSource, segment_index: int):
    """One ``tf.train.Example`` for a ``[frames, n_mels]`` float32 log-mel segment
    (:func:`segment_example_bytes`, parsed; imports TensorFlow)."""
    import tensorflow as tf

    return tf.train.Example.FromString(segment_example_bytes(segment, label_id, source, segment_index))


def feature_spec(frames: int, n_mels: int) -> dict[str, Any]:
    """``tf.io.parse_example`` spec of the records; ``log_mel`` parses to ``[frames * n_mels]``."""
    import tensorflow as tf

    return {
        "log_mel": tf.io.FixedLenFeature([frames * n_mels], tf.float32),
        "frames": tf.io.FixedLenFeature([], tf.int64),
        "n_mels": tf.io.FixedLenFeature([], tf.int64),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "genre": tf.io.FixedLenFeature([], tf.string),
        "track_id": tf.io.FixedLenFeature([], tf.string),
        "artist": tf.io.FixedLenFeature([], tf.string),
        "segment_index": tf.io.FixedLenFeature([], tf.int64),
    }


# --------------------------------------------------------------------------- Beam steps

DEAD = "dead"


REASON_DUPLICATE = "duplicate track_id"
REASON_UNEXPECTED = "unexpected error"
# Every reason a dead letter can carry; docs/ingestion.md explains each.
DEAD_LETTER_REASONS = audio_files.DECODE_REASONS + (REASON_DUPLICATE, REASON_UNEXPECTED)


def _dead_letter(path: str, reason: str, detail: str) -> dict[str, str]:
    """A ``dead_letters.jsonl`` record: ``reason`` is exact (one of
    :data:`DEAD_LETTER_REASONS`), ``detail`` says what happened."""
    return {"path": path, "reason": reason, "detail": detail}


def keep_first_per_track_id(keyed: tuple[str, Iterable[AudioSource]]) -> Iterator[Any]:
    """Keeps the first source (by path) of a track id; later ones are dead letters."""
    track_id, group = keyed
    first, *others = sorted(group, key=lambda source: source.path)
    yield first
    for other in others:
        yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(
            other.path, REASON_DUPLICATE, f"track_id {track_id!r} is already used by {first.path}"))


class DecodeTrack(beam.DoFn):
    """Decodes one file to ``(source, segments [n_segments, frames, n_mels])``.

    Failures go to the ``dead`` output as ``{"path", "reason", "detail"}``;
    one track's samples and segments are the most this step holds in memory.
    A log line reports the counts every ``progress_seconds`` per worker.
    """

    def __init__(self, params: features.AudioFeatureParams, progress_seconds: float = 30.0):
        super().__init__()
        self._params = params
        # Built here, on the machine that builds the pipeline: a worker handed the
        # matrix never imports librosa (seconds of imports per worker process).
        self._filterbank = features.mel_filterbank(params)
        self._progress_seconds = progress_seconds
        self._decoded = beam.metrics.Metrics.counter("audio_example_gen", "tracks_decoded")
        self._rejected = beam.metrics.Metrics.counter("audio_example_gen", "dead_letters")

    def setup(self):
        self._progress = beam_io.ProgressLog("audio_example_gen decode", self._progress_seconds)

    def process(self, source: AudioSource):
        try:
            segments = audio_files.track_segments(source.path, self._params, self._filterbank)
        except audio_files.AudioDecodeError as exc:
            self._rejected.inc()
            self._progress.add("dead_letters")
            yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(source.path, exc.reason, exc.detail))
            return
        except Exception as exc:  # any failure of one file must not stop the job
            self._rejected.inc()
            self._progress.add("dead_letters")
            yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(
                source.path, REASON_UNEXPECTED, f"{type(exc).__name__}: {exc}"))
            return
        self._decoded.inc()
        self._progress.add("tracks", segments=int(segments.shape[0]))
        yield source, segments

    def teardown(self):
        self._progress.flush()


class CountTracksFn(beam.CombineFn):
    """Counts tracks and segments per split, and segments per label per split.

    Input elements are ``(split, genre, n_segments)``; the output is
    ``{"tracks": {split: n}, "segments": {split: n},
    "segments_per_label": {split: {genre: n}}}``.
    """

    def create_accumulator(self) -> dict:
        return {"tracks": {}, "segments": {}, "segments_per_label": {}}

    def add_input(self, accumulator: dict, element: tuple[str, str, int]) -> dict:
        split, genre, n_segments = element
        accumulator["tracks"][split] = accumulator["tracks"].get(split, 0) + 1
        accumulator["segments"][split] = accumulator["segments"].get(split, 0) + n_segments
        per_label = accumulator["segments_per_label"].setdefault(split, {})
        per_label[genre] = per_label.get(genre, 0) + n_segments
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for key in ("tracks", "segments"):
                for split, count in accumulator[key].items():
                    merged[key][split] = merged[key].get(split, 0) + count
            for split, per_label in accumulator["segments_per_label"].items():
                target = merged["segments_per_label"].setdefault(split, {})
                for genre, count in per_label.items():
                    target[genre] = target.get(genre, 0) + count
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


def _band_sums(track: tuple[str, AudioSource, np.ndarray]) -> tuple[str, tuple[int, np.ndarray, np.ndarray]]:
    """``(split, (frames, sum [n_mels], sum of squares [n_mels]))`` of one track's segments (float64)."""
    split, _source, segments = track
    values = segments.reshape(-1, segments.shape[-1]).astype(np.float64)
    return split, (values.shape[0], values.sum(axis=0), np.square(values).sum(axis=0))


def _add_band_sums(parts: Iterable[tuple[int, np.ndarray, np.ndarray]]):
    frames, total, squares = 0, 0.0, 0.0
    for part_frames, part_total, part_squares in parts:
        frames, total, squares = frames + part_frames, total + part_total, squares + part_squares
    return frames, total, squares


def split_statistics(manifest: Mapping[str, Any],
                     band_sums: Mapping[str, tuple[int, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """``statistics.json``: per split, its tracks, segments (per label) and the log-mel
    mean and standard deviation per mel band (``[n_mels]`` lists, over every frame
    of every segment written; empty lists for an empty split)."""
    statistics = {}
    for split in beam_io.SPLITS:
        frames, total, squares = band_sums.get(split, (0, None, None))
        mean = total / frames if frames else np.zeros(0)
        std = np.sqrt(np.maximum(squares / frames - np.square(mean), 0.0)) if frames else np.zeros(0)
        statistics[split] = {
            "tracks": manifest["tracks_per_split"][split],
            "segments": manifest["segments_per_split"][split],
            "segments_per_label": manifest["segments_per_label"][split],
            "frames": int(frames),
            "log_mel_mean": [round(float(v), 6) for v in mean],
            "log_mel_std": [round(float(v), 6) for v in std],
        }
    return statistics


def build_manifest(inputs: int, dead_letters: int, track_counts: Mapping[str, Any],
                   labels: Sequence[str], params: features.AudioFeatureParams,
                   split_fractions: Mapping[str, float], num_shards: int,
                   dead_letters_per_reason: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The ``manifest.json`` payload, with every split and label present (zeros included).

    ``inputs`` counts the files listed, ``tracks`` those that became examples;
    ``dead_letters_per_reason`` maps each exact reason to its count.

    Raises:
        RuntimeError: ``inputs != tracks + dead_letters`` (a bug: a file was lost).
    """
    tracks_per_split = {s: track_counts["tracks"].get(s, 0) for s in beam_io.SPLITS}
    segments_per_split = {s: track_counts["segments"].get(s, 0) for s in beam_io.SPLITS}
    segments_per_label = {
        s: {label: track_counts["segments_per_label"].get(s, {}).get(label, 0) for label in labels}
        for s in beam_io.SPLITS}
    tracks = sum(tracks_per_split.values())
    if inputs != tracks + dead_letters:
        raise RuntimeError(f"audio_example_gen lost files: inputs={inputs}, tracks={tracks}, "
                           f"dead_letters={dead_letters}")
    return {
        "inputs": inputs,
        "tracks": tracks,
        "dead_letters": dead_letters,
        "dead_letters_per_reason": dict(sorted((dead_letters_per_reason or {}).items())),
        "segments": sum(segments_per_split.values()),
        "tracks_per_split": tracks_per_split,
        "segments_per_split": segments_per_split,
        "segments_per_label": segments_per_label,
        "labels": list(labels),
        "segment_shape": [params.frames_per_segment, params.n_mels],
        "feature_params": params.to_dict(),
        "split_fractions": dict(split_fractions),
        "split_key": "the metadata CSV's split when given, else md5 of the artist when known, "
                     "else of the track id",
        "num_shards": num_shards,
    }


def build_pipeline(pipeline: beam.Pipeline, sources: Sequence[AudioSource], labels: Sequence[str],
                   output_uri: str, params: features.AudioFeatureParams | None = None,
                   split_fractions: Mapping[str, float] = DEFAULT_SPLIT_FRACTIONS,
                   num_shards: int = 1) -> dict[str, Any]:
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
               | "ToExamples" >> beam.ParDo(TrackToExamples(params, label_ids, fractions, num_shards, parts_dir))
               | "Summarise" >> beam.CombineGlobally(IngestSummaryFn()))
    manifest = summary | "Finish" >> beam.Map(
        _finish, output_uri, parts_dir, len(sources), duplicates, labels, params, fractions, num_shards)
    dead_letters = summary | "DeadLetters" >> beam.FlatMap(
        lambda facts: list(duplicates) + facts["dead_letters"])
    return {"dead_letters": dead_letters, "manifest": manifest}


SUMMARY = "summary"
WRITTEN = "written"


def drop_duplicate_track_ids(sources: Sequence[AudioSource]) -> tuple[list[AudioSource], list[dict[str, str]]]:
    """``(kept, dead_letters)``: the first source (by path) of each track id, and one
    ``REASON_DUPLICATE`` dead letter for every other one."""
    by_track_id: dict[str, list[AudioSource]] = {}
    for source in sources:
        by_track_id.setdefault(source.track_id, []).append(source)
    kept, dead = [], []
    for keyed in by_track_id.items():
        for output in keep_first_per_track_id(keyed):
            if isinstance(output, beam.pvalue.TaggedOutput):
                dead.append(output.value)
            else:
                kept.append(output)
    kept.sort(key=lambda source: source.path)
    return kept, dead


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
                 progress_seconds: float = 30.0):
        super().__init__(params, progress_seconds)
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
            source, segments = output
            split = assign_split(source, self._fractions)
            shared = _track_features(self._label_ids[source.genre], source)
            first_shard = zlib.crc32(source.track_id.encode("utf-8"))
            for index, segment in enumerate(segments):
                writer = self._writer(split, (first_shard + index) % self._num_shards, source.path)
                writer.write_record(_encode_segment(segment, index, shared))
            _split, band_sums = _band_sums((split, source, segments))
            yield SUMMARY, (split, source.genre, int(segments.shape[0]), band_sums)

    def finish_bundle(self):
        writers, self._writers = self._writers, {}
        for (split, shard), (first_path, writer) in sorted(writers.items()):
            yield WindowedValue((WRITTEN, (split, shard, first_path, writer.close())),
                                GlobalWindow().max_timestamp(), [GlobalWindow()])

    def teardown(self):
        self._abort_writers()
        super().teardown()


class IngestSummaryFn(beam.CombineFn):
    """Gathers the job's facts into one accumulator for the manifest.

    Input elements: :class:`TrackToExamples`'s facts. Output: ``{"tracks":
    CountTracksFn's counts, "band_sums": {split: (frames, sum, sum of
    squares)}, "dead_letters": [record, ...], "parts": [(split, shard, first
    path, Part), ...]}``. Dead letters are kept whole: they are what the job
    could not use, a small fraction of its input, and the file lists them all.
    """

    def __init__(self):
        super().__init__()
        self._tracks = CountTracksFn()

    def create_accumulator(self) -> dict:
        return {"tracks": self._tracks.create_accumulator(), "band_sums": {}, "dead_letters": [], "parts": []}

    def add_input(self, accumulator: dict, element: tuple[str, Any]) -> dict:
        kind, value = element
        if kind == SUMMARY:
            split, genre, n_segments, band_sums = value
            self._tracks.add_input(accumulator["tracks"], (split, genre, n_segments))
            previous = accumulator["band_sums"].get(split)
            accumulator["band_sums"][split] = band_sums if previous is None else _add_band_sums(
                [previous, band_sums])
        elif kind == DEAD:
            accumulator["dead_letters"].append(value)
        else:
            accumulator["parts"].append(value)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict]) -> dict:
        accumulators = list(accumulators)
        merged = self.create_accumulator()
        merged["tracks"] = self._tracks.merge_accumulators(a["tracks"] for a in accumulators)
        for accumulator in accumulators:
            for split, sums in accumulator["band_sums"].items():
                previous = merged["band_sums"].get(split)
                merged["band_sums"][split] = sums if previous is None else _add_band_sums([previous, sums])
            merged["dead_letters"].extend(accumulator["dead_letters"])
            merged["parts"].extend(accumulator["parts"])
        return merged

    def extract_output(self, accumulator: dict) -> dict:
        return accumulator


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
        num_shards: TFRecord shards per split (default 1).
        beam_args: pass-through Beam flags (see ``beam_io.pipeline_options``).
    """
    known = {"audio_dir", "metadata_csv", "feature_params", "split_fractions", "num_shards", "beam_args"}
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
                       num_shards=int(params.get("num_shards", 1)))
    manifest = json.loads(beam_io.read_text(f"{examples.uri}/{MANIFEST_FILE}"))
    examples.properties.update({key: manifest[key] for key in
                                ("inputs", "tracks", "dead_letters", "segments", "labels", "segment_shape")})


SPEC = ComponentSpec(name="audio_example_gen", inputs={}, outputs={"examples": "AudioExamples"}, executor=run)

__all__ = [
    "AudioSource", "SPEC", "run", "build_pipeline", "list_sources", "assign_split", "split_key",
    "check_split_fractions", "segment_example", "segment_example_bytes", "feature_spec", "build_manifest",
    "DecodeTrack",
    "CountTracksFn", "TrackToExamples", "IngestSummaryFn", "drop_duplicate_track_ids",
    "DEFAULT_SPLIT_FRACTIONS", "DEAD_LETTER_REASONS", "REASON_DUPLICATE",
    "REASON_UNEXPECTED", "LABELS_FILE", "MANIFEST_FILE", "STATISTICS_FILE", "DEAD_LETTERS_FILE",
]
