"""Silver: every bronze reading standardised into silver/sensor_readings once, or into
silver/quarantine with the rule it broke (firepipe.core.standardise.to_silver).

Silver is rebuilt from the whole of bronze on each run: last write wins across every source, so
a correction that lands later replaces what was there, whichever partition it came in. Its
blocking checks run before the write: when one fails, the step fails and the silver tables keep
their previous snapshot.
"""

from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.lake.standardise import RULES, SOURCES, to_silver
from firepipe.defs.lake import checks
from firepipe.defs.lake.checks import CHECK_NAMES, DEFAULT_FIELD_MAX_AGE_H, DESCRIPTIONS
from firepipe.lib.lakehouse.io_manager import ICEBERG_PARTITIONING

READINGS_KEY = checks.ASSET_KEY
QUARANTINE_KEY = dg.AssetKey(names.QUARANTINE)
BRONZE_KEYS: dict[str, dg.AssetKey] = {
    "synthetic": dg.AssetKey(names.SYNTHETIC_READINGS),
    "field": dg.AssetKey(names.FIELD_READINGS),
    "landed": dg.AssetKey(names.LANDED_READINGS),
}
# Queries read a day or a few of readings (dbt's daily summaries, a device's fire): partitioning
# by day of ts lets Iceberg, DuckDB and Athena skip the other days' files.
READINGS_PARTITIONING = ["day(ts)"]


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
        ),
        "quarantine": dg.AssetOut(
            key=QUARANTINE_KEY,
            group_name=names.group_name(names.SENSOR_READINGS),
            kinds={"polars", "iceberg"},
            description=(
                "Readings that broke a silver rule (missing key, ambiguous units, future time, "
                "out of range): one row per reading, with the rule, a detail and the raw row."
            ),
        ),
    },
    ins={source: dg.AssetIn(key=key) for source, key in BRONZE_KEYS.items()},
    check_specs=[
        dg.AssetCheckSpec(name, asset=READINGS_KEY, blocking=True, description=DESCRIPTIONS[name])
        for name in CHECK_NAMES
    ],
)
def silver(
    config: SilverConfig,
    synthetic: pl.DataFrame,
    field: pl.DataFrame,
    landed: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
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
    yield dg.Output(
        result.readings,
        output_name="sensor_readings",
        metadata={
            **{f"rows_from_{s}": result.arrived_rows.get(s, 0) for s in SOURCES},
            "quarantined_rows": result.quarantine.height,
            **{f"quarantined_{rule}": quarantined[rule] for rule in RULES},
            "duplicate_rows": result.duplicate_rows,
            "gap_rows": result.gap_rows,
        },
    )
    yield dg.Output(
        result.quarantine,
        output_name="quarantine",
        metadata={f"rows_{rule}": quarantined[rule] for rule in RULES},
    )
