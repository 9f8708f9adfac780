"""How executors pass their params on: what the params leave out, the callee's default decides."""
from __future__ import annotations

from musicrec.components.base import given_params


def test_given_params_leaves_out_what_params_leave_out_so_the_callee_default_applies():
    params = {"seed": "3", "exclude": None, "unrelated": 1}
    assert given_params(params, "exclude", seed=int, batch_size=int) == {"seed": 3, "exclude": None}
    assert given_params({}, "exclude", seed=int) == {}
