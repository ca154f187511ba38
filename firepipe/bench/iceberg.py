"""Lake storage: rows/s written and read through firepipe's Iceberg tables, against polars
writing and reading the same frame as one plain Parquet file (the floor of any table format).

`commits`: the time of a chunk commit through the extraction sinks after many commits, against
the first commits of the same run, without and with table maintenance run in between (each
commit re-reads every manifest of the table, so without maintenance it grows slower)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.ingestion.extraction import (
    DEAD_LETTER_SCHEMA,
    FIELD_READING_SCHEMA,
    KEY_ID,
    KEY_UPDATED_AT,
    Chunk,
    Watermark,
)
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.lib.extraction_sinks import (
    IcebergChunkSink,
    IcebergDeadLetterSink,
)
from firepipe.lib.lakehouse import maintenance, tables
from firepipe.resources.lakehouse import LocalLakehouse

DEFAULT_ROWS = 2_000_000
DURATION_S = 1_000
COMMITS = 100  # chunk commits before maintenance
WINDOW = 10  # commits timed at the start and at the end
CHUNK_ROWS = 100
T0 = datetime(2026, 1, 1, tzinfo=UTC)


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


def chunk(index: int, rows: int) -> Chunk:
    """The index-th chunk of an extraction: `rows` readings with keys after the previous one's,
    one a second, ten devices, and no dead letters."""
    ids = pl.int_range(index * rows + 1, (index + 1) * rows + 1, eager=True, dtype=pl.Int64)
    key = pl.col(KEY_ID)
    at = pl.lit(T0) + pl.duration(seconds=key)
    measured = [n for n, dtype in FIELD_READING_SCHEMA.items() if dtype == pl.Float32]
    readings = (
        pl.DataFrame({KEY_ID: ids})
        .with_columns(
            pl.lit("site-1").alias("site_id"),
            pl.format("dev-{}", key % 10).alias("device_id"),
            at.alias("ts"),
            at.alias(KEY_UPDATED_AT),
            *((key % 97).alias(name) for name in measured),
        )
        .select(FIELD_READING_SCHEMA.keys())
        .cast(pl.Schema(FIELD_READING_SCHEMA))
    )
    first, last = readings.row(0, named=True), readings.row(-1, named=True)
    return Chunk(
        Watermark(first[KEY_UPDATED_AT], first[KEY_ID]),
        Watermark(last[KEY_UPDATED_AT], last[KEY_ID]),
        readings,
        pl.DataFrame(schema=DEAD_LETTER_SCHEMA),
    )


def timed_commits(
    sink: IcebergChunkSink, dead: IcebergDeadLetterSink, chunks: range, rows: int
) -> list[float]:
    """Seconds of each chunk commit (readings, then dead letters, as `extract` writes a chunk)."""
    seconds = []
    for index in chunks:
        next_chunk = chunk(index, rows)
        start = time.perf_counter()
        sink.write_chunk(next_chunk)
        dead.write_dead_letters(next_chunk)
        seconds.append(time.perf_counter() - start)
    return seconds


def metadata_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("metadata/*") if p.is_file())


def run_commits(options: BenchOptions) -> list[Figure]:
    """One lake: commits 1..WINDOW, on to COMMITS, one maintenance run, WINDOW more commits."""
    rows = options.rows or CHUNK_ROWS
    root = Path(tempfile.mkdtemp(prefix="firepipe-bench-commits-"))
    try:
        lakehouse = LocalLakehouse(root=str(root))
        sink, dead = IcebergChunkSink(lakehouse), IcebergDeadLetterSink(lakehouse)
        sink.ensure_table()
        dead.ensure_table()
        seconds = timed_commits(sink, dead, range(COMMITS), rows)
        metadata_before = metadata_bytes(root)
        retention = maintenance.Retention(max_age=timedelta(0), keep_last=10)
        start = time.perf_counter()
        maintenance.maintain(lakehouse.catalog(), lakehouse.list_tables(), retention)
        maintain_s = time.perf_counter() - start
        after = timed_commits(sink, dead, range(COMMITS, COMMITS + WINDOW), rows)
        metadata_after = metadata_bytes(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first = statistics.median(seconds[:WINDOW])
    late = statistics.median(seconds[-WINDOW:])
    # Against commits 1..WINDOW of the same lake: a ratio near 1 is a commit time back to flat.
    return [
        Figure(
            "commits",
            f"chunk_commit_s_{COMMITS - WINDOW + 1}_to_{COMMITS}",
            late,
            "s",
            first,
            higher_is_better=False,
        ),
        Figure(
            "commits",
            f"chunk_commit_s_{COMMITS + 1}_to_{COMMITS + WINDOW}_after_maintenance",
            statistics.median(after),
            "s",
            first,
            higher_is_better=False,
        ),
        Figure("commits", "maintenance_s", maintain_s, "s", None, higher_is_better=False),
        Figure(
            "commits",
            "metadata_mb_after_maintenance",
            metadata_after / 1e6,
            "MB",
            metadata_before / 1e6,
            higher_is_better=False,
        ),
    ]
