"""The watermark store contract, against SQLite and against DynamoDB on moto."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from firepipe.core.ingestion.extraction import StaleWatermarkError, Watermark
from firepipe.resources.watermarks import DynamoWatermarkStore, SqliteWatermarkStore, WatermarkStore

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
FIRST = Watermark(T0, 7)
SECOND = Watermark(T0, 9)  # same time, later id: still forward
THIRD = Watermark(T0 + timedelta(microseconds=1), 1)


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def store(request, tmp_path: Path) -> WatermarkStore:
    if request.param == "sqlite":
        return SqliteWatermarkStore(path=str(tmp_path / "state" / "watermarks.db"))
    request.getfixturevalue("aws_credentials")
    dynamo = DynamoWatermarkStore(
        table_name=f"watermarks-{uuid.uuid4().hex[:8]}",
        region="eu-west-1",
        endpoint_url=request.getfixturevalue("moto_endpoint"),
    )
    dynamo.ensure_table()
    dynamo.ensure_table()  # a second call finds the table
    return dynamo


def test_watermarks_move_forward_by_compare_and_set(store: WatermarkStore) -> None:
    assert store.get("field") is None
    store.commit("field", None, FIRST)
    assert store.get("field") == FIRST
    store.commit("field", FIRST, SECOND)
    store.commit("field", SECOND, THIRD)
    assert store.get("field") == THIRD
    assert store.get("other") is None  # each extraction has its own


def test_a_stale_writer_cannot_move_the_watermark(store: WatermarkStore) -> None:
    store.commit("field", None, FIRST)
    store.commit("field", FIRST, THIRD)
    with pytest.raises(StaleWatermarkError, match="no longer at"):
        store.commit("field", FIRST, SECOND)  # read FIRST before the other run committed
    with pytest.raises(StaleWatermarkError, match="no longer at None"):
        store.commit("field", None, SECOND)  # a second "first" commit
    assert store.get("field") == THIRD


def test_a_watermark_never_moves_backwards_or_stands_still(store: WatermarkStore) -> None:
    store.commit("field", None, SECOND)
    for new in (FIRST, SECOND):
        with pytest.raises(StaleWatermarkError, match="must move forward"):
            store.commit("field", SECOND, new)
    assert store.get("field") == SECOND


def test_microseconds_and_zones_survive_the_round_trip(store: WatermarkStore) -> None:
    zoned = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=-5))
    )
    store.commit("field", None, Watermark(zoned, 2**40))
    assert store.get("field") == Watermark(zoned.astimezone(UTC), 2**40)
    assert store.get("field").updated_at.microsecond == 123456
    assert zoned.hour == 5  # the watermark came in at UTC-5 ...
    assert store.get("field").updated_at.hour == 10  # ... and is kept as the same UTC instant
    assert store.get("field").updated_at.utcoffset() == timedelta(0)
