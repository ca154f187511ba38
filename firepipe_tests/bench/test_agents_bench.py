"""`firepipe bench agents`: the two runs' readings, the fire devices and their known alarms, the
messages and their enqueue stamp, the options, and a short run against the three agent workers
(timings are printed, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from firepipe import settings
from firepipe.bench import BenchOptions, Figure, agents
from firepipe.bench.suites import SUITES
from firepipe.cli.bench import bench
from firepipe.core.agents import messages
from firepipe.core.serving.online import CHANNEL_INDEX
from firepipe.core.serving.scoring import ServingModel, load_serving_model
from firepipe.names import MODEL_NAME
from firepipe.resources.registry import LocalModelRegistry
from firepipe_tests.services.detector_sample import register_detector
from firepipe_tests.services.inference.serving_sample import FEATURES, saved_detector


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    folder = tmp_path_factory.mktemp("detector")
    saved_detector(folder)
    return load_serving_model(folder, "sample")


def test_the_runs_follow_each_other_in_time_and_every_fire_alarms_during_the_load(
    model: ServingModel,
) -> None:
    stream = agents.reading_stream(model, devices=6, seconds=60, seed=3)
    fires = sorted(d for d in stream.load["device_id"].unique() if d.startswith("fire-"))
    assert len(fires) == agents.MIN_FIRES
    for run in (stream.throughput, stream.load):
        # As gateways forward them: window by window of GATEWAY_S, each device's readings of
        # the window together, in time.
        keys = run.select(
            (
                pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%SZ").dt.epoch("s") // agents.GATEWAY_S
            ).alias("window"),
            "device_id",
            "ts",
        )
        assert keys.equals(keys.sort("window", "device_id", "ts"))
        assert keys["window"].n_unique() > 1
        assert run["device_id"].n_unique() == 6 + len(fires)
    assert stream.throughput["ts"].max() < stream.load["ts"].min()
    assert stream.throughput.height + stream.load.height <= (6 + len(fires)) * 120
    # Each fire device alarms once it burns, within the load, after its onset: quiet readings
    # up to a second before the alarm, the onsets spread over the load.
    assert sorted(stream.alarms) == fires
    alarms = [stream.alarms[d] for d in fires]
    assert alarms == sorted(alarms)
    assert len(set(alarms)) == len(alarms)
    for device, ts in stream.alarms.items():
        burning = stream.load.filter(pl.col("device_id") == device, pl.col("ts") <= ts)
        assert burning["smoke_obscuration_pct_per_m"][-1] > 1.0
        quiet = stream.throughput.filter(pl.col("device_id") == device)
        assert quiet["smoke_obscuration_pct_per_m"].max() == pytest.approx(0.05)
        assert quiet.height == 60


def test_messages_hold_500_readings_in_order_and_are_stamped_as_they_are_sent(
    model: ServingModel,
) -> None:
    stream = agents.reading_stream(model, devices=6, seconds=60, seed=3)
    bodies = agents.encode(stream.throughput, "t")
    assert len(bodies) == -(-stream.throughput.height // agents.BATCH)
    batches = [messages.decode_readings(body) for body in bodies]
    assert [b.batch_id for b in batches] == [f"t{k}" for k in range(len(bodies))]
    assert all(len(b.readings) == agents.BATCH for b in batches[:-1])
    sent = [
        pair for b in batches for pair in zip(b.readings.device_id, b.readings.ts_text, strict=True)
    ]
    assert sent == list(stream.throughput.select("device_id", "ts").iter_rows())
    # Only the channels a device has are sent: the fire devices' three.
    fire = next(
        b.readings.values[k]
        for b in batches
        for k, device in enumerate(b.readings.device_id)
        if device.startswith("fire-")
    )
    assert {name for name, k in CHANNEL_INDEX.items() if not np.isnan(fire[k])} == {
        "temperature_c",
        "smoke_obscuration_pct_per_m",
        "co_ppm",
    }
    assert batches[0].sent_at is None

    stamped = messages.decode_readings(agents.stamped(bodies[0], 1_796_000_000.25))
    assert stamped.sent_at == 1_796_000_000.25
    assert stamped.readings.device_id == batches[0].readings.device_id
    assert stamped.readings.ts_us.tolist() == batches[0].readings.ts_us.tolist()
    assert np.array_equal(stamped.readings.values, batches[0].readings.values, equal_nan=True)
    with pytest.raises(ValueError, match="without sent_at"):
        agents.stamped(agents.stamped(bodies[0], 1.0), 2.0)


def test_latency_percentiles_are_in_milliseconds() -> None:
    p50, p99 = agents.percentiles_ms([0.1 * k for k in range(1, 101)])
    assert p50 == pytest.approx(5050.0)
    assert p99 == pytest.approx(9901.0)
    with pytest.raises(RuntimeError, match="no alarm latency"):
        agents.percentiles_ms([])


def test_a_model_is_a_home_or_a_version_of_the_fire_detector(
    firepipe_home: Path, tmp_path: Path
) -> None:
    home = tmp_path / "bench-home"
    with pytest.raises(ValueError, match="a firepipe home or models:/"):
        agents.champion_home("models:/another-model/1", home, tmp_path)
    with pytest.raises(ValueError, match="name the version"):
        agents.champion_home(f"models:/{MODEL_NAME}@challenger", home, tmp_path)
    with pytest.raises(ValueError, match="FIREPIPE_HOME has no registry"):
        agents.champion_home(f"models:/{MODEL_NAME}/1", home, tmp_path)


def test_the_cli_passes_the_agents_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchOptions] = []

    def fake(options: BenchOptions) -> list[Figure]:
        seen.append(options)
        return [Figure("agents", "readings_per_s", 1_000.0, "readings/s", 4_000.0)]

    monkeypatch.setitem(SUITES, "agents", fake)
    arguments = ["agents", "--json", "--devices", "50", "--seconds", "90", "--rate", "800"]
    result = CliRunner().invoke(bench, [*arguments, "--model", "/some/home"])
    assert result.exit_code == 0, result.output
    [options] = seen
    assert (options.devices, options.seconds, options.rate) == (50, 90, 800.0)
    assert options.model == "/some/home"
    assert json.loads(result.output)["ratio"] == 0.25


def register_champion(home: Path, folder: Path) -> None:
    """The sample detector as `home`'s champion."""
    registry = LocalModelRegistry(root=str(settings.LocalPaths(home=home).mlflow))
    saved_detector(folder)
    example = pl.DataFrame({name: [1.0] for name in FEATURES})
    version = register_detector(registry, folder, MODEL_NAME, example).version
    registry.promote(MODEL_NAME, version, "test")


@pytest.mark.slow
def test_bench_agents_prints_its_figures(firepipe_home: Path, tmp_path: Path) -> None:
    register_champion(firepipe_home, tmp_path / "detector")
    options = BenchOptions(devices=20, seconds=60, model=str(firepipe_home), min_seconds=0)
    figures = {f.name: f for f in agents.run(options)}
    for figure in figures.values():
        print(json.dumps(figure.as_json()))  # shown with pytest -s
    assert set(figures) == {
        "readings_per_s",
        "load_readings_per_s",
        "alarm_latency_p50_ms",
        "alarm_latency_p99_ms",
    }
    for figure in figures.values():
        assert figure.value > 0, figure
        if figure.baseline is not None:
            assert figure.baseline > 0, figure
            expected = figure.value / figure.baseline
            assert figure.ratio == pytest.approx(
                expected if figure.higher_is_better else 1 / expected
            )
    assert figures["load_readings_per_s"].baseline is None
    p50, p99 = figures["alarm_latency_p50_ms"], figures["alarm_latency_p99_ms"]
    assert p99.value >= p50.value
    assert p99.baseline is not None
    assert p50.baseline is not None
    assert p99.baseline >= p50.baseline
    # The load ran at 80% of what the agents measured, the rate held up to scheduling slack.
    asked = agents.LOAD_SHARE * figures["readings_per_s"].value
    assert figures["load_readings_per_s"].value <= asked * 1.05
