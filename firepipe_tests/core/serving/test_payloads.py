"""The service's bodies: readings read alike from JSON, JSON lines and CSV, timestamps read as
silver reads them, a reason that names the reading and the field for every refusal, and
predictions written back in the media type asked for."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.readings import CHANNEL_NAMES, CHANNELS, parse_iso_times
from firepipe.core.serving.engine import Prediction, Reading, ReadingColumns
from firepipe.core.serving.online import CHANNEL_INDEX
from firepipe.core.serving.payloads import (
    CSV,
    EXECUTION_PARAMETERS,
    JSON,
    JSONLINES,
    MediaTypeError,
    PayloadError,
    parse_readings,
    reading_columns,
    reading_list,
    render_predictions,
    request_media,
    response_media,
)


def test_content_types_and_their_aliases() -> None:
    assert request_media("application/json") == JSON
    assert request_media("Application/JSON; charset=UTF-8") == JSON
    assert request_media('text/csv;charset="utf-8"') == CSV
    for alias in ("application/jsonlines", "application/jsonl", "application/x-ndjson"):
        assert request_media(alias) == JSONLINES
    with pytest.raises(MediaTypeError, match="no Content-Type"):
        request_media(None)
    with pytest.raises(MediaTypeError, match="'application/xml' is not read here"):
        request_media("application/xml")
    with pytest.raises(MediaTypeError, match="charset 'utf-16' is not read here"):
        request_media("application/json; charset=utf-16")


@pytest.mark.parametrize(
    ("request_type", "accept", "answer"),
    [
        (JSON, None, JSON),
        (CSV, "*/*", CSV),
        (JSONLINES, "text/*", JSONLINES),
        (JSON, "text/csv", CSV),
        (CSV, "application/json;q=0.5, application/jsonlines", JSONLINES),
        (CSV, "text/html, application/json;q=0.1", JSON),
        (JSON, "text/csv;q=0", JSON),
        (JSON, "image/png", JSON),  # nothing asked for is written here: the request's own
    ],
)
def test_the_answer_media_type(request_type: str, accept: str | None, answer: str) -> None:
    assert response_media(request_type, accept) == answer


def read(body: bytes, media: str) -> list[Reading]:
    """`parse_readings`' columns as one Reading each."""
    columns = parse_readings(body, media)
    assert columns.problems == {}
    return [
        Reading(
            device_id=device,
            ts=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us),
            values={name: float(row[k]) for name, k in CHANNEL_INDEX.items() if row[k] == row[k]},
            ts_text=text,
        )
        for device, us, row, text in zip(
            columns.device_id, columns.ts_us.tolist(), columns.values, columns.ts_text, strict=True
        )
    ]


def test_a_json_reading() -> None:
    body = {
        "readings": [
            {
                "device_id": "d-1",
                "ts": "2026-12-06T01:00:01+01:00",
                "site_id": "s-1",
                "temperature_c": 21,
                "co_ppm": None,
                "smoke_obscuration_pct_per_m": 0.25,
            }
        ]
    }
    [reading] = read(orjson.dumps(body), JSON)
    assert reading == Reading(
        device_id="d-1",
        ts=datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC),
        values={"temperature_c": 21.0, "smoke_obscuration_pct_per_m": 0.25},
        ts_text="2026-12-06T01:00:01+01:00",
    )


# Readings as a device would send them: some channels, some null, in range or not (the engine
# judges ranges, not the parser).
channel_values = st.dictionaries(
    st.sampled_from(CHANNEL_NAMES),
    st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 3))),
)
reading_dicts = st.builds(
    lambda device, second, values: {
        "device_id": device,
        "ts": (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second)).isoformat(),
        **values,
    },
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")), min_size=1),
    st.integers(0, 10**8),
    channel_values,
)


def as_csv(rows: list[dict[str, object]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, ["device_id", "ts", *CHANNEL_NAMES])
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    return out.getvalue().encode()


@given(st.lists(reading_dicts, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_the_three_media_types_read_the_same_readings(rows: list[dict[str, object]]) -> None:
    from_json = read(orjson.dumps({"readings": rows}), JSON)
    from_lines = read(b"\n".join(orjson.dumps(r) for r in rows) + b"\n", JSONLINES)
    from_csv = read(as_csv(rows), CSV)
    assert from_json == from_lines == from_csv
    assert [r.device_id for r in from_json] == [r["device_id"] for r in rows]
    assert [r.values for r in from_json] == [
        {k: float(v) for k, v in r.items() if k in CHANNEL_NAMES and v is not None} for r in rows
    ]


sites = st.one_of(st.none(), st.text(max_size=3))
whole_numbers = st.dictionaries(st.sampled_from(CHANNEL_NAMES), st.integers(-(10**6), 10**6))


@given(
    st.lists(
        st.tuples(reading_dicts, sites, whole_numbers).map(
            lambda t: {**t[0], **t[2], **({} if t[1] is None else {"site_id": t[1]})}
        ),
        min_size=1,
        max_size=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_readings_in_columns_are_the_readings_one_by_one(rows: list[dict[str, object]]) -> None:
    """The agents' column-wise reading (`reading_columns`) gives what reading each reading
    gives (`reading_list`), nulls as channels not sent."""
    fast = reading_columns(rows)
    each = ReadingColumns.of(reading_list(rows))
    assert fast.device_id == each.device_id == [r["device_id"] for r in rows]
    assert fast.ts_text == each.ts_text
    assert fast.ts_us.tolist() == each.ts_us.tolist()
    assert np.array_equal(fast.values, each.values, equal_nan=True)
    assert fast.problems == each.problems == {}


@pytest.mark.parametrize(
    ("readings", "reason"),
    [
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z"}, {"ts": 5}],
            "readings[1]: field device_id",
        ),
        ([{"device_id": " ", "ts": "2026-01-01T00:00:00Z"}], "readings[0]: field device_id"),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": "4"}],
            "readings[0]: field co_ppm",
        ),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": True}],
            "readings[0]: field co_ppm",
        ),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": 1e999}],
            "readings[0]: field co_ppm",
        ),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "CO": 1}],
            "readings[0]: unknown field(s)",
        ),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "site_id": 7}],
            "readings[0]: field site_id",
        ),
        (
            [{"device_id": "d", "ts": "2026-01-01T00:00:00Z"}, "x"],
            "readings[1]: a reading is an object",
        ),
        ([{"device_id": "d", "ts": "yesterday"}], "readings[0]: field ts"),
        ([], '"readings" must be a non-empty list'),
    ],
)
def test_readings_in_columns_are_refused_as_one_by_one(readings: object, reason: str) -> None:
    with pytest.raises(PayloadError) as refused:
        reading_columns(readings)
    assert str(refused.value).startswith(reason)


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
shapes = st.tuples(
    st.sampled_from(["T", " "]),
    st.sampled_from(["", ".5", ".123", ".123456", ".123456789"]),
    st.sampled_from(["Z", "+hh:mm", "+hhmm", ""]),
)


@given(
    st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1)),
    offsets,
    shapes,
)
@settings(max_examples=300, deadline=None)
def test_timestamps_read_as_silver_reads_them(
    moment: datetime, offset: timezone, shape: tuple[str, str, str]
) -> None:
    sep, fraction, zone = shape
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction
    if zone == "Z":
        text += "Z"
    elif zone:
        minutes = int(offset.utcoffset(None).total_seconds()) // 60
        sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
        colon = ":" if zone == "+hh:mm" else ""
        text += f"{sign}{minutes // 60:02d}{colon}{minutes % 60:02d}"
    [reading] = read(orjson.dumps({"readings": [{"device_id": "d", "ts": text}]}), JSON)
    silver = pl.select(parse_iso_times(pl.lit(text))).item()
    assert reading.ts == silver
    assert reading.ts.tzinfo is UTC
    assert reading.ts_text == text


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-06",
        "2026-12-06T00:00",
        "20261206T000001Z",
        "2026-W49-1T00:00:00",
        "2026-13-01T00:00:00Z",
        "2026-12-06T00:00:01+25:00",
        "2026-12-06T00:00:01z",
        " 2026-12-06T00:00:01Z",
    ],
)
def test_timestamps_silver_would_not_read_are_refused(text: str) -> None:
    body = orjson.dumps({"readings": [{"device_id": "d", "ts": text}]})
    with pytest.raises(
        PayloadError, match=r"readings\[0\]: field ts: .* is not an ISO 8601 timestamp"
    ):
        read(body, JSON)


@pytest.mark.parametrize(
    ("body", "media", "reason"),
    [
        (b"", JSON, "not valid JSON: "),
        (b"[1]", JSON, 'the body must be a JSON object {"readings": [...]}'),
        (b'{"readings": [], "x": 1}', JSON, "unknown field(s) ['x'] beside \"readings\""),
        (b'{"readings": {}}', JSON, '"readings" must be a non-empty list of readings'),
        (b'{"readings": [1]}', JSON, "readings[0]: a reading is an object, not a number"),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z"}, {"ts": 5}]}',
            JSON,
            "readings[1]: field device_id: a non-empty string is required",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": 1700000000}]}',
            JSON,
            "readings[0]: field ts: an ISO 8601 string is required, not a number",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": "4"}]}',
            JSON,
            "readings[0]: field co_ppm: a number or null is required, not a string",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "co_ppm": true}]}',
            JSON,
            "readings[0]: field co_ppm: a number or null is required, not a boolean",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "CO_PPM": 1}]}',
            JSON,
            "readings[0]: unknown field(s) ['CO_PPM']: a reading has device_id, ts, site_id",
        ),
        (
            b'{"readings": [{"device_id": "d", "ts": "2026-01-01T00:00:00Z", "site_id": 7}]}',
            JSON,
            "readings[0]: field site_id: a string or null is required, not a number",
        ),
        (b"\n\n", JSONLINES, "the body holds no readings: one JSON object a line"),
        (
            b'{"device_id": "d", "ts": "2026-01-01T00:00:00Z"}\n\n{"device_id": "d"',
            JSONLINES,
            "line 3: not valid JSON: ",
        ),
        (b"", CSV, "the body holds no header row"),
        (b"device_id,temperature_c\n", CSV, "line 1: the header names no 'ts' column"),
        (b"device_id,ts,ts\n", CSV, "line 1: a column is named twice"),
        (b"device_id,ts,colour\n", CSV, "line 1: unknown field(s) ['colour']"),
        (b"device_id,ts\n", CSV, "the body holds no readings below its header"),
        (b"device_id,ts\nd,2026-01-01T00:00:00Z,5\n", CSV, "line 2: 3 fields, the header names 2"),
        (
            b"device_id,ts,co_ppm\nd,2026-01-01T00:00:00Z,1\nd,2026-01-01T00:00:01Z,nan\n",
            CSV,
            "line 3: field co_ppm: nan is not a finite number",
        ),
        (b"device_id,ts\n\xff,x\n", CSV, "line 2: not UTF-8 text at byte 13"),
    ],
)
def test_a_refusal_names_the_reading_and_the_field(body: bytes, media: str, reason: str) -> None:
    with pytest.raises(PayloadError) as refused:
        read(body, media)
    assert str(refused.value).startswith(reason)


def test_a_utf8_byte_order_mark_is_not_part_of_the_header() -> None:
    body = "\ufeffdevice_id,ts,co_ppm\nd,2026-01-01 00:00:00,\n".encode()
    [reading] = read(body, CSV)
    assert reading.values == {}
    assert reading.ts == datetime(2026, 1, 1, tzinfo=UTC)


PREDICTIONS = [
    Prediction("d,1", "2026-01-01T00:00:00Z", 0.125, False, "m/7", 0.5, False),
    Prediction('d"2', "2026-01-01T00:00:01+01:00", 1.0, True, "m/7", 0.5, True),
]


def test_predictions_in_each_media_type() -> None:
    rows = [
        {
            "device_id": p.device_id,
            "ts": p.ts,
            "score": p.score,
            "alarm": p.alarm,
            "model_version": p.model_version,
        }
        for p in PREDICTIONS
    ]
    assert orjson.loads(render_predictions(PREDICTIONS, JSON)) == {"predictions": rows}
    lines = render_predictions(PREDICTIONS, JSONLINES).splitlines()
    assert [orjson.loads(line) for line in lines] == rows
    table = list(csv.DictReader(io.StringIO(render_predictions(PREDICTIONS, CSV).decode())))
    assert table == [
        {**r, "score": str(r["score"]), "alarm": str(r["alarm"]).lower()} for r in rows
    ]


def test_execution_parameters_fit_the_body_limit() -> None:
    assert EXECUTION_PARAMETERS == {
        "MaxConcurrentTransforms": 1,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
    }
    assert len(CHANNELS) == 8


def test_a_csv_field_over_the_csv_modules_limit_is_a_payload_error() -> None:
    body = b"device_id,ts,temperature_c\n" + b"d," + b"x" * 200_000 + b",20\n"
    with pytest.raises(PayloadError, match="line 2: field larger than field limit"):
        read(body, CSV)
