"""The run summary `musicrec run` and `make demo` print for the genre evaluation."""
from __future__ import annotations

from musicrec.pipeline_runs import genre_summary_lines

METRICS = {"track_accuracy": 0.9, "segment_accuracy": 0.8, "chance_accuracy": 0.1, "n_tracks": 20}


def test_the_genre_summary_puts_the_classical_baseline_under_the_model_and_says_what_it_read():
    lines = genre_summary_lines({"metrics": METRICS, "classical_baseline": {
        "track_accuracy": 0.75, "features_from": "audio"}})
    assert lines == [
        "  genre: held-out track accuracy 0.900 (segment 0.800; chance 0.100) on 20 tracks",
        "    classical baseline (MFCC, centroid, contrast statistics; logistic regression): "
        "track accuracy 0.750, from the audio"]
    fallback = genre_summary_lines({"metrics": METRICS, "classical_baseline": {
        "track_accuracy": 0.55, "features_from": "log_mel"}})
    assert fallback[1].endswith("track accuracy 0.550, from the examples' log-mel")


def test_the_genre_summary_says_why_there_is_no_baseline_and_reads_reports_without_one():
    error = "ValueError: the classical baseline needs training clips of at least 2 genres"
    lines = genre_summary_lines({"metrics": METRICS, "classical_baseline": {"error": error}})
    assert lines[1] == f"    classical baseline not computed: {error}"
    assert len(genre_summary_lines({"metrics": METRICS})) == 1
