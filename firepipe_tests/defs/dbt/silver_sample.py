"""A small silver table whose alarms and summaries are known by construction."""

from datetime import UTC, datetime, timedelta

import polars as pl

from firepipe.core.lake.standardise import SILVER_SCHEMA

DAY = datetime(2026, 3, 1, tzinfo=UTC)


def device_rows(
    site: str,
    device: str,
    start: datetime,
    *,
    is_fire: bool | None,
    smoke: list[float | None],
    temperature: list[float | None],
    source: str = "synthetic",
) -> list[dict[str, object]]:
    """One row per second from `start`; a None smoke and temperature is a gap row."""
    rows = []
    for i, (s, t) in enumerate(zip(smoke, temperature, strict=True)):
        gap = s is None and t is None
        rows.append(
            {
                "site_id": site,
                "device_id": device,
                "ts": start + timedelta(seconds=i),
                "scenario": "test",
                "is_fire": None if gap else is_fire,
                "temperature_c": t,
                "smoke_obscuration_pct_per_m": s,
                "co_ppm": None if gap else 1.0,
                "co2_ppm": None if gap else 420.0,
                "source": source,
                "arrived_at": start,
                "is_gap": gap,
            }
        )
    return rows


def silver_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema_overrides={k: SILVER_SCHEMA[k] for k in rows[0]})
    missing = [
        pl.lit(None, dtype).alias(c) for c, dtype in SILVER_SCHEMA.items() if c not in rows[0]
    ]
    return frame.with_columns(missing).select(list(SILVER_SCHEMA)).sort("device_id", "ts")


def sample_silver() -> pl.DataFrame:
    """Site a: a1 in a fire alarms twice on smoke (the second time across a gap that does not
    end the alarm), a2 without a fire never alarms and has 3 gap seconds. Site b: b1, field data
    without labels, crosses the heat threshold once, in the last seconds of the day, and goes
    on into the next UTC day."""
    a1_smoke = [0.1] * 10 + [5.0] * 5 + [0.2] * 5 + [4.3, 6.0] + [None] * 2 + [7.0] + [0.3] * 5
    a1_temp = [21.0 if s is not None else None for s in a1_smoke]
    a2_smoke: list[float | None] = [0.5] * 10 + [None] * 3 + [0.5] * 7
    a2_temp = [22.0 if s is not None else None for s in a2_smoke]
    b1_temp: list[float | None] = [30.0] * 5 + [57.2, 80.0, 90.0] + [40.0] * 12
    rows = [
        *device_rows("a", "a1", DAY, is_fire=True, smoke=a1_smoke, temperature=a1_temp),
        *device_rows("a", "a2", DAY, is_fire=False, smoke=a2_smoke, temperature=a2_temp),
        *device_rows(
            "b",
            "b1",
            DAY + timedelta(hours=23, minutes=59, seconds=50),
            is_fire=None,
            smoke=[0.0] * len(b1_temp),
            temperature=b1_temp,
            source="field",
        ),
    ]
    return silver_frame(rows)
