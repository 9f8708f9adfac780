"""The demo's configuration: valid, and ranking the whole catalogue as its cold start needs."""
import pytest

from musicrec.demo import DEMO_OVERRIDES, TINY_OVERRIDES
from musicrec.models.next_track.hparams import CATALOGUE_RANKING
from musicrec.pipeline.config import ConfigError, make_config


@pytest.mark.parametrize("overrides", [DEMO_OVERRIDES, TINY_OVERRIDES])
def test_the_demo_ranks_the_catalogue_so_its_cold_start_is_valid(overrides):
    hparams = overrides["next_track_model"]["hparams"]
    assert {name: hparams[name] for name in CATALOGUE_RANKING} == CATALOGUE_RANKING
    make_config({**overrides, "cold_start": {"enabled": True}})


def test_cold_start_with_the_default_scorer_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"cold_start.enabled: .*neural_scores: True"):
        make_config({"cold_start": {"enabled": True}})
