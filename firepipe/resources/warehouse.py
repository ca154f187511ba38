"""The warehouse source port: field readings in a warehouse table, read incrementally.

`DuckDBWarehouseSource` reads a local DuckDB file (seeded by `lib.field_seed.seed_local_warehouse`);
`SnowflakeWarehouseSource` reads Snowflake through dagster-snowflake's `SnowflakeResource` (in
the aws extra, imported only for typing here), whose credentials (password or key pair) the
caller passes through `dg.EnvVar`. Both run the same
keyset query with bind parameters: rows strictly after (updated_at, id), ordered by it, limited.
The row-value test is spelled out (`a > x OR (a = x AND b > y)`) so that every engine plans it.

`has_rows_after` (the sensor's probe) asks for the table's MAX(updated_at) and MAX(id) first:
Snowflake answers those from micro-partition metadata without resuming a warehouse, and they
settle the question unless the newest rows share the watermark's time; only then does the probe
run the keyset query.

`daily_counts` (the reconciliation check's side of the source) counts rows per UTC day of
updated_at up to a watermark, in the same shared SQL; see firepipe.core.ingestion.reconciliation
for why updated_at and not the reading's time.

The field table (FIELD_TABLE_COLUMNS) keeps the device payload as the text that arrived;
firepipe.core.ingestion.extraction parses it and dead-letters what does not parse.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.ingestion.extraction import (
    RAW_FIELD_SCHEMA,
    ChunkSource,
    TransientError,
    Watermark,
)
from firepipe.core.ingestion.reconciliation import DAILY_COUNT_SCHEMA

if TYPE_CHECKING:
    from dagster_snowflake import SnowflakeResource

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


def daily_counts_query(table: str, since: bool, marker: str) -> str:
    """Rows per day of updated_at (naive UTC) at or before the key (u, i), from day s on."""
    where = (
        f"WHERE (updated_at < {marker.format('u')} "
        f"OR (updated_at = {marker.format('u')} AND id <= {marker.format('i')}))"
    )
    if since:
        where += f" AND updated_at >= {marker.format('s')}"
    return (
        f"SELECT CAST(updated_at AS DATE) AS updated_day, COUNT(*) AS n "
        f"FROM {checked_table(table)} {where} GROUP BY CAST(updated_at AS DATE) ORDER BY 1"
    )


def _count_params(through: Watermark, since: date | None) -> dict[str, Any]:
    params: dict[str, Any] = {"u": _naive_utc(through.updated_at), "i": through.id}
    if since is not None:
        params["s"] = datetime(since.year, since.month, since.day)  # midnight, naive UTC
    return params


def counts_to_frame(rows: Sequence[Sequence[Any]]) -> pl.DataFrame:
    """Driver rows (day, count) -> DAILY_COUNT_SCHEMA."""
    return pl.DataFrame([(r[0], int(r[1])) for r in rows], schema=DAILY_COUNT_SCHEMA, orient="row")


def maxima_query(table: str) -> str:
    return f"SELECT MAX(updated_at), MAX(id) FROM {checked_table(table)}"


def rows_after_by_maxima(
    after: Watermark | None, newest: datetime | None, largest_id: int | None
) -> bool | None:
    """Whether the table holds keys past `after`, when its MAX(updated_at) and MAX(id) settle
    it; None when they do not (the newest time is the watermark's and a larger id exists,
    which may sit at an older time)."""
    if newest is None or largest_id is None:
        return False  # an empty table
    if after is None:
        return True
    newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)  # naive is UTC
    if newest != after.updated_at:
        return newest > after.updated_at
    return None if largest_id > after.id else False


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


class WarehouseSession(ChunkSource, Protocol):
    def maxima(self) -> tuple[datetime | None, int | None]:
        """The table's MAX(updated_at) and MAX(id); None for an empty table."""
        ...

    def daily_counts(self, through: Watermark, since: date | None = None) -> pl.DataFrame:
        """Rows per UTC day of updated_at at or before `through`, in DAILY_COUNT_SCHEMA."""
        ...


class WarehouseSource(dg.ConfigurableResource, ABC):
    """A warehouse table of field readings (firepipe.core.extraction.ChunkSource)."""

    table: str = Field(description="the field readings table, [schema.]name")

    @abstractmethod
    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        """At most `limit` rows after `after` by (updated_at, id), in RAW_FIELD_SCHEMA."""

    @abstractmethod
    def maxima(self) -> tuple[datetime | None, int | None]:
        """The table's MAX(updated_at) and MAX(id); None for an empty table."""

    @abstractmethod
    def daily_counts(self, through: Watermark, since: date | None = None) -> pl.DataFrame:
        """Rows per UTC day of updated_at at or before `through` (from day `since` on), in
        DAILY_COUNT_SCHEMA."""

    @abstractmethod
    def describe(self) -> str:
        """Where the rows come from, for people."""

    @contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        """The source for one extraction: an adapter whose connection is costly (a Snowflake
        login) holds one across the chunks; the default reads through `next_chunk`."""
        yield self

    def has_rows_after(self, after: Watermark | None) -> bool:
        """Whether rows past `after` exist, as cheaply as the warehouse allows (module doc)."""
        with self.session() as source:
            settled = rows_after_by_maxima(after, *source.maxima())
            return settled if settled is not None else not source.next_chunk(after, 1).is_empty()


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class DuckDBWarehouseSource(WarehouseSource):
    """A local DuckDB file, opened read-only per chunk."""

    path: str = Field(description="the DuckDB database file")

    def _query(self, query: str, params: dict[str, Any]) -> Any:
        import duckdb

        if not Path(self.path).exists():
            raise FileNotFoundError(f"no DuckDB warehouse at {self.path}: seed it first")
        try:
            with duckdb.connect(self.path, read_only=True) as connection:
                return connection.sql(query, params=params).to_arrow_table()
        except duckdb.IOException as error:  # the file is locked by a writer (seeding)
            raise TransientError(f"DuckDB {self.path}: {error}") from error

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        _check_limit(limit)
        params: dict[str, Any] = {"n": limit}
        if after is not None:
            params |= {"u": _naive_utc(after.updated_at), "i": after.id}
        query = keyset_query(self.table, after is None, "${}")
        return _typed(pl.DataFrame(self._query(query, params)))

    def maxima(self) -> tuple[datetime | None, int | None]:
        newest, largest_id = self._query(maxima_query(self.table), {}).to_pylist()[0].values()
        return newest, largest_id

    def daily_counts(self, through: Watermark, since: date | None = None) -> pl.DataFrame:
        query = daily_counts_query(self.table, since is not None, "${}")
        counted = self._query(query, _count_params(through, since)).to_pylist()
        return counts_to_frame([tuple(row.values()) for row in counted])

    def describe(self) -> str:
        return f"DuckDB {self.path} table {self.table}"


# The field table's `updated_at` must be TIMESTAMP_NTZ(6): watermarks hold microseconds, and a
# finer column (Snowflake's default precision is 9) would return the watermark's own row again,
# which extraction refuses with an error saying so.


class _SnowflakeSession:
    """One Snowflake connection for a run of chunk reads: a login per extraction, not per chunk.

    The connection is opened on the first read and dropped when a read fails, so the retry of a
    transient error logs in again instead of reusing a broken connection.
    """

    def __init__(self, snowflake: "SnowflakeResource", table: str) -> None:
        self.snowflake, self.table = snowflake, table
        self._stack: ExitStack | None = None
        self._connection: Any = None

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        _check_limit(limit)
        params: dict[str, Any] = {"n": limit}
        if after is not None:
            params |= {"u": _naive_utc(after.updated_at), "i": after.id}
        # The connector's default paramstyle (pyformat) binds %(name)s on the client, escaped.
        return rows_to_frame(self._rows(keyset_query(self.table, after is None, "%({})s"), params))

    def maxima(self) -> tuple[datetime | None, int | None]:
        newest, largest_id = self._rows(maxima_query(self.table), {})[0]
        return newest, None if largest_id is None else int(largest_id)

    def daily_counts(self, through: Watermark, since: date | None = None) -> pl.DataFrame:
        query = daily_counts_query(self.table, since is not None, "%({})s")
        return counts_to_frame(self._rows(query, _count_params(through, since)))

    def _rows(self, query: str, params: dict[str, Any]) -> list[Any]:
        from snowflake.connector.errors import OperationalError

        try:
            if self._connection is None:
                stack = ExitStack()
                self._connection = stack.enter_context(self.snowflake.get_connection())
                self._stack = stack
            cursor = self._connection.cursor()
            cursor.execute(query, params)
            return list(cursor.fetchall())
        except OperationalError as error:  # network, login timeout, warehouse suspended
            self._drop()
            raise TransientError(f"Snowflake {self.table}: {error}") from error

    def _drop(self) -> None:
        stack, self._connection, self._stack = self._stack, None, None
        if stack is not None:
            # It already failed: closing (through dagster-snowflake's context, which closes the
            # connection) is best effort, the read's error is the news.
            with suppress(Exception):
                stack.close()

    def close(self) -> None:
        stack, self._connection, self._stack = self._stack, None, None
        if stack is not None:
            stack.close()


class SnowflakeWarehouseSource(WarehouseSource):
    """A Snowflake table through dagster-snowflake's SnowflakeResource."""

    # dagster-snowflake's SnowflakeResource, a nested resource: typed loosely so that this module
    # imports without the aws extra, which holds dagster-snowflake.
    snowflake: dg.ResourceDependency[Any]

    @contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        session = _SnowflakeSession(self.snowflake, self.table)
        try:
            yield session
        finally:
            session.close()

    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        with self.session() as session:
            return session.next_chunk(after, limit)

    def maxima(self) -> tuple[datetime | None, int | None]:
        with self.session() as session:
            return session.maxima()

    def daily_counts(self, through: Watermark, since: date | None = None) -> pl.DataFrame:
        with self.session() as session:
            return session.daily_counts(through, since)

    def describe(self) -> str:
        return f"Snowflake table {self.table}"
