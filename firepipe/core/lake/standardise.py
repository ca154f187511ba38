"""Bronze -> silver: every reading that arrived is in silver once or in quarantine with its rule.

Three bronze sources feed silver: `synthetic` (SYNTHETIC_SCHEMA), `field` (FIELD_READING_SCHEMA,
extracted from the warehouse) and `landed` (files from the landing zone, LANDED_SCHEMA). Each
reading is

1. typed, and its alternate-unit channels converted (firepipe.core.lake.units);
2. judged by the row rules (RULES, first failing one wins): a failing reading goes to the
   quarantine, one row per reading, with the rule, a detail and its raw values as JSON;
3. floored to the second; then, per (device_id, ts), the last write wins: the copy with the
   latest `arrived_at`, ties broken by source (synthetic, field, landed), then by the source's
   own order (field: the warehouse id; landed: file name, then line; synthetic: bronze order);
4. aligned to 1 Hz per device: between two readings at most MAX_FILLED_GAP_S apart every
   missing second is a gap row (is_gap, channels null), and a longer gap gets no rows, because a
   device that was off for more than ten minutes is not missing a few samples, it was not there.

When did a reading arrive? Field: `updated_at`, when the warehouse row was last written (a
correction rewrites it). Landed: `ingested_at`. Synthetic readings did not arrive from anywhere:
their `arrived_at` is null, which orders them before every real arrival, so a landed correction
of a synthetic device's second wins over the simulator's copy.

Field rows carry no labels: scenario, is_fire, ignition_ts and seconds_since_ignition are null
there (unknown, not "no fire"). Gap rows carry the device's identity and constant facts
(site_id, scenario, ignition_ts, source of the reading before the gap) and nothing measured:
channels, is_fire, seconds_since_ignition and arrived_at are null.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from firepipe.core.ingestion.extraction import FIELD_READING_SCHEMA, KEY_ID, KEY_UPDATED_AT
from firepipe.core.ingestion.landing import LANDED_SCHEMA
from firepipe.core.lake import quality, units
from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, KEY_COLUMNS, READING_SCHEMA, TIMESTAMP

SOURCES: tuple[str, ...] = ("synthetic", "field", "landed")
# Ten minutes: the longest dropout the simulator models (simulator.DROPOUT_S) and the span of the
# longest feature window (300 s) twice over; a device silent for longer was off, not lossy.
MAX_FILLED_GAP_S = 600
# A device clock may run ahead of the platform's: a 20 ppm crystal without NTP gains 1.7 s a
# day, so 5 minutes covers half a year unsynchronised; a reading stamped later than now plus this
# is a clock fault, not a reading from the future.
MAX_CLOCK_SKEW_S = 300.0

SILVER_SCHEMA: dict[str, pl.DataType] = {
    **READING_SCHEMA,
    "source": pl.String(),
    "arrived_at": TIMESTAMP,
    "is_gap": pl.Boolean(),
}
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "rule": pl.String(),
    "detail": pl.String(),
    "source": pl.String(),
    "device_id": pl.String(),
    "ts": TIMESTAMP,  # as it arrived, not floored
    "arrived_at": TIMESTAMP,
    "raw": pl.String(),  # the bronze row as JSON, every column as it arrived
}
_EMPTY_SILVER = pl.DataFrame(schema=SILVER_SCHEMA)
# The row rules, in the order they are judged.
RULES: tuple[str, ...] = ("missing_key", "ambiguous_units", "future_ts", "out_of_range")

_RANK, _SEQ, _AMBIGUOUS, _RULE = "_rank", "_seq", "_ambiguous", "_rule"
_STAGED = [*READING_SCHEMA, "arrived_at", _RANK, _SEQ, _AMBIGUOUS]
# Columns a gap row keeps from the reading before it; the rest of SILVER_SCHEMA is null there.
_GAP_KEEPS = ("site_id", "device_id", "scenario", "ignition_ts", "source")


@dataclass(frozen=True)
class Silver:
    """What to_silver made of bronze, and the counts its checks and metadata report."""

    readings: pl.DataFrame  # SILVER_SCHEMA, sorted by (device_id, ts)
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    arrived_rows: dict[str, int] = field(default_factory=dict)  # per source given
    duplicate_rows: int = 0  # valid readings dropped because a later write of their second won

    @property
    def gap_rows(self) -> int:
        return int(self.readings.get_column("is_gap").sum())

    def quarantined_by_rule(self) -> dict[str, int]:
        counts = self.quarantine.get_column("rule").value_counts()
        found = dict(zip(counts["rule"].to_list(), counts["count"].to_list(), strict=True))
        return {rule: int(found.get(rule, 0)) for rule in RULES}


def _require(frame: pl.DataFrame, columns: Mapping[str, pl.DataType], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} readings lack required columns: {', '.join(missing)}")


def _typed(frame: pl.DataFrame, schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """The schema's columns the frame has, cast strictly (a wrong bronze type is a bug, not a
    bad reading), and the rest as nulls."""
    return [
        pl.col(n).cast(t) if n in frame.columns else pl.lit(None, t).alias(n)
        for n, t in schema.items()
    ]


def _stage_synthetic(frame: pl.DataFrame) -> pl.DataFrame:
    _require(frame, READING_SCHEMA, "synthetic")
    return frame.select(
        *_typed(frame, READING_SCHEMA),
        pl.lit(None, TIMESTAMP).alias("arrived_at"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_SEQ),
    )


def _stage_field(frame: pl.DataFrame) -> pl.DataFrame:
    _require(frame, FIELD_READING_SCHEMA, "field")
    return frame.select(
        *_typed(frame, READING_SCHEMA),
        pl.col(KEY_UPDATED_AT).cast(TIMESTAMP).alias("arrived_at"),
        pl.col(KEY_ID).cast(pl.Int64).alias(_SEQ),
    )


def _ambiguous(columns: list[str]) -> pl.Expr:
    """Per row, the channels given more than once (canonical and alias, or two aliases); null
    where none is."""
    twice, named = [], []
    for given in units.ambiguous_aliases(columns).values():
        twice.append(pl.sum_horizontal(pl.col(c).is_not_null() for c in given) > 1)
        named.append(pl.when(twice[-1]).then(pl.lit(" and ".join(given))))
    if not twice:
        return pl.lit(None, pl.String)
    return pl.when(pl.any_horizontal(twice)).then(
        pl.concat_str(named, separator="; ", ignore_nulls=True)
    )


def _stage_landed(frame: pl.DataFrame) -> pl.DataFrame:
    required = (*KEY_COLUMNS, "source_file", "ingested_at")
    _require(frame, {c: LANDED_SCHEMA[c] for c in required}, "landed")
    typed = frame.with_columns(
        pl.col(c).cast(t) for c, t in LANDED_SCHEMA.items() if c in frame.columns
    )
    converted = typed.with_columns(
        *units.to_canonical(typed.columns), _ambiguous(typed.columns).alias(_AMBIGUOUS)
    )
    return converted.select(
        *_typed(converted, READING_SCHEMA),
        pl.col("ingested_at").alias("arrived_at"),
        pl.int_range(pl.len(), dtype=pl.Int64).alias(_SEQ),
        _AMBIGUOUS,
    )


@dataclass(frozen=True)
class _Source:
    rank: int
    stage: Callable[[pl.DataFrame], pl.DataFrame]
    # The order whose position breaks ties on arrived_at within the source (None: as given).
    order_by: str | None = None


_SOURCE_OF: dict[str, _Source] = {
    "synthetic": _Source(0, _stage_synthetic),
    "field": _Source(1, _stage_field),
    "landed": _Source(2, _stage_landed, order_by="source_file"),
}


def _rules(now: datetime) -> list[tuple[str, pl.Expr, pl.Expr]]:
    """(rule, true where a staged row breaks it (never null), what exactly is wrong) in
    judging order."""
    latest = now.astimezone(UTC) + timedelta(seconds=MAX_CLOCK_SKEW_S)
    key_nulls = [pl.when(pl.col(k).is_null()).then(pl.lit(f"{k} is null")) for k in KEY_COLUMNS]
    ranges = quality.range_problem_exprs()
    out_of_range = [
        pl.when(ranges[c.name]).then(
            pl.format(f"{c.name}={{}} outside [{c.min_value:g}, {c.max_value:g}]", pl.col(c.name))
        )
        for c in CHANNELS
    ]
    return [
        (
            "missing_key",
            pl.any_horizontal(pl.col(k).is_null() for k in KEY_COLUMNS),
            pl.concat_str(key_nulls, separator="; ", ignore_nulls=True),
        ),
        (
            "ambiguous_units",
            pl.col(_AMBIGUOUS).is_not_null(),
            pl.format("given twice: {}", pl.col(_AMBIGUOUS)),
        ),
        (
            "future_ts",
            (pl.col("ts") > pl.lit(latest, TIMESTAMP)).fill_null(False),
            pl.format(f"ts {{}} is after {latest.isoformat()} (now + clock skew)", pl.col("ts")),
        ),
        (
            "out_of_range",
            pl.any_horizontal(ranges.values()),
            pl.concat_str(out_of_range, separator="; ", ignore_nulls=True),
        ),
    ]


def _first_rule(rules: list[tuple[str, pl.Expr, pl.Expr]]) -> pl.Expr:
    """The name of the first rule a row breaks, else null."""
    return pl.coalesce([pl.when(broken).then(pl.lit(name)) for name, broken, _ in rules])


def _detail(rules: list[tuple[str, pl.Expr, pl.Expr]]) -> pl.Expr:
    """What is wrong, as the rule named in the "rule" column sees it."""
    return pl.coalesce([pl.when(pl.col("rule") == name).then(detail) for name, _, detail in rules])


def _judge(
    source: str, original: pl.DataFrame, rules: list[tuple[str, pl.Expr, pl.Expr]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Stage one source's readings and split them into (passing readings, quarantine rows)."""
    spec = _SOURCE_OF[source]
    staged = spec.stage(original)
    if _AMBIGUOUS not in staged.columns:
        staged = staged.with_columns(pl.lit(None, pl.String).alias(_AMBIGUOUS))
    staged = staged.with_columns(pl.lit(spec.rank, pl.UInt8).alias(_RANK)).select(_STAGED)
    broken = staged.select(pl.any_horizontal(b for _, b, _ in rules).alias(_RULE)).to_series()
    if not broken.any():
        return staged.drop(_AMBIGUOUS), pl.DataFrame(schema=QUARANTINE_SCHEMA)
    bad = staged.filter(broken)
    quarantine = (
        bad.with_columns(_first_rule(rules).alias("rule"))
        .select(
            "rule",
            _detail(rules).alias("detail"),
            pl.lit(source, pl.String).alias("source"),
            "device_id",
            "ts",
            "arrived_at",
        )
        .with_columns(
            original.filter(broken)
            .select(pl.struct(pl.all()).struct.json_encode())
            .to_series()
            .alias("raw")
        )
    )
    return staged.filter(~broken).drop(_AMBIGUOUS), quarantine.select(list(QUARANTINE_SCHEMA))


# Silver orders readings by one Int64 key, device << 40 | second (seconds since the earliest
# reading): sorting one integer column is several times faster than sorting (string, time).
# 2^40 s is 34,000 years of readings and 2^23 is 8 million devices in one run.
_SECOND_BITS = 40
_DEVICE_STRIDE = 1 << _SECOND_BITS
_MAX_DEVICES = 1 << 23
_US_PER_S = 1_000_000


def _order_key(valid: pl.DataFrame) -> pl.Expr:
    """The (device_id, second) of every reading as one Int64 that sorts the same way."""
    device_ids = valid.get_column("device_id").unique().sort()
    if device_ids.len() >= _MAX_DEVICES:
        raise ValueError(
            f"{device_ids.len()} devices in one run; silver orders at most {_MAX_DEVICES - 1}"
        )
    seconds = pl.col("ts").cast(pl.Int64) // _US_PER_S
    bounds = valid.select(seconds.min().alias("first"), seconds.max().alias("last"))
    first_s, last_s = int(bounds.item(0, "first")), int(bounds.item(0, "last"))
    if last_s - first_s >= _DEVICE_STRIDE:
        raise ValueError(f"readings span more than 2^{_SECOND_BITS} s: {first_s}..{last_s} s")
    device: pl.Expr = pl.col("device_id").cast(pl.Enum(device_ids)).to_physical()
    return (device.cast(pl.Int64) * _DEVICE_STRIDE + (seconds - first_s)).alias("_key")


def _last_write_aligned(valid: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """One reading per (device_id, second), the last write winning, sorted by (device_id, ts),
    with a gap row for every missing second between two readings of a device at most
    MAX_FILLED_GAP_S apart; and how many readings that kept."""
    keyed = valid.with_columns(_order_key(valid))
    order = keyed.select(
        pl.arg_sort_by(["_key", "arrived_at", _RANK, _SEQ], nulls_last=False).alias("row")
    ).to_series()
    key = keyed.get_column("_key").gather(order)
    is_last = (key != key.shift(-1)).fill_null(True)
    rows, key = order.filter(is_last), key.filter(is_last)
    # Within a device the key steps by seconds; between devices by at least 2^40 - span.
    step_s = key.shift(-1) - key
    missing = pl.select(
        pl.when((step_s > 1) & (step_s <= MAX_FILLED_GAP_S)).then(step_s - 1).otherwise(0)
    ).to_series()
    floored_us = pl.col("ts").cast(pl.Int64) // _US_PER_S * _US_PER_S
    if not missing.sum():
        aligned = valid[rows].with_columns(
            floored_us.cast(TIMESTAMP).alias("ts"), pl.lit(False).alias("is_gap")
        )
        return aligned.select(list(SILVER_SCHEMA)), rows.len()
    # Each kept reading is followed by its gap seconds: it repeats 1 + missing times, in order.
    plan = (
        pl.DataFrame({"row": rows, "n": missing})
        .select("row", pl.int_ranges(0, pl.col("n") + 1).alias("k"))
        .explode("k")
    )
    gap = pl.col("_k") > 0
    blank = [c for c in SILVER_SCHEMA if c not in (*_GAP_KEEPS, "ts", "is_gap")]
    aligned = (
        valid[plan.get_column("row")]
        .with_columns(plan.get_column("k").alias("_k"))
        .with_columns(
            (floored_us + pl.col("_k") * _US_PER_S).cast(TIMESTAMP).alias("ts"),
            gap.alias("is_gap"),
            *(pl.when(gap).then(None).otherwise(pl.col(c)).alias(c) for c in blank),
        )
    )
    return aligned.select(list(SILVER_SCHEMA)), rows.len()


def to_silver(
    bronze: Mapping[str, pl.DataFrame | pl.LazyFrame], *, now: datetime | None = None
) -> Silver:
    """Silver readings and quarantine from the bronze sources ("synthetic", "field", "landed";
    any may be missing or empty). `now` (default: the clock) is what the future_ts rule
    measures against."""
    unknown = sorted(set(bronze) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown bronze source(s) {unknown}: expected some of {SOURCES}")
    rules = _rules(now or datetime.now(UTC))
    passed, quarantined, arrived = [], [], {}
    for source in SOURCES:  # three sources; rows are handled by polars expressions
        if source not in bronze:
            continue
        given = bronze[source]
        original = given.collect() if isinstance(given, pl.LazyFrame) else given
        arrived[source] = original.height
        if original.height == 0:
            continue
        order_by = _SOURCE_OF[source].order_by
        if order_by is not None and order_by in original.columns:
            original = original.sort(order_by, maintain_order=True)
        good, bad = _judge(source, original, rules)
        passed.append(good.with_columns(pl.lit(source).alias("source")))
        quarantined.append(bad)
    if not passed:
        return Silver(_EMPTY_SILVER, pl.DataFrame(schema=QUARANTINE_SCHEMA), arrived)
    valid = pl.concat(passed, how="vertical", rechunk=False)
    readings, kept = _last_write_aligned(valid) if valid.height else (_EMPTY_SILVER, 0)
    return Silver(
        readings=readings,
        quarantine=pl.concat(quarantined, how="vertical"),
        arrived_rows=arrived,
        duplicate_rows=valid.height - kept,
    )


def channel_null_rates(readings: pl.DataFrame) -> dict[str, float | None]:
    """Per channel, the share of null values among the non-gap rows of the devices that report
    the channel at all; None where no device does.

    A device that never reports a channel has no such sensor (a NIST station without a gas
    analyser, a field model without H2): its nulls say nothing about data loss and are left
    out. On a device that has the sensor, a null is a lost value (a dropout, unparseable text).
    """
    per_device = (
        readings.filter(~pl.col("is_gap"))
        .group_by("device_id")
        .agg(pl.len().alias("_rows"), *(pl.col(c).count() for c in CHANNEL_NAMES))
    )
    totals = per_device.select(
        *(pl.col("_rows").filter(pl.col(c) > 0).sum().alias(f"{c}:rows") for c in CHANNEL_NAMES),
        *(pl.col(c).sum().alias(f"{c}:values") for c in CHANNEL_NAMES),
    ).row(0, named=True)
    rates: dict[str, float | None] = {}
    for c in CHANNEL_NAMES:
        rows, values = int(totals[f"{c}:rows"] or 0), int(totals[f"{c}:values"] or 0)
        rates[c] = (rows - values) / rows if rows else None
    return rates
