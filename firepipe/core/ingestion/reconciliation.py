"""Reconciliation of the extraction: per-day row counts of the source against bronze.

Rows are counted by the UTC day of `updated_at`, not of the reading's `ts`: updated_at is the
extraction's key, typed in the source and in both bronze tables (a dead letter's ts may be text
that is no time at all), and it orders rows against the watermark, so both sides can be counted
up to the committed watermark exactly and rows still to come are no difference. A reading's ts
says nothing about when the row reached the warehouse: a device that uploads a day late would
make every day's count move under the check.
"""

from datetime import UTC, date, datetime, time

import polars as pl

from firepipe.core.ingestion.extraction import KEY_UPDATED_AT, Watermark, at_or_before

DAY = "day"
ROWS = "rows"
DAILY_COUNT_SCHEMA: dict[str, pl.DataType] = {DAY: pl.Date(), ROWS: pl.Int64()}
DIFFERENCE_SCHEMA: dict[str, pl.DataType] = {
    DAY: pl.Date(),
    "source_rows": pl.Int64(),
    "bronze_rows": pl.Int64(),
    "missing_from_bronze": pl.Int64(),  # negative: bronze holds rows the source does not
}


def daily_counts(keys: pl.LazyFrame, watermark: Watermark, since: date | None) -> pl.DataFrame:
    """Rows per UTC day of updated_at, up to the watermark and from `since` on (None: all)."""
    rows = keys.filter(at_or_before(watermark))
    day = pl.col(KEY_UPDATED_AT).dt.convert_time_zone("UTC").dt.date()
    if since is not None:
        # On the raw column, which the Iceberg scan can prune by, not on the derived day.
        start = datetime.combine(since, time(), tzinfo=UTC)
        rows = rows.filter(pl.col(KEY_UPDATED_AT) >= start)
    counted = rows.group_by(day.alias(DAY)).agg(pl.len().cast(pl.Int64).alias(ROWS))
    return counted.sort(DAY).collect().cast(DAILY_COUNT_SCHEMA)  # type: ignore[arg-type]


def count_differences(source: pl.DataFrame, bronze: pl.DataFrame) -> pl.DataFrame:
    """The days whose counts differ (DIFFERENCE_SCHEMA), a day absent on one side counting 0."""
    for side, frame in (("source", source), ("bronze", bronze)):
        if set(frame.columns) != set(DAILY_COUNT_SCHEMA):
            raise ValueError(f"{side} counts need columns {list(DAILY_COUNT_SCHEMA)}")
    joined = source.join(bronze, on=DAY, how="full", coalesce=True, suffix="_bronze")
    both = joined.select(
        DAY,
        pl.col(ROWS).fill_null(0).alias("source_rows"),
        pl.col(f"{ROWS}_bronze").fill_null(0).alias("bronze_rows"),
    ).with_columns((pl.col("source_rows") - pl.col("bronze_rows")).alias("missing_from_bronze"))
    differing = both.filter(pl.col("missing_from_bronze") != 0).sort(DAY)
    return differing.cast(DIFFERENCE_SCHEMA)  # type: ignore[arg-type]
