"""The recommendation job's reader: plays grouped by user while a file is read, bad rows kept."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from musicrec.components import beam_io
from musicrec.components.inference_jobs import DEAD, TALLY
from musicrec.components.recommendation_job import ReadPlaysByUser, user_request

ROWS = [("u0", 100, "a"), ("u0", 160, "b"), ("u1", 100, "c"), ("u0", 220, "c"),
        ("u1", 9000, "d"), ("u0", 280, "d"), ("u1", 9060, "e")]


def write_log(path) -> str:
    lines = ["user_id,timestamp,track_id"] + [f"{u},{1_700_000_000 + t},{k}" for u, t, k in ROWS]
    lines.insert(3, "u2,not-a-time,x")  # line 4 of the file
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_plays_grouped_in_chunks_rejoin_per_user_and_rows_reconcile(tmp_path):
    path = write_log(tmp_path / "plays.csv")
    with TestPipeline(runner=beam_io.LOCAL_RUNNER) as pipeline:
        read = (pipeline
                | beam.Create([(path, "csv")])
                | beam.ParDo(ReadPlaysByUser(chunk_plays=2)).with_outputs(DEAD, TALLY, main="plays"))
        per_user = (read.plays
                    | beam.GroupByKey()
                    | beam.MapTuple(lambda user, chunks: (user, sorted(f[1] for c in chunks for f in c))))
        assert_that(per_user, equal_to([("u0", ["a", "b", "c", "d"]), ("u1", ["c", "d", "e"])]),
                    label="EveryPlayOnce")
        # flushed after plays 2 ({u0}), 4 ({u1, u0}) and 6 ({u1, u0}), then the rest ({u1})
        assert_that(read.plays | beam.combiners.Count.Globally(), equal_to([6]), label="Chunks")
        assert_that(read[DEAD] | beam.Map(lambda dead: (dead["line"], "timestamp" in dead["reason"])),
                    equal_to([(4, True)]), label="BadRow")
        assert_that(read[TALLY], equal_to([("rows_in", 8), ("plays", 7)]), label="Tallies")


def test_a_users_request_is_their_latest_session_with_history_excluded(tmp_path):
    fields = [(1_700_000_000 + t, k, None, "f", n) for n, (u, t, k) in enumerate(ROWS) if u == "u1"]
    # the plays arrive in two chunks, in any order
    key, prefix = user_request(("u1", [fields[2:], fields[:2]]), gap_seconds=1800, max_prefix_length=5,
                               exclude="history")
    assert key[0] == "u1" and key[1] == "u1-1700009000"
    assert prefix == ["d", "e"]
    assert key[3] == ("c", "d", "e")
