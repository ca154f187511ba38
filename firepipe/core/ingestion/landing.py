"""Landed files -> reading frames, and the loop that ingests a landing zone once per file.

A file is accepted or quarantined as a whole: an unreadable file or one that breaks the reading
schema raises `QuarantineError` with a machine-readable rule; bad rows inside a good file are
silver's concern. `ingest_new` walks a landing zone in (last_modified, key) order and advances
its cursor past a file only once that file was written or quarantined.

"Dropped twice" means the same bytes, under any name: a file whose SHA-256 was already ingested
is skipped (counted as a duplicate). A re-upload with different bytes under the same key is a
correction and is ingested again; silver keeps the last write per (device_id, ts).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Protocol

import polars as pl

from firepipe.core.lake.units import ALIAS_COLUMNS, ambiguous_aliases
from firepipe.core.readings import (
    CHANNEL_NAMES,
    KEY_COLUMNS,
    READING_SCHEMA,
    TIMESTAMP,
    parse_iso_times,
)

FORMATS: dict[str, str] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}
LINEAGE_COLUMNS: tuple[str, ...] = ("source_file", "ingested_at")
# Every column a landed file may become: the reading columns, the channels in alternate units
# (firepipe.core.lake.units; bronze keeps them as they arrived, silver converts), and the lineage.
LANDED_SCHEMA: dict[str, pl.DataType] = {
    **READING_SCHEMA,
    **{name: pl.Float32() for name in ALIAS_COLUMNS},
    "source_file": pl.String(),
    "ingested_at": TIMESTAMP,
}
_TIMESTAMP_COLUMNS = ("ts", "ignition_ts")
_NUMERIC_COLUMNS = (*CHANNEL_NAMES, *ALIAS_COLUMNS, "seconds_since_ignition")
# S3 stamps LastModified to the second and an upload can be listed after a later-stamped one;
# only objects older than this are taken, so none lands behind the cursor. Assumption: landed
# files are single PUTs of at most a few hundred MB (seconds to upload); raise it for larger.
LANDING_SETTLE_S = 60.0


class QuarantineError(Exception):
    """A landed file that cannot become readings; `rule` is short and machine-readable."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule
        self.reason = reason

    def __reduce__(self) -> tuple[type[QuarantineError], tuple[str, str]]:
        # Rebuilt from (rule, reason), so it survives pickling out of a parsing child process.
        return (type(self), (self.rule, self.reason))


def _read(fmt: str, data: bytes) -> pl.DataFrame:
    if fmt == "csv":
        # Everything as text first, so a non-numeric channel is reported as such, not guessed.
        return pl.read_csv(io.BytesIO(data), infer_schema=False)
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    return pl.read_ndjson(io.BytesIO(data))


def _timestamps(frame: pl.DataFrame, name: str) -> pl.Series:
    column = frame.get_column(name)
    if isinstance(column.dtype, pl.Datetime):
        # A naive timestamp is taken as UTC, the platform's only time zone.
        if column.dtype.time_zone is None:
            return column.dt.replace_time_zone("UTC").cast(TIMESTAMP)
        return column.dt.convert_time_zone("UTC").cast(TIMESTAMP)
    if column.dtype in (pl.String, pl.Null):
        text = column.cast(pl.String)
        parsed = pl.select(parse_iso_times(pl.lit(text))).to_series().alias(name)
        bad = text.filter(text.is_not_null() & parsed.is_null())
        if bad.len():
            raise QuarantineError(
                f"unparseable_{name}", f"{name} is not ISO 8601: {bad[0]!r} ({bad.len()} rows)"
            )
        return parsed
    raise QuarantineError(f"unparseable_{name}", f"{name} has type {column.dtype}, not a time")


def _numbers(frame: pl.DataFrame, name: str) -> pl.Series:
    column = frame.get_column(name)
    if not (column.dtype.is_numeric() or column.dtype in (pl.String, pl.Null)):
        raise QuarantineError("non_numeric_channel", f"{name} has type {column.dtype}")
    try:
        return column.cast(pl.Float32, strict=True)
    except pl.exceptions.PolarsError as error:
        raise QuarantineError(
            "non_numeric_channel", f"{name}: {str(error).splitlines()[0]}"
        ) from None


def _typed(frame: pl.DataFrame, name: str) -> pl.Series:
    if name in _TIMESTAMP_COLUMNS:
        return _timestamps(frame, name)
    if name in _NUMERIC_COLUMNS:
        return _numbers(frame, name)
    column = frame.get_column(name)
    if READING_SCHEMA[name] == pl.Boolean() and column.dtype == pl.String:
        # CSV is read as text: polars writes booleans as true/false.
        flags = {"true": True, "false": False, "1": True, "0": False}
        column = column.str.to_lowercase().str.strip_chars()
        if not column.drop_nulls().is_in(list(flags)).all():
            bad = column.filter(column.is_not_null() & ~column.is_in(list(flags)))[0]
            raise QuarantineError("bad_column_type", f"{name}: {bad!r} is not true or false")
        return column.replace_strict(flags, return_dtype=pl.Boolean)
    try:
        return column.cast(READING_SCHEMA[name], strict=True)
    except pl.exceptions.PolarsError as error:
        raise QuarantineError("bad_column_type", f"{name}: {str(error).splitlines()[0]}") from None


def parse_landed_file(source_file: str, data: bytes, ingested_at: datetime) -> pl.DataFrame:
    """The readings in one landed file, typed as LANDED_SCHEMA (the columns it has, in that
    order, plus the lineage columns).

    The format follows the extension (.csv, .parquet, .jsonl). Needs device_id and ts; any other
    READING_SCHEMA column, or a channel in an alternate unit (`temperature_f`), is optional; a
    column outside them is refused, so schema drift is seen, and so is a channel given twice
    (`temperature_c` and `temperature_f`: which one is right cannot be told).
    """
    suffix = PurePosixPath(source_file).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise QuarantineError(
            "unsupported_format",
            f"extension {suffix or '(none)'!r} is not one of {sorted(FORMATS)}",
        )
    if not data:
        raise QuarantineError("empty_file", "the file has no bytes")
    try:
        raw = _read(fmt, data)
    # The readers raise many kinds of errors (polars, pyarrow, OSError); all mean unreadable.
    except Exception as error:
        raise QuarantineError(
            "unreadable_file", f"not valid {fmt}: {str(error).splitlines()[0][:200]}"
        ) from None
    missing = [c for c in KEY_COLUMNS if c not in raw.columns]
    if missing:
        raise QuarantineError("missing_column", f"required column(s) {missing} absent")
    unknown = sorted(set(raw.columns) - set(READING_SCHEMA) - set(ALIAS_COLUMNS))
    if unknown:
        raise QuarantineError("unknown_column", f"column(s) {unknown} are not reading columns")
    ambiguous = ambiguous_aliases(raw.columns)
    if ambiguous:
        given = "; ".join(f"{c} as {', '.join(names)}" for c, names in ambiguous.items())
        raise QuarantineError("ambiguous_units", f"channel(s) given twice: {given}")
    order = [*READING_SCHEMA, *ALIAS_COLUMNS]
    columns = [_typed(raw, name).alias(name) for name in order if name in raw.columns]
    return pl.DataFrame(columns).with_columns(
        pl.lit(source_file, pl.String).alias("source_file"),
        pl.lit(ingested_at.astimezone(UTC), TIMESTAMP).alias("ingested_at"),
    )


# A landed file's name, its bytes and the ingestion time -> its readings (parse_landed_file).
Parser = Callable[[str, bytes, datetime], pl.DataFrame]


@dataclass(frozen=True, order=True)
class LandingCursor:
    """Everything at or before (last_modified, key) was handled; ties broken by key."""

    last_modified: datetime
    key: str

    def to_json(self) -> str:
        return json.dumps({"last_modified": self.last_modified.isoformat(), "key": self.key})

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor | None:
        """The cursor stored by `to_json`; None (start from the beginning) for None or ''."""
        if not text:
            return None
        try:
            value = json.loads(text)
            last_modified = datetime.fromisoformat(value["last_modified"])
            key = str(value["key"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not a landing cursor: {text!r} ({error})") from None
        if last_modified.tzinfo is None:
            raise ValueError(f"landing cursor time must carry a time zone: {text!r}")
        return cls(last_modified.astimezone(UTC), key)


@dataclass(frozen=True)
class LandedObject:
    key: str
    last_modified: datetime
    size_bytes: int

    @property
    def position(self) -> LandingCursor:
        return LandingCursor(self.last_modified.astimezone(UTC), self.key)


class LandingSource(Protocol):
    """What `ingest_new` needs from a landing zone (firepipe.resources.landing implements it)."""

    def list_objects(self) -> Sequence[LandedObject]: ...

    def read(self, key: str) -> bytes: ...

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str: ...

    def is_ingested(self, digest: str) -> bool: ...

    def mark_ingested(self, digest: str, key: str, at: datetime) -> None: ...


def pending(
    objects: Sequence[LandedObject], cursor: LandingCursor | None, before: datetime
) -> list[LandedObject]:
    """Objects past the cursor and last modified before `before`, in (last_modified, key) order."""
    chosen = [
        o for o in objects if (cursor is None or o.position > cursor) and o.last_modified < before
    ]
    return sorted(chosen, key=lambda o: o.position)


@dataclass
class IngestSummary:
    cursor: LandingCursor | None
    ingested: list[str] = field(default_factory=list)
    rows: int = 0
    duplicates: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)  # key -> rule
    failed: tuple[str, str] | None = None  # (key, error): the run stopped before this file


def ingest_new(
    zone: LandingSource,
    cursor: LandingCursor | None,
    write: Callable[[pl.DataFrame], None],
    now: datetime | None = None,
    settle_s: float = LANDING_SETTLE_S,
    parse: Parser = parse_landed_file,
) -> IngestSummary:
    """Ingest every settled file past `cursor`: write good ones, quarantine bad ones, go on.

    A failing `write` (or storage error) stops the run: the summary's cursor stays before that
    file and `failed` names it, so the next run retries it. A crash after a write but before the
    ingested mark is recorded re-writes that file once; silver's (device_id, ts) dedup absorbs it.

    `parse` runs in this process by default, where a reader's panic (a BaseException) or abort
    takes the run down; untrusted files are parsed in a child process
    (`firepipe.resources.landing.ingest_landing`), which turns those into QuarantineErrors.
    """
    if settle_s < 0:
        raise ValueError(f"settle_s must be >= 0, got {settle_s}")
    now = now or datetime.now(UTC)
    summary = IngestSummary(cursor=cursor)
    for obj in pending(zone.list_objects(), cursor, now - timedelta(seconds=settle_s)):
        try:
            data = zone.read(obj.key)
            digest = hashlib.sha256(data).hexdigest()
            if zone.is_ingested(digest):
                summary.duplicates.append(obj.key)
            else:
                try:
                    frame = parse(obj.key, data, now)
                except QuarantineError as bad:
                    zone.quarantine(obj.key, bad.rule, bad.reason, now)
                    summary.quarantined[obj.key] = bad.rule
                else:
                    write(frame)
                    zone.mark_ingested(digest, obj.key, now)
                    summary.ingested.append(obj.key)
                    summary.rows += frame.height
        # Any storage or writer error stops the run; the cursor stays before this file.
        except Exception as error:
            summary.failed = (obj.key, f"{type(error).__name__}: {error}")
            return summary
        summary.cursor = obj.position
    return summary
