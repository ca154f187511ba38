"""The simulator: determinism, schema, labels, mix, faults, ranges and the physics of events."""

import hashlib
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, FAULTS, READING_SCHEMA
from firepipe.core.simulation import scenarios
from firepipe.core.simulation import simulator as sim
from firepipe.core.simulation.backends import get_backend
from firepipe.core.simulation.simulator import QUANTUM, GenerationSpec, simulate

SPEC = GenerationSpec(devices=40, duration_s=900, sites=4, seed=7, fault_share=0.2)
FIRES = GenerationSpec(devices=24, duration_s=900, seed=11, families=("flaming",), fault_share=0)


@pytest.fixture(scope="module")
def mixed() -> pl.DataFrame:
    return simulate(SPEC)


@pytest.fixture(scope="module")
def fires() -> pl.DataFrame:
    return simulate(FIRES)


def ipc_digest(frame: pl.DataFrame) -> str:
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_same_spec_and_seed_give_identical_bytes(mixed):
    again = simulate(GenerationSpec(devices=40, duration_s=900, sites=4, seed=7, fault_share=0.2))
    assert ipc_digest(again) == ipc_digest(mixed)


def test_bytes_do_not_depend_on_the_number_of_workers(monkeypatch):
    monkeypatch.setattr(sim, "CHUNK_ROWS", 3_000)  # 10 devices per chunk: 5 chunks
    spec = GenerationSpec(devices=50, duration_s=300, seed=4)
    assert spec.chunks == 5
    one = simulate(spec, workers=1)
    assert ipc_digest(simulate(spec, workers=3)) == ipc_digest(one)
    streamed = list(sim.simulate_chunks(spec, workers=2))
    assert [c.height for c in streamed] == [3_000] * 5
    assert ipc_digest(pl.concat(streamed)) == ipc_digest(one)


def test_different_seed_gives_different_data(mixed):
    other = simulate(GenerationSpec(devices=40, duration_s=900, sites=4, seed=8, fault_share=0.2))
    for name in CHANNEL_NAMES:  # the readings differ, not just the device names
        assert not np.array_equal(other[name].to_numpy(), mixed[name].to_numpy()), name


def test_schema_is_the_reading_schema_plus_synthetic_labels(mixed):
    assert dict(mixed.schema) == {
        **READING_SCHEMA,
        "scenario_family": pl.String(),
        "fault": pl.String(),
    }


def test_one_row_per_device_per_second_device_major(mixed):
    assert mixed.height == SPEC.rows
    assert mixed["device_id"].n_unique() == SPEC.devices
    assert mixed["device_id"].head(SPEC.duration_s).n_unique() == 1
    expected_ts = [SPEC.start + timedelta(seconds=s) for s in range(SPEC.duration_s)]
    for _, device in mixed.group_by("device_id"):
        assert device["ts"].to_list() == expected_ts
        assert device.select("site_id", "scenario", "scenario_family", "fault").n_unique() == 1
    assert mixed["site_id"].n_unique() == SPEC.sites


def test_labels_agree_with_ignition_and_the_catalog(mixed):
    assert (mixed["is_fire"] == mixed["ignition_ts"].is_not_null()).all()
    per_device = mixed.group_by("device_id").agg(pl.first("scenario", "scenario_family", "is_fire"))
    for row in per_device.iter_rows(named=True):
        entry = scenarios.scenario(row["scenario"])
        assert (entry.family, entry.is_fire) == (row["scenario_family"], row["is_fire"])
    assert 0 < per_device["is_fire"].sum() < per_device.height  # this seed has both kinds


def test_seconds_since_ignition(mixed):
    quiet = mixed.filter(~pl.col("is_fire"))
    assert quiet["seconds_since_ignition"].null_count() == quiet.height
    fire = mixed.filter(pl.col("is_fire"))
    elapsed = (fire["ts"] - fire["ignition_ts"]).dt.total_seconds()
    np.testing.assert_array_equal(fire["seconds_since_ignition"].to_numpy(), elapsed.to_numpy())
    ignition_after_start = (fire["ignition_ts"] - SPEC.start).dt.total_seconds()
    assert ignition_after_start.min() >= 0.1 * SPEC.duration_s
    assert ignition_after_start.max() < 0.4 * SPEC.duration_s


def test_families_restrict_the_scenarios():
    frame = simulate(GenerationSpec(devices=60, duration_s=2, seed=3, families=("nuisance",)))
    assert set(frame["scenario_family"].unique()) == {"nuisance"}
    assert not frame["is_fire"].any()
    assert frame["scenario"].n_unique() >= 5  # 60 devices over 7 nuisance scenarios


def test_scenario_mix_follows_the_catalog_weights():
    spec = GenerationSpec(devices=4000, duration_s=2, seed=5)
    shares = (
        simulate(spec)
        .group_by("scenario")
        .agg(pl.col("device_id").n_unique() / spec.devices)
        .to_dict(as_series=False)
    )
    observed = dict(zip(shares["scenario"], shares["device_id"], strict=True))
    for name, expected in scenarios.device_shares(spec.families).items():
        sd = (expected * (1 - expected) / spec.devices) ** 0.5
        assert abs(observed.get(name, 0.0) - expected) < 5 * sd, name


def test_spec_round_trips_through_json():
    spec = GenerationSpec(devices=3, duration_s=9, seed=2, families=("flaming",), fault_share=0.5)
    assert GenerationSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown generation spec fields"):
        GenerationSpec.from_json({**spec.to_json(), "fire_share": 0.5})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"devices": 0},
        {"duration_s": 1},
        {"sites": 0},
        {"seed": -1},
        {"fault_share": 1.5},
        {"fault_share": float("nan")},
        {"families": ()},
        {"start": datetime(2026, 1, 1)},  # naive: would follow the host's timezone
    ],
)
def test_invalid_specs_raise(kwargs):
    with pytest.raises(ValueError, match="must"):
        GenerationSpec(**kwargs)


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="unknown scenario families \\['wildfire'\\]"):
        GenerationSpec(families=("wildfire",))


def test_start_sets_the_clock():
    start = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
    frame = simulate(GenerationSpec(devices=2, duration_s=3, start=start, seed=1))
    assert frame["ts"].min() == start
    assert frame["ts"].max() == start + timedelta(seconds=2)


@pytest.mark.parametrize("ch", CHANNELS, ids=lambda c: c.name)
def test_channel_within_physical_range(fires, mixed, ch):
    for frame in (fires, mixed):
        values = frame[ch.name].drop_nulls()
        assert values.is_finite().all()
        assert ch.min_value <= values.min()
        assert values.max() <= ch.max_value


@pytest.mark.parametrize("name", CHANNEL_NAMES)
def test_channel_is_float32_on_its_quantum(fires, name):
    assert fires.schema[name] == pl.Float32
    values = fires[name].to_numpy()
    steps = np.round(values.astype(np.float64) / QUANTUM[name])
    error = np.abs(values.astype(np.float64) - steps * QUANTUM[name])
    # float32 stores a step to within half a unit in the last place.
    assert np.all(error <= np.spacing(np.abs(values)).astype(np.float64)), name
    assert len(np.unique(steps)) > 1  # the check is not vacuous


def test_fast_fires_heat_smoke_and_dry_the_detector(fires):
    checked = 0
    for (device,), rows in fires.group_by("device_id"):
        if rows["scenario"][0] not in ("flaming_fast", "flaming_ultra_fast"):
            continue
        before = rows.filter(pl.col("ts") < pl.col("ignition_ts"))
        last = rows.sort("ts").tail(10)
        assert last["temperature_c"].mean() > before["temperature_c"].mean() + 5.0, device
        assert last["smoke_obscuration_pct_per_m"].mean() > 5.0, device
        assert last["co_ppm"].mean() > before["co_ppm"].mean() + 10.0, device
        assert last["co2_ppm"].mean() > before["co2_ppm"].mean() + 200.0, device
        # Heating the same air lowers its relative humidity.
        assert last["humidity_pct"].mean() < 0.8 * before["humidity_pct"].mean(), device
        checked += 1
    assert checked >= 5


def _event_part(spec: GenerationSpec) -> tuple[sim.Devices, dict[str, np.ndarray]]:
    """What each device's source adds to its clean (noise-free) signals, (seconds, devices)."""
    devices = sim.chunk_devices(spec, 0)
    numpy = get_backend("numpy")
    with_source = sim.clean_signals(devices, spec.duration_s, numpy)
    baseline = sim.clean_signals(devices.without_source(), spec.duration_s, numpy)
    return devices, {name: with_source[name] - baseline[name] for name in CHANNEL_NAMES}


physics_examples = settings(max_examples=15, deadline=None)


@physics_examples
@given(seed=st.integers(0, 2**32 - 1), family=st.sampled_from(scenarios.FAMILIES[1:]))
def test_no_event_signal_before_onset(seed, family):
    spec = GenerationSpec(devices=6, duration_s=400, seed=seed, families=(family,))
    devices, event = _event_part(spec)
    onset = devices.params["onset_s"]
    for d in range(devices.n):
        for name in CHANNEL_NAMES:
            assert np.all(event[name][: int(onset[d]), d] == 0.0), (name, d)


@physics_examples
@given(seed=st.integers(0, 2**32 - 1))
def test_flaming_heat_and_smoke_never_fall_before_the_peak(seed):
    spec = GenerationSpec(devices=6, duration_s=900, seed=seed, families=("flaming",))
    devices, event = _event_part(spec)
    onset, rise = devices.params["onset_s"], devices.params["rise_s"]
    for d in range(devices.n):
        growing = slice(int(onset[d]), min(int(onset[d] + rise[d]), spec.duration_s))
        for name in ("temperature_c", "smoke_obscuration_pct_per_m", "co_ppm", "pm25_ugm3"):
            series = event[name][growing, d].astype(np.float64)
            tolerance = 1e-5 * max(1.0, float(np.abs(series).max(initial=0.0)))
            assert np.all(np.diff(series) >= -tolerance), (name, d)
            assert series.min(initial=0.0) >= -tolerance
        assert event["temperature_c"][-1, d] > 0.0


def test_nuisances_do_not_heat_like_a_fire():
    devices, event = _event_part(
        GenerationSpec(devices=60, duration_s=1200, seed=9, families=("nuisance",))
    )
    # A stove or a shower warms a ceiling sensor by a few kelvin, a fire by tens.
    assert 0.0 < event["temperature_c"].max() < 15.0
    steam = devices.scenario == scenarios.CATALOG.index(scenarios.scenario("shower_steam"))
    assert steam.any()
    assert event["humidity_pct"][:, steam].max() > 10.0  # steam is what humidity shows
    dust = devices.scenario == scenarios.CATALOG.index(scenarios.scenario("dust"))
    assert np.all(event["co_ppm"][:, dust] == 0.0)  # dust carries no gas


def test_smouldering_smokes_and_makes_co_with_little_heat():
    _, event = _event_part(
        GenerationSpec(devices=20, duration_s=3600, seed=2, families=("smouldering",))
    )
    assert np.all(event["smoke_obscuration_pct_per_m"][-1] > 0.5)
    assert np.all(event["co_ppm"][-1] > 1.0)  # twice the CO sensor's noise, in a large airy room
    assert np.median(event["co_ppm"][-1]) > 10.0
    assert np.all(event["h2_ppm"][-1] > 0.1)
    assert event["temperature_c"].max() < 3.0


def test_units_of_a_hand_computed_room_emission():
    """Steady state of a room source: C = E / (V * ach), in the channel's unit."""
    spec = GenerationSpec(devices=1, duration_s=2, seed=1, families=("smouldering",))
    devices = sim.chunk_devices(spec, 0)
    p = devices.params
    ventilation_m3_per_s = p["room_volume_m3"] / p["room_time_constant_s"]
    enrichment_times_rate_co = p["co_ppm_room"] * ventilation_m3_per_s * 28.01 / 24.45
    lo, hi = scenarios.scenario(scenarios.CATALOG[devices.scenario[0]].name).room.co_mg_per_s
    # The CO rate (times the ceiling-layer factor 1-2.5) lies within the catalog's range.
    assert lo * 1.0 <= enrichment_times_rate_co[0] <= hi * 2.5


def test_faults_mark_their_devices_and_change_their_readings(mixed):
    faulty = mixed.filter(pl.col("fault").is_not_null())
    assert set(faulty["fault"].unique()) <= set(FAULTS)
    assert faulty["device_id"].n_unique() >= 3  # 20 % of 40 devices
    dropouts = faulty.filter(pl.col("fault") == "dropout")
    clean = mixed.filter(pl.col("fault").is_null())
    for name in CHANNEL_NAMES:
        assert clean[name].null_count() == 0
        if dropouts.height:
            assert dropouts[name].null_count() > 0


def test_stuck_and_drift_faults_by_construction():
    values = {name: np.zeros((2, 100), dtype=np.float32) for name in CHANNEL_NAMES}
    values["co_ppm"][:] = np.arange(100, dtype=np.float32)
    channel = float(CHANNEL_NAMES.index("co_ppm"))
    devices = sim.Devices(
        index=np.array([0, 1]),
        scenario=np.array([0, 0]),
        params={},
        fault=np.array([FAULTS.index("stuck"), FAULTS.index("drift")]),
        fault_params={
            "channel": np.array([channel, channel]),
            "start_s": np.array([40.0, 50.0]),
            "drift_span_share_per_s": np.array([0.0, 0.001]),
            "dropout_s": np.array([0.0, 0.0]),
            "spike_span_share": np.array([0.0, 0.0]),
            "spike_seed": np.array([0.0, 0.0]),
        },
    )
    sim.apply_faults(values, devices)
    assert np.all(values["co_ppm"][0, 40:] == 40.0)
    np.testing.assert_array_equal(values["co_ppm"][0, :40], np.arange(40))
    # A CO sensor's full scale is 1,000 ppm: 0.001 of it per second is 1 ppm/s on the reading.
    np.testing.assert_allclose(values["co_ppm"][1, 50:], np.arange(50, 100) + np.arange(1, 51))


def test_write_parquet_streams_files_with_constant_columns(tmp_path, monkeypatch):
    monkeypatch.setattr(sim, "CHUNK_ROWS", 2_000)
    spec = GenerationSpec(devices=30, duration_s=200, seed=6)  # 10 devices a chunk, 3 chunks
    seen: list[int] = []
    result = sim.write_parquet(
        spec,
        str(tmp_path / "out"),
        rows_per_file=4_000,
        constant_columns={"batch": "007"},
        progress=seen.append,
    )
    assert result.rows == spec.rows == sum(seen)
    assert [p.rsplit("/", 1)[-1] for p in result.files] == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert not list((tmp_path / "out").glob("*.partial"))
    written = pl.read_parquet(list(result.files))
    assert written["batch"].unique().to_list() == ["007"]
    assert written.drop("batch").equals(simulate(spec))


def test_spike_faults_hit_a_few_seconds_by_their_own_seed():
    seconds = 20_000
    channel = float(CHANNEL_NAMES.index("co_ppm"))

    def spiked(seed: float) -> np.ndarray:
        values = {name: np.zeros((1, seconds), dtype=np.float32) for name in CHANNEL_NAMES}
        devices = sim.Devices(
            index=np.array([0]),
            scenario=np.array([0]),
            params={},
            fault=np.array([FAULTS.index("spike")]),
            fault_params={
                "channel": np.array([channel]),
                "start_s": np.array([5_000.0]),
                "drift_span_share_per_s": np.array([0.0]),
                "dropout_s": np.array([0.0]),
                "spike_span_share": np.array([0.01]),
                "spike_seed": np.array([seed]),
            },
        )
        sim.apply_faults(values, devices)
        return values["co_ppm"][0]

    first, second = spiked(1.0), spiked(2.0)
    # 1 % of the CO sensor's 1,000 ppm, at about 0.5 % of the 15,000 seconds after the fault
    # starts (75 +- 5 sd of 8.6), and never before it.
    assert set(np.unique(first)) == {0.0, 10.0}
    assert np.count_nonzero(first[:5_000]) == 0
    assert 32 < np.count_nonzero(first) < 118
    assert not np.array_equal(first > 0, second > 0)
