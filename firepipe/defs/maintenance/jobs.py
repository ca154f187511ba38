"""The lake maintenance job and its daily schedule, over every table of the lakehouse.

A job of one op rather than an asset: it produces no data, and `end_to_end` (every asset) must
not run it. Retention comes from run config; the rule is firepipe.lib.lakehouse.maintenance's.
"""

import dataclasses
from datetime import timedelta

import dagster as dg
from pydantic import Field

from firepipe.lib.lakehouse import maintenance
from firepipe.resources.lakehouse import Lakehouse

_DEFAULT = maintenance.Retention()


class MaintenanceConfig(dg.Config):
    retention_days: float = Field(
        default=_DEFAULT.max_age / timedelta(days=1),
        ge=0,
        description="Keep every snapshot younger than this many days.",
    )
    keep_last: int = Field(
        default=_DEFAULT.keep_last,
        ge=1,
        description="Keep at least this many of each table's latest snapshots.",
    )
    small_file_mb: int = Field(
        default=maintenance.SMALL_FILE_BYTES // 2**20,
        ge=1,
        description="Data files under this size are compacted per partition.",
    )
    tables: list[str] = Field(
        default_factory=list,
        description="Tables to maintain ('namespace.table'); empty means every table.",
    )


@dg.op(description="Compact small files, rewrite manifests and expire old snapshots, per table.")
def maintain_tables(
    context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: Lakehouse
) -> int:
    known = lakehouse.list_tables()
    unknown = sorted(set(config.tables) - set(known))
    if unknown:
        raise dg.Failure(f"no such table(s) in the lakehouse: {unknown}; it holds {known}")
    retention = maintenance.Retention(timedelta(days=config.retention_days), config.keep_last)
    # Lineage references and pair runs are read from every table, also when only some are
    # maintained.
    chosen = config.tables or known
    results = maintenance.maintain(
        lakehouse.catalog(), chosen, retention, config.small_file_mb * 2**20, protect_from=known
    )
    report = {}
    for identifier, done in zip(chosen, results, strict=True):
        report[identifier] = dg.MetadataValue.json(dataclasses.asdict(done))
        line = (
            f"{identifier}: data files {done.files_before} -> {done.files_after}, manifests "
            f"{done.manifests_before} -> {done.manifests_after}, snapshots "
            f"{done.snapshots_before} -> {done.snapshots_after}, {done.files_deleted} files deleted"
        )
        if done.compaction_skipped:
            line += f"; compaction skipped: {done.compaction_skipped}"
        context.log.info(line)
    context.add_output_metadata(report)
    return len(report)


@dg.job(description="Lake maintenance over every table: see firepipe.lib.lakehouse.maintenance.")
def lake_maintenance() -> None:
    maintain_tables()


lake_maintenance_daily = dg.ScheduleDefinition(
    name="lake_maintenance_daily",
    job=lake_maintenance,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Maintain the lake once a day, in the early hours, with the default retention.",
)
