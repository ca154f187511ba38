"""Polars frames in and out of Iceberg tables, on any PyIceberg catalog.

A write is one Iceberg commit: create (with its partition spec) or evolve the schema, then
replace exactly the rows in scope. A crash before the commit leaves the table as it was; a
concurrent commit is retried on a fresh copy of the table. Nothing here knows about Dagster.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import polars as pl
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationError,
)
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThan,
    Or,
)
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, Transform

COMMIT_ATTEMPTS = 5

TransformName = Literal["identity", "hour", "day"]
_TRANSFORMS: dict[str, type[Transform]] = {
    "identity": IdentityTransform,
    "hour": HourTransform,
    "day": DayTransform,
}


class LakehouseError(Exception):
    """A write or read the lakehouse refuses, with what to do about it."""


class IncompatibleSchemaError(LakehouseError):
    pass


class PartitionScopeError(LakehouseError):
    pass


@dataclass(frozen=True)
class PartitionColumn:
    """One field of a table's partition spec: a source column and its transform."""

    column: str
    transform: TransformName = "identity"

    @property
    def field_name(self) -> str:
        return self.column if self.transform == "identity" else f"{self.column}_{self.transform}"


@dataclass(frozen=True)
class Values:
    """Rows whose column holds one of these values (compared as strings)."""

    column: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class TimeRange:
    """Rows whose timestamp column falls in [start, end)."""

    column: str
    start: datetime
    end: datetime


Constraint = Values | TimeRange


@dataclass(frozen=True)
class Scope:
    """The rows a write replaces: those matching all constraints of any one cell.

    The empty scope (no cells) means the whole table.
    """

    cells: tuple[tuple[Constraint, ...], ...] = ()

    @property
    def whole_table(self) -> bool:
        return not self.cells

    def iceberg_filter(self) -> BooleanExpression:
        if self.whole_table:
            return AlwaysTrue()
        cells = [_and([_iceberg(c) for c in cell]) for cell in self.cells]
        out = cells[0]
        for cell in cells[1:]:
            out = Or(out, cell)
        return out

    def polars_filter(self) -> pl.Expr:
        if self.whole_table:
            return pl.lit(True)
        return pl.any_horizontal(pl.all_horizontal(_polars(c) for c in cell) for cell in self.cells)

    def describe(self) -> str:
        if self.whole_table:
            return "whole table"
        return " or ".join(" and ".join(_describe(c) for c in cell) for cell in self.cells)


def _and(exprs: list[BooleanExpression]) -> BooleanExpression:
    out = exprs[0]
    for e in exprs[1:]:
        out = And(out, e)
    return out


def _iceberg(c: Constraint) -> BooleanExpression:
    if isinstance(c, TimeRange):
        return And(
            GreaterThanOrEqual(c.column, c.start.isoformat()),
            LessThan(c.column, c.end.isoformat()),
        )
    return In(c.column, set(c.values))


def _polars(c: Constraint) -> pl.Expr:
    if isinstance(c, TimeRange):
        col = pl.col(c.column)
        return (col >= pl.lit(c.start)) & (col < pl.lit(c.end))
    return pl.col(c.column).cast(pl.String).is_in(list(c.values))


def _describe(c: Constraint) -> str:
    if isinstance(c, TimeRange):
        return f"{c.start.isoformat()} <= {c.column} < {c.end.isoformat()}"
    shown = ", ".join(c.values[:5]) + (", ..." if len(c.values) > 5 else "")
    return f"{c.column} in ({shown})"


@dataclass(frozen=True)
class WriteResult:
    table: str
    rows_written: int
    snapshot_id: int | None
    schema: pa.Schema
    location: str
    scope: str
    total_rows: int = 0
    evolved_columns: tuple[str, ...] = field(default_factory=tuple)


def load_table(catalog: Catalog, identifier: str) -> Table | None:
    """The table, or None when it does not exist yet (one catalog call either way)."""
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return None


def snapshot_rows(table: Table) -> int:
    """Rows in the table's current snapshot, from its metadata (no data is read)."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    return int(snapshot.summary.get("total-records") or 0)


def split_identifier(identifier: str) -> tuple[str, str]:
    namespace, _, name = identifier.partition(".")
    if not namespace or not name:
        raise LakehouseError(f"table identifier {identifier!r} is not 'namespace.table'")
    return namespace, name


def to_iceberg_arrow(frame: pl.DataFrame) -> pa.Table:
    """The frame as Arrow, with types Iceberg can store (no unsigned, no nanoseconds)."""
    casts: dict[str, pl.DataType] = {}
    for name, dtype in frame.schema.items():
        if dtype in (pl.Int8, pl.Int16, pl.UInt8, pl.UInt16):
            casts[name] = pl.Int32()
        elif dtype == pl.UInt32:
            casts[name] = pl.Int64()
        elif dtype == pl.UInt64:
            if frame[name].max() is not None and frame[name].max() > 2**63 - 1:
                raise LakehouseError(f"column {name!r} holds UInt64 values beyond Int64")
            casts[name] = pl.Int64()
        elif dtype == pl.Float16:
            casts[name] = pl.Float32()
        elif isinstance(dtype, pl.Categorical | pl.Enum):
            casts[name] = pl.String()
        elif isinstance(dtype, pl.Datetime) and dtype.time_unit == "ns":
            casts[name] = pl.Datetime("us", dtype.time_zone)
        elif dtype == pl.Null:
            raise LakehouseError(f"column {name!r} has no type (all nulls): cast it before writing")
        elif isinstance(dtype, pl.Duration | pl.Object):
            raise LakehouseError(f"column {name!r} of type {dtype} has no Iceberg equivalent")
    return (frame.cast(casts) if casts else frame).to_arrow()


def check_in_scope(frame: pl.DataFrame, scope: Scope, table: str) -> None:
    """Refuse rows outside the scope being replaced: they would land beside another write."""
    if scope.whole_table or frame.height == 0:
        return
    columns = {c.column for cell in scope.cells for c in cell}
    missing = sorted(columns - set(frame.columns))
    if missing:
        raise PartitionScopeError(f"{table}: the frame lacks partition column(s) {missing}")
    # A null partition value matches no partition, so no later write would ever replace it.
    outside = frame.filter(~scope.polars_filter().fill_null(False))
    if outside.height:
        sample = outside.select(sorted(columns)).unique().head(3).to_dicts()
        raise PartitionScopeError(
            f"{table}: {outside.height} of {frame.height} rows fall outside the partition "
            f"being written ({scope.describe()}), for example {sample}"
        )


def write_table(
    catalog: Catalog,
    identifier: str,
    frame: pl.DataFrame,
    partitioning: Sequence[PartitionColumn] = (),
    scope: Scope | None = None,
) -> WriteResult:
    """Replace the rows in `scope` (default: the whole table) with `frame`, in one commit."""
    scope = scope or Scope()
    namespace, _ = split_identifier(identifier)
    check_in_scope(frame, scope, identifier)
    arrow = to_iceberg_arrow(frame)
    catalog.create_namespace_if_not_exists(namespace)
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            existing = load_table(catalog, identifier)
            if existing is not None:
                evolved = _replace(identifier, existing, arrow, partitioning, scope)
            else:
                _create(catalog, identifier, arrow, partitioning)
                evolved = ()
            break
        except (CommitFailedException, TableAlreadyExistsError):
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(0.05 * 2**attempt)
    table = catalog.load_table(identifier)
    snapshot = table.current_snapshot()
    return WriteResult(
        table=identifier,
        rows_written=arrow.num_rows,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        schema=table.schema().as_arrow(),
        location=table.location(),
        scope=scope.describe(),
        total_rows=snapshot_rows(table),
        evolved_columns=evolved,
    )


def _create(
    catalog: Catalog, identifier: str, arrow: pa.Table, partitioning: Sequence[PartitionColumn]
) -> None:
    tx = catalog.create_table_transaction(identifier, schema=arrow.schema)
    if partitioning:
        with tx.update_spec() as spec:
            for p in partitioning:
                spec.add_field(p.column, _TRANSFORMS[p.transform](), p.field_name)
    if arrow.num_rows:
        tx.append(arrow)
    tx.commit_transaction()


def _replace(
    identifier: str,
    table: Table,
    arrow: pa.Table,
    partitioning: Sequence[PartitionColumn],
    scope: Scope,
) -> tuple[str, ...]:
    before = {f.name for f in table.schema().fields}
    wanted = [p for p in partitioning if p.field_name not in {f.name for f in table.spec().fields}]
    with table.transaction() as tx:
        try:
            with tx.update_schema() as update:
                update.union_by_name(arrow.schema)
        except (ValidationError, ValueError) as e:
            raise IncompatibleSchemaError(
                f"{identifier}: the new data cannot evolve the table's schema: {e}. "
                "Iceberg adds columns and widens types (int -> long, float -> double) in "
                "place; for any other change write the column under a new name, or drop the "
                "table to rebuild it."
            ) from e
        if wanted:
            with tx.update_spec() as spec:
                for p in wanted:
                    spec.add_field(p.column, _TRANSFORMS[p.transform](), p.field_name)
        with warnings.catch_warnings():
            # The first write of a partition has nothing to delete; that is not news.
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            tx.overwrite(arrow, overwrite_filter=scope.iceberg_filter())
    return tuple(sorted(set(arrow.schema.names) - before))


def scan_table(catalog: Catalog, identifier: str, scope: Scope | None = None) -> pl.LazyFrame:
    """A lazy scan of the table's current snapshot, restricted to `scope`."""
    table = load_table(catalog, identifier)
    if table is None:
        raise LakehouseError(f"table {identifier} does not exist yet: materialise its asset first")
    lazy = pl.scan_iceberg(table)
    scope = scope or Scope()
    return lazy if scope.whole_table else lazy.filter(scope.polars_filter())


def read_table(catalog: Catalog, identifier: str, scope: Scope | None = None) -> pl.DataFrame:
    return scan_table(catalog, identifier, scope).collect()
