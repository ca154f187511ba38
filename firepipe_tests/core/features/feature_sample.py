"""A small silver-shaped sample for feature tests: several devices, filled gaps (gap rows with
null channels), a gap too long to fill (no rows), null channels on real readings, zero CO2, and
fire devices whose smoke and heat rise at different times (so the smoke-heat lag is defined);
and the comparison every engine is held to."""

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import polars as pl

from firepipe.core.features.spec import ID_COLUMNS
from firepipe.core.readings import CHANNEL_NAMES

START = datetime(2026, 1, 1, tzinfo=UTC)
BASELINE = {
    "temperature_c": 21.0,
    "humidity_pct": 45.0,
    "smoke_obscuration_pct_per_m": 0.1,
    "pm25_ugm3": 8.0,
    "co_ppm": 1.0,
    "co2_ppm": 450.0,
    "voc_ppb": 150.0,
    "h2_ppm": 0.5,
}
# Per-second rise of each channel once a device's fire starts (smoke first, heat later).
FIRE_RISE_PER_S = {"smoke_obscuration_pct_per_m": 0.08, "temperature_c": 0.2, "co_ppm": 0.5}


def silver_sample(devices: int = 5, seconds: int = 1_200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(devices):
        t = np.arange(seconds, dtype=np.int64)
        if d == 2:  # a 700 s gap (longer than silver fills): no rows at all
            t = t[(t < 300) | (t >= 1_000)]
        is_gap = np.zeros(t.size, dtype=bool)
        if d == 1:  # a short filled gap: rows present, channels null
            is_gap[(t >= 100) & (t < 121)] = True
        columns: dict[str, np.ndarray] = {}
        for c in CHANNEL_NAMES:
            x = BASELINE[c] * (1 + 0.005 * rng.standard_normal(t.size))
            if d % 2 == 1 and c in FIRE_RISE_PER_S:
                onset_s = 400 if c == "smoke_obscuration_pct_per_m" else 520
                x = x + FIRE_RISE_PER_S[c] * np.clip(t - onset_s, 0, None)
            columns[c] = x.astype(np.float32)
        columns["co2_ppm"][rng.random(t.size) < 0.01] = 0.0
        frame = pl.DataFrame(
            {
                "site_id": f"site-{d % 2}",
                "device_id": f"dev-{d:03d}",
                "ts": pl.Series(START.timestamp() * 1e6 + t * 1_000_000).cast(pl.Int64),
                "scenario": "flaming" if d % 2 else "clean_baseline",
                "is_fire": d % 2 == 1,
                "is_gap": is_gap,
                **columns,
            }
        )
        null_mask = pl.Series(rng.random(t.size) < 0.02) | pl.Series(is_gap)
        frame = frame.with_columns(
            pl.when(null_mask if c != "temperature_c" or d != 3 else pl.Series(is_gap))
            .then(None)
            .otherwise(pl.col(c))
            .alias(c)
            for c in CHANNEL_NAMES
        )
        frames.append(frame)
    return (
        pl.concat(frames)
        .with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        .sort("device_id", "ts")
    )


def assert_same_features(
    actual: pl.DataFrame, expected: pl.DataFrame, names: Sequence[str]
) -> None:
    """The same rows in the same order, nulls in the same places, values to 1e-6 (relative,
    with a 1e-6 absolute floor for values that are zero up to rounding, a flat signal's std)."""
    assert actual.select(ID_COLUMNS).equals(expected.select(ID_COLUMNS))
    for name in names:
        a = actual[name].cast(pl.Float64).to_numpy()
        e = expected[name].cast(pl.Float64).to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{name}: nulls differ")
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name)
