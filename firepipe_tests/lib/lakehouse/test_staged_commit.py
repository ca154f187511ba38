"""Staged Parquet files committed into an Iceberg table in one transaction, locally and on Glue."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import boto3
import polars as pl
import pytest
from pyiceberg.table import CreateTableTransaction, Transaction

from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import GlueLakehouse, Lakehouse, LocalLakehouse

TABLE = "bronze.staged"
PARTITIONING = [tables.PartitionColumn("batch"), tables.PartitionColumn("scenario_family")]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
REGION = "eu-west-1"


def readings(family: str, batch: str, devices: int, *, tag: str = "") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "device_id": [f"{family}-{batch}-{i}{tag}" for i in range(devices)],
            "ts": [T0] * devices,
            "co_ppm": pl.Series([float(i) for i in range(devices)], dtype=pl.Float32),
            "fault": pl.Series([None] * devices, dtype=pl.String),
            "scenario_family": [family] * devices,
            "batch": [batch] * devices,
        }
    )


def scope(*cells: tuple[str, str]) -> tables.Scope:
    return tables.Scope(
        tuple(
            (tables.Values("batch", (b,)), tables.Values("scenario_family", (f,))) for f, b in cells
        )
    )


Stage = Callable[[str, pl.DataFrame], str]


def stager(lake: Lakehouse, run_id: str, table: str = TABLE) -> Stage:
    """Writes a frame as one Parquet file in the run's staging folder; returns its URI."""
    directory = lake.staging_directory(table, run_id)

    def stage(name: str, frame: pl.DataFrame) -> str:
        uri = f"{directory}/{name}.parquet"
        if uri.startswith("file://"):
            Path(uri.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(uri.removeprefix("file://"))
        else:
            frame.write_parquet(uri, storage_options=lake.storage_options())
        return uri

    return stage


def counts(lake: Lakehouse) -> dict[tuple[str, str], int]:
    out = lake.read(TABLE).group_by("scenario_family", "batch").len()
    return {(r["scenario_family"], r["batch"]): r["len"] for r in out.to_dicts()}


def test_first_commit_creates_a_partitioned_table_inside_its_location(
    lakehouse: LocalLakehouse,
) -> None:
    stage = stager(lakehouse, "run1")
    files = [
        stage("f000", readings("flaming", "000", 3)),
        stage("n000", readings("nuisance", "000", 2)),
    ]
    result = lakehouse.commit_staged(
        TABLE, files, PARTITIONING, scope(("flaming", "000"), ("nuisance", "000"))
    )
    assert result.rows_written == 5
    assert result.total_rows == 5
    assert counts(lakehouse) == {("flaming", "000"): 3, ("nuisance", "000"): 2}
    table = lakehouse.catalog().load_table(TABLE)
    assert [f.name for f in table.spec().fields] == ["batch", "scenario_family"]
    assert all(f.startswith(f"{table.location()}/data/staged/run1/") for f in files)
    back = lakehouse.read(TABLE).sort("device_id")
    assert back["fault"].null_count() == 5
    assert back["co_ppm"].dtype == pl.Float32


def test_recommitting_a_partition_replaces_it_and_leaves_the_others(
    lakehouse: LocalLakehouse,
) -> None:
    first = stager(lakehouse, "run1")
    lakehouse.commit_staged(
        TABLE,
        [first("f", readings("flaming", "000", 3)), first("s", readings("smouldering", "000", 4))],
        PARTITIONING,
        scope(("flaming", "000"), ("smouldering", "000")),
    )
    again = stager(lakehouse, "run2")
    result = lakehouse.commit_staged(
        TABLE,
        [again("f", readings("flaming", "000", 6, tag="b"))],
        PARTITIONING,
        scope(("flaming", "000")),
    )
    assert counts(lakehouse) == {("flaming", "000"): 6, ("smouldering", "000"): 4}
    assert result.total_rows == 10
    flaming = lakehouse.read(TABLE).filter(pl.col("scenario_family") == "flaming")
    assert all(d.endswith("b") for d in flaming["device_id"])
    # The same partition committed a third time still holds one copy of its rows.
    third = stager(lakehouse, "run3")
    lakehouse.commit_staged(
        TABLE, [third("f", readings("flaming", "000", 6))], PARTITIONING, scope(("flaming", "000"))
    )
    assert counts(lakehouse) == {("flaming", "000"): 6, ("smouldering", "000"): 4}


def test_a_crash_before_commit_leaves_the_table_unchanged(
    lakehouse: LocalLakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = stager(lakehouse, "run1")
    lakehouse.commit_staged(
        TABLE, [stage("f", readings("flaming", "000", 3))], PARTITIONING, scope(("flaming", "000"))
    )
    before = lakehouse.catalog().load_table(TABLE).current_snapshot().snapshot_id

    def crash(self: Transaction) -> None:
        raise OSError("killed mid-commit")

    monkeypatch.setattr(Transaction, "commit_transaction", crash)
    monkeypatch.setattr(CreateTableTransaction, "commit_transaction", crash)
    retry = stager(lakehouse, "run2")
    staged = retry("f", readings("flaming", "000", 9))
    with pytest.raises(OSError, match="killed mid-commit"):
        lakehouse.commit_staged(TABLE, [staged], PARTITIONING, scope(("flaming", "000")))
    other = stager(lakehouse, "run3", "bronze.fresh")
    with pytest.raises(OSError, match="killed mid-commit"):
        lakehouse.commit_staged(
            "bronze.fresh", [other("x", readings("flaming", "000", 1))], PARTITIONING
        )
    monkeypatch.undo()

    assert lakehouse.catalog().load_table(TABLE).current_snapshot().snapshot_id == before
    assert counts(lakehouse) == {("flaming", "000"): 3}
    assert not lakehouse.catalog().table_exists("bronze.fresh")
    # The uncommitted files are still on disk until discarded; the table never saw them.
    run2 = lakehouse.staging_directory(TABLE, "run2").removeprefix("file://")
    assert Path(staged.removeprefix("file://")).exists()
    lakehouse.discard_staged(lakehouse.staging_directory(TABLE, "run2"))
    assert not Path(run2).exists()
    lakehouse.discard_staged(lakehouse.staging_directory(TABLE, "never-written"))
    assert counts(lakehouse) == {("flaming", "000"): 3}


def test_files_with_rows_outside_the_scope_are_refused(lakehouse: LocalLakehouse) -> None:
    stage = stager(lakehouse, "run1")
    lakehouse.commit_staged(
        TABLE, [stage("f", readings("flaming", "000", 3))], PARTITIONING, scope(("flaming", "000"))
    )
    wrong_family = stage("n", readings("nuisance", "000", 2))
    with pytest.raises(tables.PartitionScopeError, match=r"n\.parquet.*scenario_family in"):
        lakehouse.commit_staged(TABLE, [wrong_family], PARTITIONING, scope(("flaming", "000")))
    mixed = stage(
        "mixed", pl.concat([readings("flaming", "000", 1), readings("flaming", "001", 1)])
    )
    with pytest.raises(tables.PartitionScopeError, match=r"batch in \[000, 001\]"):
        lakehouse.commit_staged(TABLE, [mixed], PARTITIONING, scope(("flaming", "000")))
    nulls = stage(
        "nulls", readings("flaming", "000", 2).with_columns(batch=pl.lit(None, pl.String))
    )
    with pytest.raises(tables.LakehouseError, match="'batch'"):
        lakehouse.commit_staged(TABLE, [nulls], PARTITIONING, scope(("flaming", "000")))
    assert counts(lakehouse) == {("flaming", "000"): 3}


def test_files_outside_the_table_location_are_refused(
    lakehouse: LocalLakehouse, tmp_path: Path
) -> None:
    stray = tmp_path / "elsewhere.parquet"
    readings("flaming", "000", 2).write_parquet(stray)
    with pytest.raises(tables.StagedFilesError, match="outside the table location"):
        lakehouse.commit_staged(TABLE, [stray.as_uri()], PARTITIONING, scope(("flaming", "000")))
    with pytest.raises(tables.StagedFilesError, match="no files"):
        lakehouse.commit_staged(TABLE, [], PARTITIONING, scope(("flaming", "000")))
    with pytest.raises(tables.LakehouseError, match="run id"):
        lakehouse.staging_directory(TABLE, "../escape")
    assert not lakehouse.catalog().table_exists(TABLE)


def test_a_new_column_in_staged_files_evolves_the_schema(lakehouse: LocalLakehouse) -> None:
    stage = stager(lakehouse, "run1")
    lakehouse.commit_staged(
        TABLE, [stage("f", readings("flaming", "000", 2))], PARTITIONING, scope(("flaming", "000"))
    )
    wider = readings("nuisance", "000", 2).with_columns(pl.lit("v2").alias("generator"))
    result = lakehouse.commit_staged(
        TABLE, [stage("n", wider)], PARTITIONING, scope(("nuisance", "000"))
    )
    assert result.evolved_columns == ("generator",)
    back = lakehouse.read(TABLE)
    by_family = dict(back.group_by("scenario_family").agg(pl.col("generator").first()).rows())
    assert by_family == {"flaming": None, "nuisance": "v2"}


@pytest.mark.aws
def test_staged_commit_on_glue_and_s3(moto_endpoint: str, aws_credentials: None) -> None:
    bucket = "lake-staged-commit"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    lake = GlueLakehouse(
        warehouse=f"s3://{bucket}/warehouse",
        region=REGION,
        glue_endpoint_url=moto_endpoint,
        s3_endpoint_url=moto_endpoint,
    )
    first = stager(lake, "run1")
    lake.commit_staged(
        TABLE,
        [first("f", readings("flaming", "000", 3)), first("b", readings("baseline", "000", 2))],
        PARTITIONING,
        scope(("flaming", "000"), ("baseline", "000")),
    )
    second = stager(lake, "run2")
    lake.commit_staged(
        TABLE, [second("f", readings("flaming", "000", 5))], PARTITIONING, scope(("flaming", "000"))
    )
    assert counts(lake) == {("flaming", "000"): 5, ("baseline", "000"): 2}

    glue = boto3.client("glue", endpoint_url=moto_endpoint, region_name=REGION)
    assert glue.get_table(DatabaseName="bronze", Name="staged")["Table"]["Name"] == "staged"
    run2 = lake.staging_directory(TABLE, "run2").removeprefix(f"s3://{bucket}/")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=run2)["Contents"]
    assert [o["Key"].rsplit("/", 1)[1] for o in listed] == ["f.parquet"]

    orphan = stager(lake, "crashed")
    orphan("f", readings("flaming", "000", 7))
    lake.discard_staged(lake.staging_directory(TABLE, "crashed"))
    prefix = lake.staging_directory(TABLE, "crashed").removeprefix(f"s3://{bucket}/")
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["KeyCount"] == 0
    assert counts(lake) == {("flaming", "000"): 5, ("baseline", "000"): 2}


def test_a_daily_scope_judges_naive_file_timestamps_as_utc(lakehouse: LocalLakehouse) -> None:
    table = "bronze.daily_readings"
    stage = stager(lakehouse, "run1", table)
    day = tables.Scope(
        (
            (
                tables.TimeRange(
                    "ts", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
                ),
            ),
        )
    )
    naive = pl.DataFrame(
        {"device_id": ["a", "b"], "ts": [datetime(2026, 1, 1, 5), datetime(2026, 1, 1, 23)]}
    )
    partitioning = [tables.PartitionColumn("ts", "day")]
    result = lakehouse.commit_staged(table, [stage("in", naive)], partitioning, day)
    assert result.rows_written == 2
    late = naive.with_columns(pl.lit(datetime(2026, 1, 2, 0, 30)).alias("ts"))
    with pytest.raises(tables.PartitionScopeError, match=r"late\.parquet"):
        lakehouse.commit_staged(table, [stage("late", late)], partitioning, day)
    assert lakehouse.table_rows(table) == 2


def test_a_staged_commit_stores_its_snapshot_properties(lakehouse: LocalLakehouse) -> None:
    stage = stager(lakehouse, "run1")
    files = [stage("a", readings("flaming", "000", 2))]
    first = lakehouse.commit_staged(
        TABLE, files, PARTITIONING, snapshot_properties={"firepipe.spec": "one"}
    )
    files = [stager(lakehouse, "run2")("b", readings("flaming", "000", 2))]
    lakehouse.commit_staged(
        TABLE, files, PARTITIONING, snapshot_properties={"firepipe.spec": "two"}
    )
    assert lakehouse.snapshot_properties(TABLE) == {"firepipe.spec": "two"}
    assert lakehouse.snapshot_properties(TABLE, first.snapshot_id) == {"firepipe.spec": "one"}
