"""Landed files -> reading frames, and the loop that ingests a landing zone once per upload.

A file is accepted or quarantined as a whole: an unreadable file or one that breaks the reading
schema raises `QuarantineError` with a machine-readable rule; bad rows inside a good file are
silver's concern.

What was handled is a `LandingLedger`: per key, the version (an upload's identity: the S3 ETag
and time, a local file's inode, size and times) and the content's SHA-256. `ingest_new` takes
every object whose version the ledger does not hold, whatever its modification time (a folder
moved in with old times, or a file copied with a future one, is taken like any other). A new
upload of a key is a new version even when its bytes match an earlier one (v1, v2, v1 again
leaves v1 in bronze); the same bytes under another key are a duplicate while the first key
still holds them.

A file is taken when it shows it is complete (`incomplete_reason`): Parquet ends with its
footer and magic, CSV and JSON lines with a newline. One without that evidence waits until two
looks `settle_s` apart saw the same version; the ledger keeps the first look, and the run
reports each waiting file with the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
# How long a file without its format's end mark must stay unchanged before it is judged as it
# is. An S3 object is whole once listed (a PUT or a completed multipart upload), so this only
# delays files that are truly truncated. A choice, not a measurement.
LANDING_SETTLE_S = 60.0
_PARQUET_MAGIC = b"PAR1"


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


def incomplete_reason(key: str, data: bytes) -> str | None:
    """Why `data` may still be an upload in progress, or None when its format shows it ends here:
    Parquet starts and ends with PAR1 around a footer that fits; CSV and JSON lines end with a
    newline. Other extensions are refused by name, so they need no such evidence."""
    fmt = FORMATS.get(PurePosixPath(key).suffix.lower())
    if fmt is None:
        return None
    if not data:
        return "no bytes yet"
    if fmt == "parquet":
        ends = data[:4] == _PARQUET_MAGIC and data[-4:] == _PARQUET_MAGIC and len(data) >= 12
        footer = int.from_bytes(data[-8:-4], "little") if ends else -1
        if not 0 <= footer <= len(data) - 12:
            return "no Parquet footer (PAR1) at the end yet"
        return None
    if not data.endswith(b"\n"):
        return f"the {fmt} file does not end with a newline yet"
    return None


@dataclass(frozen=True)
class LandedObject:
    key: str
    last_modified: datetime
    size_bytes: int
    # Changes with every upload of the key, also one of bytes seen before.
    version: str


@dataclass(frozen=True)
class Handled:
    """What became of one version of a key: ingested, duplicate or quarantined."""

    version: str
    digest: str
    outcome: str
    at: str


@dataclass(frozen=True)
class Look:
    """The first look at a version that did not show it was complete."""

    version: str
    size_bytes: int
    first_seen: str
    reason: str

    def second_look_due(self, settle_s: float) -> datetime:
        return datetime.fromisoformat(self.first_seen) + timedelta(seconds=settle_s)


@dataclass
class LandingLedger:
    """Per key, the last version handled and the version waiting to be judged."""

    handled: dict[str, Handled] = field(default_factory=dict)
    looks: dict[str, Look] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "handled": {k: asdict(v) for k, v in sorted(self.handled.items())},
                "looks": {k: asdict(v) for k, v in sorted(self.looks.items())},
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | None) -> LandingLedger:
        """The ledger stored by `to_json`; empty for None or ''."""
        if not text:
            return cls()
        try:
            value = json.loads(text)
            handled = {k: Handled(**v) for k, v in value["handled"].items()}
            looks = {k: Look(**v) for k, v in value["looks"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a landing ledger: {text[:200]!r} ({error})") from None
        return cls(handled, looks)

    def fingerprint(self) -> str:
        """Names this state of the ledger ("start" when empty): runs started from the same
        state are attempts at the same work."""
        if not self.handled and not self.looks:
            return "start"
        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
        return f"{len(self.handled)} handled {digest}"

    def forget_absent(self, keys: set[str]) -> None:
        """Drop looks and quarantines of keys no longer landed; ingested keys are kept, so a
        later upload of bytes ingested earlier under that key is still seen as a revert."""
        self.looks = {k: v for k, v in self.looks.items() if k in keys}
        self.handled = {
            k: v for k, v in self.handled.items() if k in keys or v.outcome != "quarantined"
        }


class LandingSource(Protocol):
    """What `ingest_new` needs from a landing zone (firepipe.resources.landing implements it)."""

    def list_objects(self) -> Sequence[LandedObject]: ...

    def read(self, key: str) -> bytes: ...

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str: ...

    def ingested_key(self, digest: str) -> str | None:
        """The key these bytes were last ingested under, None if never."""
        ...

    def mark_ingested(self, digest: str, key: str, at: datetime) -> None: ...


def pending(objects: Sequence[LandedObject], ledger: LandingLedger) -> list[LandedObject]:
    """Objects whose version the ledger has not handled, in (last_modified, key) order."""
    chosen = [
        o
        for o in objects
        if (done := ledger.handled.get(o.key)) is None or done.version != o.version
    ]
    return sorted(chosen, key=lambda o: (o.last_modified, o.key))


def due(
    objects: Sequence[LandedObject], ledger: LandingLedger, now: datetime, settle_s: float
) -> list[LandedObject]:
    """The pending objects a run would act on at `now`: all but those whose first look, of
    this same version, is less than `settle_s` old (their second look is not due yet)."""

    def waits(o: LandedObject) -> bool:
        look = ledger.looks.get(o.key)
        return (
            look is not None and look.version == o.version and now < look.second_look_due(settle_s)
        )

    return [o for o in pending(objects, ledger) if not waits(o)]


@dataclass
class IngestSummary:
    ledger: LandingLedger
    ingested: list[str] = field(default_factory=list)
    rows: int = 0
    duplicates: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)  # key -> rule
    waiting: dict[str, str] = field(default_factory=dict)  # key -> why it is not taken yet
    failed: tuple[str, str] | None = None  # (key, error): the run stopped before this file


def _is_duplicate(zone: LandingSource, ledger: LandingLedger, key: str, digest: str) -> bool:
    """Whether bronze already holds these bytes' rows, so this version adds nothing.

    Ingested under another key that still holds them: a duplicate. Under this key: only when
    the ledger has no version of the key (a run that stopped after the write, before the ledger
    was saved); a key with a handled version was re-uploaded, and the upload is the new truth.
    """
    first = zone.ingested_key(digest)
    if first is None:
        return False
    holder = ledger.handled.get(first)
    if first == key:
        return holder is None
    return holder is None or holder.digest == digest


def _waiting(
    ledger: LandingLedger, obj: LandedObject, reason: str, now: datetime, settle_s: float
) -> str | None:
    """Why `obj` (not showing it is complete) waits, None once two looks `settle_s` apart saw
    this same version."""
    look = ledger.looks.get(obj.key)
    if look is None or look.version != obj.version:
        look = Look(obj.version, obj.size_bytes, now.isoformat(), reason)
        ledger.looks[obj.key] = look
    due_at = look.second_look_due(settle_s)
    if now >= due_at:
        return None
    return f"{reason}; {look.size_bytes} bytes, judged as they are if unchanged at {due_at:%FT%TZ}"


def ingest_new(
    zone: LandingSource,
    ledger: LandingLedger,
    write: Callable[[pl.DataFrame], None],
    now: datetime | None = None,
    settle_s: float = LANDING_SETTLE_S,
    parse: Parser = parse_landed_file,
) -> IngestSummary:
    """Ingest every version the ledger has not handled: write good files, quarantine bad ones,
    leave incomplete-looking ones waiting (`IngestSummary.waiting`), go on.

    The summary's ledger is `ledger` updated in place. A failing `write` (or storage error)
    stops the run: `failed` names the file, which the ledger leaves unhandled for the next run.
    A crash after a write but before the ledger is stored finds the content's ingested mark
    under the same key next time and does not write it again.

    `parse` runs in this process by default, where a reader's panic (a BaseException) or abort
    takes the run down; untrusted files are parsed in a child process
    (`firepipe.resources.landing.ingest_landing`), which turns those into QuarantineErrors.
    """
    if settle_s < 0:
        raise ValueError(f"settle_s must be >= 0, got {settle_s}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    summary = IngestSummary(ledger=ledger)
    objects = zone.list_objects()
    ledger.forget_absent({o.key for o in objects})
    for obj in pending(objects, ledger):
        try:
            data = zone.read(obj.key)
            incomplete = incomplete_reason(obj.key, data)
            if incomplete is not None:
                why = _waiting(ledger, obj, incomplete, now, settle_s)
                if why is not None:
                    summary.waiting[obj.key] = why
                    continue
            digest = hashlib.sha256(data).hexdigest()
            if _is_duplicate(zone, ledger, obj.key, digest):
                summary.duplicates.append(obj.key)
                outcome = "duplicate"
            else:
                try:
                    frame = parse(obj.key, data, now)
                except QuarantineError as bad:
                    zone.quarantine(obj.key, bad.rule, bad.reason, now)
                    summary.quarantined[obj.key] = bad.rule
                    outcome = "quarantined"
                else:
                    write(frame)
                    zone.mark_ingested(digest, obj.key, now)
                    summary.ingested.append(obj.key)
                    summary.rows += frame.height
                    outcome = "ingested"
        # Any storage or writer error stops the run; this file stays unhandled.
        except Exception as error:
            summary.failed = (obj.key, f"{type(error).__name__}: {error}")
            return summary
        ledger.handled[obj.key] = Handled(obj.version, digest, outcome, now.isoformat())
        ledger.looks.pop(obj.key, None)
    return summary
