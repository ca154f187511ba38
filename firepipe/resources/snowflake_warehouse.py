"""The Snowflake side of the warehouse source port (dagster-snowflake, in the aws extra)."""

from typing import Any

import polars as pl
from dagster_snowflake import SnowflakeResource

from firepipe.core.extraction import TransientError, Watermark
from firepipe.resources.warehouse import (
    WarehouseSource,
    _check_limit,
    _naive_utc,
    keyset_query,
    rows_to_frame,
)


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
