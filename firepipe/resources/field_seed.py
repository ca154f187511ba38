"""Seeding the local field warehouse (DuckDB): the NIST tests replayed as field devices and a
small synthetic field stream, as field rows with (updated_at, id) keys."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from firepipe.core import nist
from firepipe.core.extraction import RAW_FIELD_SCHEMA
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.resources.warehouse import COLUMNS, FIELD_TABLE_COLUMNS, checked_table

# A small synthetic field stream beside the NIST replays: 8 devices x 5 minutes (the default
# catalog mix), enough to exercise several chunks without slowing `make run`.
FIELD_STREAM_SPEC = GenerationSpec(devices=8, duration_s=300, sites=2, seed=4)


def field_rows(readings: pl.DataFrame, first_id: int, updated_at: datetime) -> pl.DataFrame:
    """Readings (READING_SCHEMA) as the field table holds them: ids from `first_id`, one
    `updated_at` for the load, the payload as text (ts in ISO 8601 UTC)."""
    if updated_at.tzinfo is None:
        raise ValueError(f"updated_at must be timezone-aware, got {updated_at}")
    return readings.select(
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_id).alias("id"),
        pl.lit(updated_at).cast(RAW_FIELD_SCHEMA["updated_at"]).alias("updated_at"),
        "site_id",
        "device_id",
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").alias("ts"),
        *[pl.col(c).cast(pl.String) for c in CHANNEL_NAMES],
    )


def append_field_rows(path: str, table: str, rows: pl.DataFrame) -> int:
    """Append rows in RAW_FIELD_SCHEMA to a DuckDB field table, creating it if missing."""
    import duckdb

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    staged = rows.select(COLUMNS).with_columns(
        pl.col("updated_at").dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    )
    with duckdb.connect(path) as connection:
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {checked_table(table)} ({FIELD_TABLE_COLUMNS})"
        )
        connection.register("staged_rows", staged.to_arrow())
        connection.execute(f"INSERT INTO {checked_table(table)} SELECT * FROM staged_rows")
    return staged.height


def next_id(path: str, table: str) -> int:
    """The id after the largest in the table (1 for a missing or empty table)."""
    import duckdb

    if not Path(path).exists():
        return 1
    with duckdb.connect(path) as connection:
        exists = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
            [checked_table(table).split(".")[-1]],
        ).fetchone()
        if not exists or not exists[0]:
            return 1
        largest = connection.execute(f"SELECT max(id) FROM {checked_table(table)}").fetchone()
    return int(largest[0]) + 1 if largest and largest[0] is not None else 1


def seed_local_warehouse(
    path: str,
    table: str,
    nist_folder: Path,
    *,
    stream: GenerationSpec = FIELD_STREAM_SPEC,
    loaded_at: datetime | None = None,
) -> int:
    """Fill an empty local field table with the NIST tests replayed as field devices, then a
    synthetic field stream (one second later, so it sorts after them). A table that already
    holds rows is left alone. Returns the rows added."""
    if next_id(path, table) > 1:
        return 0
    loaded_at = loaded_at or datetime.now(UTC)
    replay = nist.readings(nist.read_tests(nist_folder))
    added = append_field_rows(path, table, field_rows(replay, 1, loaded_at))
    synthetic = simulate(stream)
    later = loaded_at + timedelta(seconds=1)
    return added + append_field_rows(path, table, field_rows(synthetic, added + 1, later))
