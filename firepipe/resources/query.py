"""Ad hoc SQL over the lake: Athena on AWS, DuckDB locally, with the same table names.

Both engines name a table `namespace.table`, as the Iceberg catalog does: Athena reads the Glue
databases the Glue catalog registers (no crawler), DuckDB views over the tables of the local
PyIceberg catalog. `query(sql)` returns a polars frame either way.
"""

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from firepipe.lib.lakehouse.tables import split_identifier
from firepipe.resources.lakehouse import Lakehouse

if TYPE_CHECKING:
    from pyiceberg.table import Table

# Athena runs most ad hoc queries over the lake in seconds; half a second between polls keeps
# the API calls few (GetQueryExecution is throttled per account) without adding much latency.
ATHENA_POLL_INTERVAL_S = 0.5
# Athena's own DML timeout defaults to 30 minutes (Service Quotas, "DML query timeout"); an ad
# hoc query that runs 10 minutes is stopped here instead.
ATHENA_TIMEOUT_S = 600.0
_ATHENA_DONE = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class QueryError(Exception):
    """A query the engine refused, failed or gave up on, with the engine's reason."""


class QueryEngine(dg.ConfigurableResource, ABC):
    """SQL over the lake's tables, named `namespace.table`."""

    @abstractmethod
    def query(self, sql: str) -> pl.DataFrame:
        """Run `sql` and return its rows (an empty frame for statements without rows)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the queries run, for people."""


def _check_sql(sql: str) -> str:
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryError("the SQL is empty")
    return text


class DuckDBQueryEngine(QueryEngine):
    """An in-memory DuckDB per query, with a view per lake table the SQL names.

    A view reads the Parquet data files of the table's current snapshot with DuckDB's built-in
    Parquet reader (no extension to download), lazily and by column. A table whose snapshot has
    delete files, or files DuckDB cannot open itself (s3://), is read through PyIceberg instead.
    """

    lakehouse: Lakehouse

    def describe(self) -> str:
        return f"DuckDB {duckdb.__version__} over {self.lakehouse.describe()['catalog']}"

    def query(self, sql: str) -> pl.DataFrame:
        text = _check_sql(sql)
        catalog = self.lakehouse.catalog()
        with duckdb.connect() as con:
            for identifier in self.lakehouse.list_tables():
                if mentions_table(text, identifier):
                    expose_table(con, catalog.load_table(identifier), identifier)
            try:
                relation = con.sql(text)
            except duckdb.Error as exc:
                raise QueryError(f"DuckDB could not run the query: {exc}") from exc
            return relation.pl() if relation is not None else pl.DataFrame()


def mentions_table(sql: str, identifier: str) -> bool:
    """Whether `sql` names `namespace.table` (bare or double-quoted, any case)."""
    namespace, name = split_identifier(identifier)
    pattern = rf'(?<![\w"]){_quoted(namespace)}\s*\.\s*{_quoted(name)}(?![\w"])'
    return re.search(pattern, sql, flags=re.IGNORECASE) is not None


def _quoted(part: str) -> str:
    return rf'(?:{re.escape(part)}|"{re.escape(part)}")'


def expose_table(con: duckdb.DuckDBPyConnection, table: "Table", identifier: str) -> None:
    """Create the view `namespace.table` over the table's current snapshot."""
    namespace, name = split_identifier(identifier)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_ident(namespace)}")
    view = f"{_ident(namespace)}.{_ident(name)}"
    tasks = list(table.scan().plan_files())
    files = [task.file.file_path for task in tasks]
    local = all(f.startswith("file://") or "://" not in f for f in files)
    columns = ", ".join(_ident(field.name) for field in table.schema().fields)
    if files and local and not any(task.delete_files for task in tasks):
        paths = ", ".join(_literal(f.removeprefix("file://")) for f in files)
        con.execute(
            f"CREATE VIEW {view} AS SELECT {columns} "
            f"FROM read_parquet([{paths}], union_by_name = true)"
        )
        return
    # Empty tables, delete files, object stores: PyIceberg reads the snapshot into Arrow.
    arrow = table.scan().to_arrow()
    registered = f"__firepipe_{namespace}_{name}"
    con.register(registered, arrow)
    con.execute(f"CREATE VIEW {view} AS SELECT * FROM {_ident(registered)}")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@lru_cache(maxsize=4)
def _athena_client(region: str, endpoint_url: str | None) -> Any:
    import boto3

    return boto3.client("athena", region_name=region, endpoint_url=endpoint_url)


class AthenaQueryEngine(QueryEngine):
    """Amazon Athena (engine 3) over the Glue Data Catalog; credentials from the default chain."""

    region: str
    workgroup: str = Field(description="Athena workgroup the queries run and are billed in")
    output_location: str = Field(description="s3://bucket/prefix/ for Athena's result files")
    database: str | None = Field(
        default=None, description="Glue database for unqualified table names"
    )
    endpoint_url: str | None = None
    poll_interval_s: float = ATHENA_POLL_INTERVAL_S
    timeout_s: float = ATHENA_TIMEOUT_S

    def describe(self) -> str:
        return (
            f"Amazon Athena ({self.region}), workgroup {self.workgroup}, "
            f"results under {self.output_location}"
        )

    def query(self, sql: str) -> pl.DataFrame:
        text = _check_sql(sql)
        if not self.output_location.startswith("s3://"):
            raise QueryError(
                f"Athena writes results to S3: output_location must be s3://..., "
                f"got {self.output_location!r}"
            )
        client = _athena_client(self.region, self.endpoint_url)
        context = {"Catalog": "AwsDataCatalog"}
        if self.database:
            context["Database"] = self.database
        started = client.start_query_execution(
            QueryString=text,
            WorkGroup=self.workgroup,
            QueryExecutionContext=context,
            ResultConfiguration={"OutputLocation": self.output_location},
        )
        query_id = started["QueryExecutionId"]
        execution = self._wait(client, query_id)
        # Athena repeats the column names as the first row of a SELECT's (DML) results.
        has_header = execution.get("StatementType") == "DML"
        return athena_frame(_result_pages(client, query_id), has_header=has_header)

    def _wait(self, client: Any, query_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        while True:
            execution: dict[str, Any] = client.get_query_execution(QueryExecutionId=query_id)[
                "QueryExecution"
            ]
            status = execution["Status"]
            state = status["State"]
            if state == "SUCCEEDED":
                return execution
            if state in _ATHENA_DONE:
                reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get(
                    "ErrorMessage", "no reason given"
                )
                raise QueryError(f"Athena query {query_id} {state}: {reason}")
            if time.monotonic() > deadline:
                client.stop_query_execution(QueryExecutionId=query_id)
                raise QueryError(
                    f"Athena query {query_id} still {state} after {self.timeout_s:.0f} s: stopped"
                )
            time.sleep(self.poll_interval_s)


def _result_pages(client: Any, query_id: str) -> Iterable[dict[str, Any]]:
    paginator = client.get_paginator("get_query_results")
    return paginator.paginate(QueryExecutionId=query_id)  # type: ignore[no-any-return]


def _cast_bool(s: pl.Series) -> pl.Series:
    return s.str.to_lowercase().replace_strict(
        {"true": True, "false": False}, default=None, return_dtype=pl.Boolean
    )


def _cast_timestamp(zone: str | None) -> Callable[[pl.Series], pl.Series]:
    def cast(s: pl.Series) -> pl.Series:
        # Athena prints `2024-01-31 12:00:00.000`, with ` UTC` (or another zone) when zoned.
        text = s.str.replace(r" [A-Za-z_/+\-0-9:]+$", "") if zone else s
        parsed = text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us", strict=False)
        return parsed.dt.replace_time_zone(zone) if zone else parsed

    return cast


# Athena (Trino) type names -> how their printed values become polars values.
_ATHENA_CASTS: dict[str, Callable[[pl.Series], pl.Series]] = {
    "boolean": _cast_bool,
    "tinyint": lambda s: s.cast(pl.Int32),
    "smallint": lambda s: s.cast(pl.Int32),
    "integer": lambda s: s.cast(pl.Int32),
    "int": lambda s: s.cast(pl.Int32),
    "bigint": lambda s: s.cast(pl.Int64),
    "real": lambda s: s.cast(pl.Float32),
    "float": lambda s: s.cast(pl.Float32),
    "double": lambda s: s.cast(pl.Float64),
    "decimal": lambda s: s.cast(pl.Float64),
    "date": lambda s: s.str.to_date("%Y-%m-%d", strict=False),
    "timestamp": _cast_timestamp(None),
    "timestamp with time zone": _cast_timestamp("UTC"),
}


def athena_frame(pages: Iterable[dict[str, Any]], *, has_header: bool) -> pl.DataFrame:
    """GetQueryResults pages -> one typed frame (types from the result set's column info)."""
    columns: list[dict[str, Any]] | None = None
    rows: list[list[str | None]] = []
    for page in pages:
        result_set = page["ResultSet"]
        if columns is None:
            columns = result_set.get("ResultSetMetadata", {}).get("ColumnInfo", [])
        rows.extend([d.get("VarCharValue") for d in r.get("Data", [])] for r in result_set["Rows"])
    if not columns:
        return pl.DataFrame()
    if has_header and rows:
        rows = rows[1:]
    names = [c["Name"] for c in columns]
    for i, row in enumerate(rows):
        if len(row) != len(names):
            raise QueryError(
                f"Athena result row {i} has {len(row)} values for {len(names)} columns"
            )
    series = []
    for j, column in enumerate(columns):
        raw = pl.Series(names[j], [row[j] for row in rows], dtype=pl.String)
        # "decimal(10,2)" -> "decimal", "timestamp(3) with time zone" -> "timestamp with ..."
        kind = " ".join(re.sub(r"\(.*?\)", "", str(column.get("Type", "varchar"))).lower().split())
        cast = _ATHENA_CASTS.get(kind)
        series.append(cast(raw).alias(names[j]) if cast else raw)
    return pl.DataFrame(series)
