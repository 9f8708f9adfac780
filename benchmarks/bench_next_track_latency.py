"""In-process latency of the next-track ``recommend`` signature over a large catalogue.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_next_track_latency.py                     # 200 k tracks
    .venv/bin/python benchmarks/bench_next_track_latency.py --tracks 20000 --requests 50

Exports an untrained model (default ``NextTrackHParams``, or ``--hparams``; weights do not
change the cost; with global rules, every track gets a full row of random
followers, the most that table can add) over ``--tracks`` generated track keys with
``serving.export_saved_model``, loads the SavedModel and times single
requests (batch of one) of a ``--session``-track session with ``k = 20`` and
``exclude_seen``, without history and with ``--history`` earlier plays (by
default as many as the model reads, ``history_length``: what a client that
sends the listener's plays costs).

Reference, in the same process: NumPy scoring of the same catalogue for one
session vector (``vector @ table.T``, then ``argpartition`` for the top 20),
the work no recommender over the full catalogue can skip. The ratio is
signature p50 ÷ reference p50. The target is p50 <= 15 ms for the 20-track
session with the full history.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import short_machine, timed, write_result  # noqa: E402  (run as a script)

NAME = "next_track_latency"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(REPO_ROOT, "benchmarks", "results", f"{NAME}.json")
TARGET_P50_MS = 15.0


def percentiles(samples: list[float]) -> dict[str, float]:
    values = np.array(samples) * 1000.0
    return {"p50_ms": float(np.percentile(values, 50)), "p90_ms": float(np.percentile(values, 90)),
            "p99_ms": float(np.percentile(values, 99)), "mean_ms": float(values.mean())}


def time_calls(call, requests: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=200_000)
    parser.add_argument("--session", type=int, default=20, help="plays in the session")
    parser.add_argument("--history", type=int, help="earlier plays in the second case "
                        "(default: the model's history_length)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--hparams", default="{}",
                        help='JSON overrides of NextTrackHParams, e.g. \'{"neural_scores": true, "scorer": "gates"}\' '
                             "(CATALOGUE_RANKING, which cold start needs)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    import tensorflow as tf

    from musicrec.models.next_track.hparams import NextTrackHParams
    from musicrec.models.next_track.layout import NUM_RESERVED_IDS
    from musicrec.models.next_track.model import build_model, output_embeddings, scoring_layer
    from musicrec.models.next_track.train import uses_global_rules
    from musicrec.models.next_track.serving import export_saved_model

    hparams = NextTrackHParams.from_dict(json.loads(args.hparams))
    args.history = hparams.history_length if args.history is None else args.history
    vocabulary = [f"artist {i % 5000} - track {i}" for i in range(args.tracks)]
    core = build_model(len(vocabulary), hparams)
    rng = np.random.default_rng(0)
    if uses_global_rules(hparams):
        # Every track with a full row of followers: the most work a request can cost.
        n_ids = len(vocabulary) + NUM_RESERVED_IDS
        shape = (n_ids, hparams.global_successors)
        followers = rng.integers(NUM_RESERVED_IDS, n_ids, size=shape)
        strengths = -np.sort(-rng.uniform(0.1, 5.0, size=shape), axis=1)
        scoring_layer(core).set_global_rules(followers, strengths)
    export_dir = os.path.join(tempfile.mkdtemp(prefix="bench-next-track-latency-"), "serving")
    with timed() as export_time:
        export_saved_model(core, vocabulary, hparams, export_dir)
    recommend = tf.saved_model.load(export_dir).signatures["recommend"]

    def request(history_plays: int) -> dict:
        picks = rng.choice(len(vocabulary), args.session + history_plays, replace=False)
        return {"track_keys": tf.constant([[vocabulary[i] for i in picks[:args.session]]]),
                "history_keys": tf.constant([[vocabulary[i] for i in picks[args.session:]]],
                                            dtype=tf.string, shape=(1, history_plays)),
                "k": tf.constant([20], tf.int32), "exclude_seen": tf.constant([True])}

    session_only, with_history = request(0), request(args.history)
    figures = {"session_only": percentiles(time_calls(lambda: recommend(**session_only), args.requests)),
               "with_history": percentiles(time_calls(lambda: recommend(**with_history), args.requests))}

    table = np.asarray(output_embeddings(core, hparams))
    vector = rng.normal(size=(table.shape[1],)).astype(np.float32)

    def reference():
        scores = table @ vector
        top = np.argpartition(-scores, 20)[:20]
        return top[np.argsort(-scores[top])]

    figures["reference_numpy"] = percentiles(time_calls(reference, args.requests))
    ratio = figures["with_history"]["p50_ms"] / figures["reference_numpy"]["p50_ms"]
    payload = {"tracks": args.tracks, "session_plays": args.session, "history_plays": args.history,
               "requests": args.requests, "k": 20, "hparams": hparams.to_dict(),
               "export_seconds": export_time.seconds, **figures,
               "ratio_signature_over_reference_p50": ratio, "target_p50_ms": TARGET_P50_MS,
               "meets_target": figures["with_history"]["p50_ms"] <= TARGET_P50_MS}
    result = write_result(args.out, NAME, payload)
    print(f"{NAME}: recommend p50 {figures['session_only']['p50_ms']:.2f} ms "
          f"(p90 {figures['session_only']['p90_ms']:.2f}) for a {args.session}-track session over "
          f"{args.tracks} tracks, {figures['with_history']['p50_ms']:.2f} ms with {args.history} history "
          f"plays; NumPy scoring {figures['reference_numpy']['p50_ms']:.2f} ms (x{ratio:.1f}); target "
          f"<= {TARGET_P50_MS} ms: {'met' if payload['meets_target'] else 'NOT met'}; "
          f"{short_machine(result['machine'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
