"""The blocking checks of silver/sensor_readings, as functions of what silver produced.

All four guard what gold is built on, so all four block: a failure stops gold/sensor_features
(and anything else downstream) in the same run.
"""

from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.ingestion.extraction import KEY_UPDATED_AT
from firepipe.core.lake import quality
from firepipe.core.lake.standardise import Silver, channel_null_rates
from firepipe.defs.metadata import markdown_table

ASSET_KEY = dg.AssetKey(names.SENSOR_READINGS)

# A retried upload or an at-least-once delivery repeats a few readings, which silver drops; past
# 1 % of the rows a source is replaying whole batches (a broken watermark or cursor), and that
# must stop the pipeline before features are built on it.
MAX_DUPLICATE_RATE = 0.01
# The simulator makes 5 % of devices faulty and a quarter of those drop out (simulator
# defaults: fault_share, FAULTS), which nulls about 1 % of a channel's rows; a channel null on
# more than 10 % of the rows of devices that have the sensor has stopped reporting (a firmware
# or parser fault), which no fault model in the fleet explains.
MAX_NULL_RATE = 0.10
# Field devices report continuously and extraction runs at least daily (the warehouse sensor
# starts it whenever rows pass the watermark): a source whose newest row is a day old is down.
DEFAULT_FIELD_MAX_AGE_H = 24.0

DESCRIPTIONS = {
    "null_rate": (
        "Share of nulls per channel among non-gap rows of the devices that report the channel "
        f"at all, at most {MAX_NULL_RATE:.0%} (a device without the sensor is left out)."
    ),
    "ranges": "No channel value outside its physical range (readings.CHANNELS) survives.",
    "duplicate_rate": (
        f"Readings beyond the first per (device_id, second), as arrived, at most "
        f"{MAX_DUPLICATE_RATE:.0%} of the rows."
    ),
    "freshness": "The field source's newest arrival is no older than the configured limit.",
}
CHECK_NAMES = tuple(DESCRIPTIONS)


def _result(name: str, passed: bool, metadata: dict[str, object]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=ASSET_KEY, check_name=name, passed=passed, metadata=metadata
    )


def null_rate(readings: pl.DataFrame) -> dg.AssetCheckResult:
    rates = channel_null_rates(readings)
    too_high = [c for c, r in rates.items() if r is not None and r > MAX_NULL_RATE]
    table = pl.DataFrame(
        {"channel": list(rates), "null_rate": list(rates.values())},
        schema={"channel": pl.String, "null_rate": pl.Float64},
    )
    return _result(
        "null_rate",
        not too_high,
        {
            "null_rates": markdown_table(table),
            "max_null_rate": MAX_NULL_RATE,
            "channels_over_limit": ", ".join(too_high) or "none",
        },
    )


def ranges(readings: pl.DataFrame) -> dg.AssetCheckResult:
    violations = quality.range_violations(readings)
    return _result(
        "ranges",
        not any(violations.values()),
        {
            "out_of_range_values": sum(violations.values()),
            **{c: n for c, n in violations.items() if n},
        },
    )


def duplicate_rate(silver: Silver) -> dg.AssetCheckResult:
    """Measured on what arrived: silver is unique per device and second by construction."""
    arrived = sum(silver.arrived_rows.values())
    rate = silver.duplicate_rows / arrived if arrived else 0.0
    return _result(
        "duplicate_rate",
        rate <= MAX_DUPLICATE_RATE,
        {
            "duplicate_rows": silver.duplicate_rows,
            "duplicate_rate": rate,
            "max_duplicate_rate": MAX_DUPLICATE_RATE,
        },
    )


def freshness(field: pl.DataFrame, now: datetime, max_age_h: float) -> dg.AssetCheckResult:
    """The newest `updated_at` of the field source against `now`; a platform without field
    readings (synthetic only) has nothing to be stale."""
    if field.height == 0:
        return _result("freshness", True, {"field_rows": 0, "max_age_h": max_age_h})
    newest: datetime = field.get_column(KEY_UPDATED_AT).max()  # type: ignore[assignment]
    age = now - newest
    return _result(
        "freshness",
        age <= timedelta(hours=max_age_h),
        {
            "newest_field_arrival": newest.isoformat(),
            "age_h": age.total_seconds() / 3600,
            "max_age_h": max_age_h,
        },
    )
