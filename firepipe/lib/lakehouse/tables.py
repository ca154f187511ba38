"""Polars frames in and out of Iceberg tables, on any PyIceberg catalog.

A write is one Iceberg commit: create (with its partition spec) or evolve the schema, then
replace exactly the rows in scope. A crash before the commit leaves the table as it was; a
concurrent commit is retried on a fresh copy of the table. Nothing here knows about Dagster.

Files written by another process (a generator on AWS Batch) are committed the same way: they are
staged under the table's own location, then one commit replaces the rows in scope and adds them
(`commit_files`), so staged files nobody committed are never part of the table.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
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
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.io import load_file_io
from pyiceberg.table import Table, Transaction
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    Transform,
    VoidTransform,
)

T = TypeVar("T")
COMMIT_ATTEMPTS = 5
COMMIT_BACKOFF_S = 0.05  # doubled per attempt: 0.1 .. 1.6 s, enough for a local or Glue commit
# Where staged files go, relative to the table location: inside `data/`, so Iceberg's own
# maintenance (orphan-file removal, purge on drop) and the table's storage permissions cover them.
STAGING_FOLDER = "data/staged"
# The snapshot properties firepipe writes (a feature spec, the input snapshot it came from) are
# named under this prefix, apart from the summary fields Iceberg writes itself.
PROPERTY_PREFIX = "firepipe."

TransformName = Literal["identity", "hour", "day", "bucket"]
_TRANSFORMS: dict[str, type[Transform]] = {
    "identity": IdentityTransform,
    "hour": HourTransform,
    "day": DayTransform,
}
# "day(ts)", "hour(ts)", "bucket(16, device_id)" or a bare column name (identity).
_PARTITION_TEXT = re.compile(
    r"^\s*(?:(?P<fn>hour|day)\(\s*(?P<col>\w+)\s*\)"
    r"|bucket\(\s*(?P<n>\d+)\s*,\s*(?P<bcol>\w+)\s*\)"
    r"|(?P<identity>\w+))\s*$"
)


class LakehouseError(Exception):
    """A write or read the lakehouse refuses, with what to do about it."""


class IncompatibleSchemaError(LakehouseError):
    """New columns the table's schema cannot evolve to (a type narrowed or changed in kind)."""


class PartitionScopeError(LakehouseError):
    """Rows or files that do not belong to the partitions a write replaces (nulls included)."""


class StagedFilesError(LakehouseError):
    """Staged files that cannot be committed: outside the table, unreadable or mismatched."""


@dataclass(frozen=True)
class PartitionColumn:
    """One field of a table's partition spec: a source column and its transform."""

    column: str
    transform: TransformName = "identity"
    buckets: int | None = None  # for "bucket" only: how many hash buckets

    def __post_init__(self) -> None:
        if (self.transform == "bucket") != (self.buckets is not None):
            raise LakehouseError(
                f"partition on {self.column!r}: a bucket transform needs a bucket count, "
                f"and only it takes one (got {self.transform}, buckets={self.buckets})"
            )
        if self.buckets is not None and self.buckets < 1:
            raise LakehouseError(f"partition on {self.column!r}: buckets must be >= 1")

    @property
    def field_name(self) -> str:
        if self.transform == "identity":
            return self.column
        if self.transform == "bucket":
            # The count is part of the name, so changing it is a new field, not a clash.
            return f"{self.column}_bucket_{self.buckets}"
        return f"{self.column}_{self.transform}"

    def iceberg_transform(self) -> Transform:
        if self.transform == "bucket":
            return BucketTransform(num_buckets=int(self.buckets or 0))
        return _TRANSFORMS[self.transform]()


def parse_partitioning(specs: Sequence[str]) -> list[PartitionColumn]:
    """Partition fields written as Iceberg spells them: "day(ts)", "hour(ts)",
    "bucket(16, device_id)" or a bare column name (identity), in spec order."""
    if isinstance(specs, str):
        raise LakehouseError(f"iceberg_partitioning must be a list of fields, got {specs!r}")
    out: list[PartitionColumn] = []
    for text in specs:
        match = _PARTITION_TEXT.match(str(text))
        if match is None:
            raise LakehouseError(
                f"partition field {text!r} is not one of: column, hour(column), day(column), "
                "bucket(n, column)"
            )
        if match["fn"]:
            out.append(PartitionColumn(match["col"], match["fn"]))
        elif match["n"]:
            out.append(PartitionColumn(match["bcol"], "bucket", int(match["n"])))
        else:
            out.append(PartitionColumn(match["identity"]))
    names = [p.field_name for p in out]
    if len(set(names)) != len(names):
        raise LakehouseError(f"partition fields repeat: {list(specs)}")
    return out


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


@dataclass(frozen=True)
class KeyRange:
    """Rows whose (time_column, id_column) lies in [first, last], compared lexicographically:
    the key range of one extraction chunk, so rewriting a chunk replaces exactly its rows."""

    time_column: str
    id_column: str
    first: tuple[datetime, int]
    last: tuple[datetime, int]

    def __post_init__(self) -> None:
        if any(t.tzinfo is None for t, _ in (self.first, self.last)):
            raise LakehouseError(f"key range times must be timezone-aware: {self.first}")
        if self.last < self.first:
            raise LakehouseError(f"key range runs backwards: {self.first} > {self.last}")

    @property
    def columns(self) -> tuple[str, str]:
        return (self.time_column, self.id_column)


Constraint = Values | TimeRange | KeyRange


def _columns(c: Constraint) -> tuple[str, ...]:
    return c.columns if isinstance(c, KeyRange) else (c.column,)


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
    if isinstance(c, KeyRange):
        (t0, i0), (t1, i1) = c.first, c.last
        t0_text, t1_text = t0.isoformat(), t1.isoformat()
        after_first = Or(
            GreaterThan(c.time_column, t0_text),
            And(EqualTo(c.time_column, t0_text), GreaterThanOrEqual(c.id_column, i0)),
        )
        before_last = Or(
            LessThan(c.time_column, t1_text),
            And(EqualTo(c.time_column, t1_text), LessThanOrEqual(c.id_column, i1)),
        )
        return And(after_first, before_last)
    if isinstance(c, TimeRange):
        return And(
            GreaterThanOrEqual(c.column, c.start.isoformat()),
            LessThan(c.column, c.end.isoformat()),
        )
    return In(c.column, set(c.values))


def _polars(c: Constraint) -> pl.Expr:
    if isinstance(c, KeyRange):
        (t0, i0), (t1, i1) = c.first, c.last
        t, i = pl.col(c.time_column), pl.col(c.id_column)
        after_first = (t > pl.lit(t0)) | ((t == pl.lit(t0)) & (i >= i0))
        before_last = (t < pl.lit(t1)) | ((t == pl.lit(t1)) & (i <= i1))
        return after_first & before_last
    if isinstance(c, TimeRange):
        col = pl.col(c.column)
        return (col >= pl.lit(c.start)) & (col < pl.lit(c.end))
    return pl.col(c.column).cast(pl.String).is_in(list(c.values))


def _describe(c: Constraint) -> str:
    if isinstance(c, KeyRange):
        (t0, i0), (t1, i1) = c.first, c.last
        return (
            f"({t0.isoformat()}, {i0}) <= ({c.time_column}, {c.id_column}) "
            f"<= ({t1.isoformat()}, {i1})"
        )
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
    columns = {name for cell in scope.cells for c in cell for name in _columns(c)}
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


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create `namespace` unless it exists. Two writers creating it at once (steps of one run
    on a new lake) both find it absent and both insert it: the loser's insert fails (SQLite: a
    UNIQUE constraint, not NamespaceAlreadyExistsError), yet the namespace is then there."""
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except Exception:
        if not catalog.namespace_exists(namespace):
            raise


def write_table(
    catalog: Catalog,
    identifier: str,
    frame: pl.DataFrame,
    partitioning: Sequence[PartitionColumn] = (),
    scope: Scope | None = None,
    snapshot_properties: Mapping[str, str] | None = None,
) -> WriteResult:
    """Replace the rows in `scope` (default: the whole table) with `frame`, in one commit.
    `snapshot_properties` are stored in the new snapshot's summary (`snapshot_properties`
    reads them back), so what describes the data travels with that version of it."""
    scope = scope or Scope()
    namespace, _ = split_identifier(identifier)
    check_in_scope(frame, scope, identifier)
    arrow = to_iceberg_arrow(frame)
    ensure_namespace(catalog, namespace)
    properties = _properties(snapshot_properties)

    def commit(existing: Table | None) -> tuple[Table, tuple[str, ...]]:
        if existing is not None:
            evolved = _replace(identifier, existing, arrow, partitioning, scope, properties)
            return existing, evolved
        return _create(catalog, identifier, arrow, partitioning, properties), ()

    table, evolved = commit_retrying(catalog, identifier, commit)
    return _written(table, identifier, arrow.num_rows, scope, evolved)


def commit_retrying(catalog: Catalog, identifier: str, commit: Callable[[Table | None], T]) -> T:
    """Run `commit` on a fresh copy of the table (None while it does not exist), again when a
    concurrent writer won: PyIceberg retries a conflicting append itself, but not two writers
    creating the table at once or changing its schema under each other."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return commit(load_table(catalog, identifier))
        except (CommitFailedException, TableAlreadyExistsError):
            if attempt == COMMIT_ATTEMPTS:
                raise
            time.sleep(COMMIT_BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _written(
    table: Table, identifier: str, rows: int, scope: Scope, evolved: tuple[str, ...]
) -> WriteResult:
    """What a write did, from the table as its commit left it (PyIceberg updates the committed
    table's metadata in place, so no second catalog round trip is needed)."""
    snapshot = table.current_snapshot()
    return WriteResult(
        table=identifier,
        rows_written=rows,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        schema=table.schema().as_arrow(),
        location=table.location(),
        scope=scope.describe(),
        total_rows=snapshot_rows(table),
        evolved_columns=evolved,
    )


def _create(
    catalog: Catalog,
    identifier: str,
    arrow: pa.Table,
    partitioning: Sequence[PartitionColumn],
    properties: dict[str, str],
) -> Table:
    tx = catalog.create_table_transaction(identifier, schema=arrow.schema)
    _evolve_spec(tx, identifier, partitioning)
    if arrow.num_rows or properties:
        # An empty append still commits a snapshot, which carries the properties.
        tx.append(arrow, snapshot_properties=properties)
    return tx.commit_transaction()


def _replace(
    identifier: str,
    table: Table,
    arrow: pa.Table,
    partitioning: Sequence[PartitionColumn],
    scope: Scope,
    properties: dict[str, str],
) -> tuple[str, ...]:
    before = {f.name for f in table.schema().fields}
    with table.transaction() as tx:
        _evolve(tx, identifier, arrow.schema, partitioning)
        with warnings.catch_warnings():
            # The first write of a partition has nothing to delete; that is not news.
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            tx.overwrite(
                arrow, overwrite_filter=scope.iceberg_filter(), snapshot_properties=properties
            )
    return tuple(sorted(set(arrow.schema.names) - before))


def _evolve(
    tx: Transaction, identifier: str, schema: pa.Schema, partitioning: Sequence[PartitionColumn]
) -> None:
    """Widen the table's schema to `schema` and bring its partition spec to `partitioning`."""
    try:
        with tx.update_schema() as update:
            update.union_by_name(schema)
    except (ValidationError, ValueError) as e:
        raise IncompatibleSchemaError(
            f"{identifier}: the new data cannot evolve the table's schema: {e}. "
            "Iceberg adds columns and widens types (int -> long, float -> double) in "
            "place; for any other change write the column under a new name, or drop the "
            "table to rebuild it."
        ) from e
    _evolve_spec(tx, identifier, partitioning)


def _evolve_spec(tx: Transaction, identifier: str, partitioning: Sequence[PartitionColumn]) -> None:
    """Make the table's partition spec `partitioning`: add the fields it lacks and drop the
    ones it no longer names. Empty `partitioning` leaves the spec alone (a writer that does not
    say how the table is partitioned). Iceberg evolves a spec in place: files written before
    keep their old layout and are still read; new files follow the new spec."""
    if not partitioning:
        return
    fields = tx.table_metadata.spec().fields
    current = [f.name for f in fields if not isinstance(f.transform, VoidTransform)]
    wanted = {p.field_name for p in partitioning}
    added = [p for p in partitioning if p.field_name not in current]
    dropped = [name for name in current if name not in wanted]
    if not added and not dropped:
        return
    try:
        with tx.update_spec() as spec:
            for name in dropped:
                spec.remove_field(name)
            for p in added:
                spec.add_field(p.column, p.iceberg_transform(), p.field_name)
    except ValueError as e:
        raise LakehouseError(f"{identifier}: cannot partition by {partitioning}: {e}") from e


def scan_table(
    catalog: Catalog, identifier: str, scope: Scope | None = None, snapshot_id: int | None = None
) -> pl.LazyFrame:
    """A lazy scan of the table's current snapshot (or of `snapshot_id`), restricted to `scope`."""
    table = load_table(catalog, identifier)
    if table is None:
        raise LakehouseError(f"table {identifier} does not exist yet: materialise its asset first")
    if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
        known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:])
        raise LakehouseError(
            f"table {identifier} has no snapshot {snapshot_id}; the latest are: {known}"
        )
    lazy = pl.scan_iceberg(table, snapshot_id=snapshot_id)
    scope = scope or Scope()
    return lazy if scope.whole_table else lazy.filter(scope.polars_filter())


@dataclass(frozen=True)
class SnapshotInfo:
    snapshot_id: int
    committed_at: datetime
    operation: str
    rows: int | None


def table_snapshots(catalog: Catalog, identifier: str) -> list[SnapshotInfo]:
    """The table's versions, oldest first: one snapshot per write.

    A write that replaces rows commits a delete snapshot and then an append on top of it; the
    delete is only a step of that write (no reader was ever meant to see it), so it is left out.
    """
    table = load_table(catalog, identifier)
    if table is None:
        raise LakehouseError(f"table {identifier} does not exist yet: materialise its asset first")
    parents = {s.parent_snapshot_id for s in table.snapshots()}
    infos = []
    for snap in table.snapshots():
        summary = snap.summary
        if (
            summary is not None
            and summary.operation.value == "delete"
            and snap.snapshot_id in parents
        ):
            continue
        rows = summary.get("total-records") if summary is not None else None
        infos.append(
            SnapshotInfo(
                snap.snapshot_id,
                datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC),
                str(summary.operation.value) if summary is not None else "unknown",
                int(rows) if rows is not None else None,
            )
        )
    return infos


def _properties(given: Mapping[str, str] | None) -> dict[str, str]:
    """Snapshot properties as Iceberg stores them: strings, under names of our own (a name
    Iceberg writes itself, such as `total-records`, would be overwritten or corrupt the
    summary)."""
    properties = dict(given or {})
    bad = [k for k, v in properties.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise LakehouseError(f"snapshot properties must be strings: {bad}")
    reserved = [k for k in properties if not k.startswith(PROPERTY_PREFIX)]
    if reserved:
        raise LakehouseError(
            f"snapshot property names must start with {PROPERTY_PREFIX!r}: {reserved}"
        )
    return properties


def snapshot_properties(
    catalog: Catalog, identifier: str, snapshot_id: int | None = None
) -> dict[str, str]:
    """The properties a write stored with snapshot `snapshot_id` (default: the current one),
    those under PROPERTY_PREFIX only."""
    table = load_table(catalog, identifier)
    if table is None:
        raise LakehouseError(f"table {identifier} does not exist yet: materialise its asset first")
    snapshot = (
        table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    )
    if snapshot is None:
        which = "no snapshot yet" if snapshot_id is None else f"no snapshot {snapshot_id}"
        raise LakehouseError(f"table {identifier} has {which}")
    summary = snapshot.summary.additional_properties if snapshot.summary is not None else {}
    return {k: v for k, v in summary.items() if k.startswith(PROPERTY_PREFIX)}


def read_table(catalog: Catalog, identifier: str, scope: Scope | None = None) -> pl.DataFrame:
    return scan_table(catalog, identifier, scope).collect()


def table_location(catalog: Catalog, identifier: str) -> str:
    """Where the table keeps its files: its location, or the one `commit_files` will give it."""
    table = load_table(catalog, identifier)
    if table is not None:
        return table.location().rstrip("/")
    namespace, name = split_identifier(identifier)
    warehouse = str(catalog.properties.get("warehouse") or "").rstrip("/")
    if not warehouse:
        raise LakehouseError(f"catalog {catalog.name} has no warehouse to place {identifier} in")
    # PyIceberg's own default for SQL and Glue catalogs: <warehouse>/<namespace>/<table>.
    return f"{warehouse}/{namespace}/{name}"


def staging_directory(catalog: Catalog, identifier: str, run_id: str) -> str:
    """A folder inside the table's location for one run's files, before they are committed."""
    if not run_id or not all(ch.isalnum() or ch in "-_" for ch in run_id):
        raise LakehouseError(f"run id {run_id!r} must be letters, digits, '-' or '_'")
    return f"{table_location(catalog, identifier)}/{STAGING_FOLDER}/{run_id}"


def commit_files(
    catalog: Catalog,
    identifier: str,
    files: Sequence[str],
    partitioning: Sequence[PartitionColumn] = (),
    scope: Scope | None = None,
    snapshot_properties: Mapping[str, str] | None = None,
) -> WriteResult:
    """Replace the rows in `scope` with the rows of staged Parquet `files`, in one commit
    whose snapshot carries `snapshot_properties` (see `write_table`).

    The files must lie under the table's location (see `staging_directory`) and hold only rows
    in scope, which is checked from their column statistics without reading data. The table is
    created from the files' schema when missing; a new column evolves its schema.
    """
    scope = scope or Scope()
    if not files:
        raise StagedFilesError(f"{identifier}: no files to commit")
    if len(set(files)) != len(files):
        raise StagedFilesError(f"{identifier}: the same file is listed twice")
    namespace, _ = split_identifier(identifier)
    ensure_namespace(catalog, namespace)
    location = table_location(catalog, identifier)
    outside = [f for f in files if not f.startswith(f"{location}/")]
    if outside:
        raise StagedFilesError(
            f"{identifier}: {len(outside)} file(s) lie outside the table location {location}/, "
            f"for example {outside[0]}: stage them under staging_directory() first"
        )
    io = load_file_io(catalog.properties, location)
    metadata = {}
    for f in files:
        with io.new_input(f).open() as stream:
            metadata[f] = pq.read_metadata(stream)
    for f, md in metadata.items():
        _check_file_in_scope(md, scope, identifier, f)
    schema = metadata[files[0]].schema.to_arrow_schema()
    rows = sum(md.num_rows for md in metadata.values())
    properties = _properties(snapshot_properties)

    def commit(existing: Table | None) -> tuple[Table, set[str]]:
        if existing is None:
            create = catalog.create_table_transaction(identifier, schema, location=location)
            _evolve(create, identifier, schema, partitioning)
            create.add_files(list(files), snapshot_properties=properties)
            return create.commit_transaction(), set(schema.names)
        before = {f.name for f in existing.schema().fields}
        with existing.transaction() as tx:
            _evolve(tx, identifier, schema, partitioning)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Delete operation did not match")
                tx.delete(scope.iceberg_filter())
            tx.add_files(list(files), snapshot_properties=properties)
        return existing, before

    table, before = commit_retrying(catalog, identifier, commit)
    evolved = tuple(sorted(set(schema.names) - before))
    return _written(table, identifier, rows, scope, evolved)


def _check_file_in_scope(md: pq.FileMetaData, scope: Scope, table: str, path: str) -> None:
    """Refuse a file whose rows may fall outside the scope, judged by its column statistics."""
    if scope.whole_table or md.num_rows == 0:
        return
    columns = {name for cell in scope.cells for c in cell for name in _columns(c)}
    ranges = {name: _column_range(md, name, table, path) for name in sorted(columns)}
    for cell in scope.cells:
        if all(_range_within([ranges[name] for name in _columns(c)], c) for c in cell):
            return
    shown = ", ".join(f"{k} in [{lo}, {hi}]" for k, (lo, hi) in ranges.items())
    raise PartitionScopeError(
        f"{table}: {path} holds rows outside the partition being written "
        f"({scope.describe()}): {shown}"
    )


def _column_range(md: pq.FileMetaData, name: str, table: str, path: str) -> tuple[object, object]:
    names = [md.schema.column(j).name for j in range(md.num_columns)]
    if name not in names:
        raise PartitionScopeError(f"{table}: {path} lacks partition column {name!r}")
    j = names.index(name)
    lows, highs = [], []
    for i in range(md.num_row_groups):
        stats = md.row_group(i).column(j).statistics
        if stats is None or not stats.has_min_max:
            raise StagedFilesError(
                f"{table}: {path} has no min/max statistics for {name!r} (or only nulls); "
                "write Parquet with statistics so the partition can be checked"
            )
        if stats.null_count:
            # A null partition value matches no partition: no later write could replace it.
            raise PartitionScopeError(f"{table}: {path} holds null values in {name!r}")
        lows.append(stats.min)
        highs.append(stats.max)
    return min(lows), max(highs)


def _utc(moment: datetime) -> datetime:
    # Parquet statistics of a naive timestamp column carry no zone: UTC, the platform's one.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _range_within(bounds: list[tuple[object, object]], c: Constraint) -> bool:
    """Whether column statistics prove every row within `c` (conservative: may say no)."""
    lo, hi = bounds[0]
    if isinstance(c, KeyRange):
        id_lo, id_hi = bounds[1]
        if not (isinstance(lo, datetime) and isinstance(hi, datetime)):
            return False
        if not (isinstance(id_lo, int) and isinstance(id_hi, int)):
            return False
        (t0, i0), (t1, i1) = c.first, c.last
        lo, hi = _utc(lo), _utc(hi)
        # At an edge time, the file's smallest (largest) id bounds the ids of its edge rows.
        after_first = lo > t0 or (lo == t0 and id_lo >= i0)
        before_last = hi < t1 or (hi == t1 and id_hi <= i1)
        return after_first and before_last
    if isinstance(c, TimeRange):
        if not (isinstance(lo, datetime) and isinstance(hi, datetime)):
            return False
        lo, hi = _utc(lo), _utc(hi)
        return c.start <= lo <= hi < c.end
    return str(lo) == str(hi) and str(lo) in c.values
