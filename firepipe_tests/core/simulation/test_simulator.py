"""The simulator: determinism, schema, labels, ranges, quantisation and fire timing."""

import hashlib
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, READING_SCHEMA
from firepipe.core.simulation import scenarios
from firepipe.core.simulation.simulator import QUANTUM, GenerationSpec, simulate

SPEC = GenerationSpec(devices=24, duration_s=600, fire_share=0.5, sites=4, seed=7)


@pytest.fixture(scope="module")
def mixed() -> pl.DataFrame:
    return simulate(SPEC)


@pytest.fixture(scope="module")
def all_fires() -> pl.DataFrame:
    return simulate(GenerationSpec(devices=24, duration_s=600, fire_share=1.0, seed=11))


def ipc_digest(frame: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_same_spec_and_seed_give_identical_bytes(mixed):
    again = simulate(GenerationSpec(devices=24, duration_s=600, fire_share=0.5, sites=4, seed=7))
    assert again.equals(mixed)
    assert ipc_digest(again) == ipc_digest(mixed)


def test_different_seed_gives_different_data(mixed):
    other = simulate(GenerationSpec(devices=24, duration_s=600, fire_share=0.5, sites=4, seed=8))
    for name in CHANNEL_NAMES:  # the readings differ, not just the device names
        assert not np.array_equal(other[name].to_numpy(), mixed[name].to_numpy()), name


def test_schema_is_the_reading_schema(mixed):
    assert mixed.columns == list(READING_SCHEMA)
    assert dict(mixed.schema) == READING_SCHEMA


def test_one_row_per_device_per_second(mixed):
    assert mixed.height == SPEC.devices * SPEC.duration_s
    assert mixed["device_id"].n_unique() == SPEC.devices
    expected_ts = [SPEC.start + timedelta(seconds=s) for s in range(SPEC.duration_s)]
    for _, device in mixed.group_by("device_id"):
        assert device["ts"].to_list() == expected_ts
        assert device["site_id"].n_unique() == 1
    assert mixed["site_id"].n_unique() == SPEC.sites


def test_labels_agree_with_ignition_and_scenario(mixed):
    assert (mixed["is_fire"] == mixed["ignition_ts"].is_not_null()).all()
    assert mixed["is_fire"].null_count() == 0
    catalog_says = [scenarios.scenario(s).is_fire for s in mixed["scenario"]]
    assert mixed["is_fire"].to_list() == catalog_says
    assert 0 < mixed["is_fire"].sum() < mixed.height  # this seed has both kinds


def test_seconds_since_ignition(mixed):
    quiet = mixed.filter(~pl.col("is_fire"))
    assert quiet["seconds_since_ignition"].null_count() == quiet.height
    fire = mixed.filter(pl.col("is_fire"))
    elapsed = (fire["ts"] - fire["ignition_ts"]).dt.total_seconds()
    np.testing.assert_array_equal(fire["seconds_since_ignition"].to_numpy(), elapsed.to_numpy())
    ignition_after_start = (fire["ignition_ts"] - SPEC.start).dt.total_seconds()
    assert ignition_after_start.min() >= 0.1 * SPEC.duration_s
    assert ignition_after_start.max() < 0.4 * SPEC.duration_s


@pytest.mark.parametrize(("share", "fires"), [(0.0, 0), (1.0, 30)])
def test_fire_share_extremes(share, fires):
    frame = simulate(GenerationSpec(devices=30, duration_s=2, fire_share=share, seed=3))
    assert frame.group_by("device_id").agg(pl.col("is_fire").first())["is_fire"].sum() == fires


def test_fire_share_is_a_proportion():
    frame = simulate(GenerationSpec(devices=400, duration_s=2, fire_share=0.25, seed=5))
    share = frame["is_fire"].mean()
    assert 0.15 < share < 0.35  # binomial sd ~0.022: more than 4 sd of room


def test_no_fire_signal_before_ignition(all_fires):
    baseline = simulate(GenerationSpec(devices=24, duration_s=600, fire_share=0.0, seed=11))
    before = all_fires.filter(pl.col("ts") < pl.col("ignition_ts"))
    assert before["device_id"].n_unique() == 24
    # Detector noise only: 0.2 %/m is ten noise standard deviations.
    assert before["smoke_obscuration_pct_per_m"].max() < 0.2
    # Every channel stays within what fire-free rooms read, widened by a tenth of that range.
    for name in CHANNEL_NAMES:
        low, high = baseline[name].min(), baseline[name].max()
        margin = 0.1 * (high - low) + 1e-6
        assert low - margin <= before[name].min(), name
        assert before[name].max() <= high + margin, name


def test_fast_fires_heat_and_smoke_the_detector(all_fires):
    fast = ("flaming_fast", "flaming_ultra_fast")
    checked = 0
    for (device,), rows in all_fires.group_by("device_id"):
        if rows["scenario"][0] not in fast:
            continue
        rows = rows.sort("ts")
        before = rows.filter(pl.col("ts") < pl.col("ignition_ts"))
        last = rows.tail(10)
        assert last["temperature_c"].mean() > before["temperature_c"].mean() + 5.0, device
        assert last["smoke_obscuration_pct_per_m"].mean() > 5.0, device
        assert last["co2_ppm"].mean() > before["co2_ppm"].mean() + 200.0, device
        # Heating the same air lowers its relative humidity.
        assert last["humidity_pct"].mean() < 0.8 * before["humidity_pct"].mean(), device
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize("ch", CHANNELS, ids=lambda c: c.name)
def test_channel_within_physical_range(all_fires, mixed, ch):
    for frame in (all_fires, mixed):
        values = frame[ch.name]
        assert values.null_count() == 0
        assert values.is_finite().all()
        assert ch.min_value <= values.min()
        assert values.max() <= ch.max_value


@pytest.mark.parametrize("name", CHANNEL_NAMES)
def test_channel_is_float32_on_its_quantum(all_fires, name):
    assert all_fires.schema[name] == pl.Float32
    values = all_fires[name].to_numpy()
    steps = np.round(values.astype(np.float64) / QUANTUM[name])
    error = np.abs(values.astype(np.float64) - steps * QUANTUM[name])
    # float32 stores a step to within half a unit in the last place.
    assert np.all(error <= np.spacing(np.abs(values)).astype(np.float64)), name
    assert len(np.unique(steps)) > 1  # the check is not vacuous


@pytest.mark.parametrize(
    "kwargs",
    [
        {"devices": 0},
        {"duration_s": 1},
        {"sites": 0},
        {"fire_share": 1.5},
        {"fire_share": -0.1},
        {"fire_share": float("nan")},
        {"start": datetime(2026, 1, 1)},  # naive: would follow the host's timezone
    ],
)
def test_invalid_specs_raise(kwargs):
    with pytest.raises(ValueError, match="must be"):
        GenerationSpec(**kwargs)


def test_start_sets_the_clock():
    start = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    frame = simulate(GenerationSpec(devices=2, duration_s=3, start=start, seed=1))
    assert frame["ts"].min() == start
    assert frame["ts"].max() == start + timedelta(seconds=2)
