"""Gold features against a brute-force reference, and the feature-spec hash."""

from datetime import UTC, datetime, timedelta

import numba
import numpy as np
import polars as pl
import pytest
from numba.core import caching

from firepipe.core.features import kernels
from firepipe.core.features.spec import (
    ID_COLUMNS,
    Difference,
    FeatureSpec,
    RateOfRise,
    Ratio,
    Rise,
    Rolling,
    SmokeHeatLag,
    benchmark_spec,
    compute_features,
    default_spec,
    device_batches,
    diff_features,
    features_by_device_batch,
    reference_features,
)
from firepipe.core.readings import CHANNEL_NAMES
from firepipe_tests.core.features.feature_sample import assert_same_features, silver_sample

START = datetime(2026, 1, 1, tzinfo=UTC)
CH = "co_ppm"


def readings(seconds_by_device: dict[str, list[int]], seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        (d, START + timedelta(seconds=s), float(rng.normal(100.0 * i, 5.0)))
        for i, (d, seconds) in enumerate(seconds_by_device.items())
        for s in seconds
    ]
    return pl.DataFrame(
        {
            "site_id": "site-0",
            "device_id": [d for d, _, _ in rows],
            "ts": [t for _, t, _ in rows],
            "scenario": "clean_baseline",
            "is_fire": False,
            CH: pl.Series([x for _, _, x in rows], dtype=pl.Float32),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def brute_rolling(frame: pl.DataFrame, statistic: str, window_s: int) -> list[float | None]:
    # Polars documents rolling_*_by(window_size=w) with its default closed="right" as the window
    # (t - w, t]: this second and the w - 1 before it; a reading exactly w seconds old is out.
    # Checked by hand: with "3s", the row at t=3 sums t=1,2,3. A one-reading std (ddof=1) is null.
    out: list[float | None] = []
    for device, ts, _ in frame.iter_rows():
        window = [
            x
            for d, t, x in frame.iter_rows()
            if d == device and ts - timedelta(seconds=window_s) < t <= ts
        ]
        values = np.array(window, dtype=np.float64)
        if statistic == "std":
            out.append(float(np.std(values, ddof=1)) if len(values) > 1 else None)
        else:
            out.append(float(getattr(np, statistic)(values)))
    return out


def assert_close(actual: list[float | None], expected: list[float | None]) -> None:
    assert [a is None for a in actual] == [e is None for e in expected]
    pairs = [(a, e) for a, e in zip(actual, expected, strict=True) if e is not None]
    for a, e in pairs:
        assert a == pytest.approx(e, rel=1e-5, abs=1e-4)


@pytest.fixture
def gappy() -> pl.DataFrame:
    # Two devices x 40 s; device b misses some seconds so time windows and row counts differ.
    missing = {7, 8, 20, 21, 22}
    return readings({"a": list(range(40)), "b": [s for s in range(40) if s not in missing]})


@pytest.mark.parametrize("engine", [compute_features, reference_features])
@pytest.mark.parametrize("statistic", ["mean", "std", "min", "max"])
@pytest.mark.parametrize("window_s", [5, 30])
def test_rolling_matches_brute_force(gappy, statistic, window_s, engine):
    spec = FeatureSpec((Rolling(CH, statistic, window_s),))
    out = engine(gappy, spec)
    expected_frame = gappy.sort("device_id", "ts").select("device_id", "ts", CH)
    assert out.select("device_id", "ts").equals(expected_frame.select("device_id", "ts"))
    actual = out[spec.names[0]].to_list()
    assert_close(actual, brute_rolling(expected_frame, statistic, window_s))


def test_difference_is_against_the_reading_lag_seconds_earlier(gappy):
    out = compute_features(gappy, FeatureSpec((Difference(CH, 3),)))
    b = gappy.filter(pl.col("device_id") == "b").sort("ts")
    by_second = dict(zip(b["ts"].dt.second().to_list(), b[CH].to_list(), strict=True))
    got = out.filter(pl.col("device_id") == "b")[f"{CH}__diff_3s"].to_list()
    expected = [x - by_second[t - 3] if t - 3 in by_second else None for t, x in by_second.items()]
    assert_close(got, expected)
    # Second 23 follows the gap 20-22: its reading 3 s earlier (20) is missing, not row 19.
    assert got[list(by_second).index(23)] is None


def test_difference_on_gap_free_data_is_the_change_over_lag_rows():
    frame = readings({"a": list(range(40)), "b": list(range(40))}, seed=1)
    out = compute_features(frame, FeatureSpec((Difference(CH, 3),)))
    for device in ("a", "b"):
        x = frame.filter(pl.col("device_id") == device)[CH].to_list()
        got = out.filter(pl.col("device_id") == device)[f"{CH}__diff_3s"].to_list()
        assert got[:3] == [None, None, None]
        assert_close(got[3:], [x[t] - x[t - 3] for t in range(3, 40)])


def test_features_never_mix_devices(gappy):
    spec = FeatureSpec(
        (Rolling(CH, "mean", 30), Rolling(CH, "std", 5), Rolling(CH, "max", 30), Difference(CH, 2))
    )
    together = compute_features(gappy.sample(fraction=1.0, shuffle=True, seed=3), spec)
    apart = pl.concat(
        [compute_features(gappy.filter(pl.col("device_id") == d), spec) for d in ("a", "b")]
    )
    assert together.select(ID_COLUMNS).equals(apart.select(ID_COLUMNS))
    for name in spec.names:  # equal up to summation order (the fast path sums by blocks)
        assert_close(together[name].to_list(), apart[name].to_list())


def test_output_columns_and_types(gappy):
    spec = FeatureSpec((Rolling(CH, "mean", 30), Difference(CH, 60)))
    out = compute_features(gappy, spec)
    assert out.columns == [*ID_COLUMNS, "co_ppm__mean_30s", "co_ppm__diff_60s"]
    assert out.height == gappy.height
    assert out.schema["co_ppm__mean_30s"] == pl.Float32
    assert out.schema["co_ppm__diff_60s"] == pl.Float32


def test_spec_hash_stable_and_sensitive():
    def spec(window=30, statistic="mean", channel=CH, lag=60):
        return FeatureSpec((Rolling(channel, statistic, window), Difference(channel, lag)))

    base = spec().hash()
    assert spec().hash() == base  # a separately built, equal spec
    assert len(base) == 16
    assert set(base) <= set("0123456789abcdef")
    changed = [spec(window=31), spec(statistic="max"), spec(channel="h2_ppm"), spec(lag=59)]
    hashes = {s.hash() for s in changed}
    assert base not in hashes
    assert len(hashes) == len(changed)
    assert default_spec().hash() == default_spec().hash()
    assert default_spec().hash() != default_spec(windows_s=(30, 600)).hash()


def test_default_spec_is_the_benchmark_set_plus_rates_rises_ratio_and_lag():
    names = benchmark_spec().names
    # 8 channels x (2 windows x 3 statistics + 1 difference)
    assert len(names) == len(set(names)) == 8 * (2 * 3 + 1)
    assert {n.split("__")[0] for n in names} == set(CHANNEL_NAMES)
    extras = default_spec().names[len(names) :]
    assert default_spec().names[: len(names)] == names
    assert extras == (
        "temperature_c__rise_per_min_30s",
        "smoke_obscuration_pct_per_m__rise_per_min_30s",
        "co_ppm__rise_per_min_30s",
        *(f"{c}__rise_30s_over_300s" for c in CHANNEL_NAMES),
        "co_ppm__per__co2_ppm",
        "smoke_heat_lag_300s",
    )


def test_a_spec_that_repeats_a_feature_is_refused():
    with pytest.raises(ValueError, match=r"co_ppm__mean_30s more than once"):
        default_spec(channels=(CH,), windows_s=(30, 30), statistics=("mean",))


def test_diff_features_names_columns_and_shifts():
    rng = np.random.default_rng(0)
    before = pl.DataFrame(
        {
            "device_id": [f"d{i % 20}" for i in range(2_000)],
            "same": rng.normal(0.0, 1.0, 2_000),
            "moved": rng.normal(0.0, 1.0, 2_000),
            "dropped": rng.normal(0.0, 1.0, 2_000),
            "retyped": np.arange(2_000, dtype=np.int32),
        }
    )
    after = before.drop("dropped").with_columns(
        (pl.col("moved") + 2.0).alias("moved"),
        pl.col("retyped").cast(pl.Float64),
        pl.lit(1.0).alias("added"),
    )
    diff = diff_features(before.lazy(), after.lazy(), sample_rows=5_000)
    assert (diff.added, diff.removed, diff.type_changed) == (("added",), ("dropped",), ("retyped",))
    assert (diff.rows_before, diff.rows_after) == (2_000, 2_000)
    shifts = {s.column: s for s in diff.shifts}
    assert diff.shifts[0].column == "moved"  # least similar first
    assert shifts["moved"].ks_complement < 0.4  # two sd apart: the ECDFs differ by ~0.68
    assert shifts["moved"].mean_after == pytest.approx(shifts["moved"].mean_before + 2.0)
    assert shifts["same"].ks_complement == 1.0
    assert shifts["retyped"].ks_complement == 1.0  # same values, another type


def test_spec_json_round_trip_keeps_the_hash():
    spec = default_spec()
    back = FeatureSpec.from_json(spec.to_json())
    assert back == spec
    assert back.hash() == spec.hash()
    assert isinstance(back.features[-1], SmokeHeatLag)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"version": 99, "features": []}', "version 1"),
        ('{"version": 1, "features": [{"kind": "Median", "channel": "co_ppm"}]}', "no known kind"),
        ('{"version": 1, "features": [{"kind": "Difference", "channel": "x"}]}', "lag_s"),
        (
            '{"version": 1, "features": [{"kind": "Difference", "channel": "x", "lag_s": 0}]}',
            "positive",
        ),
        (
            '{"version": 1, "features": [{"kind": "Ratio", "numerator": "a", '
            '"denominator": "b", "k": 1}]}',
            "no field",
        ),
    ],
)
def test_bad_spec_json_is_refused_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        FeatureSpec.from_json(text)


def test_fast_path_equals_the_reference_on_silver_with_gaps():
    sample = silver_sample(devices=6, seconds=2_500, seed=2)
    spec = default_spec()
    expected = reference_features(sample, spec)
    # Small device groups and one thread, and the default: the same numbers either way.
    for got in (
        compute_features(sample, spec, group_rows=3_000, threads=1),
        compute_features(sample, spec),
    ):
        assert_same_features(got, expected, spec.names)
    # One row per real reading: gap rows and the 700 s unfilled gap leave no feature rows.
    assert expected.height == sample.filter(~pl.col("is_gap")).height


def test_std_keeps_precision_after_a_large_rise():
    # A quiet window right after a 500 degC jump: a naive sum of squares would lose its 0.01 spread.
    rng = np.random.default_rng(5)
    values = np.concatenate([np.full(400, 20.0), np.full(400, 520.0)]) + rng.normal(0, 0.01, 800)
    frame = readings({"a": list(range(800))}).with_columns(
        pl.Series("temperature_c", values, dtype=pl.Float32)
    )
    got = compute_features(frame, FeatureSpec((Rolling("temperature_c", "std", 30),)))
    x = frame["temperature_c"].cast(pl.Float64).to_numpy()
    exact = [np.std(x[max(0, t - 29) : t + 1], ddof=1) for t in range(1, 800)]
    np.testing.assert_allclose(
        got["temperature_c__std_30s"].to_numpy()[1:], exact, rtol=1e-6, atol=1e-7
    )


def one_fire_device(channels: dict[str, np.ndarray]) -> pl.DataFrame:
    """One burning device's readings, a second apart from START, of the given channels."""
    n = len(next(iter(channels.values())))
    return pl.DataFrame(
        {
            "site_id": "s",
            "device_id": "d",
            "ts": [START + timedelta(seconds=s) for s in range(n)],
            "scenario": "flaming",
            "is_fire": True,
            **{c: v.astype(np.float32) for c, v in channels.items()},
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_rise_by_hand_is_blind_to_an_offset():
    # Heat rises by 1 degC a second from t=25; CO2 reads 1,000 ppm too high, and steady.
    t = np.arange(60)
    frame = one_fire_device(
        {"temperature_c": 20 + np.clip(t - 25, 0, None), "co2_ppm": np.full(60, 1450.0)}
    )
    spec = FeatureSpec((Rise("temperature_c", 5, 20), Rise("co2_ppm", 5, 20)))
    for engine in (compute_features, reference_features):
        out = engine(frame, spec)
        rise = out["temperature_c__rise_5s_over_20s"].to_list()
        assert rise[0] == rise[25] == 0.0
        # t=40: the last 5 s read 31..35 (mean 33), the last 20 s five 20s and 21..35 (26)
        assert rise[40] == pytest.approx(7.0)
        assert out["co2_ppm__rise_5s_over_20s"].to_list() == [0.0] * 60
    with pytest.raises(ValueError, match="must be shorter than baseline_s"):
        Rise("co_ppm", 300, 30)


def test_ratio_rate_and_smoke_heat_lag_by_hand():
    # Smoke rises by 1 %/m a second from t=10, heat by 1 degC a second from t=25.
    t = np.arange(60)
    frame = one_fire_device(
        {
            "smoke_obscuration_pct_per_m": np.clip(t - 10, 0, None),
            "temperature_c": 20 + np.clip(t - 25, 0, None),
            "co_ppm": np.full(60, 5.0),
            "co2_ppm": np.where(t == 3, 0.0, 500.0),
        }
    )
    lag = SmokeHeatLag(window_s=40, rise_lag_s=2, smoke_rise=1.5, heat_rise=1.5)
    spec = FeatureSpec((Ratio("co_ppm", "co2_ppm"), RateOfRise("temperature_c", 5), lag))
    for engine in (compute_features, reference_features):
        out = engine(frame, spec)
        ratio = out["co_ppm__per__co2_ppm"].to_list()
        assert ratio[3] is None
        assert ratio[4] == pytest.approx(0.01)
        rise = out["temperature_c__rise_per_min_5s"].to_list()
        assert rise[:5] == [None] * 5
        assert rise[20] == 0.0
        assert rise[40] == pytest.approx(60.0)
        lags = out["smoke_heat_lag_40s"].to_list()
        # Smoke first rose (2 s change >= 1.5) at t=12, heat at t=27: lag 15 s once both did;
        # null before heat rose, and again once smoke's onset left the 40 s window (t=52).
        assert lags[26] is None
        assert lags[27] == lags[51] == 15.0
        assert lags[52] == 14.0  # the window (12, 52]: smoke's earliest rise in it is t=13


def test_timestamps_off_the_second_go_through_the_reference():
    frame = readings({"a": list(range(20))}).with_columns(
        pl.col("ts") + pl.duration(milliseconds=pl.int_range(20) * 10)
    )
    spec = FeatureSpec((Rolling(CH, "mean", 5), Difference(CH, 2)))
    assert compute_features(frame, spec).equals(reference_features(frame, spec))


@pytest.mark.parametrize("group_rows", [1, 4_000])
def test_fast_path_equals_the_reference_across_groups_and_threads(group_rows):
    # Groups of one device, and of a few: every kernel restarts at each device and group, and
    # channels x groups are shared by the threads in any order.
    sample = silver_sample(devices=6, seconds=2_500, seed=4)
    spec = default_spec()
    expected = reference_features(sample, spec)
    for threads in (1, 2):
        got = compute_features(sample, spec, group_rows=group_rows, threads=threads)
        assert_same_features(got, expected, spec.names)


def test_a_quiet_device_after_a_loud_one_keeps_its_std():
    # Device b's tiny spread follows device a's large values in the same row group: its std
    # must not be the difference of sums that a's values made huge (the running sums restart
    # at each device, and windows still ill-conditioned are recomputed two-pass).
    rng = np.random.default_rng(7)
    frame = readings({"a": list(range(600)), "b": list(range(600))}).with_columns(
        pl.Series(
            CH,
            np.concatenate([rng.normal(5_000.0, 2_000.0, 600), rng.normal(3.0, 1e-3, 600)]),
            dtype=pl.Float32,
        )
    )
    got = compute_features(frame, FeatureSpec((Rolling(CH, "std", 30),)))
    x = frame.filter(pl.col("device_id") == "b")[CH].cast(pl.Float64).to_numpy()
    exact = [np.std(x[max(0, t - 29) : t + 1], ddof=1) for t in range(1, 600)]
    b = got.filter(pl.col("device_id") == "b")[f"{CH}__std_30s"].to_numpy()
    np.testing.assert_allclose(b[1:], exact, rtol=1e-6)


def test_channels_missing_the_same_seconds_with_different_windows(gappy):
    # The second channel misses the same seconds as the first (so the per-window counts of
    # values are shared) but asks for windows the first did not.
    frame = gappy.with_columns((pl.col(CH) * 2.0 + 1.0).alias("h2_ppm"))
    spec = FeatureSpec(
        (Rolling(CH, "mean", 30), Rolling("h2_ppm", "std", 7), Rolling("h2_ppm", "mean", 30))
    )
    got, expected = compute_features(frame, spec), reference_features(frame, spec)
    for name in spec.names:
        assert_close(got[name].to_list(), expected[name].to_list())


@pytest.mark.parametrize("seed", range(4))
def test_window_statistics_on_ragged_readings_match_the_reference(seed):
    # Random missing seconds (so windows and the kernels' time blocks hold any number of
    # readings), null values, a level jump, and short windows (exact passes and restarts of
    # the running sums happen many times in 900 s).
    rng = np.random.default_rng(seed)
    seconds = {d: np.flatnonzero(rng.random(900) < 0.8).tolist() for d in ("a", "b", "c")}
    frame = readings(seconds, seed=seed)
    values = frame[CH].to_numpy().copy()
    values[rng.random(values.size) < 0.1] = np.nan
    values[frame.height // 2 :] += 1_000.0
    frame = frame.with_columns(pl.Series(CH, values, dtype=pl.Float32, nan_to_null=True))
    spec = FeatureSpec(
        tuple(Rolling(CH, s, w) for w in (1, 2, 3, 7, 30) for s in ("mean", "std", "min", "max"))
    )
    got, expected = compute_features(frame, spec), reference_features(frame, spec)
    assert_same_features(got, expected, spec.names)


def test_a_repeated_reading_goes_through_the_reference(gappy):
    frame = pl.concat([gappy, gappy.head(3)])
    spec = FeatureSpec((Rolling(CH, "mean", 5), Difference(CH, 2)))
    assert compute_features(frame, spec).equals(reference_features(frame, spec))


def test_kernels_compile_where_no_cache_folder_is_writable(monkeypatch):
    # With no locator (read-only package and home), numba refuses cache=True at decoration;
    # the kernels are then compiled without a cache instead of failing to import.
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])

    def first_plus_last(x):
        return x[0] + x[-1]

    with pytest.raises(RuntimeError, match="no locator available"):
        numba.njit(cache=True)(first_plus_last)
    compiled = kernels.compiled(first_plus_last)
    assert compiled(np.array([2.0, 5.0, 40.0])) == 42.0


def test_device_batches_keep_devices_whole_and_in_order() -> None:
    per_device = pl.DataFrame({"device_id": ["a", "b", "c", "d"], "len": [300, 500, 900, 100]})
    assert device_batches(per_device, 800) == [["a", "b"], ["c"], ["d"]]
    assert device_batches(per_device, 10_000) == [["a", "b", "c", "d"]]
    assert device_batches(per_device.head(0), 800) == []
    with pytest.raises(ValueError, match="max_rows"):
        device_batches(per_device, 0)


def test_features_by_device_batch_equal_the_whole_frame_at_a_time(gappy):
    # gappy's devices, shuffled, in a Parquet-like lazy scan: each batch holds whole devices
    # and the batches together are the features of the whole frame.
    spec = FeatureSpec((Rolling(CH, "mean", 5), Rolling(CH, "max", 3), Difference(CH, 2)))
    whole = compute_features(gappy, spec)
    per_device = whole.group_by("device_id").len()
    largest = int(per_device["len"].max())
    batches = list(
        features_by_device_batch(
            gappy.sample(fraction=1.0, shuffle=True, seed=1).lazy(), spec, largest
        )
    )
    assert len(batches) == per_device.height  # one device per batch at this size
    assert all(b["device_id"].n_unique() == 1 for b in batches)
    assert_same_features(pl.concat(batches), whole, spec.names)
    [empty] = features_by_device_batch(gappy.head(0).lazy(), spec)
    assert empty.height == 0
    assert empty.columns == whole.columns


def test_readings_without_a_column_the_spec_needs_are_refused(gappy):
    spec = FeatureSpec((Rolling(CH, "mean", 5), Ratio(CH, "co2_ppm")))
    for engine in (compute_features, reference_features):
        with pytest.raises(ValueError, match=r"lack column\(s\) \['co2_ppm'\]"):
            engine(gappy, spec)
    with pytest.raises(ValueError, match=r"\['scenario'\]"):
        compute_features(gappy.drop("scenario"), FeatureSpec((Rolling(CH, "mean", 5),)))
