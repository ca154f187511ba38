"""The Snowflake side of the warehouse source port (dagster-snowflake, in the aws extra).

The field table's `updated_at` must be TIMESTAMP_NTZ(6): watermarks hold microseconds, and a
finer column (Snowflake's default precision is 9) would return the watermark's own row again,
which extraction refuses with an error saying so."""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime
from typing import Any

import polars as pl
from dagster_snowflake import SnowflakeResource

from firepipe.core.extraction import TransientError, Watermark
from firepipe.resources.warehouse import (
    WarehouseSession,
    WarehouseSource,
    _check_limit,
    _naive_utc,
    keyset_query,
    maxima_query,
    rows_to_frame,
)


class _SnowflakeSession:
    """One Snowflake connection for a run of chunk reads: a login per extraction, not per chunk.

    The connection is opened on the first read and dropped when a read fails, so the retry of a
    transient error logs in again instead of reusing a broken connection.
    """

    def __init__(self, snowflake: SnowflakeResource, table: str) -> None:
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
        connection, self._connection, self._stack = self._connection, None, None
        if connection is not None:
            # It already failed: closing is best effort, the read's error is the news.
            with suppress(Exception):
                connection.close()

    def close(self) -> None:
        stack, self._connection, self._stack = self._stack, None, None
        if stack is not None:
            stack.close()


class SnowflakeWarehouseSource(WarehouseSource):
    """A Snowflake table through dagster-snowflake's SnowflakeResource."""

    snowflake: SnowflakeResource

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

    def describe(self) -> str:
        return f"Snowflake table {self.table}"
