"""Lake: readings per second of bronze -> silver -> gold, with the feature step against two
baselines measured in the same run on the same silver: the naive polars
`rolling_*_by(...).over("device_id")` (`reference_features`) and DuckDB SQL window functions.

The data is a cheap synthetic frame, not the simulator (whose physics would dominate the
set-up time and is measured by `bench generate`): `devices` x `seconds` readings at 1 Hz, eight
channels as seeded random walks around plausible indoor levels, with 0.1 % of the readings
dropped so silver has gaps to fill. Only the benchmark feature set is timed (8 channels x mean,
std, max over 30 s and 300 s, plus the 60 s difference), because that is what the baselines
compute. Silver is built (timed like every figure: the best of the repeats) and written to a
temporary Parquet file; each engine then runs in a fresh process that reads it (started with
ALLOCATOR_ENV), so each peak resident memory is that engine's own. The largest absolute and
relative difference of each baseline against `compute_features` is reported (relative:
|a - b| / max(|b|, 1e-6)); the outputs are float32, so the absolute one is at least a rounding
step of the largest channel (3e-5 for CO2 near 450 ppm), the relative one ~6e-8.

Those engines hold the whole silver and its features in memory. Gold's own polars step does
not: `firepipe_streamed` runs it (`stage_polars_features`) over silver written as the Iceberg
table the silver asset writes (partitioned by day(ts), sorted by device), reading, featurising
and writing Parquet one batch of whole devices (gold's default batch_rows) at a time. Its rate
includes the read and the write (not the Iceberg commit), and its peak memory is what "memory
bounded by streaming per device group" means in figures; its output is compared with the
in-memory fast path's.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.features.spec import (
    GROUP_ROWS,
    ID_COLUMNS,
    Difference,
    FeatureSpec,
    Rolling,
    benchmark_spec,
    compute_features,
    reference_features,
)
from firepipe.core.readings import CHANNEL_NAMES, SYNTHETIC_SCHEMA

DEVICES = 2_000  # issue 4: 2,000 devices x 5,000 s = 10 million readings
SECONDS = 5_000
DROPPED_SHARE = 0.001  # readings left out of bronze, so silver fills gap rows
START = datetime(2026, 1, 1, tzinfo=UTC)
# Typical indoor levels and a per-second random-walk step of each channel (orders of magnitude
# from the simulator's clean baselines; only the shape of the data matters for speed).
LEVELS = {
    "temperature_c": (21.0, 0.02),
    "humidity_pct": (45.0, 0.05),
    "smoke_obscuration_pct_per_m": (0.2, 0.002),
    "pm25_ugm3": (8.0, 0.1),
    "co_ppm": (1.0, 0.01),
    "co2_ppm": (450.0, 0.5),
    "voc_ppb": (150.0, 1.0),
    "h2_ppm": (0.5, 0.005),
}
ENGINES = ("firepipe", "naive_polars", "duckdb")


def bronze_frame(devices: int, seconds: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = devices * seconds
    ts_us = (int(START.timestamp()) + np.tile(np.arange(seconds), devices)) * 1_000_000
    channels = {}
    for name in CHANNEL_NAMES:
        level, step = LEVELS[name]
        walk = np.cumsum(rng.normal(0.0, step, (devices, seconds)), axis=1)
        channels[name] = np.abs(level + walk).reshape(-1).astype(np.float32)
    device = np.repeat(np.arange(devices), seconds)
    frame = pl.DataFrame(
        {
            "site_id": pl.Series(device // 20).cast(pl.String),
            "device_id": pl.Series(device).cast(pl.String).str.zfill(6),
            "ts": pl.Series(ts_us).cast(pl.Datetime("us", "UTC")),
            "scenario": "clean_baseline",
            "is_fire": False,
            "ignition_ts": pl.Series([None] * rows, dtype=pl.Datetime("us", "UTC")),
            "seconds_since_ignition": pl.Series([None] * rows, dtype=pl.Float32),
            **channels,
            "scenario_family": "clean",
            "fault": pl.Series([None] * rows, dtype=pl.String),
        }
    ).cast(SYNTHETIC_SCHEMA)  # type: ignore[arg-type]
    return frame.filter(pl.Series(rng.random(rows) >= DROPPED_SHARE))


def duckdb_features(silver: pl.DataFrame, spec: FeatureSpec) -> pl.DataFrame:
    """Rolling statistics and differences as DuckDB window functions over epoch microseconds:
    (t - w, t] is RANGE BETWEEN w_us - 1 PRECEDING AND CURRENT ROW."""
    import duckdb

    functions = {"mean": "avg", "std": "stddev_samp", "max": "max", "min": "min"}
    windows: dict[str, str] = {}
    columns = []
    for f in spec.features:
        if isinstance(f, Rolling):
            frame = f"RANGE BETWEEN {f.window_s * 1_000_000 - 1} PRECEDING AND CURRENT ROW"
            name = f"w{f.window_s}"
            windows[name] = frame
            expr = f'{functions[f.statistic]}(CAST("{f.channel}" AS DOUBLE)) OVER {name}'
        elif isinstance(f, Difference):
            lag_us = f.lag_s * 1_000_000
            name = f"lag{f.lag_s}"
            windows[name] = f"RANGE BETWEEN {lag_us} PRECEDING AND {lag_us} PRECEDING"
            expr = (
                f'CAST("{f.channel}" AS DOUBLE) - first(CAST("{f.channel}" AS DOUBLE)) OVER {name}'
            )
        else:
            raise ValueError(f"the DuckDB baseline computes rolling and difference only: {f}")
        columns.append(f'CAST({expr} AS FLOAT) AS "{f.name}"')
    named = ", ".join(
        f"{n} AS (PARTITION BY device_id ORDER BY ts_us {frame})" for n, frame in windows.items()
    )
    ids = ", ".join(ID_COLUMNS)
    sql = f"""
        SELECT {ids}, {", ".join(columns)}
        FROM (SELECT *, epoch_us(ts) AS ts_us FROM silver)
        WINDOW {named}
        QUALIFY NOT is_gap
        ORDER BY device_id, ts
    """
    with duckdb.connect() as db:
        db.register("silver", silver.to_arrow())
        out = db.sql(sql).pl()
    return out.with_columns(pl.col("ts").cast(silver.schema["ts"]))


def _engine(name: str) -> Any:
    return {
        "firepipe": compute_features,
        "naive_polars": reference_features,
        "duckdb": duckdb_features,
    }[name]


def _measure(engine: str, silver_path: str, out_path: str, options: BenchOptions) -> tuple:
    """In a fresh process: best seconds of one engine over silver, the rows, and the peak
    resident memory of the process (silver included) in MiB; the features go to `out_path`."""
    silver = pl.read_parquet(silver_path)
    spec = benchmark_spec()
    compute = _engine(engine)
    result: dict[str, pl.DataFrame] = {}

    def run() -> None:
        result.pop("features", None)  # the last run's output is freed first: one at a time
        result["features"] = compute(silver, spec)

    seconds = best_seconds(run, options.repeats, min_total_s=options.min_seconds, max_runs=5)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    result["features"].write_parquet(out_path)
    return seconds, result["features"].height, peak_mib


def _measure_streamed(lake_root: str, out_path: str, options: BenchOptions) -> tuple:
    """In a fresh process: best seconds of gold's polars step over the silver table in the
    local lake at `lake_root`, the rows, the peak resident memory in MiB and the batches; the
    last run's features go to `out_path`, sorted as the in-memory engines' are."""
    from firepipe.defs.features.assets import TABLE, silver_snapshot, stage_polars_features
    from firepipe.resources.lakehouse import LocalLakehouse

    lakehouse = LocalLakehouse(root=lake_root)
    snapshot_id, _ = silver_snapshot(lakehouse)  # the snapshot the asset would read
    spec = benchmark_spec()
    runs: list[str] = []
    staged: dict[str, tuple[list[str], int]] = {}

    def discard_last() -> None:
        if runs:
            lakehouse.discard_staged(runs[-1])

    def run() -> None:
        runs.append(lakehouse.staging_directory(TABLE, f"bench-{len(runs)}"))
        files, batches, _ = stage_polars_features(
            lakehouse, snapshot_id, spec, runs[-1], GROUP_ROWS
        )
        staged["last"] = (files, batches)

    seconds = best_seconds(
        run, options.repeats, discard_last, min_total_s=options.min_seconds, max_runs=5
    )
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    files, batches = staged["last"]
    features = pl.scan_parquet([f.removeprefix("file://") for f in files])
    rows = features.select(pl.len()).collect().item()
    features.sort("device_id", "ts").sink_parquet(out_path)
    discard_last()
    return seconds, rows, peak_mib, batches


def _silver(
    devices: int, seconds: int, silver_path: str, lake_root: str, options: BenchOptions
) -> tuple[int, int, float]:
    """In a fresh process: bronze -> silver timed as every figure is (best of the repeats),
    silver written to `silver_path` and, as the silver asset writes it, to the silver table of
    a local lake at `lake_root`; the bronze and silver rows and the best seconds."""
    from firepipe.core.lake.standardise import to_silver
    from firepipe.defs.features.assets import SILVER_TABLE
    from firepipe.defs.lake.assets import READINGS_PARTITIONING
    from firepipe.lib.lakehouse import tables
    from firepipe.resources.lakehouse import LocalLakehouse

    bronze = bronze_frame(devices, seconds)
    result: dict[str, pl.DataFrame] = {}

    def run() -> None:
        result.pop("silver", None)
        result["silver"] = to_silver({"synthetic": bronze}).readings

    elapsed = best_seconds(run, options.repeats, min_total_s=options.min_seconds, max_runs=5)
    result["silver"].write_parquet(silver_path)
    tables.write_table(
        LocalLakehouse(root=lake_root).catalog(),
        SILVER_TABLE,
        result["silver"],
        tables.parse_partitioning(READINGS_PARTITIONING),
    )
    return bronze.height, result["silver"].height, elapsed


# A first-touch page fault costs far more than the arithmetic on these machines, so both
# allocators keep the pages they freed instead of handing them back to the kernel: polars'
# jemalloc (this cut one feature run from 20 s to 13 s, ARCHITECTURE.md), and glibc malloc,
# which numpy uses, for blocks up to its 32 MB most (mallopt(3) M_MMAP_THRESHOLD) with no
# trimming (it cut the fast path's system time at 10 M readings from ~2.5 s to ~0.7 s).
# Every engine's process gets the same.
ALLOCATOR_ENV = {
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:-1,muzzy_decay_ms:-1",
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(64 * 1024**3),
}


def _in_fresh_process(fn, *args):  # type: ignore[no-untyped-def]
    """fn(*args) in a new interpreter started with ALLOCATOR_ENV (read when polars loads)."""
    saved = {name: os.environ.get(name) for name in ALLOCATOR_ENV}
    os.environ.update(ALLOCATOR_ENV)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def largest_differences(actual_path: str, expected_path: str) -> tuple[float, float]:
    """max |a - b| and max |a - b| / max(|b|, 1e-6) over every feature, a column at a time;
    a null on one side only counts as infinitely different."""
    worst_abs, worst_rel = 0.0, 0.0
    for name in benchmark_spec().names:
        a = pl.read_parquet(actual_path, columns=[name])[name].cast(pl.Float64).to_numpy()
        b = pl.read_parquet(expected_path, columns=[name])[name].cast(pl.Float64).to_numpy()
        if a.shape != b.shape or (np.isnan(a) != np.isnan(b)).any():
            return float("inf"), float("inf")
        diff = np.abs(a - b)
        worst_abs = max(worst_abs, float(np.nanmax(diff, initial=0.0)))
        rel = diff / np.maximum(np.abs(b), 1e-6)
        worst_rel = max(worst_rel, float(np.nanmax(rel, initial=0.0)))
    return worst_abs, worst_rel


def size(options: BenchOptions) -> tuple[int, int]:
    """Devices and seconds: as given, or about `rows` readings of `seconds` (default SECONDS)."""
    seconds = options.seconds or SECONDS
    devices = options.devices or (max(options.rows // seconds, 1) if options.rows else DEVICES)
    return devices, seconds


def run(options: BenchOptions) -> list[Figure]:
    devices, seconds = size(options)
    figures = []
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-lake-") as tmp:
        silver_path = str(Path(tmp) / "silver.parquet")
        lake_root = str(Path(tmp) / "lake")
        bronze_rows, silver_rows, silver_s = _in_fresh_process(
            _silver, devices, seconds, silver_path, lake_root, options
        )
        figures.append(Figure("lake", "silver_rows_per_s", bronze_rows / silver_s, "rows/s", None))
        measured = {}
        for engine in ENGINES:
            out = str(Path(tmp) / f"{engine}.parquet")
            measured[engine] = (
                *_in_fresh_process(_measure, engine, silver_path, out, options),
                out,
            )
        streamed_out = str(Path(tmp) / "firepipe_streamed.parquet")
        streamed_s, streamed_rows, streamed_peak, batches = _in_fresh_process(
            _measure_streamed, lake_root, streamed_out, options
        )
        fast_s, rows, fast_peak, fast_out = measured["firepipe"]
        naive_rate = rows / measured["naive_polars"][0]
        figures += [
            Figure("lake", "feature_rows_per_s", rows / fast_s, "rows/s", naive_rate),
            Figure("lake", "naive_polars_rows_per_s", naive_rate, "rows/s", None),
            Figure("lake", "duckdb_rows_per_s", rows / measured["duckdb"][0], "rows/s", None),
            Figure(
                "lake", "streamed_feature_rows_per_s", streamed_rows / streamed_s, "rows/s", None
            ),
            Figure("lake", "streamed_device_batches", float(batches), "batches", None),
        ]
        compared = {
            "naive_polars": measured["naive_polars"][3],
            "duckdb": measured["duckdb"][3],
            "streamed": streamed_out,
        }
        for engine, out in compared.items():
            worst_abs, worst_rel = largest_differences(out, fast_out)
            # In millionths, so the table's one decimal shows them (the goal: under 1).
            figures += [
                Figure("lake", f"max_abs_diff_vs_{engine}", worst_abs * 1e6, "1e-6", None, False),
                Figure("lake", f"max_rel_diff_vs_{engine}", worst_rel * 1e6, "ppm", None, False),
            ]
        for engine in ENGINES:
            figures.append(
                Figure(
                    "lake",
                    f"peak_memory_mib_{engine}",
                    measured[engine][2],
                    "MiB",
                    measured["naive_polars"][2] if engine == "firepipe" else None,
                    higher_is_better=False,
                )
            )
        figures.append(
            Figure(
                "lake",
                "peak_memory_mib_firepipe_streamed",
                streamed_peak,
                "MiB",
                fast_peak,
                higher_is_better=False,
            )
        )
        figures.append(Figure("lake", "readings", float(silver_rows), "rows", None))
    return figures
