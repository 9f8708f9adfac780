"""``musicrec playlist --seed TRACK... --length N``: continue seed tracks into a playlist, from the server.

Each step asks the server's ``next_track`` ``recommend`` signature for the
best candidates after the playlist so far (with ``exclude_seen``), then
either samples one (``--method sample``, probabilities ``score^(1/T)`` at
temperature ``T``; ``T = 0`` is greedy) or keeps the ``--beam-width`` best
playlists by the sum of log scores (``--method beam``, one batched request
per step for every beam).

Two rules hold for every playlist, whatever the model says:

- no track appears twice (seed included);
- at most ``--max-artist-run`` consecutive tracks by one artist.

Where the artist comes from: ``--catalogue CSV`` with a header holding
``artist`` and ``track_key`` (or ``track_id``, as in the audio metadata CSV);
without it, the text before the first ``" - "`` of the key, which is how
ingestion keys tracks known only by names (``"<artist> - <track>"``). A
track with no known artist never counts towards a run.
"""
from __future__ import annotations

import argparse
import csv
import math
import random
from typing import Callable, Mapping, Sequence

from musicrec.client_commands import add_server_flags, client, emit
from musicrec.errors import UserError

# (playlists so far) -> for each, the best (key, score) candidates, best first.
Scorer = Callable[[Sequence[Sequence[str]], int], list[list[tuple[str, float]]]]
ARTIST_SEPARATOR = " - "
MAX_CANDIDATES = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", nargs="+", required=True, dest="seed_tracks",
                        help="track keys the playlist starts from, oldest first")
    parser.add_argument("--length", type=int, default=20, help="tracks to add (default %(default)s)")
    parser.add_argument("--method", choices=("beam", "sample"), default="sample",
                        help="beam search or temperature sampling (default %(default)s)")
    parser.add_argument("--beam-width", type=int, default=5, help="playlists kept per step (beam)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature; 0 picks the best track every time")
    parser.add_argument("--candidates", type=int, default=50, help="tracks asked of the server per step")
    parser.add_argument("--max-artist-run", type=int, default=2,
                        help="most consecutive tracks by one artist (default %(default)s)")
    parser.add_argument("--catalogue", help="CSV with track_key (or track_id) and artist columns")
    parser.add_argument("--history", nargs="*", default=[], metavar="TRACK",
                        help="the listener's earlier plays, oldest first")
    parser.add_argument("--random-seed", type=int, default=None, help="makes sampling repeatable")
    add_server_flags(parser, "next_track")


def read_artists(path: str) -> dict[str, str]:
    """``{track key: artist}`` from a CSV whose header names ``artist`` and ``track_key`` or ``track_id``."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        key_field = next((name for name in ("track_key", "track_id") if name in fields), None)
        if key_field is None or "artist" not in fields:
            raise ValueError(f"{path}: needs an 'artist' column and a 'track_key' or 'track_id' column, "
                             f"has {fields}")
        return {row[key_field]: row["artist"] for row in reader if row.get(key_field) and row.get("artist")}


def artist_of(key: str, artists: Mapping[str, str] | None) -> str | None:
    """The track's artist: from ``artists`` when given, else the key's ``"<artist> - "`` part (or ``None``)."""
    if artists is not None:
        return artists.get(key)
    artist, separator, _ = key.partition(ARTIST_SEPARATOR)
    return artist if separator and artist else None


def allowed(playlist: Sequence[str], candidate: str, max_artist_run: int,
            artists: Mapping[str, str] | None) -> bool:
    """Whether ``candidate`` may follow ``playlist``: not in it, and no artist run longer than the limit."""
    if candidate in playlist:
        return False
    artist = artist_of(candidate, artists)
    if artist is None or max_artist_run < 1 or len(playlist) < max_artist_run:
        return True
    return any(artist_of(key, artists) != artist for key in playlist[-max_artist_run:])


def _allowed_candidates(score: Scorer, playlists: Sequence[Sequence[str]], wanted: int,
                        max_artist_run: int, artists, candidates: int) -> list[list[tuple[str, float]]]:
    """Each playlist's allowed candidates; asks for more when the rules leave none."""
    asked = candidates
    while True:
        ranked = score(playlists, asked)
        result = [[(key, s) for key, s in row if key and allowed(playlist, key, max_artist_run, artists)]
                  for playlist, row in zip(playlists, ranked)]
        short = any(len(row) < wanted for row in result)
        exhausted = all(len(row) < asked for row in ranked)  # the server had no more to give
        if not short or exhausted or asked >= MAX_CANDIDATES:
            return result
        asked = min(asked * 4, MAX_CANDIDATES)


def continue_playlist(score: Scorer, seed: Sequence[str], length: int, method: str = "sample",
                      beam_width: int = 5, temperature: float = 1.0, candidates: int = 50,
                      max_artist_run: int = 2, artists: Mapping[str, str] | None = None,
                      rng: random.Random | None = None) -> list[str]:
    """Up to ``length`` tracks that continue ``seed`` (fewer when the rules leave no candidate).

    Args:
        score: returns each playlist's best candidates with scores (probabilities).
        seed: the playlist's first tracks, oldest first.
        length: tracks to add.
        method: ``"sample"`` or ``"beam"``.
        beam_width: playlists kept per step (beam).
        temperature: sampling temperature (sample); 0 is greedy.
        candidates: candidates asked per playlist and step.
        max_artist_run: most consecutive tracks by one artist (< 1: no limit).
        artists: ``{key: artist}``; ``None`` reads the artist from the key.
        rng: the sampler's random source.

    Returns:
        the added tracks (the seed not included), never repeating a track of
        the seed or of each other.
    """
    if method not in ("sample", "beam"):
        raise ValueError(f"method must be 'sample' or 'beam', got {method!r}")
    rng = rng or random.Random()
    if method == "beam":
        beams: list[tuple[list[str], float]] = [(list(seed), 0.0)]
        for _ in range(length):
            rows = _allowed_candidates(score, [b for b, _ in beams], 1, max_artist_run, artists, candidates)
            expanded = [(playlist + [key], total + math.log(max(s, 1e-30)))
                        for (playlist, total), row in zip(beams, rows) for key, s in row[:beam_width]]
            if not expanded:
                break
            expanded.sort(key=lambda item: -item[1])
            beams = expanded[:beam_width]
        return beams[0][0][len(seed):]
    playlist = list(seed)
    for _ in range(length):
        row = _allowed_candidates(score, [playlist], 1, max_artist_run, artists, candidates)[0]
        if not row:
            break
        if temperature <= 0:
            playlist.append(row[0][0])
            continue
        weights = [max(s, 1e-30) ** (1.0 / temperature) for _, s in row]
        playlist.append(rng.choices([key for key, _ in row], weights=weights)[0])
    return playlist[len(seed):]


def server_scorer(grpc_client, model_name: str, history: Sequence[str] = ()) -> Scorer:
    """A :data:`Scorer` over the server's ``recommend`` signature (one batched request per call)."""
    import numpy as np

    def score(playlists: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        width = max(len(p) for p in playlists)
        outputs = grpc_client.predict(model_name, {
            "track_keys": np.array([list(p) + [""] * (width - len(p)) for p in playlists], dtype=object),
            "history_keys": np.array([list(history)] * len(playlists), dtype=object).reshape(
                len(playlists), len(history)),
            "k": np.full(len(playlists), k, dtype=np.int32),
            "exclude_seen": np.ones(len(playlists), dtype=bool)}, signature_name="recommend")
        return [[(key.decode() if isinstance(key, bytes) else str(key), float(s))
                 for key, s in zip(keys, scores)]
                for keys, scores in zip(outputs["track_keys"], outputs["scores"])]

    return score


def run(args: argparse.Namespace) -> int:
    if args.length < 1 or args.beam_width < 1 or args.candidates < 1:
        raise UserError("--length, --beam-width and --candidates must be at least 1")
    if len(set(args.seed_tracks)) != len(args.seed_tracks):
        raise UserError("--seed repeats a track; a playlist never does")
    try:
        artists = read_artists(args.catalogue) if args.catalogue else None
    except (OSError, ValueError) as error:
        raise UserError(str(error)) from None
    with client(args) as grpc_client:
        added = continue_playlist(
            server_scorer(grpc_client, args.model, args.history), args.seed_tracks, args.length,
            method=args.method, beam_width=args.beam_width, temperature=args.temperature,
            candidates=args.candidates, max_artist_run=args.max_artist_run, artists=artists,
            rng=random.Random(args.random_seed))
    text = "\n".join(f"{n:3d}. {key}" for n, key in enumerate([*args.seed_tracks, *added], start=1))
    emit(args.json, {"seed": list(args.seed_tracks), "playlist": [*args.seed_tracks, *added],
                     "added": added, "method": args.method}, text)
    return 0
