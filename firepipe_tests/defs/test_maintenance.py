"""The lake maintenance job on a local lakehouse, and its schedule in the code location."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from firepipe.defs.maintenance.jobs import lake_maintenance
from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse

SILVER, GOLD = "silver.readings", "gold.features"


def run_config(**config: object) -> dict[str, object]:
    return {"ops": {"maintain_tables": {"config": config}}}


def test_the_job_compacts_and_expires_every_table_keeping_lineage(
    lakehouse: LocalLakehouse,
) -> None:
    catalog = lakehouse.catalog()
    for i in range(6):
        scope = tables.Scope(((tables.Values("key", (str(i),)),),))
        tables.write_table(catalog, SILVER, pl.DataFrame({"key": [i]}), scope=scope)
    written = [s.snapshot_id for s in catalog.load_table(SILVER).snapshots()]
    referenced = written[0]
    tables.write_table(
        catalog,
        GOLD,
        pl.DataFrame({"x": [1]}),
        snapshot_properties={"firepipe.silver-snapshot-id": str(referenced)},
    )

    result = lake_maintenance.execute_in_process(
        run_config=run_config(retention_days=0, keep_last=1),
        resources={"lakehouse": lakehouse},
    )

    assert result.success
    assert result.output_for_node("maintain_tables") == 2  # both tables
    silver = catalog.load_table(SILVER)
    kept = [s.snapshot_id for s in silver.snapshots()]
    # The lineage reference, the last write, and the two maintenance commits on top of it.
    assert kept[:2] == [referenced, written[-1]]
    assert len(kept) == 4
    assert len(list(silver.scan().plan_files())) == 1
    assert lakehouse.read(SILVER)["key"].sort().to_list() == list(range(6))
    assert lakehouse.scan(SILVER, snapshot_id=referenced).collect()["key"].to_list() == [0]


def test_the_job_refuses_an_unknown_table(lakehouse: LocalLakehouse) -> None:
    tables.write_table(lakehouse.catalog(), SILVER, pl.DataFrame({"key": [1]}))
    with pytest.raises(dg.Failure, match=r"no such table\(s\) in the lakehouse: \['silver.nope'\]"):
        lake_maintenance.execute_in_process(
            run_config=run_config(tables=["silver.nope"]), resources={"lakehouse": lakehouse}
        )


def test_the_daily_schedule_runs_the_job_and_end_to_end_does_not(firepipe_home: Path) -> None:
    from firepipe.definitions import defs

    definitions = defs()
    schedule = definitions.resolve_schedule_def("lake_maintenance_daily")
    assert schedule.job_name == "lake_maintenance"
    assert schedule.cron_schedule == "30 3 * * *"
    end_to_end = definitions.resolve_job_def("end_to_end")
    assert "maintain_tables" not in {node.name for node in end_to_end.graph.node_defs}
