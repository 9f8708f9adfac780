"""What the bulk inferrer's Beam jobs share: running a signature, writing records, the manifest.

Every job (:mod:`~musicrec.components.tagging_job`,
:mod:`~musicrec.components.recommendation_job`,
:mod:`~musicrec.components.embedding_job`) runs a pushed SavedModel through
Beam's ``RunInference`` with the TensorFlow model handler
(:mod:`musicrec.components.inference_handler`, through :class:`RunSignature`),
so it scales out on the same runners as ingestion, and writes, under one
output folder:

- ``<job>/data-SSSSS-of-NNNNN.tfrecord.gz``: GZIP TFRecords of ``tf.train.Example``
  (one per track or user; fields in docs/batch.md; :func:`write_outputs`);
- ``<job>.csv``: a summary a data analyst opens with ``pandas.read_csv``;
- ``dead_letters.jsonl``: every input that gave no output, with its ``reason``;
- ``manifest.json``: the counts, checked to reconcile
  (``inputs == outputs + dead_letters``, and every output in the shards),
  the model and the parameters (:func:`write_manifest`).

Few values cross between Beam workers and the runner: the files to read go
out, and the records are written by the worker that ran the model, one part
file per bundle (:class:`WriteRecordParts`), joined into shards at the end;
only a user's plays cross once, to be grouped, as bytes. With
``--direct_running_mode=multi_processing`` everything that crosses is
encoded and decoded by the runner process (docs/batch.md, "Throughput and
workers").
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from musicrec.components import audio_decoding, beam_io, inference_handler, tfrecord_shards
from musicrec.components.bulk_inference_settings import Batching

DEAD = audio_decoding.DEAD
TALLY = "tally"
MANIFEST_FILE = "manifest.json"
DEAD_LETTERS_FILE = "dead_letters.jsonl"

REASON_INFERENCE = "inference failed"


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
                 batching: Batching, stage: str, progress_seconds: float = beam_io.DEFAULT_PROGRESS_SECONDS,
                 **handler_args):
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


def write_outputs(records, output_uri: str, name: str, key_field: str, to_example: Callable[[dict], bytes],
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


def tally(pcoll, name: str, weight: Callable[[Any], int] | None = None, label: str | None = None):
    """``(name, weight)`` per element (weight 1 by default), for :func:`write_manifest` to sum."""
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


def write_manifest(pipeline, output_uri: str, static: dict, balances: Sequence[tuple[str, Sequence[str]]],
                    dead_letters, tallies: Sequence[Any]):
    """Writes the dead letters and the manifest.

    ``tallies`` are PCollections of ``(count name, n)`` pairs (:func:`tally`);
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


__all__ = ["RunSignature", "RecordParts", "WriteRecordParts", "record_shard_path", "join_record_parts",
           "write_outputs", "tally", "write_manifest", "DEAD", "TALLY", "MANIFEST_FILE", "DEAD_LETTERS_FILE",
           "REASON_INFERENCE"]
