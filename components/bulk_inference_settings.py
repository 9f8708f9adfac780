"""The bulk inferrer's job settings and their defaults: the one source the executor and the jobs read.

No Beam and no TensorFlow here, so the pipeline config and the command line
can check and show these without loading either (and the jobs can import it
without importing the executor, :mod:`musicrec.components.bulk_inferrer`).
"""
from __future__ import annotations

import dataclasses

# tracks never recommended to a user: all they played in the input, their latest session's, none
EXCLUDE_MODES = ("history", "session", "none")
DEFAULT_EXCLUDE = "history"
# genres kept per track by the ``tag`` job
DEFAULT_TOP_GENRES = 3
# recommendations per user, and the plays of the latest session given to the model (the most recent)
DEFAULT_TOP_N = 10
DEFAULT_MAX_PREFIX_LENGTH = 20
# Earlier plays sent to ``recommend`` per user. The model reads up to its ``history_length``
# (30 000 by default; the repeat term the last 5 000); the batch's history tensor is padded to
# its longest row, and a call cost the same for 0 to 1 000 plays per user, 1.4x at 3 000 and
# 3.2x at 10 000 (docs/batch.md, "Precomputed recommendations").
DEFAULT_MAX_HISTORY_LENGTH = 1000
# TFRecord shards of a job's records (0 lets the runner choose)
DEFAULT_NUM_SHARDS = 1


@dataclasses.dataclass(frozen=True)
class Batching:
    """Elements per signature call: Beam's ``BatchElements`` adapts between the two."""

    min_batch_size: int
    max_batch_size: int

    def __post_init__(self):
        if not 1 <= self.min_batch_size <= self.max_batch_size:
            raise ValueError(f"need 1 <= min_batch_size <= max_batch_size, got "
                             f"{self.min_batch_size} and {self.max_batch_size}")


# Per job: a ``tag`` element is a track (its segments weigh in, up to max_batch_size segments
# a call), a ``recommend`` element a user, an ``embeddings`` element one track key.
JOB_BATCHING = {"tag": Batching(64, 256), "recommend": Batching(256, 256), "embeddings": Batching(64, 1024)}

__all__ = ["EXCLUDE_MODES", "DEFAULT_EXCLUDE", "DEFAULT_TOP_GENRES", "DEFAULT_TOP_N", "DEFAULT_MAX_PREFIX_LENGTH",
           "DEFAULT_MAX_HISTORY_LENGTH", "DEFAULT_NUM_SHARDS", "Batching", "JOB_BATCHING"]
