"""``musicrec recommend TRACK...``: next tracks for a session, from the server."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

from musicrec.client_commands import add_server_flags, client, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tracks", nargs="+", help="track keys of the session so far, oldest first")
    parser.add_argument("--k", type=int, default=10, help="how many tracks (at most the exported k)")
    add_server_flags(parser, "next_track")


def run(args: argparse.Namespace) -> int:
    with client(args) as grpc_client:
        ranked = recommend_tracks(grpc_client, args.model, args.tracks, args.k)
    text = "\n".join(f"{rank:3d}. {r['track']}  {r['score']:.4f}" for rank, r in
                     enumerate(ranked, start=1))
    emit(args.json, {"tracks": list(args.tracks), "recommendations": ranked}, text)
    return 0


def recommend_tracks(grpc_client, model_name: str, tracks: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The server's top ``k`` next tracks after ``tracks``, best first, as ``{"track", "score"}``."""
    import numpy as np

    outputs = grpc_client.predict(model_name, {"track_keys": np.array([list(tracks)], dtype=object)})
    keys, scores = outputs["track_keys"][0], outputs["scores"][0]
    return [{"track": key.decode() if isinstance(key, bytes) else str(key), "score": round(float(s), 6)}
            for key, s in list(zip(keys, scores))[:k]]
