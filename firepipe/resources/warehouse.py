"""The warehouse source port: field readings in a warehouse table, read incrementally.

`DuckDBWarehouseSource` reads a local DuckDB file (seeded by `seed_local_warehouse`);
`SnowflakeWarehouseSource` reads Snowflake through dagster-snowflake's `SnowflakeResource`, whose
credentials (password or key pair) the caller passes through `dg.EnvVar`. Both run the same
keyset query with bind parameters: rows strictly after (updated_at, id), ordered by it, limited.
The row-value test is spelled out (`a > x OR (a = x AND b > y)`) so that every engine plans it.

The field table (FIELD_TABLE_COLUMNS) keeps the device payload as the text that arrived;
firepipe.core.extraction parses it and dead-letters what does not parse.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from dagster_snowflake import SnowflakeResource
from pydantic import Field

from firepipe.core import nist
from firepipe.core.extraction import RAW_FIELD_SCHEMA, TransientError, Watermark
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.simulator import GenerationSpec, simulate

COLUMNS: tuple[str, ...] = tuple(RAW_FIELD_SCHEMA)
FIELD_TABLE_COLUMNS = ", ".join(
    ["id BIGINT NOT NULL", "updated_at TIMESTAMP NOT NULL"]  # updated_at is UTC, no zone
    + [f"{c} VARCHAR" for c in COLUMNS[2:]]
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")
# A small synthetic field stream beside the NIST replays: 8 devices x 5 minutes (the default
# catalog mix), enough to exercise several chunks without slowing `make run`.
FIELD_STREAM_SPEC = GenerationSpec(devices=8, duration_s=300, sites=2, seed=4)


def checked_table(name: str) -> str:
    """A table name to place in SQL (names cannot be bound): plain identifiers only."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain [schema.]table name: {name!r}")
    return name


def keyset_query(table: str, first: bool, marker: str) -> str:
    """The chunk query; `marker(name)` spells a bind parameter in the driver's style."""
    where = (
        ""
        if first
        else (
            f"WHERE updated_at > {marker.format('u')} "
            f"OR (updated_at = {marker.format('u')} AND id > {marker.format('i')}) "
        )
    )
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {checked_table(table)} {where}"
        f"ORDER BY updated_at, id LIMIT {marker.format('n')}"
    )


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def rows_to_frame(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Driver rows in COLUMNS order -> RAW_FIELD_SCHEMA (updated_at read as UTC)."""
    frame = pl.DataFrame(
        [list(r) for r in rows],
        schema={**RAW_FIELD_SCHEMA, "updated_at": pl.Datetime("us")},
        orient="row",
    )
    return frame.with_columns(pl.col("updated_at").dt.replace_time_zone("UTC"))


class WarehouseSource(dg.ConfigurableResource, ABC):
    """A warehouse table of field readings (firepipe.core.extraction.ChunkSource)."""

    table: str = Field(description="the field readings table, [schema.]name")

    @abstractmethod
    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        """At most `limit` rows after `after` by (updated_at, id), in RAW_FIELD_SCHEMA."""

    @abstractmethod
    def describe(self) -> str:
        """Where the rows come from, for people."""


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class DuckDBWarehouseSource(WarehouseSource):
    """A local DuckDB file, opened read-only per chunk."""

    path: str = Field(description="the DuckDB database file")

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        import duckdb

        _check_limit(limit)
        if not Path(self.path).exists():
            raise FileNotFoundError(f"no DuckDB warehouse at {self.path}: seed it first")
        params: dict[str, Any] = {"n": limit}
        if after is not None:
            params |= {"u": _naive_utc(after.updated_at), "i": after.id}
        query = keyset_query(self.table, after is None, "${}")
        try:
            with duckdb.connect(self.path, read_only=True) as connection:
                rows = connection.execute(query, params).fetchall()
        except duckdb.IOException as error:  # the file is locked by a writer (seeding)
            raise TransientError(f"DuckDB {self.path}: {error}") from error
        return rows_to_frame(rows)

    def describe(self) -> str:
        return f"DuckDB {self.path} table {self.table}"


class SnowflakeWarehouseSource(WarehouseSource):
    """A Snowflake table through dagster-snowflake's SnowflakeResource."""

    snowflake: SnowflakeResource

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        from snowflake.connector.errors import OperationalError

        _check_limit(limit)
        params: dict[str, Any] = {"n": limit}
        if after is not None:
            params |= {"u": _naive_utc(after.updated_at), "i": after.id}
        # The connector's default paramstyle (pyformat) binds %(name)s on the client, escaped.
        query = keyset_query(self.table, after is None, "%({})s")
        try:
            with self.snowflake.get_connection() as connection:
                cursor = connection.cursor()
                cursor.execute(query, params)
                rows = cursor.fetchall()
        except OperationalError as error:  # network, login timeout, warehouse suspended
            raise TransientError(f"Snowflake {self.table}: {error}") from error
        return rows_to_frame(rows)

    def describe(self) -> str:
        return f"Snowflake table {self.table}"


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
