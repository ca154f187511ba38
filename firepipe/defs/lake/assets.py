"""Silver: every bronze reading standardised into silver/sensor_readings once, or into
silver/quarantine with the rule it broke (firepipe.core.standardise.to_silver).

Silver is rebuilt from the whole of bronze on each run: last write wins across every source, so
a correction that lands later replaces what was there, whichever partition it came in. Its
blocking checks run before the write: when one fails, the step fails and the silver tables keep
their previous snapshot.

The two tables are one version, published by one commit (firepipe.lib.lakehouse.pairs):
quarantine is committed first, readings last, both snapshots carrying the run's id. A reading can
move between the tables from one run to the next (a `future_ts` reading becomes valid as the
clock passes it; a rule change moves the other way), so no order of two plain commits keeps
every reading in exactly one current snapshot across a kill. What holds at every instant, a kill
at any point included: silver/sensor_readings' current snapshot and the quarantine snapshot of
the same run (`pairs.published_partner`) are the whole output of one run, so every reading of
the bronze that run read is in exactly one of them (or was superseded by a later write of its
second, counted in duplicate_rows), and a reading committed to bronze after that run read it is
pending: the next run takes it. Readings are the publishing commit because everything built on
silver (gold, dbt) reads them alone and so never sees half a run. A kill between the commits
leaves quarantine's current snapshot one run ahead: until silver's next run rolls it back to
the published one (first thing, before its checks, so even a run that fails them repairs), a
reader of quarantine's current snapshot rather than `published_partner` may find a reading that
moved in both tables or in neither. ("Read" is what the IO manager loaded: each bronze table's
current snapshot when the step started; those snapshot ids are not recorded.)
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import polars as pl
from pyiceberg.exceptions import CommitFailedException

from firepipe import names
from firepipe.core.lake.standardise import RULES, SOURCES, to_silver
from firepipe.defs.automation import LAKE_FRESHNESS, follow_partial_upstream
from firepipe.defs.lake import checks
from firepipe.defs.lake.checks import CHECK_NAMES, DEFAULT_FIELD_MAX_AGE_H, DESCRIPTIONS
from firepipe.lib.lakehouse import pairs, tables
from firepipe.lib.lakehouse.io_manager import ICEBERG_PARTITIONING, SNAPSHOT_PROPERTIES
from firepipe.resources.lakehouse import Lakehouse

READINGS_KEY = checks.ASSET_KEY
QUARANTINE_KEY = dg.AssetKey(names.QUARANTINE)
BRONZE_KEYS: dict[str, dg.AssetKey] = {
    "synthetic": dg.AssetKey(names.SYNTHETIC_READINGS),
    "field": dg.AssetKey(names.FIELD_READINGS),
    "landed": dg.AssetKey(names.LANDED_READINGS),
}
READINGS_TABLE = names.table_name(names.SENSOR_READINGS)
QUARANTINE_TABLE = names.table_name(names.QUARANTINE)
# Queries read a day or a few of readings (dbt's daily summaries, a device's fire): partitioning
# by day of ts lets Iceberg, DuckDB and Athena skip the other days' files.
READINGS_PARTITIONING = ["day(ts)"]
# Silver follows bronze: any source updated, silver is rebuilt (firepipe.defs.automation).
FOLLOW_BRONZE = follow_partial_upstream(BRONZE_KEYS["synthetic"])


class SilverConfig(dg.Config):
    """How old the field source's newest row may be before silver's freshness check fails."""

    field_max_age_h: float = DEFAULT_FIELD_MAX_AGE_H


@dg.multi_asset(
    outs={
        "sensor_readings": dg.AssetOut(
            key=READINGS_KEY,
            group_name=names.group_name(names.SENSOR_READINGS),
            kinds={"polars", "iceberg"},
            description=(
                "Readings from every bronze source: typed, units standardised, one row per "
                "device and second (last write wins by arrival), aligned to 1 Hz with gap rows "
                "for gaps up to 10 minutes. Sorted by (device_id, ts)."
            ),
            metadata={ICEBERG_PARTITIONING: READINGS_PARTITIONING},
            automation_condition=FOLLOW_BRONZE,
            freshness_policy=LAKE_FRESHNESS,
        ),
        "quarantine": dg.AssetOut(
            key=QUARANTINE_KEY,
            group_name=names.group_name(names.SENSOR_READINGS),
            kinds={"polars", "iceberg"},
            description=(
                "Readings that broke a silver rule (missing key, ambiguous units, future time, "
                "out of range): one row per reading, with the rule, a detail and the raw row."
            ),
            automation_condition=FOLLOW_BRONZE,
        ),
    },
    ins={source: dg.AssetIn(key=key) for source, key in BRONZE_KEYS.items()},
    check_specs=[
        dg.AssetCheckSpec(name, asset=READINGS_KEY, blocking=True, description=DESCRIPTIONS[name])
        for name in CHECK_NAMES
    ],
)
def silver(
    context: dg.AssetExecutionContext,
    config: SilverConfig,
    lakehouse: Lakehouse,
    synthetic: pl.DataFrame,
    field: pl.DataFrame,
    landed: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    repair_pair(context, lakehouse)
    now = datetime.now(UTC)
    bronze = {"synthetic": synthetic, "field": field, "landed": landed}
    result = to_silver(bronze, now=now)
    # Audit, then publish: the checks judge the rows in memory and a failed one stops the step
    # before anything is written, so the silver table never holds rows its checks refused.
    judged = [
        checks.null_rate(result.readings),
        checks.ranges(result.readings),
        checks.duplicate_rate(result),
        checks.freshness(field, now, config.field_max_age_h),
    ]
    yield from judged
    failed = [c.check_name for c in judged if not c.passed]
    if failed:
        raise dg.Failure(f"silver checks failed ({', '.join(failed)}): nothing written")
    quarantined = result.quarantined_by_rule()
    # Quarantine first: the readings commit publishes the pair (module docstring).
    published_with = {SNAPSHOT_PROPERTIES: pairs.run_properties(context.run.run_id)}
    yield dg.Output(
        result.quarantine,
        output_name="quarantine",
        metadata={**{f"rows_{rule}": quarantined[rule] for rule in RULES}, **published_with},
    )
    yield dg.Output(
        result.readings,
        output_name="sensor_readings",
        metadata={
            **published_with,
            **{f"rows_from_{s}": result.arrived_rows.get(s, 0) for s in SOURCES},
            "quarantined_rows": result.quarantine.height,
            **{f"quarantined_{rule}": quarantined[rule] for rule in RULES},
            "duplicate_rows": result.duplicate_rows,
            "gap_rows": result.gap_rows,
        },
    )


def repair_pair(context: dg.AssetExecutionContext, lakehouse: Lakehouse) -> None:
    """Roll quarantine back to the published pair if a run was killed between its commits.
    Not repairable here (another run committing now, or the published snapshot expired) is no
    reason to stop: this run rewrites both tables."""
    try:
        state = pairs.repair(lakehouse.catalog(), READINGS_TABLE, QUARANTINE_TABLE)
    except (CommitFailedException, tables.LakehouseError) as e:
        context.log.warning(f"{QUARANTINE_TABLE} not repaired: {e}")
        return
    if not state.complete:
        context.log.warning(
            f"{QUARANTINE_TABLE} was ahead of {READINGS_TABLE} (run {state.run_id}'s pair, "
            f"killed between its commits?): rolled back from snapshot {state.current} to "
            f"{state.published}"
        )
