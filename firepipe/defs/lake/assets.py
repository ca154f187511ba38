"""Silver: standardised, deduplicated readings from every bronze source."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from firepipe.core import quality
from firepipe.core.standardise import standardise_readings

ASSET_KEY = dg.AssetKey(["silver", "sensor_readings"])
# A retried upload or an at-least-once delivery repeats a few readings, which silver drops; past
# 1 % of the rows a source is replaying whole batches (a broken watermark or cursor), and that
# must stop the pipeline before features are built on it.
MAX_DUPLICATE_RATE = 0.01


@dg.asset(
    key=ASSET_KEY,
    group_name="lake",
    kinds={"polars", "iceberg"},
    ins={"synthetic": dg.AssetIn(key=["bronze", "synthetic_readings"])},
    check_specs=[dg.AssetCheckSpec("duplicate_rate", asset=ASSET_KEY, blocking=True)],
)
def sensor_readings(
    synthetic: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    """Readings typed to the canonical schema, one row per device per second, sorted."""
    silver = standardise_readings(synthetic)
    yield dg.Output(silver, metadata={"dropped_rows": synthetic.height - silver.height})
    # Measured on what arrived: silver is unique per device and second by construction.
    arrived = synthetic.with_columns(pl.col("ts").dt.truncate("1s"))
    duplicates = quality.duplicate_key_count(arrived)
    rate = duplicates / synthetic.height if synthetic.height else 0.0
    yield dg.AssetCheckResult(
        check_name="duplicate_rate",
        passed=rate <= MAX_DUPLICATE_RATE,
        metadata={
            "duplicate_rows": duplicates,
            "duplicate_rate": rate,
            "max_duplicate_rate": MAX_DUPLICATE_RATE,
        },
    )
