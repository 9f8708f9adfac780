"""Beam plumbing the ExampleGens share: options, split writing, dead letters."""
from __future__ import annotations

import json
import logging
import time
from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

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


class ProgressLog:
    """Counts what one worker has done and logs a line with the counts now and then.

    Long jobs show they are alive: ``<stage>: tracks=120 dead_letters=3
    segments=1200 after 60 s`` at most every ``every_seconds`` (per worker
    process; a distributed runner's own UI sums Beam's metrics).
    """

    def __init__(self, stage: str, every_seconds: float = 30.0):
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

    def __init__(self, stage: str, what: str, every_seconds: float = 30.0):
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
    """Yields the dead-letter records written by :class:`WriteDeadLetters`."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def write_text_atomic(uri: str, text: str) -> None:
    """Writes ``text`` to ``uri`` (local or ``gs://``) through a temporary name and a rename.

    Readers never see a partly written file; an existing file is replaced.
    """
    import os
    import uuid

    import tensorflow as tf

    directory, name = os.path.split(uri)
    tf.io.gfile.makedirs(directory)
    tmp_uri = f"{directory}/.tmp-{uuid.uuid4().hex}-{name}"
    try:
        with tf.io.gfile.GFile(tmp_uri, "w") as handle:
            handle.write(text)
        tf.io.gfile.rename(tmp_uri, uri, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp_uri):
            tf.io.gfile.remove(tmp_uri)
        raise


def read_text(uri: str) -> str:
    """Reads a whole text file from a local path or any ``tf.io.gfile`` URI."""
    import tensorflow as tf

    with tf.io.gfile.GFile(uri) as handle:
        return handle.read()
