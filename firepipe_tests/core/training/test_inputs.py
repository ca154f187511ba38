"""The detector's inputs: the offset-robust set is what a sensor's zero offset cannot move, and
the monotone set names only rises of channels a fire raises."""

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec, Rolling, compute_features, default_spec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training.inputs import FIRE_RAISES, detector_inputs, increasing_inputs
from firepipe_tests.core.features.feature_sample import silver_sample

# Offsets like the NIST analysers' (CO 5-37 ppm in clean air, CO2 220 ppm below outdoor air).
OFFSETS = {
    "temperature_c": 3.0,
    "humidity_pct": -8.0,
    "smoke_obscuration_pct_per_m": 0.9,
    "pm25_ugm3": 12.0,
    "co_ppm": 30.0,
    "co2_ppm": -220.0,
    "voc_ppb": 40.0,
    "h2_ppm": 0.7,
}


def test_offset_robust_features_do_not_move_with_a_zero_offset() -> None:
    spec = default_spec()
    names = detector_inputs(spec, "offset_robust")
    silver = silver_sample(devices=3, seconds=900)
    shifted = silver.with_columns(
        (pl.col(c) + OFFSETS[c]).cast(silver.schema[c]).alias(c) for c in CHANNEL_NAMES
    )
    before, after = compute_features(silver, spec), compute_features(shifted, spec)
    moved = [
        n
        for n in spec.names
        if not np.allclose(
            before[n].to_numpy().astype(float),
            after[n].to_numpy().astype(float),
            atol=1e-3,
            equal_nan=True,
        )
    ]
    # No input moves ...
    assert set(moved) & set(names) == set()
    # ... and the features left out are the ones an offset moves, or a sensor's noise level.
    left_out = set(spec.names) - set(names)
    assert left_out <= set(moved) | {n for n in spec.names if "__std_" in n}
    assert "co_ppm__per__co2_ppm" in left_out
    assert "co2_ppm__mean_300s" in left_out
    assert "temperature_c__rise_per_min_30s" in names
    assert "co2_ppm__rise_30s_over_300s" in names
    assert "smoke_heat_lag_300s" in names
    assert len(moved) > 20  # the offsets did move the levels


def test_increasing_inputs_are_rises_of_fire_raised_channels() -> None:
    spec = default_spec()
    names = detector_inputs(spec, "offset_robust")
    increasing = increasing_inputs(spec, names)
    assert set(increasing) <= set(names)
    assert "humidity_pct__diff_60s" in names
    assert "humidity_pct__diff_60s" not in increasing  # steam raises humidity
    assert "smoke_heat_lag_300s" not in increasing  # a lag, either sign
    assert {"temperature_c__diff_60s", "co_ppm__rise_per_min_30s"} <= set(increasing)
    assert "smoke_obscuration_pct_per_m__rise_30s_over_300s" in increasing
    assert "humidity_pct__rise_30s_over_300s" not in increasing
    assert all(n.split("__")[0] in FIRE_RAISES for n in increasing)
    # Only what the detector reads can be constrained.
    assert increasing_inputs(spec, ("temperature_c__diff_60s",)) == ("temperature_c__diff_60s",)


def test_all_reads_every_feature_and_bad_sets_are_refused() -> None:
    spec = default_spec()
    assert detector_inputs(spec, "all") == spec.names
    with pytest.raises(ValueError, match="feature_set must be one of"):
        detector_inputs(spec, "levels")  # type: ignore[arg-type]
    only_spread = FeatureSpec((Rolling("co_ppm", "std", 30), Rolling("co_ppm", "mean", 30)))
    with pytest.raises(ValueError, match="would read nothing"):
        detector_inputs(only_spread, "offset_robust")
