"""Data-quality measures on readings, as plain functions the asset checks report."""

from __future__ import annotations

import polars as pl

from firepipe.core.readings import KEY_COLUMNS


def label_inconsistencies(readings: pl.DataFrame) -> int:
    """Rows whose fire label disagrees with their ignition time (a fire has one, others none)."""
    bad = pl.col("is_fire") != pl.col("ignition_ts").is_not_null()
    return readings.filter(bad | pl.col("is_fire").is_null()).height


def duplicate_key_count(readings: pl.DataFrame) -> int:
    """Rows beyond the first for each (device, second)."""
    return readings.height - readings.select(KEY_COLUMNS).n_unique()


def non_finite_count(frame: pl.DataFrame, columns: list[str]) -> int:
    """Infinite or NaN values across `columns` (nulls are allowed: missing history)."""
    if not columns or frame.height == 0:
        return 0
    counts = frame.select(
        pl.sum_horizontal((pl.col(c).is_nan() | pl.col(c).is_infinite()).sum() for c in columns)
    )
    return int(counts.item())
