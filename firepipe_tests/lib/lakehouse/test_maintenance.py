"""Table maintenance on a local lakehouse: expiry keeps the retention and what lineage refers to,
compaction and the manifest rewrite change the files, never the rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from firepipe.lib.lakehouse import maintenance, pairs, tables
from firepipe.resources.lakehouse import LocalLakehouse

SILVER, GOLD = "silver.readings", "gold.features"
LATER = datetime.now(UTC) + timedelta(days=1)  # every snapshot written here is older than this


def commit_rows(lake: LocalLakehouse, identifier: str, commits: int, families: int = 1) -> None:
    """`commits` writes, each replacing one key's rows: one small file and one manifest each."""
    for i in range(commits):
        rows = pl.DataFrame({"family": [f"f{i % families}"], "key": [i], "value": [float(i)]})
        scope = tables.Scope(((tables.Values("key", (str(i),)),),))
        partitioning = [tables.PartitionColumn("family")]
        tables.write_table(lake.catalog(), identifier, rows, partitioning, scope)


def snapshot_ids(lake: LocalLakehouse, identifier: str) -> list[int]:
    return [s.snapshot_id for s in lake.catalog().load_table(identifier).snapshots()]


def files_under(lake: LocalLakehouse, identifier: str) -> int:
    location = Path(lake.catalog().load_table(identifier).location().removeprefix("file://"))
    return sum(1 for p in location.rglob("*") if p.is_file())


def test_expire_keeps_the_last_n_and_the_snapshot_gold_refers_to(lake: LocalLakehouse) -> None:
    commit_rows(lake, SILVER, 12)
    before = snapshot_ids(lake, SILVER)
    referenced = before[2]  # gold was computed from silver's third version
    tables.write_table(
        lake.catalog(),
        GOLD,
        pl.DataFrame({"x": [1]}),
        snapshot_properties={"firepipe.silver-snapshot-id": str(referenced)},
    )
    current = lake.read(SILVER).sort("key")
    files = files_under(lake, SILVER)

    protected = maintenance.referenced_snapshot_ids(lake.catalog(), [SILVER, GOLD])
    assert protected == {referenced}
    retention = maintenance.Retention(max_age=timedelta(0), keep_last=3)
    expired, deleted = maintenance.expire(lake.catalog(), SILVER, retention, protected, LATER)

    assert snapshot_ids(lake, SILVER) == [referenced, *before[-3:]]
    assert expired == len(before) - 4
    # The 8 manifest lists of expired snapshots go; the expiry commit writes one metadata file.
    assert deleted == 8
    assert files_under(lake, SILVER) == files - deleted + 1
    assert_frame_equal(lake.read(SILVER).sort("key"), current)
    # Time travel to the kept snapshot still reads its files: keys 0..2, as gold saw them.
    assert lake.scan(SILVER, snapshot_id=referenced).collect()["key"].sort().to_list() == [0, 1, 2]


def test_expire_keeps_every_snapshot_younger_than_the_retention_age(lake: LocalLakehouse) -> None:
    commit_rows(lake, SILVER, 5)
    retention = maintenance.Retention(max_age=timedelta(days=7), keep_last=1)
    assert maintenance.expire(lake.catalog(), SILVER, retention, set()) == (0, 0)
    assert len(snapshot_ids(lake, SILVER)) == 5
    # The same snapshots, judged eight days later, are past the age: all but the last go.
    eight_days = datetime.now(UTC) + timedelta(days=8)
    assert maintenance.expire(lake.catalog(), SILVER, retention, set(), eight_days)[0] == 4
    assert lake.read(SILVER)["key"].sort().to_list() == [0, 1, 2, 3, 4]


def test_compaction_rewrites_each_partitions_small_files_as_one_keeping_the_rows(
    lake: LocalLakehouse,
) -> None:
    commit_rows(lake, SILVER, 10, families=2)
    rows = lake.read(SILVER).sort("key")
    assert maintenance.compact(lake.catalog(), SILVER) == (10, 2)  # one file per family
    assert_frame_equal(lake.read(SILVER).sort("key"), rows)
    table = lake.catalog().load_table(SILVER)
    partitions = {str(task.file.partition) for task in table.scan().plan_files()}
    assert len(partitions) == 2
    assert maintenance.compact(lake.catalog(), SILVER) == (2, 2)  # nothing left to merge


def test_rewrite_manifests_merges_them_into_one_and_sets_merging_for_later_commits(
    lake: LocalLakehouse,
) -> None:
    commit_rows(lake, SILVER, 8)
    table = lake.catalog().load_table(SILVER)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    assert len(snapshot.manifests(table.io)) == 8
    rows = lake.read(SILVER).sort("key")
    assert maintenance.rewrite_manifests(lake.catalog(), SILVER, keep_metadata_files=5) == 1
    table = lake.catalog().load_table(SILVER)
    assert table.properties["commit.manifest-merge.enabled"] == "true"
    assert table.properties["write.metadata.previous-versions-max"] == "5"
    assert_frame_equal(lake.read(SILVER).sort("key"), rows)
    # Nothing to merge a second time: no commit.
    before = snapshot_ids(lake, SILVER)
    assert maintenance.rewrite_manifests(lake.catalog(), SILVER, keep_metadata_files=5) == 1
    assert snapshot_ids(lake, SILVER) == before


def test_maintain_leaves_few_files_and_snapshots_and_the_same_rows(lake: LocalLakehouse) -> None:
    commit_rows(lake, SILVER, 20)
    rows = lake.read(SILVER).sort("key")
    files = files_under(lake, SILVER)
    retention = maintenance.Retention(max_age=timedelta(0), keep_last=2)
    (done,) = maintenance.maintain(lake.catalog(), [SILVER], retention, now=LATER)
    assert (done.files_before, done.files_after) == (20, 1)
    assert (done.manifests_before, done.manifests_after) == (20, 1)
    # The last 2 are maintenance commits (manifests, compaction): the write under them stays.
    assert (done.snapshots_before, done.snapshots_after) == (20, 3)
    assert files_under(lake, SILVER) < files
    assert_frame_equal(lake.read(SILVER).sort("key"), rows)


def test_retention_refuses_keeping_no_snapshot() -> None:
    with pytest.raises(tables.LakehouseError, match="keep_last must be >= 1"):
        maintenance.Retention(keep_last=0)


@pytest.fixture
def lake(lakehouse: LocalLakehouse) -> LocalLakehouse:
    return lakehouse


def test_a_write_during_compaction_wins_and_no_replaced_row_comes_back(
    lake: LocalLakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_rows(lake, SILVER, 6)
    read_files = maintenance.ArrowScan.to_table
    raced = []

    def read_then_race(scan: maintenance.ArrowScan, tasks: object) -> object:
        rows = read_files(scan, tasks)
        if not raced:  # a sink replaces key 3 after compaction read the files
            raced.append(True)
            scope = tables.Scope(((tables.Values("key", ("3",)),),))
            new = pl.DataFrame({"family": ["f0"], "key": [3], "value": [30.0]})
            tables.write_table(lake.catalog(), SILVER, new, scope=scope)
        return rows

    monkeypatch.setattr(maintenance.ArrowScan, "to_table", read_then_race)
    retention = maintenance.Retention(max_age=timedelta(0), keep_last=2)
    done = maintenance.maintain_table(lake.catalog(), SILVER, retention, set(), now=LATER)
    assert done.compaction_skipped is not None  # left for the next run
    assert (done.files_before, done.files_after) == (6, 6)
    values = dict(lake.read(SILVER).select("key", "value").iter_rows())
    assert values == {0: 0.0, 1: 1.0, 2: 2.0, 3: 30.0, 4: 4.0, 5: 5.0}


def test_expire_keeps_the_published_partner_of_a_pair_killed_between_its_commits(
    lake: LocalLakehouse,
) -> None:
    primary, partner = "silver.readings", "silver.quarantine"
    catalog = lake.catalog()
    for run in range(1, 6):  # five complete runs: partner first, primary last
        props = pairs.run_properties(f"run-{run}")
        for identifier in (partner, primary):
            rows = pl.DataFrame({"key": [run], "family": ["f0"], "value": [float(run)]})
            scope = tables.Scope(((tables.Values("key", (str(run),)),),))
            tables.write_table(catalog, identifier, rows, scope=scope, snapshot_properties=props)
    published = catalog.load_table(partner).current_snapshot()
    assert published is not None
    # Run 6 is killed after its partner commit: run 5's partner snapshot is still published.
    extra = pl.DataFrame({"key": [6], "family": ["f0"], "value": [6.0]})
    tables.write_table(catalog, partner, extra, snapshot_properties=pairs.run_properties("run-6"))

    retention = maintenance.Retention(max_age=timedelta(0), keep_last=1)
    maintenance.maintain(catalog, [primary, partner], retention, now=LATER)

    assert published.snapshot_id in snapshot_ids(lake, partner)
    assert len(snapshot_ids(lake, partner)) < 6  # runs 1..4 went
    state = pairs.repair(catalog, primary, partner)
    assert (state.run_id, state.published) == ("run-5", published.snapshot_id)
    assert lake.read(partner)["key"].sort().to_list() == [1, 2, 3, 4, 5]
