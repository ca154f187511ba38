"""The feature spec compiled to PySpark window functions, for the Spark engine of gold.

Same semantics as firepipe.core.features.spec (see its docstring): windows are ranges over the
reading time in microseconds since the epoch, so (t - w, t] is `rangeBetween(-(w_us - 1), 0)`,
and the reading exactly lag_s earlier is the one row in `rangeBetween(-lag_us, -lag_us)`.
Spark's avg/stddev_samp/min/max skip nulls and return null over no values (stddev_samp also
over one value, with spark.sql.legacy.statisticalAggregate false, the default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column, Window, WindowSpec
from pyspark.sql import functions as sf

from firepipe.core.features.spec import (
    ID_COLUMNS,
    Difference,
    Feature,
    FeatureSpec,
    RateOfRise,
    Ratio,
    Rise,
    Rolling,
    SmokeHeatLag,
    earlier_lags,
    earlier_name,
    require_columns,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

US_PER_S = 1_000_000
_TIME_US = "__ts_us"
_SPARK_STATISTICS = {"mean": sf.avg, "std": sf.stddev_samp, "min": sf.min, "max": sf.max}


def _window(first_us: int, last_us: int) -> WindowSpec:
    ordered = Window.partitionBy("device_id").orderBy(_TIME_US)
    return ordered.rangeBetween(first_us, last_us)


def _trailing(window_s: int) -> WindowSpec:
    return _window(-(window_s * US_PER_S - 1), 0)


def _change(channel: str, lag_s: int) -> Column:
    return sf.col(channel).cast("double") - sf.col(earlier_name(channel, lag_s))


def _column(feature: Feature) -> Column:
    if isinstance(feature, Rolling):
        statistic = _SPARK_STATISTICS[feature.statistic]
        x = sf.col(feature.channel).cast("double")
        return statistic(x).over(_trailing(feature.window_s))
    if isinstance(feature, Difference):
        return _change(feature.channel, feature.lag_s)
    if isinstance(feature, RateOfRise):
        return _change(feature.channel, feature.lag_s) * sf.lit(60.0 / feature.lag_s)
    if isinstance(feature, Rise):
        return _column(Rolling(feature.channel, "mean", feature.window_s)) - _column(
            Rolling(feature.channel, "mean", feature.baseline_s)
        )
    if isinstance(feature, Ratio):
        den = sf.col(feature.denominator).cast("double")
        return sf.when(den != 0, sf.col(feature.numerator).cast("double") / den)
    assert isinstance(feature, SmokeHeatLag)

    def onset(channel: str, rise: float) -> Column:
        seconds = sf.col(_TIME_US).cast("double") / sf.lit(float(US_PER_S))
        rose = sf.when(_change(channel, feature.rise_lag_s) >= sf.lit(rise), seconds)
        return sf.min(rose).over(_trailing(feature.window_s))

    return onset(feature.heat_channel, feature.heat_rise) - onset(
        feature.smoke_channel, feature.smoke_rise
    )


def spark_features(df: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Features of silver rows (gap rows included): one row per non-gap reading, ID_COLUMNS and
    the spec's columns as doubles, sorted by (device_id, ts)."""
    require_columns(df.columns, spec)
    frame = df.withColumn(_TIME_US, sf.unix_micros(sf.col("ts")))
    for lag_s, channels in earlier_lags(spec).items():
        exactly_then = _window(-lag_s * US_PER_S, -lag_s * US_PER_S)
        frame = frame.withColumns(
            {
                earlier_name(c, lag_s): sf.first(sf.col(c).cast("double")).over(exactly_then)
                for c in channels
            }
        )
    frame = frame.withColumns({f.name: _column(f).cast("double") for f in spec.features})
    if "is_gap" in df.columns:
        frame = frame.filter(~sf.col("is_gap"))
    return frame.select(*ID_COLUMNS, *spec.names).orderBy("device_id", "ts")
