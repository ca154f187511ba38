"""Two tables published by the primary's commit: which partner snapshot is published, when the
pair is incomplete, and how it is repaired."""

import polars as pl
import pytest

from firepipe.lib.lakehouse import pairs, tables
from firepipe.resources.lakehouse import LocalLakehouse

PRIMARY, PARTNER = "silver.readings", "silver.rejects"


def write(lakehouse: LocalLakehouse, table: str, rows: list[int], **properties: str) -> int:
    frame = pl.DataFrame({"key": rows}, schema={"key": pl.Int64})
    result = tables.write_table(lakehouse.catalog(), table, frame, snapshot_properties=properties)
    assert result.snapshot_id is not None
    return result.snapshot_id


def publish(lakehouse: LocalLakehouse, run_id: str, good: list[int], bad: list[int]) -> int:
    """One run's pair, partner first; returns the partner's snapshot."""
    partner = write(lakehouse, PARTNER, bad, **pairs.run_properties(run_id))
    write(lakehouse, PRIMARY, good, **pairs.run_properties(run_id))
    return partner


def state(lakehouse: LocalLakehouse) -> pairs.PairState:
    return pairs.pair_state(lakehouse.catalog(), PRIMARY, PARTNER)


def test_a_complete_pair_publishes_the_partners_current_snapshot(
    lakehouse: LocalLakehouse,
) -> None:
    partner = publish(lakehouse, "run-a", [1, 2], [3])
    found = state(lakehouse)
    assert found.complete
    assert (found.run_id, found.published, found.current) == ("run-a", partner, partner)


def test_a_partner_ahead_is_incomplete_and_repaired_to_the_published_snapshot(
    lakehouse: LocalLakehouse,
) -> None:
    published = publish(lakehouse, "run-a", [1, 2], [3])
    # run-b moved 2 to the partner and was killed before its primary commit.
    ahead = write(lakehouse, PARTNER, [2, 3], **pairs.run_properties("run-b"))
    found = state(lakehouse)
    assert not found.complete
    assert (found.run_id, found.published, found.current) == ("run-a", published, ahead)
    snapshot = pairs.published_partner(lakehouse.catalog(), PRIMARY, PARTNER)
    assert lakehouse.scan(PARTNER, snapshot_id=snapshot).collect()["key"].to_list() == [3]

    assert pairs.repair(lakehouse.catalog(), PRIMARY, PARTNER) == found
    repaired = state(lakehouse)
    assert repaired.complete
    assert repaired.current == published
    assert lakehouse.read(PARTNER)["key"].to_list() == [3]
    assert pairs.repair(lakehouse.catalog(), PRIMARY, PARTNER) == repaired  # nothing to do


def test_maintenance_commits_belong_to_the_run_they_were_made_on(
    lakehouse: LocalLakehouse,
) -> None:
    publish(lakehouse, "run-a", [1, 2], [3])
    compacted = write(lakehouse, PARTNER, [3], **{pairs.MAINTENANCE_PROPERTY: "compaction"})
    write(lakehouse, PRIMARY, [1, 2], **{pairs.MAINTENANCE_PROPERTY: "compaction"})
    found = state(lakehouse)
    assert found.complete
    assert (found.run_id, found.published) == ("run-a", compacted)


def test_a_primary_not_written_as_a_pair_publishes_nothing_about_its_partner(
    lakehouse: LocalLakehouse,
) -> None:
    write(lakehouse, PARTNER, [3])
    write(lakehouse, PRIMARY, [1])
    found = state(lakehouse)
    assert found.complete
    assert found.published is None
    assert pairs.published_partner(lakehouse.catalog(), PRIMARY, PARTNER) is None


def test_a_run_whose_partner_snapshot_is_gone_is_a_clear_error(lakehouse: LocalLakehouse) -> None:
    write(lakehouse, PARTNER, [3], **pairs.run_properties("run-a"))
    write(lakehouse, PRIMARY, [1], **pairs.run_properties("run-z"))
    with pytest.raises(tables.LakehouseError, match="no snapshot of that run"):
        state(lakehouse)
    with pytest.raises(tables.LakehouseError, match="must not be empty"):
        pairs.run_properties("")
