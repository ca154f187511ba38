"""The scenario catalog: families, weights, and flaming defaults taken from the NIST calibration."""

import math

import pytest

from firepipe.core.simulation import scenarios
from firepipe.core.simulation.calibrated import load_calibrated_ranges


def test_issue_catalog_is_covered():
    names = {s.name for s in scenarios.CATALOG}
    assert {
        "flaming_slow",
        "flaming_medium",
        "flaming_fast",
        "flaming_ultra_fast",
        "cooking_broiling",
        "cooking_frying",
        "cooking_toasting",
        "shower_steam",
        "dust",
        "cigarette",
        "candle",
        "clean_baseline",
    } <= names
    assert any(s.family == "smouldering" and s.is_fire for s in scenarios.CATALOG)
    assert not any(s.is_fire for s in scenarios.CATALOG if s.family in ("nuisance", "baseline"))


def test_flaming_defaults_come_from_the_nist_fit():
    fitted = load_calibrated_ranges()
    for fire in (s for s in scenarios.CATALOG if s.family == "flaming"):
        assert fire.plume is not None
        assert fire.peak_hrr_kw == fitted.peak_hrr_kw
        assert fire.plume.soot == fitted.soot_yield_g_per_g
        assert fire.plume.co == fitted.co_yield_g_per_g
        assert fire.plume.co2 == fitted.co2_yield_g_per_g


def test_device_shares_renormalise_over_the_chosen_families():
    shares = scenarios.device_shares(("flaming", "smouldering"))
    assert math.isclose(sum(shares.values()), 1.0)
    # Family weights 0.2 and 0.1 become 2/3 and 1/3, then split by the scenario weights.
    assert shares["flaming_fast"] == pytest.approx(2 / 3 * 0.25)
    assert shares["smouldering_cotton"] == pytest.approx(1 / 3 * 0.5)


def test_unknown_scenario_is_named():
    with pytest.raises(KeyError, match="unknown scenario 'bonfire'"):
        scenarios.scenario("bonfire")
