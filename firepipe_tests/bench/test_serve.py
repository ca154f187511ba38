"""`firepipe bench serve`: the readings stream, the latency summary, the options, and a short
run against a real `firepipe serve` and MLflow server (timings are printed, never asserted)."""

import itertools
import json
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from firepipe.bench import BenchOptions, Figure, serve
from firepipe.bench.suites import SUITES
from firepipe.cli.bench import bench
from firepipe.core.features.spec import default_spec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training.models import Detector

FEATURES = ("temperature_c__diff_60s", "co_ppm__rise_per_min_30s", "smoke_heat_lag_300s")


def spec_detector() -> Detector:
    spec = default_spec()
    return Detector("logistic", FEATURES, spec.hash(), {}, payload="{}", feature_spec=spec)


def test_the_stream_sends_each_devices_readings_in_order_with_their_features() -> None:
    detector = spec_detector()
    stream = serve.reading_stream(detector, devices=6, seed=3)
    document = serve.stream_document(stream, detector)
    assert document["channels"] == list(CHANNEL_NAMES)
    assert document["features"] == list(FEATURES)
    devices = document["devices"]
    assert len(devices) == 6
    assert len({d["id"] for d in devices}) == 6
    for device in devices:
        offsets = device["offsets"]
        assert offsets[0] == 0
        assert all(b > a for a, b in itertools.pairwise(offsets))  # 1 Hz, in order
        assert offsets[-1] < document["period_s"]
        assert len(device["readings"]) == len(device["features"]) == len(offsets)
        assert all(len(row) == len(FEATURES) for row in device["features"])
        # Plain JSON: a missing value is null, never NaN (which JSON cannot carry).
        json.dumps(device, allow_nan=False)
    # The features are gold's for the very reading: the stream rows joined on device and ts.
    first = stream.filter(pl.col("device_id") == devices[0]["id"]).sort("ts")
    expected = first.select(FEATURES).row(5)
    got = devices[0]["features"][5]
    np.testing.assert_allclose(
        np.array(got, dtype=float), np.array(expected, dtype=float), equal_nan=True
    )


def test_the_summary_drops_the_warm_up_and_refuses_failed_requests() -> None:
    # 10 s at 100 requests/s: latency 50 ms in the first 2 s, then 1-100 ms evenly; answered
    # at half the rate asked after the warm-up (the server falls behind).
    start = 1_000.0
    warm = [[start + i / 100, 50.0, 1, start + i / 100] for i in range(200)]
    steady = [[start + 2 + i / 100, 1.0 + (i % 100), 1, start + 2 + i / 50] for i in range(800)]
    summary = serve.summarise(warm + steady, warm_up_s=2, target="t")
    assert summary["p50_ms"] == pytest.approx(
        np.percentile([1.0 + i % 100 for i in range(800)], 50)
    )
    assert summary["p99_ms"] == pytest.approx(99.01, abs=0.01)
    assert summary["rps"] == pytest.approx(800 / 15.98)
    failed = [*warm, *steady[:-1], [start + 9.99, 1.0, 0, start + 18]]
    errors = {"HTTP 400 too late": 1, "HTTP 429": 0}
    with pytest.raises(RuntimeError, match=r"1 of 800 requests failed.*\(1 times\): HTTP 400 too"):
        serve.summarise(failed, warm_up_s=2, target="t", errors=errors)
    with pytest.raises(RuntimeError, match="sent no request"):
        serve.summarise([], warm_up_s=2, target="t")


def test_the_cli_passes_the_serve_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchOptions] = []

    def fake(options: BenchOptions) -> list[Figure]:
        seen.append(options)
        return [Figure("serve", "p99_ms", 1.0, "ms", 20.0, False)]

    monkeypatch.setitem(SUITES, "serve", fake)
    result = CliRunner().invoke(
        bench,
        [
            *("serve", "--json", "--rate", "500", "--seconds", "12", "--devices", "40"),
            *("--model", "models:/firepipe-fire-detector@champion"),
        ],
    )
    assert result.exit_code == 0, result.output
    [options] = seen
    assert (options.rate, options.seconds, options.devices) == (500.0, 12, 40)
    assert options.model == "models:/firepipe-fire-detector@champion"
    assert json.loads(result.output)["ratio"] == 20.0


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "seconds"), [(100.0, 8)])
def test_bench_serve_prints_its_figures(rate: float, seconds: int) -> None:
    figures = {f.name: f for f in serve.run(BenchOptions(rate=rate, seconds=seconds, devices=40))}
    assert set(figures) == {"p99_ms", "p50_ms", "rps_held", "max_rps", "score_us_per_row"}
    for figure in figures.values():
        assert figure.value > 0, figure
        assert figure.baseline is not None, figure
        assert figure.baseline > 0, figure
        expected = figure.value / figure.baseline
        if not figure.higher_is_better:
            expected = figure.baseline / figure.value
        assert figure.ratio == pytest.approx(expected)
    # Latencies: lower is better, so the ratio is MLflow's over firepipe's.
    assert figures["p99_ms"].ratio == pytest.approx(
        figures["p99_ms"].baseline / figures["p99_ms"].value
    )
    assert figures["p99_ms"].value >= figures["p50_ms"].value
    assert figures["p99_ms"].baseline >= figures["p50_ms"].baseline
    # The open loop held the rate asked of firepipe (within a tolerant margin: shared cores).
    assert figures["rps_held"].value == pytest.approx(rate, rel=0.3)
    # The load ran in locust's own process: gevent never patched this one.
    assert "gevent" not in sys.modules
