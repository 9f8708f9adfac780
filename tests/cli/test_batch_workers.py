"""Batch jobs on several Beam workers: the same outputs as one worker, records written in the workers.

The jobs write their records where the model ran (one part file per bundle,
joined into shards at the end) and send a user's plays to the grouping as
bytes; these tests pin that two workers (threads, as ``musicrec batch
--workers 2`` runs them) give the outputs of one, that the
parts join into readable shards and that nothing is left behind. Models are
the stand-ins of tests/cli/test_batch_command.py. Two worker processes cost each
job ~10 s of start-up (TensorFlow imported, model loaded, per process).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from musicrec import batch_command
from musicrec.components import beam_io, bulk_inferrer, inference_jobs, recommendation_job, tagging_job
from musicrec.components.base import Artifact
from test_batch_command import VOCAB, NextTrackStandIn, save, save_genre_stand_in  # noqa: E402

pytestmark = pytest.mark.timeout(240)

TWO_WORKERS = batch_command.worker_beam_args(2, "multi_processing")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch_workers")
    genre = save_genre_stand_in(str(root / "genre"))
    newest = NextTrackStandIn(True)
    next_track = save(newest, str(root / "next_track"), {"recommend": newest.recommend})
    catalogue = root / "catalogue"
    catalogue.mkdir()
    rng = np.random.default_rng(3)
    for number in range(6):
        sf.write(str(catalogue / f"clip{number}.wav"),
                 (0.3 * rng.standard_normal(22050 * (4 + number % 3))).astype(np.float32), 22050)
    (catalogue / "broken.wav").write_bytes(b"RIFF" + bytes(40))
    logs = root / "logs"
    logs.mkdir()
    # users spread over two files, so a user's plays meet only after the grouping
    for index in range(2):
        rows = [f"u{user},{1_700_000_000 + 600 * (2 * play + index)},{VOCAB[(user * 3 + play + index) % len(VOCAB)]}"
                for user in range(30) for play in range(3)]
        (logs / f"plays-{index}.csv").write_text("user_id,timestamp,track_id\n" + "\n".join(rows)
                                                 + "\nu99,not-a-time,x\n")
    return {"root": root, "genre": genre, "next_track": next_track, "catalogue": str(catalogue),
            "logs": str(logs)}


def run_job(out_dir, params: dict) -> dict:
    result = Artifact("InferenceResult", str(out_dir))
    os.makedirs(result.uri)
    bulk_inferrer.run({}, {"inference_result": result}, params)
    return json.loads((out_dir / inference_jobs.MANIFEST_FILE).read_text())


def read_records(pattern: str) -> list[bytes]:
    files = sorted(tf.io.gfile.glob(pattern))
    assert files, pattern
    return [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def parse(records: list[bytes], key: str, vector: str) -> dict[bytes, tuple[dict, list[float]]]:
    """``{key: (every bytes feature, the float feature vector)}`` of serialized tf.train.Examples."""
    parsed = {}
    for record in records:
        feature = tf.train.Example.FromString(record).features.feature
        strings = {name: list(value.bytes_list.value) for name, value in feature.items()
                   if value.bytes_list.value}
        parsed[feature[key].bytes_list.value[0]] = (strings, list(feature[vector].float_list.value))
    return parsed


def only_outputs(out_dir) -> list[str]:
    """Every file left in ``out_dir`` (relative), so that a leftover part would show."""
    return sorted(os.path.relpath(os.path.join(folder, name), out_dir)
                  for folder, _dirs, names in os.walk(out_dir) for name in names)


@pytest.mark.parametrize("job", ["tag", "recommend"])
def test_two_workers_give_the_outputs_of_one(inputs, tmp_path, job):
    if job == "tag":
        params = {"job": "tag", "saved_model": inputs["genre"], "audio_dir": inputs["catalogue"],
                  "min_batch_size": 2, "max_batch_size": 8}
        key, name = "track_id", tagging_job.TAGS
    else:
        params = {"job": "recommend", "saved_model": inputs["next_track"], "playlog_paths": [inputs["logs"]],
                  "top_n": 3, "min_batch_size": 4, "max_batch_size": 4}
        key, name = "user_id", recommendation_job.RECOMMENDATIONS
    one = run_job(tmp_path / "one", dict(params, num_shards=1))
    two = run_job(tmp_path / "two", dict(params, num_shards=2, beam_args=TWO_WORKERS))

    for manifest in (one, two):  # counts reconcile, and every record reached the shards
        if job == "tag":
            assert manifest["inputs"] == 7 and manifest["tracks"] == 6 and manifest["dead_letters"] == 1
            assert manifest["tags_written"] == 6
        else:
            assert manifest["rows_in"] == 182 and manifest["plays"] == 180 and manifest["dead_rows"] == 2
            assert manifest["users"] == 30 == manifest["users_recommended"] == manifest["recommendations_written"]
    order = [key, "rank"] if job == "recommend" else [key]
    summary_one = pd.read_csv(tmp_path / "one" / f"{name}.csv").sort_values(order).reset_index(drop=True)
    summary_two = pd.read_csv(tmp_path / "two" / f"{name}.csv").sort_values(order).reset_index(drop=True)
    assert summary_one[key].nunique() == (6 if job == "tag" else 30)
    records_one = read_records(str(tmp_path / "one" / name / "data-*"))
    records_two = read_records(str(tmp_path / "two" / name / "data-*"))
    # rows of other tracks or users share a model call: float results may differ in the last bit
    floats = ["probability", "top_genres"] if job == "tag" else ["score"]
    pd.testing.assert_frame_equal(summary_one.drop(columns=floats), summary_two.drop(columns=floats))
    np.testing.assert_allclose(summary_one[floats[0]], summary_two[floats[0]], atol=1e-5)
    vector = "embedding" if job == "tag" else "scores"
    parsed = [parse(records, key, vector) for records in (records_one, records_two)]
    assert sorted(parsed[0]) == sorted(parsed[1]) and len(parsed[0]) == (6 if job == "tag" else 30)
    for record_key, (strings, values) in parsed[0].items():
        assert strings == parsed[1][record_key][0]
        np.testing.assert_allclose(values, parsed[1][record_key][1], atol=1e-5)
    assert only_outputs(tmp_path / "two") == sorted(
        [inference_jobs.DEAD_LETTERS_FILE, inference_jobs.MANIFEST_FILE, f"{name}.csv",
         f"{name}/data-00000-of-00002.tfrecord.gz", f"{name}/data-00001-of-00002.tfrecord.gz"])


def test_parts_of_several_bundles_join_into_shards_in_key_order(tmp_path):
    parts_dir = str(tmp_path / "parts")
    records = [{"id": f"r{i:02d}", "value": i} for i in range(40)]
    with TestPipeline(runner=beam_io.LOCAL_RUNNER, options=beam_io.pipeline_options(TWO_WORKERS)) as pipeline:
        _ = (pipeline
             | beam.Create(records)
             | beam.ParDo(inference_jobs.WriteRecordParts(
                 parts_dir, "id", lambda record: record["id"].encode(),
                 lambda record: [[record["id"], record["value"]]]))
             | beam.combiners.ToList()
             | beam.Map(lambda parts: inference_jobs.join_record_parts(
                 parts, str(tmp_path), "out", ["id", "value"], 3, parts_dir)))
    shards = sorted(tf.io.gfile.glob(str(tmp_path / "out" / "data-*")))
    assert [os.path.basename(path) for path in shards] == [f"data-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    assert sorted(read_records(str(tmp_path / "out" / "data-*"))) == [r["id"].encode() for r in records]
    for shard in shards:  # each is a plain GZIP file too
        gzip.decompress(open(shard, "rb").read())
    summary = pd.read_csv(tmp_path / "out.csv")
    assert sorted(summary["id"]) == [r["id"] for r in records] and summary["value"].sum() == sum(range(40))
    assert not os.path.exists(parts_dir)


def test_nothing_to_write_still_gives_an_empty_shard_and_a_header(tmp_path):
    parts_dir = str(tmp_path / "parts")
    assert inference_jobs.join_record_parts([], str(tmp_path), "out", ["a", "b"], 1, parts_dir) == 0
    assert read_records(str(tmp_path / "out" / "data-*")) == []
    assert (tmp_path / "out.csv").read_text() == "a,b\n"


def test_a_users_plays_cross_as_bytes_and_come_back_as_they_were():
    fields = [(1_700_000_000, "naïve track", 1234, "/logs/a.csv", 7),
              (1_700_000_060, "b,\"c\"", None, "/logs/b.csv", 2),
              (1_700_000_120, "d", 5, "/logs/a.csv", 9)]
    blob = recommendation_job.encode_user_plays(fields)
    assert isinstance(blob, bytes)
    # ms_played is not carried (no step after the grouping reads it)
    assert recommendation_job.decode_user_plays(blob) == [(ts, key, None, source, line)
                                                      for ts, key, _ms, source, line in fields]
    key, request = recommendation_job.user_request(("u", [blob]), gap_seconds=1800, max_prefix_length=5,
                                               exclude="history")
    assert request == ["naïve track", "b,\"c\"", "d"] and key[3] == ("b,\"c\"", "d", "naïve track")


def command_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    batch_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_the_workers_flag_becomes_beam_flags_unless_beam_args_say_otherwise(inputs):
    base = ["recommend", "--saved-model", inputs["next_track"], "--playlogs", inputs["logs"], "--out", "x"]
    default = batch_command.job_params(command_args(*base))["beam_args"]
    assert default == batch_command.worker_beam_args(batch_command.DEFAULT_WORKERS,
                                                     batch_command.DEFAULT_RUNNING_MODE)
    assert batch_command.job_params(command_args(*base, "--workers", "1"))["beam_args"] == []
    assert batch_command.job_params(command_args(*base, "--workers", "3", "--running-mode", "multi_threading")
                                    )["beam_args"] == ["--direct_num_workers=3",
                                                       "--direct_running_mode=multi_threading"]
    explicit = ["--beam-arg=--runner=FlinkRunner"]
    assert batch_command.job_params(command_args(*base, *explicit))["beam_args"] == ["--runner=FlinkRunner"]
    # worker processes split the cores between them; threads share TensorFlow's own pools
    assert batch_command.tf_threads_for(2, "multi_processing", cores=2) == 1
    assert batch_command.tf_threads_for(2, "multi_processing", cores=8) == 4
    assert batch_command.tf_threads_for(2, "multi_threading", cores=2) == 0
    assert batch_command.tf_threads_for(1, "multi_processing", cores=2) == 0
