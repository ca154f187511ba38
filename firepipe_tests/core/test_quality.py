"""Data-quality measures on readings."""

from datetime import UTC, datetime

import polars as pl

from firepipe.core.quality import duplicate_key_count, label_inconsistencies, non_finite_count
from firepipe.core.simulation.simulator import GenerationSpec, simulate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_label_inconsistencies_count_each_disagreement_and_null_labels():
    frame = pl.DataFrame(
        {
            "is_fire": [True, False, True, False, None, None],
            "ignition_ts": [T0, None, None, T0, None, T0],
        }
    )
    # Consistent: rows 0 and 1. Fire without ignition, ignition without fire, two null labels.
    assert label_inconsistencies(frame) == 4
    assert label_inconsistencies(frame.head(2)) == 0


def test_simulated_readings_are_consistent():
    assert label_inconsistencies(simulate(GenerationSpec(devices=6, duration_s=20))) == 0


def test_duplicate_key_count():
    frame = pl.DataFrame(
        {
            "device_id": ["a", "a", "a", "a", "b", "b"],
            "ts": [T0, T0, T0, datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC), T0, T0],
            "co_ppm": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    # (a, T0) three times -> 2 extra; (b, T0) twice -> 1 extra. Values do not matter.
    assert duplicate_key_count(frame) == 3
    assert duplicate_key_count(frame.unique(["device_id", "ts"])) == 0


def test_non_finite_counts_nan_and_inf_not_nulls():
    frame = pl.DataFrame(
        {
            "a": pl.Series([1.0, float("nan"), None, float("inf")], dtype=pl.Float32),
            "b": [float("-inf"), None, 0.0, float("nan")],
            "c": [float("nan")] * 4,  # not asked about
        }
    )
    assert non_finite_count(frame, ["a", "b"]) == 4
    assert non_finite_count(frame, ["a"]) == 2
    assert non_finite_count(frame, ["c"]) == 4
    assert non_finite_count(frame, []) == 0
    assert non_finite_count(frame.head(0), ["a", "b"]) == 0
    assert non_finite_count(pl.DataFrame({"x": [None, 1.0, 2.0]}), ["x"]) == 0
