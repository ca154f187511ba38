"""Seeded tabular generation honours every constraint; writers round-trip."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from firepipe.core.genai.tabular import TabularSchema, generate, write

ROWS = 2_000
SCHEMA = TabularSchema.model_validate(
    {
        "fields": [
            {
                "name": "id",
                "type": "integer",
                "constraints": {"min": 1, "max": 2000, "unique": True},
            },
            {"name": "score", "type": "float", "constraints": {"min": -2.5, "max": 7}},
            {
                "name": "day",
                "type": "date",
                "constraints": {"min": "2024-02-01", "max": "2024-03-31"},
            },
            {
                "name": "day_text",
                "type": "date",
                "constraints": {"format": "%d/%m/%Y", "min": "2024-01-01", "max": "2024-01-31"},
            },
            {
                "name": "at",
                "type": "datetime",
                "constraints": {
                    "min": "2024-01-01T08:00:00",
                    "max": "2024-01-01T09:00:00",
                    "unique": True,
                },
            },
            {"name": "email", "type": "email", "constraints": {"nullable": True, "unique": True}},
            {"name": "phone", "type": "phone", "constraints": {"format": "(###) ###-####"}},
            {"name": "address", "type": "address"},
            {"name": "key", "type": "uuid", "constraints": {"unique": True}},
            {"name": "flag", "type": "boolean", "constraints": {"nullable": True}},
            {
                "name": "code",
                "type": "string",
                "constraints": {"format": "CUST-?###", "unique": True},
            },
            {"name": "word", "type": "string"},
        ]
    }
)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return generate(SCHEMA, ROWS, seed=7)


def test_numbers_within_bounds_and_unique_ids(frame: pl.DataFrame) -> None:
    assert frame["id"].dtype == pl.Int64
    assert sorted(frame["id"].to_list()) == list(range(1, 2001))  # 2000 unique in 1..2000
    assert frame["score"].min() >= -2.5  # type: ignore[operator]
    assert frame["score"].max() <= 7  # type: ignore[operator]
    assert frame["score"].max() - frame["score"].min() > 9  # type: ignore[operator]  # spread


def test_dates_and_datetimes(frame: pl.DataFrame) -> None:
    assert frame["day"].dtype == pl.Date
    assert frame["day"].min() == date(2024, 2, 1)
    assert frame["day"].max() == date(2024, 3, 31)
    parsed = [datetime.strptime(t, "%d/%m/%Y").date() for t in frame["day_text"].to_list()]
    assert min(parsed) >= date(2024, 1, 1)
    assert max(parsed) <= date(2024, 1, 31)
    at = frame["at"]
    assert at.n_unique() == ROWS
    assert at.min() >= datetime(2024, 1, 1, 8)  # type: ignore[operator]
    assert at.max() <= datetime(2024, 1, 1, 9)  # type: ignore[operator]


def test_null_share_only_where_nullable(frame: pl.DataFrame) -> None:
    assert frame["email"].null_count() == 100  # 5% of 2000
    assert frame["flag"].null_count() == 100
    others = [c for c in frame.columns if c not in ("email", "flag")]
    assert all(frame[c].null_count() == 0 for c in others)
    emails = frame["email"].drop_nulls()
    assert emails.n_unique() == emails.len()


def test_personal_looking_values_are_fictitious(frame: pl.DataFrame) -> None:
    for email in frame["email"].drop_nulls().to_list():
        assert email.split("@")[1] in ("example.com", "example.org", "example.net")
    for phone in frame["phone"].to_list():
        assert re.fullmatch(r"\(\d{3}\) 555-01\d\d", phone), phone
    towns = ("Exampleville", "Sampleton", "Testburg", "Fictionford")
    assert all(a.split(", ")[1] in towns for a in frame["address"].to_list())


def test_uuid_boolean_and_string_patterns(frame: pl.DataFrame) -> None:
    keys = frame["key"].to_list()
    assert len(set(keys)) == ROWS
    assert all(uuid.UUID(k).version == 4 for k in keys)
    assert set(frame["flag"].drop_nulls().to_list()) == {True, False}
    codes = frame["code"].to_list()
    assert len(set(codes)) == ROWS
    assert all(re.fullmatch(r"CUST-[A-Z]\d{3}", c) for c in codes)
    assert all(re.fullmatch(r"[a-z]{8}", w) for w in frame["word"].to_list())


def test_same_seed_same_frame_other_seed_differs(frame: pl.DataFrame) -> None:
    assert_frame_equal(generate(SCHEMA, ROWS, seed=7), frame)
    other = generate(SCHEMA, ROWS, seed=8)
    assert all(not other[c].equals(frame[c]) for c in frame.columns)


def test_adding_a_field_keeps_the_others() -> None:
    small = TabularSchema.model_validate({"fields": [{"name": "a", "type": "integer"}]})
    more = TabularSchema.model_validate(
        {"fields": [{"name": "a", "type": "integer"}, {"name": "b", "type": "uuid"}]}
    )
    assert generate(small, 50, 3)["a"].equals(generate(more, 50, 3)["a"])


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (
            {"name": "x", "type": "integer", "constraints": {"min": 1, "max": 10, "unique": True}},
            "only 10 distinct",
        ),
        ({"name": "x", "type": "boolean", "constraints": {"unique": True}}, "only 2 distinct"),
        ({"name": "x", "type": "integer", "constraints": {"min": 5, "max": 1}}, "greater than max"),
        ({"name": "x", "type": "uuid", "constraints": {"min": 1}}, "takes no min/max"),
        ({"name": "x", "type": "date", "constraints": {"min": "yesterday"}}, "ISO text"),
        ({"name": "x", "type": "phone", "constraints": {"format": "###-####"}}, "ten '#'"),
        ({"name": "x", "type": "date", "constraints": {"format": "%Y-%m"}}, "keeps the full"),
        ({"name": "x", "type": "email", "constraints": {"format": "x"}}, "takes no format"),
        ({"name": "x", "type": "string", "constraints": {"format": "plain"}}, "placeholders"),
    ],
)
def test_impossible_constraints_raise(field: dict[str, object], message: str) -> None:
    schema = TabularSchema.model_validate({"fields": [field]})
    with pytest.raises(ValueError, match=message):
        generate(schema, 100, 0)


def test_schema_model_refuses_unknown_type_and_duplicates() -> None:
    with pytest.raises(ValueError, match="unknown type"):
        TabularSchema.model_validate({"fields": [{"name": "x", "type": "integr"}]})
    with pytest.raises(ValueError, match="duplicate field names: x"):
        TabularSchema.model_validate({"fields": [{"name": "x", "type": "uuid"}] * 2})
    with pytest.raises(ValueError, match="extra"):
        TabularSchema.model_validate({"fields": [{"name": "x", "type": "uuid", "size": 3}]})


@given(low=st.integers(-10_000, 10_000), span=st.integers(0, 300), rows=st.integers(0, 300))
@settings(max_examples=40, deadline=None)
def test_unique_integers_fill_any_domain_that_fits(low: int, span: int, rows: int) -> None:
    field = {
        "name": "n",
        "type": "integer",
        "constraints": {"min": low, "max": low + span, "unique": True},
    }
    schema = TabularSchema.model_validate({"fields": [field]})
    if rows > span + 1:
        with pytest.raises(ValueError, match="distinct"):
            generate(schema, rows, 1)
        return
    values = generate(schema, rows, 1)["n"].to_list()
    assert len(set(values)) == rows
    assert all(low <= v <= low + span for v in values)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_write_round_trip(frame: pl.DataFrame, tmp_path: Path, fmt: str) -> None:
    path = write(frame, fmt, tmp_path / "out" / f"data.{fmt}")
    assert path.exists()
    if fmt == "parquet":
        back = pl.read_parquet(path)
    elif fmt == "csv":
        back = pl.read_csv(path, schema=frame.schema)
    else:
        back = pl.read_ndjson(path, schema=frame.schema)
    assert_frame_equal(back, frame)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left


def test_a_failed_write_leaves_no_file_under_the_name(tmp_path: Path) -> None:
    unwritable = pl.DataFrame({"o": [object()]}, schema={"o": pl.Object})
    target = tmp_path / "data.parquet"
    with pytest.raises(pl.exceptions.ComputeError, match="Object"):
        write(unwritable, "parquet", target)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_unknown_format(frame: pl.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed: parquet, csv, json"):
        write(frame, "xlsx", tmp_path / "x.xlsx")
