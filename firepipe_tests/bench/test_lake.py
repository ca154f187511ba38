"""`firepipe bench lake` at a tiny size, and its DuckDB baseline against the reference."""

import os

import numpy as np
import polars as pl
import pytest

from firepipe.bench import BenchOptions
from firepipe.bench.lake import (
    ALLOCATOR_ENV,
    _in_fresh_process,
    bronze_frame,
    duckdb_features,
    run,
    size,
)
from firepipe.core.features.spec import benchmark_spec, reference_features
from firepipe_tests.core.features.feature_sample import silver_sample


def test_duckdb_baseline_computes_the_benchmark_features():
    sample = silver_sample(devices=4, seconds=900, seed=1)
    spec = benchmark_spec()
    got = duckdb_features(sample, spec)
    expected = reference_features(sample, spec)
    assert got.columns == expected.columns
    assert got.select("device_id", "ts").equals(expected.select("device_id", "ts"))
    for name in spec.names:
        np.testing.assert_allclose(
            got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-6, atol=1e-6, err_msg=name
        )


def test_bronze_frame_has_the_asked_size_less_the_dropped_share():
    bronze = bronze_frame(10, 500)
    assert 4_950 <= bronze.height < 5_000  # 0.1 % dropped
    assert bronze.select(pl.col("device_id").n_unique()).item() == 10


def test_size_takes_rows_over_the_asked_seconds():
    assert size(BenchOptions()) == (2_000, 5_000)
    assert size(BenchOptions(rows=1_000_000)) == (200, 5_000)
    assert size(BenchOptions(rows=1_000_000, seconds=1_000)) == (1_000, 1_000)
    assert size(BenchOptions(rows=10, seconds=1_000)) == (1, 1_000)
    assert size(BenchOptions(rows=1_000_000, devices=3, seconds=7)) == (3, 7)


@pytest.mark.slow
def test_bench_lake_reports_rates_differences_and_memory():
    figures = {
        f.name: f for f in run(BenchOptions(devices=4, seconds=400, repeats=1, min_seconds=0))
    }
    assert figures["readings"].value == 1_600  # silver fills the dropped seconds as gap rows
    for name in ("silver_rows_per_s", "feature_rows_per_s", "naive_polars_rows_per_s"):
        assert figures[name].value > 0
    assert figures["feature_rows_per_s"].baseline == figures["naive_polars_rows_per_s"].value
    for engine in ("naive_polars", "duckdb", "streamed"):
        assert figures[f"max_rel_diff_vs_{engine}"].value < 1.0  # ppm
        # Absolute: one float32 rounding step of CO2 near 450 ppm is 3e-5.
        assert figures[f"max_abs_diff_vs_{engine}"].value < 100.0  # millionths
    for engine in ("naive_polars", "duckdb", "firepipe_streamed"):
        assert figures[f"peak_memory_mib_{engine}"].value > 50
    # Gold's step over the lake's silver table: one batch at this size, all of its rows.
    assert figures["streamed_device_batches"].value == 1
    assert figures["streamed_feature_rows_per_s"].value > 0
    assert figures["peak_memory_mib_firepipe_streamed"].baseline == (
        figures["peak_memory_mib_firepipe"].value
    )


def _environment(names: tuple[str, ...]) -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in names}


@pytest.mark.slow
def test_engines_run_with_the_allocator_settings_and_leave_ours_alone(monkeypatch):
    for name in ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "123")  # one of ours, to be restored
    seen = _in_fresh_process(_environment, tuple(ALLOCATOR_ENV))
    jemalloc = seen.pop("_RJEM_MALLOC_CONF")
    # polars puts its own defaults in front when it loads; jemalloc lets later options win.
    assert jemalloc is not None
    assert jemalloc.endswith(ALLOCATOR_ENV["_RJEM_MALLOC_CONF"])
    assert seen == {k: v for k, v in ALLOCATOR_ENV.items() if k != "_RJEM_MALLOC_CONF"}
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "123"
    assert "_RJEM_MALLOC_CONF" not in os.environ
