"""Silver: standardised, deduplicated readings from every bronze source."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from firepipe.core import quality
from firepipe.core.standardise import standardise_readings

ASSET_KEY = dg.AssetKey(["silver", "sensor_readings"])


@dg.asset(
    key=ASSET_KEY,
    group_name="lake",
    kinds={"polars", "iceberg"},
    ins={"synthetic": dg.AssetIn(key=["bronze", "synthetic_readings"])},
    check_specs=[dg.AssetCheckSpec("unique_device_second", asset=ASSET_KEY, blocking=True)],
)
def sensor_readings(
    synthetic: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    """Readings typed to the canonical schema, one row per device per second, sorted."""
    silver = standardise_readings(synthetic)
    yield dg.Output(silver, metadata={"dropped_rows": synthetic.height - silver.height})
    duplicates = quality.duplicate_key_count(silver)
    yield dg.AssetCheckResult(
        check_name="unique_device_second",
        passed=duplicates == 0,
        metadata={"duplicate_rows": duplicates},
    )
