"""The bodies of the inference service: readings in, predictions out, in the three media types
of the SageMaker serving contract.

- `application/json`: `{"readings": [{"device_id", "ts", <channels>...}, ...]}`;
- `application/jsonlines` (also `application/jsonl`, `application/x-ndjson`): one reading object
  a line, as batch transform sends a file split by line; one prediction line comes back for
  each (blank lines are no readings and get no line);
- `text/csv`: a header row naming the same columns, then one reading a row.

A reading holds any subset of the channels (null or absent: not measured), `ts` as ISO 8601
text in the shapes silver reads (naive = UTC), and may name its `site_id`, which scoring does not
read. A body that breaks these rules raises `PayloadError`, whose message names the reading
(its index or line) and the field; an unknown media type raises `MediaTypeError`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.serving.engine import Prediction, Reading, ReadingColumns, epoch_us
from firepipe.core.serving.online import CHANNEL_INDEX, N_CHANNELS

JSON = "application/json"
JSONLINES = "application/jsonlines"
CSV = "text/csv"
MEDIA_TYPES = {
    JSON: JSON,
    CSV: CSV,
    JSONLINES: JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-ndjson": JSONLINES,
}
_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})

# SageMaker caps an invocation's body at 6 MB (MiB in its limits' arithmetic); batch transform
# asks /execution-parameters how to split its input. One transform at a time: a device's online
# state needs its readings in order, which concurrent mini-batches would not keep.
MAX_PAYLOAD_MIB = 6
MAX_BODY_BYTES = MAX_PAYLOAD_MIB * 1024 * 1024
EXECUTION_PARAMETERS: dict[str, int | str] = {
    "MaxConcurrentTransforms": 1,
    "BatchStrategy": "MultiRecord",
    "MaxPayloadInMB": MAX_PAYLOAD_MIB,
}

_CHANNELS = frozenset(CHANNEL_NAMES)
_FIELDS = frozenset({"device_id", "ts", "site_id", *CHANNEL_NAMES})
PREDICTION_FIELDS = ("device_id", "ts", "score", "alarm", "model_version")
# silver's shapes (firepipe.core.readings.parse_iso_times): 'T' or a space, an optional
# fraction, an offset Z, +hh:mm or +hhmm, or none (UTC). fromisoformat alone takes more (week
# dates, a date without a time), which silver would not read.
# The shapes silver's parser takes (firepipe.core.readings.parse_iso_times); the OpenAPI
# document gives it as the pattern of `ts`.
ISO_TIME_PATTERN = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?"
_ISO_TIME = re.compile(ISO_TIME_PATTERN)
_BOM = b"\xef\xbb\xbf"


class PayloadError(ValueError):
    """A body that cannot be read as readings (HTTP 400); the message is the reason."""


class MediaTypeError(ValueError):
    """A content type the service does not read (HTTP 415)."""


def request_media(content_type: str | None) -> str:
    """The media type of a Content-Type header (one of JSON, JSONLINES, CSV); its parameters
    may only name a UTF-8 compatible charset."""
    if not content_type:
        raise MediaTypeError(f"no Content-Type: send one of {', '.join(MEDIA_TYPES)}")
    kind, *params = content_type.split(";")
    media = MEDIA_TYPES.get(kind.strip().lower())
    if media is None:
        raise MediaTypeError(
            f"Content-Type {kind.strip()!r} is not read here: send one of {', '.join(MEDIA_TYPES)}"
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in _CHARSETS:
            raise MediaTypeError(f"charset {value.strip()!r} is not read here: send UTF-8")
    return media


def response_media(request: str, accept: str | None) -> str:
    """The media type of the answer: the first one Accept prefers that is written here (by
    quality, then order), else the request's own."""
    if not accept:
        return request
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        kind, *params = item.split(";")
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, kind.strip().lower()))
    for _, _, kind in sorted(ranked):
        if kind in MEDIA_TYPES:
            return MEDIA_TYPES[kind]
        if kind in ("*/*", request.split("/")[0] + "/*"):
            return request
    return request


def parse_readings(body: bytes, media: str) -> ReadingColumns:
    """The readings of a body of `media` (a value of MEDIA_TYPES), in order."""
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    if media == JSON:
        return _json_readings(body)
    if media == JSONLINES:
        return ReadingColumns.of(_jsonlines_readings(body))
    if media == CSV:
        return ReadingColumns.of(_csv_readings(body))
    raise MediaTypeError(f"{media!r} is not read here")


def render_predictions(predictions: Sequence[Prediction], media: str) -> bytes:
    """The answer's body in `media`: {"predictions": [...]} for JSON, one line per prediction
    for JSON lines, a header row then one row per prediction for CSV."""
    if media == JSON:
        return orjson.dumps({"predictions": [_prediction_row(p) for p in predictions]})
    if media == JSONLINES:
        line = orjson.OPT_APPEND_NEWLINE
        return b"".join(orjson.dumps(_prediction_row(p), option=line) for p in predictions)
    if media == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(PREDICTION_FIELDS)
        writer.writerows(
            (
                p.device_id,
                p.ts,
                repr(float(p.score)),
                "true" if p.alarm else "false",
                p.model_version,
            )
            for p in predictions
        )
        return out.getvalue().encode()
    raise MediaTypeError(f"{media!r} is not written here")


def _prediction_row(p: Prediction) -> dict[str, object]:
    return {
        "device_id": p.device_id,
        "ts": p.ts,
        "score": float(p.score),
        "alarm": bool(p.alarm),
        "model_version": p.model_version,
    }


def _json_readings(body: bytes) -> ReadingColumns:
    document = _loads(body, "")
    if not isinstance(document, dict) or "readings" not in document:
        raise PayloadError('the body must be a JSON object {"readings": [...]}')
    extra = document.keys() - {"readings"}
    if extra:
        raise PayloadError(f'unknown field(s) {sorted(extra)} beside "readings"')
    return reading_columns(document["readings"])


def reading_list(readings: object) -> list[Reading]:
    """The readings of a JSON body's "readings" list, one by one, or a PayloadError that names
    the first reading that cannot be read and why."""
    if not isinstance(readings, list) or not readings:
        raise PayloadError('"readings" must be a non-empty list of readings')
    return [_reading(fields, f"readings[{i}]") for i, fields in enumerate(readings)]


def reading_columns(readings: object) -> ReadingColumns:
    """`reading_list`'s readings in columns: a JSON body's, an agents' readings message's.

    A list of well-formed objects is read column by column (`_plain_columns`: `_reading`'s
    rules by exact type, over each column at once, a timestamp parsed once per distinct text,
    as a gateway's batch repeats its seconds); any other goes through `reading_list`, which
    reads it or says what is wrong."""
    if isinstance(readings, list) and readings:
        columns = _plain_columns(readings)
        if columns is not None:
            return columns
    return ReadingColumns.of(reading_list(readings))


_VALUE_TYPES = frozenset({float, int, type(None)})
_TEXT = frozenset({str})


def _plain_columns(rows: list[Any]) -> ReadingColumns | None:
    """The readings of well-formed objects in columns, or None for anything `reading_list`
    must judge."""
    if set(map(type, rows)) != {dict}:
        return None
    names = set().union(*rows)
    if not names <= _FIELDS:
        return None
    device_id = [row.get("device_id") for row in rows]
    ts_text = [row.get("ts") for row in rows]
    if set(map(type, device_id)) != _TEXT or set(map(type, ts_text)) != _TEXT:
        return None
    if not all(device.strip() for device in set(device_id)):
        return None
    if "site_id" in names and not set(map(type, (r.get("site_id") for r in rows))) <= {
        str,
        type(None),
    }:
        return None
    times = {}
    for text in set(ts_text):
        try:
            times[text] = epoch_us(_timestamp(text, ""))
        except PayloadError:
            return None
    values = np.full((len(rows), N_CHANNELS), np.nan)
    for name in names & _CHANNELS:
        column = [row.get(name) for row in rows]
        if not set(map(type, column)) <= _VALUE_TYPES:
            return None
        try:
            numbers = np.array(column, dtype=np.float64)  # None: NaN, not sent
        except OverflowError:  # an integer beyond float's range
            return None
        if np.isinf(numbers).any():
            return None
        values[:, CHANNEL_INDEX[name]] = numbers
    ts_us = np.fromiter(map(times.__getitem__, ts_text), dtype=np.int64, count=len(rows))
    return ReadingColumns(device_id, ts_text, ts_us, values)


def _jsonlines_readings(body: bytes) -> list[Reading]:
    readings = [
        _reading(_loads(line, f"line {number}: "), f"line {number}")
        for number, line in enumerate(body.split(b"\n"), start=1)
        if line.strip()
    ]
    if not readings:
        raise PayloadError("the body holds no readings: one JSON object a line")
    return readings


def _csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each CSV record; the csv module's own errors (a field over its
    size limit, a stray quote in strict mode) as PayloadError."""
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in rows:
            yield rows.line_num, row
    except csv.Error as e:
        raise PayloadError(f"line {rows.line_num}: {e}") from e


def _csv_readings(body: bytes) -> list[Reading]:
    rows = _csv_rows(_text(body))
    first = next(rows, None)
    if first is None:
        raise PayloadError("the body holds no header row")
    columns = [name.strip() for name in first[1]]
    for required in ("device_id", "ts"):
        if required not in columns:
            raise PayloadError(f"line 1: the header names no {required!r} column")
    _refuse_unknown(columns, "line 1")
    if len(set(columns)) != len(columns):
        raise PayloadError(f"line 1: a column is named twice in {columns}")
    readings = []
    for line, row in rows:
        where = f"line {line}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            raise PayloadError(f"{where}: {len(row)} fields, the header names {len(columns)}")
        fields = {
            name: _csv_number(cell, where, name) if name in _CHANNELS else cell
            for name, cell in zip(columns, row, strict=True)
        }
        readings.append(_reading(fields, where))
    if not readings:
        raise PayloadError("the body holds no readings below its header")
    return readings


def _reading(fields: object, where: str) -> Reading:
    if not isinstance(fields, dict):
        raise PayloadError(f"{where}: a reading is an object, not {_kind(fields)}")
    _refuse_unknown(fields, where)
    device_id, ts_text = fields.get("device_id"), fields.get("ts")
    if not isinstance(device_id, str) or not device_id.strip():
        raise PayloadError(f"{where}: field device_id: a non-empty string is required")
    if not isinstance(ts_text, str):
        raise PayloadError(
            f"{where}: field ts: an ISO 8601 string is required, not {_kind(ts_text)}"
        )
    site_id = fields.get("site_id")
    if site_id is not None and not isinstance(site_id, str):
        raise PayloadError(
            f"{where}: field site_id: a string or null is required, not {_kind(site_id)}"
        )
    values = {
        name: _channel_value(value, where, name)
        for name, value in fields.items()
        if name in _CHANNELS and value is not None
    }
    return Reading(
        device_id=device_id, ts=_timestamp(ts_text, where), values=values, ts_text=ts_text
    )


def _refuse_unknown(names: Mapping[str, object] | Sequence[str], where: str) -> None:
    unknown = [name for name in names if name not in _FIELDS]
    if unknown:
        raise PayloadError(
            f"{where}: unknown field(s) {sorted(unknown)}: a reading has device_id, ts, "
            f"site_id and the channels {', '.join(CHANNEL_NAMES)}"
        )


def _channel_value(value: object, where: str, name: str) -> float:
    # bool is an int to Python, not a measurement to anyone
    if isinstance(value, bool) or not isinstance(value, _NUMBER):
        raise PayloadError(
            f"{where}: field {name}: a number or null is required, not {_kind(value)}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise PayloadError(f"{where}: field {name}: {value!r} is not a finite number")
    return number


_NUMBER = (int, float)


def _csv_number(cell: str, where: str, name: str) -> float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise PayloadError(f"{where}: field {name}: {cell[:40]!r} is not a number") from None


def _timestamp(text: str, where: str) -> datetime:
    if _ISO_TIME.fullmatch(text):
        try:
            ts = datetime.fromisoformat(text)
            return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # a shape that fits but a date or offset that does not exist
    raise PayloadError(
        f"{where}: field ts: {text[:40]!r} is not an ISO 8601 timestamp such as "
        "2026-12-06T00:00:01Z"
    )


def _loads(data: bytes, where: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise PayloadError(f"{where}not valid JSON: {e}") from None


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        bad = body[e.start : e.start + 1]
        raise PayloadError(f"line {line}: not UTF-8 text at byte {e.start} ({bad!r})") from None


_JSON_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}


def _kind(value: object) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "a number")
