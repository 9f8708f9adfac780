"""``musicrec recommend TRACK...``: next tracks for a session, from the server.

Calls the ``next_track`` model's ``recommend`` signature over gRPC with the
session (``TRACK...``, oldest first), the listener's earlier plays
(``--history``), ``--k`` and ``--exclude-seen``. A server whose model
predates that signature answers through ``serving_default`` (no history, no
exclusion, at most the exported ``k``).
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from musicrec.client_commands import add_server_flags, client, emit
from musicrec.errors import UserError

RECOMMEND_SIGNATURE = "recommend"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tracks", nargs="+", help="track keys of the session so far, oldest first")
    parser.add_argument("--k", type=int, default=10, help="how many tracks (default %(default)s)")
    parser.add_argument("--history", nargs="*", default=[], metavar="TRACK",
                        help="the listener's earlier plays, oldest first (personalises the ranking)")
    parser.add_argument("--exclude-seen", action="store_true",
                        help="never recommend a track of the session or of --history")
    add_server_flags(parser, "next_track")


def run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    with client(args) as grpc_client:
        ranked = recommend_tracks(grpc_client, args.model, args.tracks, args.k,
                                  history=args.history, exclude_seen=args.exclude_seen)
    text = "\n".join(f"{rank:3d}. {r['track']}  {r['score']:.4f}" for rank, r in
                     enumerate(ranked, start=1))
    emit(args.json, {"tracks": list(args.tracks), "history": list(args.history),
                     "exclude_seen": args.exclude_seen, "recommendations": ranked}, text)
    return 0


def recommendation_inputs(tracks: Sequence[str], k: int, history: Sequence[str] = (),
                          exclude_seen: bool = False) -> dict[str, Any]:
    """The ``recommend`` signature's inputs for one session (a batch of one; every input is required)."""
    import numpy as np

    return {"track_keys": np.array([list(tracks)], dtype=object),
            "history_keys": np.array([list(history)], dtype=object).reshape(1, len(history)),
            "k": np.array([k], dtype=np.int32),
            "exclude_seen": np.array([exclude_seen], dtype=bool)}


def recommend_tracks(grpc_client, model_name: str, tracks: Sequence[str], k: int,
                     history: Sequence[str] = (), exclude_seen: bool = False) -> list[dict[str, Any]]:
    """The server's top ``k`` next tracks after ``tracks``, best first, as ``{"track", "score"}``.

    Falls back to ``serving_default`` when the served model has no
    ``recommend`` signature and neither history nor exclusion was asked for.
    """
    from musicrec.serving.errors import ServingError

    try:
        outputs = grpc_client.predict(model_name, recommendation_inputs(tracks, k, history, exclude_seen),
                                      signature_name=RECOMMEND_SIGNATURE)
    except ServingError as error:
        if RECOMMEND_SIGNATURE not in str(error) or history or exclude_seen:
            raise
        outputs = grpc_client.predict(model_name, {"track_keys": recommendation_inputs(tracks, k)["track_keys"]})
    keys, scores = outputs["track_keys"][0], outputs["scores"][0]
    ranked = []
    for key, score in list(zip(keys, scores))[:k]:
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key:  # "" pads a row that asked for fewer tracks than the batch's widest
            ranked.append({"track": key, "score": round(float(score), 6)})
    return ranked
