"""Ranking metrics against hand-computed cases, ties included, and the simple baselines' scores."""
from __future__ import annotations

import math

import numpy as np
import pytest

from musicrec.models import ranking_metrics as rm
from musicrec.models import session_baselines as sb
from musicrec.models.next_track.sessions import SessionRecord


def test_pessimistic_rank_counts_every_tie_against_the_target():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.5])
    assert rm.pessimistic_rank(scores, 1) == 1
    # Three tracks share 0.5: the target ranks behind 0.9 and both other 0.5s.
    assert rm.pessimistic_rank(scores, 0) == 4
    assert rm.pessimistic_rank(scores, 4) == 4
    assert rm.pessimistic_rank(scores, 3) == 5
    # All equal: the target is last, never first.
    assert rm.pessimistic_rank(np.zeros(7), 3) == 7


def test_rank_in_list_is_pessimistic_with_scores_and_none_when_absent():
    assert rm.rank_in_list([4, 2, 9], None, 9) == 3
    assert rm.rank_in_list([4, 2, 9], [0.5, 0.3, 0.3], 2) == 3  # tied with 9
    assert rm.rank_in_list([4, 2, 9], [0.5, 0.3, 0.2], 2) == 2
    assert rm.rank_in_list([4, 2, 9], [0.5, 0.3, 0.2], 7) is None


def test_top_k_breaks_ties_by_catalogue_index_whatever_the_target():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    np.testing.assert_array_equal(rm.top_k_indices(scores, 4), [1, 2, 4, 3])
    np.testing.assert_array_equal(rm.top_k_indices(scores, 2), [1, 2])


def test_accumulator_on_hand_computed_cases():
    popularity = np.array([10, 5, 5, 0], dtype=float)  # normalised: 1, .5, .5, 0
    acc = rm.RankingAccumulator(4, popularity, cutoffs=(1, 2), list_cutoff=2)
    acc.add_scores(np.array([0.9, 0.1, 0.0, 0.0]), 0)   # rank 1, top [0, 1]
    acc.add_scores(np.array([0.9, 0.1, 0.0, 0.0]), 1)   # rank 2
    acc.add_scores(np.array([0.0, 0.0, 0.0, 0.0]), 2)   # 4-way tie: rank 4, top [0, 1]
    acc.add_scores(np.array([0.0, 0.2, 0.2, 0.1]), 2)   # tied with 1: rank 2, top [1, 2]
    result = acc.result()
    assert result["cases"] == 4
    assert result["hr@1"] == pytest.approx(1 / 4)
    assert result["hr@2"] == pytest.approx(3 / 4)
    assert result["mrr@2"] == pytest.approx((1 + 0.5 + 0.5) / 4)
    assert result["ndcg@2"] == pytest.approx((1 + 2 / math.log2(3)) / 4)
    assert result["ndcg@1"] == pytest.approx(1 / 4)
    assert result["coverage@2"] == pytest.approx(3 / 4)  # tracks 0, 1, 2 were listed
    assert result["popularity_bias@2"] == pytest.approx((0.75 + 0.75 + 0.75 + 0.5) / 4)


def _sessions():
    rows = [("u1", ["a", "b", "c"]), ("u1", ["a", "b", "d"]), ("u2", ["c", "d"]), ("u2", ["a", "c", "e"])]
    return [SessionRecord(user, f"s{n}", 100 * n, tuple(keys), tuple(100 * n + i for i in range(len(keys))))
            for n, (user, keys) in enumerate(rows)]


INDEX = {key: i for i, key in enumerate("abcde")}


def test_markov_and_sequential_rules_score_from_the_last_play():
    markov = sb.Markov().fit(_sessions(), INDEX)
    scores = markov.scores([INDEX["a"]])
    # a -> b twice, a -> c once; popularity only orders equal counts.
    assert scores.argmax() == INDEX["b"]
    assert rm.pessimistic_rank(scores, INDEX["c"]) == 2
    rules = sb.SequentialRules(window=2).fit(_sessions(), INDEX)
    # From a: b 1+1, c 1/2 + 1, d 1/2, e 1/2.
    np.testing.assert_allclose(np.round(rules.scores([INDEX["a"]]), 3), [0, 2, 1.5, 0.5, 0.5])


def test_rank_with_evidence_equals_the_dense_rank_and_top_list():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 30))
        prior = rng.integers(0, 4, n) * rng.choice([1.0, 0.5])  # many ties on purpose
        tracks = rng.choice(n, int(rng.integers(0, n + 1)), replace=False)
        evidence = rng.integers(0, 3, len(tracks)).astype(float)
        target, cutoff = int(rng.integers(0, n)), int(rng.integers(1, 8))
        dense = prior.copy()
        dense[tracks] += evidence
        rank, top = rm.rank_with_evidence(rm.DensePrior(prior), tracks, evidence, target, cutoff)
        assert rank == rm.pessimistic_rank(dense, target)
        np.testing.assert_array_equal(top, rm.top_k_indices(dense, cutoff))


def test_personal_rules_read_the_listeners_own_stream_then_the_global_rules():
    rules = sb.PersonalRules(window=2, anchors=1, global_weight=0.0).fit(_sessions(), INDEX)
    # History e d e b, prefix [e]: e was followed by d (gap 1), e (gap 2), b (gap 1), and the
    # prefix's own e (gap 2 after the second e): d 1, e 1/2 + 1/2, b 1.
    scores = rules.scores([INDEX["e"]], "u3", history=[INDEX[k] for k in "edeb"])
    np.testing.assert_allclose(np.round(scores, 3), [0, 1, 0, 1, 1])
    blended = sb.PersonalRules(window=2, anchors=1, global_weight=0.5).fit(_sessions(), INDEX)
    # Global rules from a (b 2, c 1.5, d 0.5, e 0.5), halved, when the listener never played a.
    np.testing.assert_allclose(np.round(blended.scores([INDEX["a"]], "u3", history=[]), 3),
                               [0, 1, 0.75, 0.25, 0.25])
    # Only the last recent_plays plays count: e d e b keeps e b, so only b follows e (gap 1).
    recent = sb.PersonalRules(window=2, anchors=1, global_weight=0.0, recent_plays=2).fit(_sessions(), INDEX)
    np.testing.assert_allclose(np.round(recent.scores([INDEX["e"]], "u3", history=[INDEX[k] for k in "edeb"]), 3),
                               [0, 1, 0, 0, 0.5])


def test_user_popularity_and_knn_baselines():
    user = sb.UserPopularity().fit(_sessions(), INDEX)
    history = [INDEX["c"], INDEX["d"], INDEX["c"], INDEX["a"]]  # what a client sends: c twice
    assert rm.pessimistic_rank(user.scores([], "u2", history), INDEX["c"]) == 1
    sknn = sb.SessionKNN(k=1).fit(_sessions(), INDEX)
    # Prefix {c, d}: the nearest session is ["c", "d"] itself (cosine 1): it alone votes.
    scores = sknn.scores([INDEX["c"], INDEX["d"]])
    assert set(np.flatnonzero(scores > 0.5)) == {INDEX["c"], INDEX["d"]}
    vsknn = sb.SessionKNN(k=4, decay=True).fit(_sessions(), INDEX)
    # Only ["a", "c", "e"] holds e, so only its tracks get votes (the rest only the 1e-6 tie-break).
    assert vsknn.name == "vsknn"
    assert set(np.flatnonzero(vsknn.scores([INDEX["e"]]) > 1e-3)) == {INDEX["a"], INDEX["c"], INDEX["e"]}
