from __future__ import annotations

import threading
from datetime import UTC, datetime

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pyiceberg.table import CreateTableTransaction, Transaction

from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def frame(family: str, values: list[float], day: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "family": [family] * len(values),
            "ts": [datetime(2026, 3, day, 12, i, tzinfo=UTC) for i in range(len(values))],
            "value": pl.Series(values, dtype=pl.Float32),
        }
    )


def by_family(lake: LocalLakehouse, identifier: str) -> dict[str, list[float]]:
    out = lake.read(identifier).sort("family", "ts")
    return {k[0]: g["value"].to_list() for k, g in out.group_by("family", maintain_order=True)}


FAMILY = [tables.PartitionColumn("family")]


def family_scope(*families: str) -> tables.Scope:
    return tables.Scope(((tables.Values("family", families),),))


def test_round_trip_keeps_values_and_types(lakehouse: LocalLakehouse) -> None:
    df = pl.DataFrame(
        {
            "device_id": ["a", "b"],
            "ts": [T0, T0],
            "ok": [True, None],
            "n": pl.Series([1, 2], dtype=pl.Int64),
            "x": pl.Series([1.5, None], dtype=pl.Float32),
        }
    )
    result = tables.write_table(lakehouse.catalog(), "bronze.t", df)
    assert result.rows_written == 2
    assert result.total_rows == 2
    assert result.snapshot_id is not None
    assert_frame_equal(lakehouse.read("bronze.t").sort("device_id"), df)
    assert lakehouse.list_tables() == ["bronze.t"]


def test_types_iceberg_lacks_are_converted_or_refused() -> None:
    df = pl.DataFrame(
        {
            "u8": pl.Series([1], dtype=pl.UInt8),
            "u32": pl.Series([4_000_000_000], dtype=pl.UInt32),
            "cat": pl.Series(["x"], dtype=pl.Categorical),
            "ns": pl.Series([T0], dtype=pl.Datetime("ns", "UTC")),
        }
    )
    arrow = tables.to_iceberg_arrow(df)
    assert [str(t) for t in arrow.schema.types] == [
        "int32",
        "int64",
        "large_string",
        "timestamp[us, tz=UTC]",
    ]
    assert arrow.column("u32").to_pylist() == [4_000_000_000]
    with pytest.raises(tables.LakehouseError, match="'empty' has no type"):
        tables.to_iceberg_arrow(pl.DataFrame({"empty": [None]}))


def test_rewriting_a_partition_replaces_it_and_leaves_others(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.p", frame("a", [1, 2]), FAMILY, family_scope("a"))
    tables.write_table(catalog, "bronze.p", frame("b", [3]), FAMILY, family_scope("b"))
    result = tables.write_table(
        catalog, "bronze.p", frame("a", [7, 8, 9]), FAMILY, family_scope("a")
    )
    assert by_family(lakehouse, "bronze.p") == {"a": [7, 8, 9], "b": [3]}
    assert result.total_rows == 4
    assert [f.name for f in catalog.load_table("bronze.p").spec().fields] == ["family"]


def test_the_same_write_twice_does_not_duplicate(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    for _ in range(2):
        tables.write_table(catalog, "bronze.p", frame("a", [1, 2]), FAMILY, family_scope("a"))
        tables.write_table(catalog, "bronze.u", frame("a", [1, 2]))
    assert lakehouse.table_rows("bronze.p") == 2
    assert lakehouse.table_rows("bronze.u") == 2


def test_rows_outside_the_partition_are_refused(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.p", frame("b", [3]), FAMILY, family_scope("b"))
    mixed = pl.concat([frame("a", [1]), frame("b", [99])])
    with pytest.raises(tables.PartitionScopeError, match="1 of 2 rows fall outside"):
        tables.write_table(catalog, "bronze.p", mixed, FAMILY, family_scope("a"))
    assert by_family(lakehouse, "bronze.p") == {"b": [3]}


def test_rows_with_a_null_partition_value_are_refused(lakehouse: LocalLakehouse) -> None:
    orphan = frame("a", [1, 2]).with_columns(
        pl.when(pl.col("value") == 2).then(None).otherwise(pl.col("family")).alias("family")
    )
    with pytest.raises(tables.PartitionScopeError, match="1 of 2 rows fall outside"):
        tables.write_table(lakehouse.catalog(), "bronze.n", orphan, FAMILY, family_scope("a"))
    assert not lakehouse.catalog().table_exists("bronze.n")


def test_time_range_scope_replaces_one_day(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    day = [tables.PartitionColumn("ts", "day")]

    def one_day(d: int) -> tables.Scope:
        start = datetime(2026, 3, d, tzinfo=UTC)
        end = datetime(2026, 3, d + 1, tzinfo=UTC)
        return tables.Scope(((tables.TimeRange("ts", start, end),),))

    tables.write_table(catalog, "silver.d", frame("a", [1, 2], day=1), day, one_day(1))
    tables.write_table(catalog, "silver.d", frame("a", [3], day=2), day, one_day(2))
    tables.write_table(catalog, "silver.d", frame("a", [5], day=1), day, one_day(1))
    out = lakehouse.read("silver.d").sort("ts")
    assert out["value"].to_list() == [5, 3]
    spec = catalog.load_table("silver.d").spec()
    assert [(f.name, str(f.transform)) for f in spec.fields] == [("ts_day", "day")]
    assert lakehouse.scan("silver.d", one_day(2)).collect()["value"].to_list() == [3]


def test_new_column_evolves_the_schema(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.e", frame("a", [1]), FAMILY, family_scope("a"))
    wider = frame("b", [2]).with_columns(pl.lit("new").alias("note"))
    result = tables.write_table(catalog, "bronze.e", wider, FAMILY, family_scope("b"))
    assert result.evolved_columns == ("note",)
    out = lakehouse.read("bronze.e").sort("family")
    assert out["note"].to_list() == [None, "new"]


def test_float_widens_to_double(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.w", frame("a", [1.5]))
    wide = frame("a", [2.25]).with_columns(pl.col("value").cast(pl.Float64))
    tables.write_table(catalog, "bronze.w", wide)
    out = lakehouse.read("bronze.w")
    assert out.schema["value"] == pl.Float64
    assert out["value"].to_list() == [2.25]


def test_incompatible_change_fails_clearly_and_changes_nothing(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    first = tables.write_table(catalog, "bronze.i", frame("a", [1.0]))
    clash = frame("a", [1.0]).with_columns(pl.lit("high").alias("value"))
    with pytest.raises(tables.IncompatibleSchemaError, match=r"bronze\.i.*value"):
        tables.write_table(catalog, "bronze.i", clash)
    table = catalog.load_table("bronze.i")
    assert table.current_snapshot().snapshot_id == first.snapshot_id
    assert lakehouse.read("bronze.i")["value"].to_list() == [1.0]


def test_a_crash_before_commit_leaves_no_partial_data(
    lakehouse: LocalLakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.c", frame("a", [1, 2]), FAMILY, family_scope("a"))

    def crash(self: Transaction) -> None:
        raise OSError("disk vanished mid-commit")

    monkeypatch.setattr(Transaction, "commit_transaction", crash)
    monkeypatch.setattr(CreateTableTransaction, "commit_transaction", crash)
    with pytest.raises(OSError, match="disk vanished"):
        tables.write_table(catalog, "bronze.c", frame("a", [9]), FAMILY, family_scope("a"))
    with pytest.raises(OSError, match="disk vanished"):
        tables.write_table(catalog, "bronze.new", frame("a", [9]))
    monkeypatch.undo()
    assert by_family(lakehouse, "bronze.c") == {"a": [1, 2]}
    assert not catalog.table_exists("bronze.new")


def test_concurrent_writers_of_different_partitions_both_land(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    tables.write_table(catalog, "bronze.cc", frame("seed", [0]), FAMILY, family_scope("seed"))
    errors: list[BaseException] = []

    def write(family: str) -> None:
        try:
            values = [float(i) for i in range(50)]
            scope = family_scope(family)
            tables.write_table(catalog, "bronze.cc", frame(family, values), FAMILY, scope)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(f"f{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = {k: len(v) for k, v in by_family(lakehouse, "bronze.cc").items()}
    assert counts == {"f0": 50, "f1": 50, "f2": 50, "f3": 50, "seed": 1}


def test_reading_a_missing_table_says_what_to_do(lakehouse: LocalLakehouse) -> None:
    with pytest.raises(tables.LakehouseError, match="materialise its asset first"):
        lakehouse.read("gold.nothing")


def test_identifier_must_name_a_namespace() -> None:
    with pytest.raises(tables.LakehouseError, match=r"not 'namespace\.table'"):
        tables.split_identifier("readings")


def test_a_commit_lost_to_a_concurrent_writer_is_retried_on_a_fresh_table(
    lakehouse: LocalLakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = lakehouse.catalog()
    from pyiceberg.exceptions import CommitFailedException

    monkeypatch.setattr(tables, "COMMIT_BACKOFF_S", 0.0)
    seen: list[object] = []

    def commit(existing):
        seen.append(existing)
        if len(seen) < 3:
            raise CommitFailedException("another writer committed first")
        return "landed"

    assert tables.commit_retrying(catalog, "bronze.nothing_yet", commit) == "landed"
    assert seen == [None, None, None]  # reloaded before each attempt: no table yet
    monkeypatch.setattr(tables, "COMMIT_ATTEMPTS", 2)
    seen.clear()
    with pytest.raises(CommitFailedException):
        tables.commit_retrying(catalog, "bronze.nothing_yet", commit)
    assert len(seen) == 2


def test_a_write_loads_the_table_once_and_reports_what_it_committed(
    lakehouse: LocalLakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = lakehouse.catalog()
    loads: list[str] = []
    real_load = type(catalog).load_table

    def counting_load(self, identifier):
        loads.append(identifier)
        return real_load(self, identifier)

    monkeypatch.setattr(type(catalog), "load_table", counting_load)
    created = tables.write_table(catalog, "bronze.once", frame("a", [1, 2]), FAMILY)
    replaced = tables.write_table(
        catalog, "bronze.once", frame("b", [3]), FAMILY, family_scope("b")
    )
    # One load per write, before its commit: the result comes from the committed table.
    # Per write: ours before the commit and the SQL catalog's own check inside its commit
    # (by tuple); none after it, the result comes from the committed table.
    assert loads == ["bronze.once", ("bronze", "once")] * 2
    monkeypatch.undo()
    table = catalog.load_table("bronze.once")
    assert replaced.snapshot_id == table.current_snapshot().snapshot_id != created.snapshot_id
    assert (created.total_rows, replaced.total_rows) == (2, 3)
    assert replaced.location == table.location()


def test_snapshot_properties_travel_with_their_snapshot(lakehouse: LocalLakehouse) -> None:
    catalog = lakehouse.catalog()
    first = tables.write_table(
        catalog, "gold.t", frame("a", [1.0]), snapshot_properties={"firepipe.spec": "v1"}
    )
    second = tables.write_table(
        catalog, "gold.t", frame("a", [2.0]), snapshot_properties={"firepipe.spec": "v2"}
    )
    assert lakehouse.snapshot_properties("gold.t") == {"firepipe.spec": "v2"}
    assert lakehouse.snapshot_properties("gold.t", first.snapshot_id) == {"firepipe.spec": "v1"}
    assert second.snapshot_id != first.snapshot_id
    # A write without properties leaves its snapshot without them: nothing is inherited.
    tables.write_table(catalog, "gold.t", frame("a", [3.0]))
    assert lakehouse.snapshot_properties("gold.t") == {}


def test_an_empty_first_write_still_records_its_properties(lakehouse: LocalLakehouse) -> None:
    empty = frame("a", [1.0]).clear()
    tables.write_table(lakehouse.catalog(), "ml.t", empty, snapshot_properties={"firepipe.k": "v"})
    assert lakehouse.snapshot_properties("ml.t") == {"firepipe.k": "v"}


def test_snapshot_properties_are_checked_and_missing_tables_said(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    with pytest.raises(tables.LakehouseError, match="must start with 'firepipe\\.'"):
        tables.write_table(catalog, "gold.t", frame("a", [1.0]), snapshot_properties={"x": "1"})
    with pytest.raises(tables.LakehouseError, match="must be strings"):
        tables.write_table(
            catalog,
            "gold.t",
            frame("a", [1.0]),
            snapshot_properties={"firepipe.n": 1},  # type: ignore[dict-item]
        )
    with pytest.raises(tables.LakehouseError, match="does not exist yet"):
        lakehouse.snapshot_properties("gold.t")
    tables.write_table(catalog, "gold.t", frame("a", [1.0]))
    with pytest.raises(tables.LakehouseError, match="no snapshot 42"):
        lakehouse.snapshot_properties("gold.t", 42)
