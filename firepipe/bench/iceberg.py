"""Lake storage: rows/s written and read through firepipe's Iceberg tables, against polars
writing and reading the same frame as one plain Parquet file (the floor of any table format)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse

DEFAULT_ROWS = 2_000_000
DURATION_S = 1_000


def readings(rows: int) -> pl.DataFrame:
    devices = max(rows // DURATION_S, 1)
    return simulate(GenerationSpec(devices=devices, duration_s=DURATION_S, seed=7)).head(rows)


def run(options: BenchOptions) -> list[Figure]:
    frame = readings(options.rows or DEFAULT_ROWS)
    n = frame.height
    root = Path(tempfile.mkdtemp(prefix="firepipe-bench-"))
    try:
        catalog = LocalLakehouse(root=str(root / "lake")).catalog()
        parquet = root / "baseline.parquet"
        identifier = "bronze.bench_readings"

        def drop() -> None:
            if catalog.table_exists(identifier):
                catalog.purge_table(identifier)

        def timed(fn: Callable[[], object], setup: Callable[[], object] = lambda: None) -> float:
            return best_seconds(fn, options.repeats, setup, min_total_s=options.min_seconds)

        iceberg_write = timed(lambda: tables.write_table(catalog, identifier, frame), setup=drop)
        parquet_write = timed(lambda: frame.write_parquet(parquet))
        iceberg_read = timed(lambda: tables.read_table(catalog, identifier))
        parquet_read = timed(lambda: pl.read_parquet(parquet))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return [
        Figure("iceberg", "write_rows_per_s", n / iceberg_write, "rows/s", n / parquet_write),
        Figure("iceberg", "read_rows_per_s", n / iceberg_read, "rows/s", n / parquet_read),
    ]
