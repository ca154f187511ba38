"""Quality metrics on a hand-made frame (numbers worked out by hand) and a generated one."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from firepipe.core.genai.quality import quality_metrics
from firepipe.core.genai.tabular import TabularSchema, generate

SCHEMA = TabularSchema.model_validate(
    {
        "fields": [
            {"name": "id", "type": "integer", "constraints": {"min": 1, "max": 3, "unique": True}},
            {"name": "email", "type": "email", "constraints": {"nullable": True}},
            {"name": "day", "type": "date", "constraints": {"max": "2024-01-31"}},
            {"name": "code", "type": "string", "constraints": {"format": "A-##"}},
        ]
    }
)
FRAME = pl.DataFrame(
    {
        "id": [1, 2, 2, 7],  # 7 is out of range; 3 distinct of 4
        "email": ["a@example.com", None, "not-an-email", "a@example.com"],
        "day": [date(2024, 1, 1), date(2024, 1, 31), date(2024, 2, 1), None],  # Feb 1 too late
        "code": ["A-12", "A-1", "A-99", "A-12"],
    }
)


def test_hand_computed_metrics() -> None:
    m = quality_metrics(FRAME, SCHEMA)
    assert m["rows"] == 4
    assert m["completeness"]["fields"] == {"id": 1.0, "email": 0.75, "day": 0.75, "code": 1.0}
    assert m["completeness"]["overall"] == 14 / 16
    # email: its null is valid (nullable), "not-an-email" is not; day: its null is not
    assert m["validity"]["fields"] == {"id": 0.75, "email": 0.75, "day": 0.5, "code": 0.75}
    assert m["validity"]["overall"] == 11 / 16
    assert m["uniqueness"]["fields"] == {"id": 0.75, "email": 2 / 3, "day": 1.0, "code": 0.75}
    ids = m["distributions"]["id"]
    assert (ids["min"], ids["max"], ids["mean"]) == (1.0, 7.0, 3.0)
    assert ids["std"] == pytest.approx((((1 - 3) ** 2 + 1 + 1 + 16) / 3) ** 0.5)
    assert ids["quantiles"]["p50"] == 2.0
    assert ids["quantiles"]["p75"] == pytest.approx(3.25)  # linear between 2 and 7
    assert m["distributions"]["day"] == {"min": "2024-01-01", "max": "2024-02-01"}
    assert m["distributions"]["code"] == {
        "distinct": 3,
        "top": [
            {"value": "A-12", "count": 2},
            {"value": "A-1", "count": 1},
            {"value": "A-99", "count": 1},
        ],
    }


def test_generated_frame_is_valid_and_unique() -> None:
    schema = TabularSchema.model_validate(
        {
            "fields": [
                {"name": "id", "type": "uuid", "constraints": {"unique": True}},
                {
                    "name": "n",
                    "type": "integer",
                    "constraints": {"min": -5, "max": 5000, "unique": True},
                },
                {
                    "name": "x",
                    "type": "float",
                    "constraints": {"min": 0, "max": 2, "nullable": True},
                },
                {
                    "name": "d",
                    "type": "date",
                    "constraints": {"format": "%Y%m%d", "min": "2024-01-01"},
                },
                {
                    "name": "t",
                    "type": "datetime",
                    "constraints": {"max": "2024-06-01T00:00:00+02:00"},
                },
                {"name": "p", "type": "phone"},
                {"name": "e", "type": "email", "constraints": {"unique": True}},
                {"name": "a", "type": "address"},
                {"name": "b", "type": "boolean"},
                {"name": "s", "type": "string", "constraints": {"format": "??-##", "unique": True}},
            ]
        }
    )
    m = quality_metrics(generate(schema, 1_000, 11), schema)
    assert m["validity"]["overall"] == 1.0
    assert set(m["validity"]["fields"].values()) == {1.0}
    for name in ("id", "n", "e", "s"):
        assert m["uniqueness"]["fields"][name] == 1.0
    assert m["completeness"]["fields"]["x"] == 0.95
    assert m["distributions"]["t"]["max"] <= "2024-05-31T22:00:00"
    assert (
        0.0
        <= m["distributions"]["x"]["quantiles"]["p05"]
        < m["distributions"]["x"]["quantiles"]["p95"]
        <= 2.0
    )


def test_missing_field_is_refused() -> None:
    with pytest.raises(ValueError, match="lacks the schema's fields: code"):
        quality_metrics(FRAME.drop("code"), SCHEMA)
