"""Beam plumbing the ExampleGens share: options, split writing, dead letters."""
from __future__ import annotations

import io
import json
import logging
import time
import uuid
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from musicrec.components import tfrecord_shards

SPLITS = ("train", "eval", "test")

# Beam's DirectRunner first tries the Prism runner, which downloads a binary
# from the internet at run time; the in-process FnApiRunner is what the
# DirectRunner falls back to anyway, and it honours --direct_num_workers and
# --direct_running_mode.
LOCAL_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: Sequence[str] | None = None) -> PipelineOptions:
    """Options for a Beam pipeline from pass-through command-line flags.

    With no ``--runner`` the job runs in this process (``LOCAL_RUNNER``); flags such as
    ``--runner=FlinkRunner`` or ``--runner=DataflowRunner --project=...`` are
    handed to Beam unchanged.
    """
    args = list(beam_args or [])
    if not any(a.startswith("--runner") for a in args):
        args.append(f"--runner={LOCAL_RUNNER}")
    return PipelineOptions(args)


# Seconds between two progress lines of one worker: every Beam step that logs progress defaults to it.
DEFAULT_PROGRESS_SECONDS = 30.0


class ProgressLog:
    """Counts what one worker has done and logs a line with the counts now and then.

    Long jobs show they are alive: ``<stage>: tracks=120 dead_letters=3
    segments=1200 after 60 s`` at most every ``every_seconds`` (per worker
    process; a distributed runner's own UI sums Beam's metrics).
    """

    def __init__(self, stage: str, every_seconds: float = DEFAULT_PROGRESS_SECONDS):
        self.stage = stage
        self.every_seconds = every_seconds
        self.counts: dict[str, int] = {}
        self._start = self._last = time.monotonic()

    def add(self, name: str, count: int = 1, **others: int) -> None:
        """Adds ``count`` to ``name`` (and each keyword to its own count); logs when due."""
        self.counts[name] = self.counts.get(name, 0) + count
        for other, value in others.items():
            self.counts[other] = self.counts.get(other, 0) + value
        now = time.monotonic()
        if now - self._last >= self.every_seconds:
            self._last = now
            self.flush()

    def line(self) -> str:
        counts = " ".join(f"{name}={value}" for name, value in self.counts.items())
        return f"{self.stage}: {counts} after {time.monotonic() - self._start:.0f} s"

    def flush(self) -> None:
        """Logs the counts now (nothing when nothing was counted)."""
        if self.counts:
            logging.getLogger("musicrec.ingestion").info(self.line())


class LogProgress(beam.DoFn):
    """Passes elements through unchanged, counting them in a :class:`ProgressLog`."""

    def __init__(self, stage: str, what: str, every_seconds: float = DEFAULT_PROGRESS_SECONDS):
        super().__init__()
        self._stage, self._what, self._every_seconds = stage, what, every_seconds

    def setup(self):
        self._progress = ProgressLog(self._stage, self._every_seconds)

    def process(self, element):
        self._progress.add(self._what)
        yield element

    def teardown(self):
        self._progress.flush()


def split_prefix(uri: str, split: str) -> str:
    """File prefix of a split's shards: ``<uri>/Split-<split>/data``."""
    return f"{uri}/Split-{split}/data"


def split_files_pattern(uri: str, split: str) -> str:
    return f"{split_prefix(uri, split)}-*.tfrecord.gz"


class WriteSplits(beam.PTransform):
    """Writes ``(split, serialized_record)`` pairs as GZIP TFRecords per split."""

    def __init__(self, uri: str, num_shards: int = 1):
        super().__init__()
        self._uri = uri
        self._num_shards = num_shards

    def expand(self, pairs):
        parts = pairs | "PartitionBySplit" >> beam.Partition(
            lambda pair, _: SPLITS.index(pair[0]), len(SPLITS))
        written = {}
        for split, part in zip(SPLITS, parts):
            written[split] = (part
             | f"Payload{split}" >> beam.Map(lambda pair: pair[1])
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 split_prefix(self._uri, split), file_name_suffix=".tfrecord.gz",
                 num_shards=self._num_shards,
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP))
        return written


# Re-exported: the strategy every shard writer here uses (see tfrecord_shards).
GZIP_HUFFMAN_ONLY = tfrecord_shards.GZIP_HUFFMAN_ONLY


def shard_path(uri: str, split: str, shard: int, num_shards: int) -> str:
    """Path of one shard, named as Beam's file sinks name them:
    ``<uri>/Split-<split>/data-00001-of-00004.tfrecord.gz``."""
    return f"{split_prefix(uri, split)}-{shard:05d}-of-{num_shards:05d}.tfrecord.gz"


def write_tfrecord_shard(path: str, records: Iterable[bytes],
                         compression_strategy: int = GZIP_HUFFMAN_ONLY) -> int:
    """Writes ``records`` as one GZIP TFRecord file, through a temporary name and a rename.

    Streams the records (nothing is held); readers never see a partial file.
    Works for any Beam filesystem path (``gs://`` included) and does not
    import TensorFlow (:mod:`tfrecord_shards`).

    Returns:
        The number of records written.
    """
    return tfrecord_shards.write_records(path, records, compression_strategy)


class _WriteShard(beam.DoFn):
    def __init__(self, uri: str, num_shards: int, compression_strategy: int):
        super().__init__()
        self._uri, self._num_shards, self._strategy = uri, num_shards, compression_strategy

    def process(self, keyed):
        (split, shard), records = keyed
        path = shard_path(self._uri, split, shard, self._num_shards)
        yield split, shard, write_tfrecord_shard(path, records, self._strategy)


class WriteSplitShards(beam.PTransform):
    """Writes ``((split, shard), serialized_record)`` pairs as GZIP TFRecord shards.

    One GroupByKey and one DoFn, where :class:`WriteSplits` runs one Beam file
    sink per split (a dozen transforms and side inputs each): for a job that
    writes a few thousand records, the sinks' fixed cost is most of its time.
    The caller picks the shard (``0 <= shard < num_shards``). Shards that get
    no record are not written here; :func:`write_empty_shards` adds them.

    Output: one ``(split, shard, records_written)`` per written shard.
    """

    def __init__(self, uri: str, num_shards: int = 1, compression_strategy: int = GZIP_HUFFMAN_ONLY):
        super().__init__()
        self._uri, self._num_shards, self._strategy = uri, num_shards, compression_strategy

    def expand(self, keyed_records):
        return (keyed_records
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.ParDo(_WriteShard(self._uri, self._num_shards, self._strategy)))


def write_empty_shards(uri: str, num_shards: int, written: Iterable[tuple[str, int]]) -> None:
    """Writes an empty GZIP TFRecord for every ``(split, shard)`` not in ``written``,
    so every split always has ``num_shards`` files, as Beam's sinks leave it."""
    done = set(written)
    for split in SPLITS:
        for shard in range(num_shards):
            if (split, shard) not in done:
                tfrecord_shards.write_empty(shard_path(uri, split, shard, num_shards))


def write_dead_letter_records(path: str, records: Iterable[dict]) -> None:
    """Writes dead-letter dicts as JSON lines (sorted by path, then reason) atomically;
    the file exists (empty) when there are none, as :class:`WriteDeadLetters` leaves it."""
    ordered = sorted(records, key=lambda r: (r.get("path", ""), r.get("reason", "")))
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in ordered))


class WriteDeadLetters(beam.PTransform):
    """Writes dict records (each with a ``reason``) as one JSON-lines file."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, records):
        return (records
                | "ToJson" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
                | "WriteDeadLetters" >> beam.io.WriteToText(
                    self._path, shard_name_template="", num_shards=1))


def read_dead_letters(path: str) -> Iterable[dict]:
    """Yields the dead-letter records written by :class:`WriteDeadLetters` (none when no file)."""
    if not FileSystems.exists(path):
        return
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for line in io.TextIOWrapper(handle, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)


def write_text_atomic(uri: str, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``uri`` (local or any Beam filesystem path) through a
    temporary name and a rename.

    Readers never see a partly written file; an existing file is replaced.
    Beam's ``FileSystems`` rather than ``tf.io.gfile``, so a Beam worker
    finishing a job does not import TensorFlow.
    """
    directory, name = uri.rsplit("/", 1) if "/" in uri else (".", uri)
    tmp_uri = f"{directory}/.tmp-{uuid.uuid4().hex}-{name}"
    try:
        with FileSystems.create(tmp_uri, mime_type="text/plain",
                                compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(text.encode("utf-8"))
        FileSystems.rename([tmp_uri], [uri])
    except BaseException:
        tfrecord_shards.delete_quietly([tmp_uri])
        raise


def read_text(uri: str) -> str:
    """Reads a whole UTF-8 text file from a local path or any Beam filesystem path."""
    with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read().decode("utf-8")
