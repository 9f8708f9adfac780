"""The tuning / check split of the real Spotify listeners, fixed before any run.

Every design and hyperparameter decision of the next-track model is taken on
the *tuning* listeners only. The *check* listeners score a candidate design
once, and that figure is reported whatever it shows
(``bench_next_track_spotify.py --group check``).

A listener's group is a stable hash of its folder name (``listener_NN`` in
``spotify_history``, ``listener_NNN`` in ``spotify_history_large``): the first
8 bytes of its BLAKE2b digest, read as a fraction of 2**64, below
:data:`CHECK_SHARE` puts it in the check group. The assignment this rule
gives for the 83 listeners of ``../shared/data`` is written out below; the
benchmark refuses to run when the rule and the list disagree.

The rule a design must pass, stated before any run: with the default
pipeline config, on the check group, the pushed model's HR@20 and MRR@20 are
each at least 1.05 times the best baseline's (per metric), and on the 6
listeners of ``spotify_history`` (4 tuning, 2 check) not below the best
baseline's.
"""
from __future__ import annotations

import hashlib

CHECK_SHARE = 1 / 3
GROUPS = ("tuning", "check", "original")

# listener_group() of every listener folder in spotify_history + spotify_history_large (83).
CHECK_LISTENERS = frozenset({
    "listener_04", "listener_05",
    "listener_008", "listener_009", "listener_014", "listener_019", "listener_020", "listener_021",
    "listener_027", "listener_030", "listener_031", "listener_037", "listener_040", "listener_045",
    "listener_046", "listener_054", "listener_057", "listener_060", "listener_061", "listener_062",
    "listener_063", "listener_064", "listener_065", "listener_066", "listener_073", "listener_074",
    "listener_076", "listener_077", "listener_081", "listener_082", "listener_083",
})
TUNING_LISTENERS = frozenset({
    "listener_01", "listener_02", "listener_03", "listener_06",
    "listener_007", "listener_010", "listener_011", "listener_012", "listener_013", "listener_015",
    "listener_016", "listener_017", "listener_018", "listener_022", "listener_023", "listener_024",
    "listener_025", "listener_026", "listener_028", "listener_029", "listener_032", "listener_033",
    "listener_034", "listener_035", "listener_036", "listener_038", "listener_039", "listener_041",
    "listener_042", "listener_043", "listener_044", "listener_047", "listener_048", "listener_049",
    "listener_050", "listener_051", "listener_052", "listener_053", "listener_055", "listener_056",
    "listener_058", "listener_059", "listener_067", "listener_068", "listener_069", "listener_070",
    "listener_071", "listener_072", "listener_075", "listener_078", "listener_079", "listener_080",
})


def listener_group(folder_name: str) -> str:
    """``"check"`` or ``"tuning"`` for a listener folder name (a stable hash, see the module docstring)."""
    digest = hashlib.blake2b(folder_name.encode("utf-8"), digest_size=8).digest()
    return "check" if int.from_bytes(digest, "big") / 2 ** 64 < CHECK_SHARE else "tuning"


def check_assignment(folder_names) -> None:
    """Raises ``ValueError`` when a listener's hashed group differs from the written assignment."""
    for name in folder_names:
        written = ("check" if name in CHECK_LISTENERS else
                   "tuning" if name in TUNING_LISTENERS else None)
        if written is not None and written != listener_group(name):
            raise ValueError(f"{name}: written group {written!r} but the hash gives {listener_group(name)!r}")
