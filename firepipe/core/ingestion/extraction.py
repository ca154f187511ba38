"""Incremental extraction of field readings from a warehouse, by a watermark on (updated_at, id).

The algorithm runs over four ports, so the same code drives DuckDB locally and Snowflake in AWS:

- a `ChunkSource` returns at most N rows strictly after a watermark, ordered by (updated_at, id);
- a `ChunkSink` durably writes a chunk, idempotently: it replaces whatever it holds in the chunk's
  key range [first, last], so a re-run after a crash between the write and the watermark commit
  rewrites the same rows instead of adding them again;
- a `DeadLetterSink` keeps the rows that cannot be parsed, with the reason, under the same rule;
- a `WatermarkStore` commits the last key of a chunk, compare-and-set on the previous one.

The watermark moves only after the chunk's write returned, so a crash anywhere loses nothing and
duplicates nothing. A loader may commit rows whose updated_at is already behind the watermark
(it stamps updated_at when it writes a row; its transaction commits later, and the warehouse
shows the row only then, after an extraction may have passed that time): each run
re-reads a lookback window behind the watermark, and the idempotent sinks rewrite the rows they
already hold there and add the late ones; the watermark itself never moves backwards.

Transient errors (the ports raise `TransientError`) are retried with exponential backoff and
full jitter (Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015);
when the attempts run out, `ExtractionError` says where the watermark stayed.
"""

from __future__ import annotations

import random as random_module
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import polars as pl

from firepipe.core.readings import CHANNEL_NAMES, TIMESTAMP, parse_iso_times

KEY_ID = "id"
KEY_UPDATED_AT = "updated_at"
REASON = "reason"
IDENTITY_COLUMNS: tuple[str, ...] = ("site_id", "device_id")

# Field rows as the warehouse holds them: the keys typed, the device payload as the text the
# device sent (firmware may send "", "NaN" or "ERR"), parsed here rather than by the warehouse.
RAW_FIELD_SCHEMA: dict[str, pl.DataType] = {
    KEY_ID: pl.Int64(),
    KEY_UPDATED_AT: TIMESTAMP,
    "site_id": pl.String(),
    "device_id": pl.String(),
    "ts": pl.String(),
    **{name: pl.String() for name in CHANNEL_NAMES},
}

# Parsed field readings: the reading schema's measured part plus the source keys, which silver
# needs for "last write wins" and the exactly-once check needs to compare with the source.
FIELD_READING_SCHEMA: dict[str, pl.DataType] = {
    "site_id": pl.String(),
    "device_id": pl.String(),
    "ts": TIMESTAMP,
    **{name: pl.Float32() for name in CHANNEL_NAMES},
    KEY_UPDATED_AT: TIMESTAMP,
    KEY_ID: pl.Int64(),
}

DEAD_LETTER_SCHEMA: dict[str, pl.DataType] = {**RAW_FIELD_SCHEMA, REASON: pl.String()}

T = TypeVar("T")


class TransientError(Exception):
    """An outside system failed in a way a later attempt may not (network, lock, throttling)."""


class ExtractionError(RuntimeError):
    """Extraction stopped; the watermark stays at the last committed chunk."""


@dataclass(frozen=True, order=True)
class Watermark:
    """The key of the last extracted row: rows strictly after it are still to come."""

    updated_at: datetime
    id: int

    def __post_init__(self) -> None:
        if self.updated_at.tzinfo is None:
            raise ValueError(f"watermark time must be timezone-aware, got {self.updated_at}")

    def __str__(self) -> str:
        return f"({self.updated_at.astimezone(UTC).isoformat()}, {self.id})"


@dataclass(frozen=True)
class Chunk:
    """A bounded run of source rows; `first`..`last` is its key range, `chunk_id` names it."""

    first: Watermark
    last: Watermark
    readings: pl.DataFrame  # FIELD_READING_SCHEMA
    dead_letters: pl.DataFrame  # DEAD_LETTER_SCHEMA
    # Starts at or behind the committed watermark (the lookback window): bronze may hold its
    # rows already, so a sink compares before it commits; a chunk past it is new, written as is.
    reread: bool = False

    @property
    def chunk_id(self) -> str:
        return f"{self.first}..{self.last}"


class ChunkSource(Protocol):
    def next_chunk(self, after: Watermark | None, limit: int) -> pl.DataFrame:
        """At most `limit` rows in RAW_FIELD_SCHEMA with key > `after`, by (updated_at, id)."""
        ...


class ChunkSink(Protocol):
    def write_chunk(self, chunk: Chunk) -> None:
        """Durably replace the rows in [chunk.first, chunk.last] by chunk.readings."""
        ...


class DeadLetterSink(Protocol):
    def write_dead_letters(self, chunk: Chunk) -> None:
        """Durably replace the dead letters in [chunk.first, chunk.last] by chunk.dead_letters."""
        ...


class WatermarkStore(Protocol):
    def get(self, name: str) -> Watermark | None:
        """The committed watermark of extraction `name`, None before its first chunk."""
        ...

    def commit(self, name: str, expected: Watermark | None, new: Watermark) -> None:
        """Move `name` from `expected` to `new`; raise StaleWatermarkError if it is not at
        `expected` any more (another writer moved it) or if `new` is not after `expected`."""
        ...


class StaleWatermarkError(RuntimeError):
    """A commit found the watermark elsewhere than expected, or would move it backwards."""


class ExtractionBusyError(RuntimeError):
    """Another run is extracting `name`: this one was refused before reading or writing."""

    def __init__(self, name: str, since: datetime | None, run_id: str | None) -> None:
        started = "" if since is None else f"since {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, "
        super().__init__(
            f"another extraction of {name} is running ({started}run {run_id or 'not yet known'})"
        )
        self.name, self.since, self.run_id = name, since, run_id


def check_forward(expected: Watermark | None, new: Watermark) -> None:
    if expected is not None and new <= expected:
        raise StaleWatermarkError(f"watermark must move forward: {expected} -> {new}")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt k (0-based) sleeps uniform(0, min(cap,
    base * 2**k)) seconds before the next one (Brooker, "Exponential Backoff and Jitter", AWS
    Architecture Blog 2015: full jitter spreads retrying clients best).

    The defaults are a choice, not a measurement: 5 attempts over at most 0.5 + 1 + 2 + 4 s
    ride out a dropped connection or a warehouse resuming from suspension (seconds); an outage
    longer than that fails the run, which the sensor retries on its next tick.
    """

    max_attempts: int = 5
    base_delay_s: float = 0.5  # the first ceiling
    max_delay_s: float = 30.0  # no single wait longer than this

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"need 0 <= base_delay_s <= max_delay_s, got {self.base_delay_s}, "
                f"{self.max_delay_s}"
            )

    def delay_s(self, attempt: int, draw: float) -> float:
        """The sleep after failed attempt `attempt` for a uniform draw in [0, 1)."""
        return draw * min(self.max_delay_s, self.base_delay_s * 2.0**attempt)


def with_retries(
    what: str,
    call: Callable[[], T],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random_module.random,
) -> T:
    """`call()`, retried on TransientError; ExtractionError once the attempts are spent."""
    for attempt in range(policy.max_attempts):
        try:
            return call()
        except TransientError as error:
            if attempt + 1 == policy.max_attempts:
                raise ExtractionError(
                    f"{what} failed {policy.max_attempts} times, last: {error}"
                ) from error
            sleep(policy.delay_s(attempt, draw()))
    raise AssertionError("unreachable: the loop returns or raises")


def _not_parsed(raw: pl.Expr, parsed: pl.Expr, label: str) -> pl.Expr:
    """A reason when the device sent text that did not parse, else null."""
    return pl.when(raw.is_not_null() & parsed.is_null()).then(pl.format(label + ": '{}'", raw))


def parse_field_rows(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split raw field rows into readings (FIELD_READING_SCHEMA) and dead letters with reasons.

    A row is dead when a site or device id is missing, its time is missing or not an ISO 8601
    time, or a channel holds text that is not a number. Empty channels are missing values, not
    errors (a device without that sensor); range rules are silver's job.
    """
    missing = set(RAW_FIELD_SCHEMA) - set(raw.columns)
    if missing:
        raise ValueError(f"field rows lack columns: {sorted(missing)}")
    raw = raw.select(list(RAW_FIELD_SCHEMA)).cast(RAW_FIELD_SCHEMA)  # type: ignore[arg-type]
    text = {c: pl.col(c).str.strip_chars().replace("", None) for c in ("ts", *CHANNEL_NAMES)}
    parsed = {
        "ts": parse_iso_times(text["ts"]),
        **{c: text[c].cast(pl.Float32, strict=False) for c in CHANNEL_NAMES},
    }
    reasons: list[pl.Expr] = [
        pl.when(pl.col(c).str.strip_chars().replace("", None).is_null()).then(
            pl.lit(f"{c} missing")
        )
        for c in (*IDENTITY_COLUMNS, "ts")
    ]
    reasons.append(_not_parsed(text["ts"], parsed["ts"], "ts is not an ISO 8601 time"))
    reasons += [_not_parsed(text[c], parsed[c], f"{c} is not a number") for c in CHANNEL_NAMES]
    framed = raw.with_columns(
        pl.concat_str(reasons, separator="; ", ignore_nulls=True).alias(REASON)
    )
    framed = framed.with_columns(pl.col(REASON).replace("", None))
    good = framed.filter(pl.col(REASON).is_null())
    readings = good.with_columns(**parsed).select(list(FIELD_READING_SCHEMA))
    dead = framed.filter(pl.col(REASON).is_not_null()).select(list(DEAD_LETTER_SCHEMA))
    return readings.cast(FIELD_READING_SCHEMA), dead  # type: ignore[arg-type]


def _key(frame: pl.DataFrame, row: int) -> Watermark:
    updated_at = frame[KEY_UPDATED_AT][row]
    return Watermark(updated_at=updated_at, id=int(frame[KEY_ID][row]))


def make_chunk(raw: pl.DataFrame) -> Chunk:
    """Parse a non-empty source chunk and name it by its first and last key."""
    if raw.is_empty():
        raise ValueError("a chunk needs at least one row")
    readings, dead = parse_field_rows(raw)
    return Chunk(
        first=_key(raw, 0), last=_key(raw, raw.height - 1), readings=readings, dead_letters=dead
    )


# Below every id: a re-read from (time, LOWEST_ID) includes every row at `time`.
LOWEST_ID = -(2**63)


def lookback_start(watermark: Watermark | None, lookback_s: float) -> Watermark | None:
    """Where a run's read starts: `lookback_s` behind the watermark, every id at that time
    included; None (the whole source) before the first chunk."""
    if lookback_s < 0:
        raise ValueError(f"lookback_s must be >= 0, got {lookback_s}")
    if watermark is None or lookback_s == 0:
        return watermark
    return Watermark(watermark.updated_at - timedelta(seconds=lookback_s), LOWEST_ID)


@dataclass(frozen=True)
class ExtractionSummary:
    """What a run extracted past its starting watermark, and what it re-read behind it."""

    chunks: int  # chunks that moved the watermark
    rows: int  # source rows past the starting watermark: readings plus dead letters
    readings: int
    dead_letters: int
    watermark: Watermark | None
    reread: int = 0  # rows of the lookback window, at or behind the starting watermark


@dataclass(frozen=True)
class _Ports:
    name: str
    source: ChunkSource
    sink: ChunkSink
    dead_letters: DeadLetterSink
    watermarks: WatermarkStore
    policy: RetryPolicy
    sleep: Callable[[float], None]
    draw: Callable[[], float]

    def retried(self, what: str, call: Callable[[], T]) -> T:
        return with_retries(what, call, self.policy, self.sleep, self.draw)


def _extract_one(
    ports: _Ports, after: Watermark | None, committed: Watermark | None, chunk_rows: int
) -> Chunk | None:
    """Read and write the chunk after `after`, and move the watermark from `committed` to its
    end when that is further on (a chunk re-read wholly behind it leaves it there); None when
    the source has nothing after `after`."""
    raw = ports.retried(
        f"reading after {after}", lambda: ports.source.next_chunk(after, chunk_rows)
    )
    if raw.height > chunk_rows:
        raise ExtractionError(f"source returned {raw.height} rows, asked for {chunk_rows}")
    if raw.is_empty():
        return None
    chunk = make_chunk(raw)
    if after is not None and chunk.first <= after:
        # Keys are compared to the microsecond: an updated_at column finer than that (Snowflake's
        # default TIMESTAMP_NTZ(9)) returns the watermark's own row again.
        raise ExtractionError(
            f"source returned {chunk.first}, not after {after}: is its updated_at column finer "
            "than microseconds? Declare it TIMESTAMP(6) (Snowflake: TIMESTAMP_NTZ(6))"
        )
    if committed is not None and chunk.first <= committed:
        chunk = replace(chunk, reread=True)
    ports.retried(
        f"dead letters {chunk.chunk_id}", lambda: ports.dead_letters.write_dead_letters(chunk)
    )
    ports.retried(f"writing {chunk.chunk_id}", lambda: ports.sink.write_chunk(chunk))
    # Only now, with the chunk durable, may the watermark pass it.
    if committed is None or chunk.last > committed:
        ports.retried(
            f"committing {chunk.last}",
            lambda: ports.watermarks.commit(ports.name, committed, chunk.last),
        )
    return chunk


def at_or_before(watermark: Watermark) -> pl.Expr:
    """Keys (updated_at, id) at or before the watermark: the rows extraction has passed."""
    at = pl.col(KEY_UPDATED_AT)
    return (at < watermark.updated_at) | (
        (at == watermark.updated_at) & (pl.col(KEY_ID) <= watermark.id)
    )


def _split_at(chunk: Chunk, through: Watermark | None) -> tuple[int, int, int]:
    """A chunk's readings and dead letters after `through`, and its rows at or before it."""
    if through is None:
        return chunk.readings.height, chunk.dead_letters.height, 0
    after = ~at_or_before(through)
    good = chunk.readings.filter(after).height
    dead = chunk.dead_letters.filter(after).height
    return good, dead, chunk.readings.height + chunk.dead_letters.height - good - dead


def extract(
    name: str,
    source: ChunkSource,
    sink: ChunkSink,
    dead_letters: DeadLetterSink,
    watermarks: WatermarkStore,
    *,
    chunk_rows: int = 50_000,
    max_chunks: int | None = None,
    lookback_s: float = 0.0,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random_module.random,
) -> ExtractionSummary:
    """Extract every row after the committed watermark of `name`, chunk by chunk, first
    re-reading the `lookback_s` seconds behind it (late rows; module doc).

    `max_chunks` bounds the chunks that move the watermark: the re-read of the lookback window
    is always read whole, or a window larger than `max_chunks` chunks would never be passed.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if max_chunks is not None and max_chunks < 1:
        raise ValueError(f"max_chunks must be >= 1 or None, got {max_chunks}")
    ports = _Ports(
        name, source, sink, dead_letters, watermarks, retry or RetryPolicy(), sleep, draw
    )
    before = ports.retried("reading the watermark", lambda: watermarks.get(name))
    watermark, read_after = before, lookback_start(before, lookback_s)
    chunks = good = dead = reread = 0
    while max_chunks is None or chunks < max_chunks:
        try:
            chunk = _extract_one(ports, read_after, watermark, chunk_rows)
        except ExtractionError as error:
            raise ExtractionError(
                f"extraction {name!r} stopped, watermark stays at {watermark}: {error}"
            ) from error
        if chunk is None:
            break
        read_after = chunk.last
        if watermark is None or chunk.last > watermark:
            watermark, chunks = chunk.last, chunks + 1
        new_good, new_dead, old = _split_at(chunk, before)
        good, dead, reread = good + new_good, dead + new_dead, reread + old
        if chunk.readings.height + chunk.dead_letters.height < chunk_rows:
            break  # a short chunk is the end of the source as of now
    return ExtractionSummary(
        chunks=chunks,
        rows=good + dead,
        readings=good,
        dead_letters=dead,
        watermark=watermark,
        reread=reread,
    )
