"""The Dagster IO manager that stores polars frames as Iceberg tables named by asset key.

`["silver", "sensor_readings"]` is the table `silver.sensor_readings`. A partitioned asset names
the column that holds its partition in `metadata={"partition_expr": "column"}` (a dict of
dimension -> column for multi-partitions); its Iceberg table is partitioned the same way and a
run replaces exactly its partitions, so re-materialising never duplicates rows.

An unpartitioned asset may still lay its table out in Iceberg partitions, which readers prune by:
`metadata={"iceberg_partitioning": ["day(ts)", "bucket(16, device_id)"]}` (identity, hour(c),
day(c), bucket(n, c)). Each run replaces the whole table; a table created with another spec is
evolved to this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg
import polars as pl

from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import Lakehouse

NAMESPACES = ("bronze", "silver", "gold", "ml")
ICEBERG_PARTITIONING = "iceberg_partitioning"
# An Output's runtime metadata under this key (a dict of str -> str, names under
# tables.PROPERTY_PREFIX) is stored with the snapshot the write commits.
SNAPSHOT_PROPERTIES = "iceberg/snapshot_properties"


def write_metadata(result: tables.WriteResult, *, row_count: bool = True) -> dict[str, Any]:
    """What a materialisation says about the Iceberg write behind it (rows, schema, snapshot).

    `row_count=False` for a write that covers several partitions of one materialisation: its
    rows are the run's, not any one partition's.
    """
    metadata: dict[str, Any] = {
        "dagster/table_name": result.table,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in result.schema]
        ),
        "iceberg/snapshot_id": str(result.snapshot_id),
        "iceberg/location": dg.MetadataValue.path(result.location),
        "iceberg/replaced": result.scope,
        "iceberg/table_rows": result.total_rows,
        "rows_written": result.rows_written,
    }
    if row_count:
        metadata["dagster/row_count"] = result.rows_written
    if result.evolved_columns:
        metadata["iceberg/added_columns"] = ", ".join(result.evolved_columns)
    return metadata


def _output_value(value: Any) -> Any:
    """An output's runtime metadata value as the asset gave it (Dagster may wrap it)."""
    return getattr(value, "value", value)


def table_identifier(asset_key: dg.AssetKey, namespaces: Sequence[str] = NAMESPACES) -> str:
    path = asset_key.path
    if len(path) != 2 or path[0] not in namespaces:
        raise tables.LakehouseError(
            f"asset key {asset_key.to_user_string()!r} does not name a lake table: use "
            f"[namespace, table] with namespace one of {', '.join(namespaces)}"
        )
    return ".".join(path)


def _partition_expr(metadata: Mapping[str, Any], asset_key: dg.AssetKey) -> str | dict[str, str]:
    expr = metadata.get("partition_expr")
    if expr is None:
        raise tables.LakehouseError(
            f"asset {asset_key.to_user_string()} is partitioned but declares no partition "
            "column: add metadata={'partition_expr': '<column>'} (a dict of dimension -> "
            "column for multi-partitions)"
        )
    return expr


def _constraints(
    partitions_def: dg.PartitionsDefinition, column: str, keys: Sequence[str]
) -> list[tables.Constraint]:
    """What `keys` of one dimension cover: time windows merged where contiguous, or values."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return [tables.Values(column, tuple(keys))]
    windows = sorted(partitions_def.time_window_for_partition_key(k) for k in keys)
    ranges: list[tables.Constraint] = []
    for w in windows:
        last = ranges[-1] if ranges else None
        if isinstance(last, tables.TimeRange) and last.end == w.start:
            ranges[-1] = tables.TimeRange(column, last.start, w.end)
        else:
            ranges.append(tables.TimeRange(column, w.start, w.end))
    return ranges


def _partition_column(
    partitions_def: dg.PartitionsDefinition, column: str, key: str
) -> tables.PartitionColumn:
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return tables.PartitionColumn(column)
    window = partitions_def.time_window_for_partition_key(key)
    hourly = window.end - window.start <= timedelta(hours=1)
    return tables.PartitionColumn(column, "hour" if hourly else "day")


def partition_layout(
    partitions_def: dg.PartitionsDefinition,
    keys: Sequence[str],
    expr: str | dict[str, str],
) -> tuple[list[tables.PartitionColumn], tables.Scope]:
    """The Iceberg partition spec for a partitioned asset, and the rows `keys` cover."""
    if not isinstance(partitions_def, dg.MultiPartitionsDefinition):
        if not isinstance(expr, str):
            raise tables.LakehouseError("a single-dimension partitioned asset needs one column")
        cells = tuple((c,) for c in _constraints(partitions_def, expr, keys))
        return [_partition_column(partitions_def, expr, keys[0])], tables.Scope(cells)
    dims = {d.name: d.partitions_def for d in partitions_def.partitions_defs}
    if not isinstance(expr, dict) or set(expr) != set(dims):
        raise tables.LakehouseError(
            f"partition_expr must map each dimension ({', '.join(sorted(dims))}) to a column"
        )
    by_key = [partitions_def.get_partition_key_from_str(str(k)).keys_by_dimension for k in keys]
    cells = tuple(
        tuple(_constraints(dims[d], expr[d], [k])[0] for d, k in sorted(key.items()))
        for key in by_key
    )
    spec = [_partition_column(dims[d], expr[d], k) for d, k in sorted(by_key[0].items())]
    return spec, tables.Scope(cells)


def _fill_single_valued(frame: pl.DataFrame, scope: tables.Scope) -> pl.DataFrame:
    """Add a static partition column the asset left out, when its value is unambiguous."""
    if len(scope.cells) != 1:
        return frame
    for c in scope.cells[0]:
        if isinstance(c, tables.Values) and c.column not in frame.columns and len(c.values) == 1:
            frame = frame.with_columns(pl.lit(c.values[0]).alias(c.column))
    return frame


class IcebergIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames/LazyFrames as Iceberg tables in the lakehouse."""

    lakehouse: Lakehouse

    def _layout(
        self, context: dg.OutputContext | dg.InputContext, metadata: Mapping[str, Any]
    ) -> tuple[list[tables.PartitionColumn], tables.Scope]:
        if not context.has_asset_partitions:
            return tables.parse_partitioning(
                metadata.get(ICEBERG_PARTITIONING) or ()
            ), tables.Scope()
        keys = list(context.asset_partition_keys)
        if ICEBERG_PARTITIONING in metadata:
            raise tables.LakehouseError(
                f"asset {context.asset_key.to_user_string()} is partitioned in Dagster, so its "
                "table is partitioned by its partition_expr: drop iceberg_partitioning"
            )
        expr = _partition_expr(metadata, context.asset_key)
        return partition_layout(context.asset_partitions_def, keys, expr)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, pl.LazyFrame):
            obj = obj.collect()
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; the "
                "Iceberg IO manager stores polars DataFrame or LazyFrame"
            )
        identifier = table_identifier(context.asset_key)
        partitioning, scope = self._layout(context, context.definition_metadata or {})
        frame = _fill_single_valued(obj, scope)
        properties = _output_value(context.output_metadata.get(SNAPSHOT_PROPERTIES))
        result = tables.write_table(
            self.lakehouse.catalog(), identifier, frame, partitioning, scope, properties
        )
        context.add_output_metadata(write_metadata(result))

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | pl.LazyFrame:
        identifier = table_identifier(context.asset_key)
        upstream = context.upstream_output
        metadata = (upstream.definition_metadata if upstream else None) or {}
        _, scope = self._layout(context, metadata)
        lazy = self.lakehouse.scan(identifier, scope)
        wants_lazy = context.dagster_type.typing_type is pl.LazyFrame
        return lazy if wants_lazy else lazy.collect()
