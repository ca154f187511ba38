"""Gold features against a brute-force reference, and the feature-spec hash."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from firepipe.core.features import (
    ID_COLUMNS,
    Difference,
    FeatureSpec,
    Rolling,
    compute_features,
    default_spec,
    diff_features,
)
from firepipe.core.readings import CHANNEL_NAMES

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


@pytest.mark.parametrize("statistic", ["mean", "std", "min", "max"])
@pytest.mark.parametrize("window_s", [5, 30])
def test_rolling_matches_brute_force(gappy, statistic, window_s):
    spec = FeatureSpec((Rolling(CH, statistic, window_s),))
    out = compute_features(gappy, spec)
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
    assert together.equals(apart)


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


def test_default_spec_names_unique():
    names = default_spec().names
    assert len(names) == len(set(names))
    # 8 channels x (2 windows x 3 statistics + 1 difference)
    assert len(names) == 8 * (2 * 3 + 1)
    assert {n.split("__")[0] for n in names} == set(CHANNEL_NAMES)


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
