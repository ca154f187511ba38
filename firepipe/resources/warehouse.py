"""The warehouse source port: field readings in a warehouse table, read incrementally.

`DuckDBWarehouseSource` reads a local DuckDB file (seeded by `field_seed.seed_local_warehouse`);
`snowflake_warehouse.SnowflakeWarehouseSource` (its own module: dagster-snowflake is in the aws
extra only) reads Snowflake through dagster-snowflake's `SnowflakeResource`, whose
credentials (password or key pair) the caller passes through `dg.EnvVar`. Both run the same
keyset query with bind parameters: rows strictly after (updated_at, id), ordered by it, limited.
The row-value test is spelled out (`a > x OR (a = x AND b > y)`) so that every engine plans it.

The field table (FIELD_TABLE_COLUMNS) keeps the device payload as the text that arrived;
firepipe.core.extraction parses it and dead-letters what does not parse.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.extraction import RAW_FIELD_SCHEMA, TransientError, Watermark

COLUMNS: tuple[str, ...] = tuple(RAW_FIELD_SCHEMA)
FIELD_TABLE_COLUMNS = ", ".join(
    ["id BIGINT NOT NULL", "updated_at TIMESTAMP NOT NULL"]  # updated_at is UTC, no zone
    + [f"{c} VARCHAR" for c in COLUMNS[2:]]
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}$")


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
    return _typed(frame)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """A chunk in COLUMNS order, its naive UTC updated_at made explicit, in RAW_FIELD_SCHEMA."""
    frame = frame.select(list(COLUMNS)).with_columns(
        pl.col("updated_at").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    return frame.cast(RAW_FIELD_SCHEMA)  # type: ignore[arg-type]


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
                arrow = connection.sql(query, params=params).to_arrow_table()
        except duckdb.IOException as error:  # the file is locked by a writer (seeding)
            raise TransientError(f"DuckDB {self.path}: {error}") from error
        return _typed(pl.DataFrame(arrow))

    def describe(self) -> str:
        return f"DuckDB {self.path} table {self.table}"
