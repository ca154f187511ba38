"""Gold: per-device rolling features, versioned by the hash of their spec."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from firepipe.core import quality
from firepipe.core.features import compute_features, default_spec

ASSET_KEY = dg.AssetKey(["gold", "sensor_features"])


@dg.asset(
    key=ASSET_KEY,
    group_name="features",
    kinds={"polars", "iceberg"},
    ins={"readings": dg.AssetIn(key=["silver", "sensor_readings"])},
    check_specs=[dg.AssetCheckSpec("finite_features", asset=ASSET_KEY, blocking=True)],
)
def sensor_features(
    readings: pl.DataFrame,
) -> Iterator[dg.Output[pl.DataFrame] | dg.AssetCheckResult]:
    """Rolling mean/std/max over 30 s and 300 s and the 60 s change of every channel."""
    spec = default_spec()
    features = compute_features(readings, spec)
    yield dg.Output(
        features,
        metadata={"feature_spec_hash": spec.hash(), "feature_count": len(spec.features)},
    )
    bad = quality.non_finite_count(features, list(spec.names))
    yield dg.AssetCheckResult(
        check_name="finite_features", passed=bad == 0, metadata={"non_finite_values": bad}
    )
