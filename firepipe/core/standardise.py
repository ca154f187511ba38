"""Bronze -> silver: readings typed to the canonical schema, one row per (device, second).

Sources may repeat a reading (a retried upload, an overlapping extract) or report twice within
a second; timestamps are floored to the second and the last copy in arrival order wins.
Later rules (units, ranges, quarantine) extend this module.
"""

from __future__ import annotations

import polars as pl

from firepipe.core.readings import KEY_COLUMNS, READING_SCHEMA


def standardise_readings(bronze: pl.DataFrame) -> pl.DataFrame:
    missing = [c for c in READING_SCHEMA if c not in bronze.columns]
    if missing:
        raise ValueError(f"readings lack required columns: {', '.join(missing)}")
    typed = bronze.select(list(READING_SCHEMA)).cast(READING_SCHEMA)  # type: ignore[arg-type]
    return (
        typed.with_columns(pl.col("ts").dt.truncate("1s"))
        .drop_nulls(list(KEY_COLUMNS))
        .unique(subset=list(KEY_COLUMNS), keep="last", maintain_order=True)
        .sort(KEY_COLUMNS)
    )
