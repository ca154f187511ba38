"""stage_check_commit: staged files are committed only when the audit passes; on a failed
audit or any exception the staging folder is deleted and the table is left as it was."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.staged import Audit, stage_check_commit
from firepipe.resources.lakehouse import LocalLakehouse

TABLE = "gold.staged_helper"
PROPERTIES = {"firepipe.feature-spec": '{"version": 1}', "firepipe.silver-snapshot-id": "42"}


@dataclass(frozen=True)
class Written:
    files: list[str]
    rows: int


def writer(values: list[float]):
    """A stage step writing one Parquet file of `values` into the staging folder."""

    def stage(staging: str) -> Written:
        path = Path(staging.removeprefix("file://")) / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pl.DataFrame({"x": values}).write_parquet(path)
        return Written([f"{staging}/part-0.parquet"], len(values))

    return stage


def finite(staged: Written) -> Audit[str]:
    frame = pl.read_parquet([f.removeprefix("file://") for f in staged.files])
    bad = frame.filter(~pl.col("x").is_finite()).height
    return Audit(passed=bad == 0, results=f"{bad} non-finite")


@pytest.fixture
def existing(lakehouse: LocalLakehouse) -> int:
    """The table as it stood before: one snapshot of one row; returns its snapshot id."""
    result = tables.write_table(lakehouse.catalog(), TABLE, pl.DataFrame({"x": [0.5]}))
    assert result.snapshot_id is not None
    return result.snapshot_id


def staging_of(lakehouse: LocalLakehouse, run_id: str) -> tuple[str, Path]:
    uri = lakehouse.staging_directory(TABLE, run_id)
    return uri, Path(uri.removeprefix("file://"))


def test_a_passing_audit_commits_the_files_with_the_properties(
    lakehouse: LocalLakehouse, existing: int
) -> None:
    staging, folder = staging_of(lakehouse, "good")
    published = stage_check_commit(
        lakehouse, TABLE, staging, writer([1.0, 2.0]), finite, snapshot_properties=PROPERTIES
    )
    assert published.committed
    assert published.audit == Audit(True, "0 non-finite")
    assert published.staged.rows == 2
    assert published.write is not None
    assert published.write.snapshot_id != existing
    assert sorted(lakehouse.read(TABLE)["x"]) == [1.0, 2.0]  # the whole table replaced
    assert lakehouse.snapshot_properties(TABLE) == PROPERTIES
    assert (folder / "part-0.parquet").exists()  # committed files live where they were staged


def test_a_failed_audit_commits_nothing_and_removes_the_staging_folder(
    lakehouse: LocalLakehouse, existing: int
) -> None:
    staging, folder = staging_of(lakehouse, "bad")
    published = stage_check_commit(
        lakehouse,
        TABLE,
        staging,
        writer([1.0, float("inf")]),
        finite,
        snapshot_properties=PROPERTIES,
    )
    assert not published.committed
    assert published.write is None
    assert published.audit == Audit(False, "1 non-finite")  # reported, though nothing committed
    assert not folder.exists()
    table = lakehouse.catalog().load_table(TABLE)
    assert table.current_snapshot().snapshot_id == existing
    assert lakehouse.read(TABLE)["x"].to_list() == [0.5]
    assert lakehouse.snapshot_properties(TABLE) == {}


@pytest.mark.parametrize("error", [RuntimeError("Batch job lost"), KeyboardInterrupt()])
def test_an_exception_while_staging_removes_the_folder_and_propagates(
    lakehouse: LocalLakehouse, existing: int, error: BaseException
) -> None:
    staging, folder = staging_of(lakehouse, "crashed")

    def stage_then_fail(directory: str) -> Written:
        writer([1.0])(directory)  # half the run's files are there when it fails
        raise error

    with pytest.raises(type(error)):
        stage_check_commit(lakehouse, TABLE, staging, stage_then_fail, finite)
    assert not folder.exists()
    assert lakehouse.catalog().load_table(TABLE).current_snapshot().snapshot_id == existing


def test_an_exception_in_the_check_or_the_commit_removes_the_folder(
    lakehouse: LocalLakehouse, existing: int
) -> None:
    staging, folder = staging_of(lakehouse, "check-crashed")

    def broken_check(staged: Written) -> Audit[str]:
        raise ValueError("the reference partition is unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        stage_check_commit(lakehouse, TABLE, staging, writer([1.0]), broken_check)
    assert not folder.exists()
    staging, folder = staging_of(lakehouse, "bad-property")
    with pytest.raises(tables.LakehouseError, match=r"must start with 'firepipe\.'"):
        stage_check_commit(
            lakehouse, TABLE, staging, writer([1.0]), finite, snapshot_properties={"spec": "x"}
        )
    assert not folder.exists()
    assert lakehouse.read(TABLE)["x"].to_list() == [0.5]


def test_a_first_commit_creates_the_table_with_its_partitioning_and_scope(
    lakehouse: LocalLakehouse,
) -> None:
    staging, _ = staging_of(lakehouse, "first")

    def stage(directory: str) -> Written:
        path = Path(directory.removeprefix("file://")) / "b=1.parquet"
        path.parent.mkdir(parents=True)
        pl.DataFrame({"x": [1.0, 3.0], "b": ["1", "1"]}).write_parquet(path, statistics=True)
        return Written([f"{directory}/b=1.parquet"], 2)

    published = stage_check_commit(
        lakehouse,
        TABLE,
        staging,
        stage,
        finite,
        partitioning=[tables.PartitionColumn("b")],
        scope=tables.Scope(((tables.Values("b", ("1",)),),)),
    )
    assert published.write is not None
    assert published.write.scope == "b in (1)"
    assert [f.name for f in lakehouse.catalog().load_table(TABLE).spec().fields] == ["b"]
