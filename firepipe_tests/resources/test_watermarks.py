"""The watermark store contract (compare-and-set commits, one run at a time per extraction),
against SQLite and against DynamoDB on moto."""

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from firepipe.core.ingestion.extraction import ExtractionBusyError, StaleWatermarkError, Watermark
from firepipe.lib import locks
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


def test_one_run_at_a_time_holds_an_extraction(store: WatermarkStore) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    with store.exclusive("field", "run-a"):
        with pytest.raises(ExtractionBusyError) as refused, store.exclusive("field", "run-b"):
            pytest.fail("a second run got the extraction")
        assert str(refused.value).startswith("another extraction of field is running (since ")
        assert str(refused.value).endswith(" UTC, run run-a)")
        assert refused.value.run_id == "run-a"
        assert before <= refused.value.since <= datetime.now(UTC)
        with store.exclusive("other", "run-c"):  # each extraction has its own
            assert store.get("other") is None
    with store.exclusive("field", "run-b"):  # free again once the first is done
        store.commit("field", None, FIRST)
    assert store.get("field") == FIRST  # the lease is no watermark


def test_the_extraction_is_free_again_after_a_failed_run(store: WatermarkStore) -> None:
    with pytest.raises(RuntimeError, match="the run failed"), store.exclusive("field", "run-a"):
        raise RuntimeError("the run failed")
    with store.exclusive("field", "run-b"):
        assert store.get("field") is None


HOLDER = """
import sys, time
from firepipe.resources.watermarks import SqliteWatermarkStore
with SqliteWatermarkStore(path=sys.argv[1]).exclusive("field", "run-killed"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_local_run_leaves_no_lock_behind(tmp_path: Path) -> None:
    store = SqliteWatermarkStore(path=str(tmp_path / "watermarks.db"))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, store.path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with (
            pytest.raises(ExtractionBusyError, match="run run-killed"),
            store.exclusive("field", "run-b"),
        ):
            pytest.fail("got the extraction from a live holder")
    finally:
        holder.kill()  # SIGKILL: no cleanup of its own runs
        holder.wait()
    assert store.lock_path("field") == tmp_path / "watermarks.field.lock"
    with store.exclusive("field", "run-b"):
        assert "run-b" in store.lock_path("field").read_text()


@pytest.mark.aws
def test_a_lease_outlives_its_duration_while_renewed_and_ends_when_its_holder_dies(
    aws_credentials: None, moto_endpoint: str
) -> None:
    store = DynamoWatermarkStore(
        table_name=f"watermarks-{uuid.uuid4().hex[:8]}",
        region="eu-west-1",
        endpoint_url=moto_endpoint,
        lease_s=1.5,
    )
    store.ensure_table()
    with store.exclusive("field", "run-a"):
        time.sleep(3.5)  # over two lease durations: renewed meanwhile
        with pytest.raises(ExtractionBusyError, match="run run-a"), store.exclusive("field", "b"):
            pytest.fail("a renewed lease was taken over")
    # A holder that dies without a word: its lease is taken, never renewed, never released.
    lease = locks.DynamoLease(store._client(), store.table_name, "name", "field#lease", 1.5)
    lease._take("dead-token", {"run_id": "run-dead", "since": T0.isoformat()})
    with (
        pytest.raises(ExtractionBusyError, match=r"since 2026-05-01 08:00:00 UTC, run run-dead"),
        store.exclusive("field", "run-b"),
    ):
        pytest.fail("got the extraction from a live lease")
    time.sleep(1.6)
    with store.exclusive("field", "run-b"):
        assert store.get("field") is None
