"""Data-quality measures on readings."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, ks_2samp, kstwobign

from firepipe.core.lake import quality
from firepipe.core.lake.quality import duplicate_key_count, label_inconsistencies, non_finite_count
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS
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
    assert duplicate_key_count(frame.lazy()) == 3
    assert duplicate_key_count(frame.unique(["device_id", "ts"])) == 0
    with pytest.raises(ValueError, match="needs column"):
        duplicate_key_count(frame.drop("ts"))


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


# --- LazyFrame label consistency --------------------------------------------------------------


def test_label_report_counts_each_rule_on_a_lazy_frame():
    t1 = datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    frame = pl.LazyFrame(
        {
            "ts": [t1] * 6,
            "is_fire": [True, False, True, True, False, True],
            "ignition_ts": [T0, None, None, T0, None, T0],
            "seconds_since_ignition": pl.Series(
                [10.0, None, None, None, 3.0, 99.0], dtype=pl.Float32
            ),
        }
    )
    report = quality.label_report(frame)
    # Row 0 and 1 are consistent; 2 is a fire without ignition; 3 lacks its seconds; 4 has
    # seconds without ignition; 5 says 99 s where ts - ignition_ts is 10 s.
    assert report == quality.LabelReport(
        rows=6,
        inconsistent_rows=4,
        null_label=0,
        fire_without_ignition=1,
        ignition_without_fire=0,
        seconds_without_ignition=1,
        ignition_without_seconds=1,
        seconds_disagree_with_ts=1,
    )
    assert label_inconsistencies(frame) == 4
    assert label_inconsistencies(frame.head(2)) == 0


def test_label_consistency_needs_its_columns():
    with pytest.raises(ValueError, match="needs column"):
        quality.label_report(pl.LazyFrame({"is_fire": [True]}))


# --- physical ranges ----------------------------------------------------------------------------


def _channels_frame(rows: int, **overrides: list[float | None]) -> pl.LazyFrame:
    """Rows with every channel at its lower bound, some channels replaced."""
    columns = {c.name: [c.min_value] * rows for c in CHANNELS}
    columns.update(overrides)
    return pl.LazyFrame({n: pl.Series(v, dtype=pl.Float32) for n, v in columns.items()})


def test_range_violations_count_values_outside_and_nan_but_not_nulls_or_bounds():
    frame = _channels_frame(
        4,
        humidity_pct=[0.0, 100.0, 100.5, None],
        co_ppm=[-1.0, float("nan"), 10_000.0, 10_001.0],
        temperature_c=[-40.0, 1200.0, None, None],
    )
    violations = quality.range_violations(frame)
    assert set(violations) == set(CHANNEL_NAMES)
    assert violations["humidity_pct"] == 1
    assert violations["co_ppm"] == 3
    assert violations["temperature_c"] == 0
    assert sum(violations.values()) == 4


def test_range_violations_name_missing_channels():
    with pytest.raises(ValueError, match="h2_ppm"):
        quality.range_violations(_channels_frame(1).drop("h2_ppm"))


# --- scenario mix ------------------------------------------------------------------------------


def test_scenario_mix_counts_devices_not_rows():
    frame = pl.LazyFrame(
        {
            "device_id": ["a"] * 100 + ["b", "c", "d", None],
            "scenario": ["x"] * 100 + ["y", "y", "z", "z"],
        }
    )
    assert quality.scenario_device_counts(frame) == {"x": 1, "y": 2, "z": 1}
    assert quality.scenario_device_counts(frame.head(0)) == {}


def test_compare_scenario_mix_tolerates_sampling_noise_only():
    expected = {"a": 0.5, "b": 0.5}
    ok = quality.compare_scenario_mix({"a": 68, "b": 32}, expected)
    assert ok.out_of_tolerance == []
    assert ok.devices == 100
    # Binomial(100, 0.5) leaves each range [30, 70] with probability ~4e-5 (< 6.3e-5).
    assert ok.scenarios[0].allowed_devices == (30, 70)
    assert binom.cdf(29, 100, 0.5) * 2 < quality.SCENARIO_MIX_FALSE_ALARM_RATE
    assert binom.cdf(30, 100, 0.5) * 2 > quality.SCENARIO_MIX_FALSE_ALARM_RATE
    assert ok.scenarios[0].observed_share == pytest.approx(0.68)
    bad = quality.compare_scenario_mix({"a": 72, "b": 28}, expected)
    assert bad.out_of_tolerance == ["a", "b"]
    # The same 72/28 split among 4x fewer devices is within the wider range of 25 devices.
    assert quality.compare_scenario_mix({"a": 18, "b": 7}, expected).out_of_tolerance == []


def test_a_scenario_missing_from_few_devices_is_out_of_tolerance():
    # 0.75^40 = 1e-5: a scenario of weight 0.25 absent from 40 devices is not chance.
    result = quality.compare_scenario_mix({"a": 40}, {"a": 0.75, "b": 0.25})
    assert result.out_of_tolerance == ["a", "b"]
    assert (
        quality.compare_scenario_mix({"a": 32, "b": 8}, {"a": 0.75, "b": 0.25}).out_of_tolerance
        == []
    )


def test_compare_scenario_mix_flags_unexpected_and_missing_scenarios():
    result = quality.compare_scenario_mix({"a": 999, "intruder": 1}, {"a": 0.999, "gone": 0.001})
    assert result.out_of_tolerance == ["intruder"]  # 'gone' at 0.1 % may be absent by chance
    result = quality.compare_scenario_mix({"a": 1000}, {"a": 0.5, "gone": 0.5})
    assert result.out_of_tolerance == ["a", "gone"]


def test_compare_scenario_mix_rejects_bad_expectations():
    with pytest.raises(ValueError, match="sum to 1"):
        quality.compare_scenario_mix({"a": 1}, {"a": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        quality.compare_scenario_mix({"a": -1}, {"a": 1.0})


# --- SDMetrics measures ------------------------------------------------------------------------

samples = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32), min_size=1, max_size=60
)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy p-value for tiny samples
@given(samples, samples)
@settings(max_examples=200, deadline=None)
def test_ks_complement_is_one_minus_scipys_statistic_and_symmetric(a, b):
    score = quality.ks_complement(a, b)
    assert 0.0 <= score <= 1.0
    assert score == pytest.approx(1.0 - ks_2samp(a, b, method="asymp").statistic, abs=1e-12)
    assert quality.ks_complement(b, a) == pytest.approx(score, abs=1e-12)
    assert quality.ks_complement(a, list(reversed(a))) == 1.0


def test_ks_complement_hand_cases_and_nulls():
    assert quality.ks_complement([1, 2, 3], [4, 5, 6]) == 0.0
    assert quality.ks_complement([1, 2, 3, 4], [3, 4, 5, 6]) == 0.5
    assert quality.ks_complement([1.0, None, 2.0, float("nan")], [2.0, 1.0]) == 1.0
    assert quality.ks_complement(pl.Series([1.0, None]), np.array([1.0])) == 1.0
    with pytest.raises(ValueError, match="both sides"):
        quality.ks_complement([None, float("nan")], [1.0])


def test_correlation_similarity_hand_cases():
    up, down = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]
    uncorrelated = [1.0, -1.0, -1.0, 1.0]  # r = 0 with `up`
    assert quality.correlation_similarity(up, up, up, up) == 1.0
    assert quality.correlation_similarity(up, up, up, down) == 0.0
    assert quality.correlation_similarity(up, up, up, uncorrelated) == 0.5
    assert quality.correlation_similarity(up, down, up, uncorrelated) == 0.5
    # Nulls drop the pair on their side only: the synthetic side is still perfectly correlated.
    assert quality.correlation_similarity(up, up, [1.0, None, 3.0, 4.0], [2.0, 5.0, 6.0, 8.0]) == (
        pytest.approx(1.0 - (1.0 - np.corrcoef([1, 3, 4], [2, 6, 8])[0, 1]) / 2)
    )
    with pytest.raises(ValueError, match="constant"):
        quality.correlation_similarity(up, up, up, [2.0] * 4)
    with pytest.raises(ValueError, match="length"):
        quality.correlation_similarity(up, up[:3], up, up)


def test_correlation_similarity_matches_numpy_pearson_on_random_data():
    rng = np.random.default_rng(1)
    x, noise = rng.normal(size=(2, 500))
    y, z = x + 0.5 * noise, -x + 2.0 * noise
    r_real, r_syn = np.corrcoef(x, y)[0, 1], np.corrcoef(x, z)[0, 1]
    assert quality.correlation_similarity(x, y, x, z) == pytest.approx(
        1 - abs(r_real - r_syn) / 2, abs=1e-12
    )


def _devices_frame(seed: int, rows: int, shift_co_ppm: float = 0.0) -> pl.LazyFrame:
    rng = np.random.default_rng(seed)
    temperature = rng.normal(21.0, 1.0, rows)
    return pl.LazyFrame(
        {
            "device_id": [f"d{i % 50}" for i in range(rows)],
            "ts": [T0 + timedelta(seconds=i // 50) for i in range(rows)],
            "temperature_c": temperature.astype(np.float32),
            "co_ppm": (5.0 + 2.0 * temperature + rng.normal(0, 1, rows) + shift_co_ppm).astype(
                np.float32
            ),
            "h2_ppm": pl.Series([None] * rows, dtype=pl.Float32),
        }
    )


CHANNELS_USED = ("temperature_c", "co_ppm", "h2_ppm")


def test_seeded_sample_is_a_bounded_reproducible_subset():
    frame = _devices_frame(0, 1000)
    a = quality.seeded_sample(frame, 100, seed=7)
    assert a.height == 100
    assert a.columns == frame.collect_schema().names()
    assert a.join(frame.collect(), on=["device_id", "ts"], how="anti").height == 0
    assert a.equals(quality.seeded_sample(frame, 100, seed=7))
    assert not a.sort("device_id", "ts").equals(
        quality.seeded_sample(frame, 100, seed=8).sort("device_id", "ts")
    )
    assert quality.seeded_sample(frame, 5000, seed=7).height == 1000
    assert quality.seeded_sample(frame, 10, seed=7, columns=["co_ppm"]).columns == ["co_ppm"]
    with pytest.raises(ValueError, match=">= 1"):
        quality.seeded_sample(frame, 0, seed=7)


def test_distribution_report_of_same_process_scores_high_and_reports_null_channels():
    report = quality.distribution_report(
        _devices_frame(1, 4000),
        _devices_frame(2, 4000),
        sample_rows=2000,
        seed=0,
        channels=CHANNELS_USED,
    )
    assert report.candidate_rows == report.reference_rows == 2000
    assert set(report.ks_complement) == set(CHANNELS_USED)
    assert report.ks_complement["h2_ppm"] is None
    assert report.skipped["h2_ppm"] == "all null in candidate and reference"
    assert report.ks_complement["temperature_c"] > 0.95
    assert report.ks_complement["co_ppm"] > 0.95
    assert list(report.correlation_similarity) == [("temperature_c", "co_ppm")]
    assert report.correlation_similarity[("temperature_c", "co_ppm")] > 0.98
    assert report.overall == pytest.approx((report.ks_mean + report.correlation_mean) / 2)
    assert "| KS complement | h2_ppm | n/a |" in report.to_markdown()


def test_distribution_report_sees_a_shifted_channel():
    report = quality.distribution_report(
        _devices_frame(1, 2000, shift_co_ppm=10.0),
        _devices_frame(2, 2000),
        sample_rows=500,
        seed=0,
        channels=CHANNELS_USED,
    )
    assert report.candidate_rows == 500
    assert report.ks_complement["co_ppm"] < 0.2
    assert report.ks_complement["temperature_c"] > 0.85
    # A shift moves no correlation.
    assert report.correlation_similarity[("temperature_c", "co_ppm")] > 0.98


def test_distribution_report_identical_frames_score_one():
    frame = _devices_frame(3, 300)
    report = quality.distribution_report(frame, frame, sample_rows=300, seed=1)
    assert report.ks_complement["temperature_c"] == 1.0
    assert report.overall == 1.0
    # Channels the frame lacks are reported, not raised.
    assert report.skipped["voc_ppb"] == "missing from candidate and reference"
    assert "voc_ppb" not in report.ks_complement
    assert report.channel_gaps["voc_ppb"] == ("candidate", "reference")


def test_distribution_report_names_the_side_a_channel_is_null_on():
    reference = _devices_frame(3, 300)
    candidate = reference.with_columns(pl.lit(None, pl.Float32).alias("co_ppm"))
    report = quality.distribution_report(
        candidate, reference, sample_rows=300, seed=1, channels=CHANNELS_USED
    )
    assert report.channel_gaps == {"co_ppm": ("candidate",), "h2_ppm": ("candidate", "reference")}
    assert report.ks_complement["co_ppm"] is None
    assert report.correlation_similarity == {}
    assert report.overall == 1.0  # temperature alone, identical on both sides


def test_ks_critical_gap_matches_smirnovs_limit_distribution():
    # P(sqrt(nm / (n + m)) D > c) -> kstwobign.sf(c): the gap is where that reaches alpha.
    gap = quality.ks_critical_gap(400, 600, 0.01)
    assert kstwobign.sf(gap * (400 * 600 / 1000) ** 0.5) == pytest.approx(0.01, rel=1e-3)
    # c(0.001) = sqrt(ln(2000) / 2) = 1.9495; sqrt((24 + 24) / 24^2) = sqrt(1 / 12).
    assert quality.ks_critical_gap(24, 24, 0.001) == pytest.approx(1.9495 / 12**0.5, abs=1e-4)
    with pytest.raises(ValueError, match="alpha"):
        quality.ks_critical_gap(10, 0, 0.01)


def test_distinct_devices_ignores_null_ids():
    frame = pl.LazyFrame({"device_id": ["a", "a", "b", None]})
    assert quality.distinct_devices(frame) == 2


def test_distribution_verdict_fails_a_channel_missing_on_one_side_only():
    reference = _devices_frame(3, 300)
    verdict = quality.distribution_verdict(
        reference, reference, sample_rows=300, seed=1, channels=CHANNELS_USED
    )
    # h2_ppm is null on both sides: nothing to judge, so it passes
    assert verdict.passed
    assert verdict.one_sided_nulls == ()
    candidate = reference.with_columns(pl.lit(None, pl.Float32).alias("co_ppm"))
    verdict = quality.distribution_verdict(
        candidate, reference, sample_rows=300, seed=1, channels=CHANNELS_USED
    )
    assert verdict.report.overall == 1.0
    assert verdict.channels_below_floor == ()
    assert verdict.one_sided_nulls == ("co_ppm",)
    assert not verdict.passed


def test_distribution_verdict_applies_the_floors_of_the_devices_compared():
    shifted = _devices_frame(1, 2000, shift_co_ppm=10.0)
    verdict = quality.distribution_verdict(
        shifted, _devices_frame(2, 2000), sample_rows=500, seed=0, channels=CHANNELS_USED
    )
    assert (verdict.candidate_devices, verdict.reference_devices) == (50, 50)
    # 50 devices a side: a KS gap up to 1.95 * sqrt(2 / 50) = 0.39 could be chance
    assert verdict.ks_floor == pytest.approx(1 - 1.9495 * (2 / 50) ** 0.5, abs=1e-4)
    assert verdict.overall_floor == verdict.ks_floor
    assert verdict.channels_below_floor == ("co_ppm",)
    assert not verdict.passed
