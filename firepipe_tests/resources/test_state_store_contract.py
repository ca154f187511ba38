"""The state store contract (optimistic versions, history, the event guard, listing), against
SQLite and against DynamoDB on moto; and, locally, processes racing one key, a writer killed
mid-stream, and durability across reopening the file."""

import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from firepipe.resources import resource_for
from firepipe.resources.state_store import (
    DuplicateEventError,
    DynamoStateStore,
    HistoryRecord,
    ItemPage,
    LocalStateStore,
    StaleVersionError,
    StateStore,
    Transition,
)
from firepipe.settings import Environment, LocalPaths

KEY = "device-7"
# fork: the racing children start in milliseconds and share the parent's imports; the parent
# holds no open SQLite connection (each call opens and closes its own).
FORK = multiprocessing.get_context("fork")


def step(from_state: str | None, to_state: str, event_id: str | None = None) -> Transition:
    return Transition(
        from_state=from_state, to_state=to_state, reason=f"{to_state} because", event_id=event_id
    )


@pytest.fixture(params=["local", pytest.param("dynamodb", marks=pytest.mark.aws)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> StateStore:
    if request.param == "local":
        return LocalStateStore(path=str(tmp_path / "state" / "state_store.db"))
    request.getfixturevalue("aws_credentials")
    suffix = uuid.uuid4().hex[:8]
    dynamo = DynamoStateStore(
        state_table=f"state-{suffix}",
        history_table=f"state-history-{suffix}",
        region="eu-west-1",
        endpoint_url=request.getfixturevalue("moto_endpoint"),
    )
    dynamo.ensure_tables()
    dynamo.ensure_tables()  # a second call finds the tables
    return dynamo


def test_a_first_write_is_version_1_with_its_history_record(store: StateStore) -> None:
    assert store.get(KEY) is None
    assert store.history(KEY) == []
    state = {"state": "NORMAL", "above": 0, "score": 0.125, "note": "Flur 2, Küche"}
    before = datetime.now(UTC)
    item = store.put(KEY, state, 0, step(None, "NORMAL", "e1"))
    assert (item.key, item.version, item.state) == (KEY, 1, state)
    assert before <= item.updated_at <= datetime.now(UTC)
    assert store.get(KEY) == item
    assert store.history(KEY) == [
        HistoryRecord(KEY, 1, item.updated_at, step(None, "NORMAL", "e1"), state)
    ]


def test_an_update_moves_the_version_by_one(store: StateStore) -> None:
    store.put(KEY, {"state": "NORMAL"}, 0, step(None, "NORMAL"))
    nested = {"state": "SUSPECTED", "scores": [0.5, 0.75], "since": {"ts": "2026-05-01T08:00Z"}}
    item = store.put(KEY, nested, 1, step("NORMAL", "SUSPECTED"))
    assert item.version == 2
    assert store.get(KEY) == item
    assert store.get(KEY).state == nested  # type: ignore[union-attr]
    assert store.get("device-8") is None  # each key has its own


def test_a_stale_version_is_refused_and_nothing_is_written(store: StateStore) -> None:
    store.put(KEY, {"state": "NORMAL"}, 0, step(None, "NORMAL", "e1"))
    current = store.put(KEY, {"state": "SUSPECTED"}, 1, step("NORMAL", "SUSPECTED", "e2"))
    with pytest.raises(StaleVersionError, match=r"'device-7' is at version 2, not 1") as stale:
        store.put(KEY, {"state": "ALARM"}, 1, step("NORMAL", "ALARM", "e3"))
    assert (stale.value.key, stale.value.expected_version, stale.value.actual_version) == (
        KEY,
        1,
        2,
    )
    with pytest.raises(StaleVersionError, match="at version 2, not 0"):
        store.put(KEY, {"state": "ALARM"}, 0, step(None, "ALARM", "e4"))  # a second "first"
    with pytest.raises(StaleVersionError, match="'device-8' is at version 0, not 3"):
        store.put("device-8", {"state": "ALARM"}, 3, step("NORMAL", "ALARM", "e5"))
    assert store.get(KEY) == current
    assert [r.version for r in store.history(KEY)] == [1, 2]
    assert store.get("device-8") is None
    assert store.history("device-8") == []
    # A refused write leaves no event guard behind: the same event applies at the right version.
    assert store.put(KEY, {"state": "ALARM"}, 2, step("SUSPECTED", "ALARM", "e3")).version == 3


def test_history_lists_every_transition_in_version_order(store: StateStore) -> None:
    states = ["NORMAL", "SUSPECTED", "ALARM", "RESOLVED"]
    before: list[str | None] = [None, *states[:-1]]
    steps = [step(b, a, f"e{v}") for v, (b, a) in enumerate(zip(before, states, strict=True))]
    for version, (transition, after) in enumerate(zip(steps, states, strict=True)):
        store.put(KEY, {"state": after, "n": version}, version, transition)
    store.put("device-8", {"state": "NORMAL"}, 0, step(None, "NORMAL", "e0"))
    history = store.history(KEY)
    assert [(r.key, r.version, r.state) for r in history] == [
        (KEY, v + 1, {"state": after, "n": v}) for v, after in enumerate(states)
    ]
    assert [r.transition for r in history] == steps
    assert [r.at for r in history] == sorted(r.at for r in history)
    assert store.history(KEY, limit=2) == history[2:]  # the latest, still oldest first
    assert store.history(KEY, limit=10) == history
    assert len(store.history("device-8")) == 1
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.history(KEY, limit=0)


def test_a_duplicate_event_never_moves_a_key_twice(store: StateStore) -> None:
    store.put(KEY, {"state": "NORMAL"}, 0, step(None, "NORMAL", "e1"))
    current = store.put(KEY, {"state": "SUSPECTED"}, 1, step("NORMAL", "SUSPECTED", "e2"))
    with pytest.raises(DuplicateEventError, match="'e1' was already applied to 'device-7'") as dup:
        store.put(KEY, {"state": "ALARM"}, 2, step("SUSPECTED", "ALARM", "e1"))
    assert (dup.value.event_id, dup.value.applied_version) == ("e1", 1)
    # Stale as well: reported as the duplicate, so the caller drops it rather than retrying.
    with pytest.raises(DuplicateEventError, match=r"\(version 2\)"):
        store.put(KEY, {"state": "ALARM"}, 1, step("NORMAL", "ALARM", "e2"))
    assert store.get(KEY) == current
    assert len(store.history(KEY)) == 2
    # The guard is per key, and a write without an event id is never a duplicate.
    assert store.put("device-8", {"state": "NORMAL"}, 0, step(None, "NORMAL", "e1")).version == 1
    store.put(KEY, {"state": "SUSPECTED", "n": 1}, 2, step("SUSPECTED", "SUSPECTED"))
    assert store.put(KEY, {"state": "SUSPECTED"}, 3, step("SUSPECTED", "SUSPECTED")).version == 4


def test_listing_pages_through_every_key_once(store: StateStore) -> None:
    assert store.scan() == ItemPage([], None)
    keys = [f"device-{i:02d}" for i in range(7)]
    for i, key in enumerate(keys):
        store.put(key, {"state": "NORMAL", "i": i}, 0, step(None, "NORMAL"))
    seen: list[Any] = []
    cursor: str | None = None
    for _ in range(10):  # 3 pages of 3 at most, and an empty one that DynamoDB may add
        page = store.scan(limit=3, cursor=cursor)
        assert len(page.items) <= 3
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    assert cursor is None
    assert sorted(item.key for item in seen) == keys
    assert {item.key: item.state["i"] for item in seen} == {key: i for i, key in enumerate(keys)}
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.scan(limit=0)


def test_bad_input_is_a_clear_error(store: StateStore) -> None:
    with pytest.raises(ValueError, match="state is not JSON"):
        store.put(KEY, {"seen": {1, 2}}, 0, step(None, "NORMAL"))
    with pytest.raises(ValueError, match="state is not JSON"):
        store.put(KEY, {"score": float("nan")}, 0, step(None, "NORMAL"))
    with pytest.raises(TypeError, match="a state is a mapping, got list"):
        store.put(KEY, ["NORMAL"], 0, step(None, "NORMAL"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key must not be empty"):
        store.put("", {}, 0, step(None, "NORMAL"))
    with pytest.raises(ValueError, match="expected_version must be >= 0, got -1"):
        store.put(KEY, {}, -1, step(None, "NORMAL"))
    with pytest.raises(ValueError, match="needs a to_state and a reason"):
        Transition(from_state=None, to_state="NORMAL", reason="")
    assert store.get(KEY) is None


def test_the_local_environment_keeps_the_state_under_the_home(tmp_path: Path) -> None:
    store = resource_for("state_store", Environment.LOCAL, LocalPaths(home=tmp_path))
    assert isinstance(store, LocalStateStore)
    assert store.path == str(tmp_path / "state_store.db")


def _race(path: str, event_id: str, start: Any, results: Any) -> None:
    """One analysis worker handling an event: read, decide, write; on a stale version read
    again and decide again, until the event is applied or found applied."""
    store = LocalStateStore(path=path)
    start.wait(timeout=30)
    while True:
        item = store.get(KEY)
        assert item is not None
        try:
            store.put(
                KEY, {"state": "ALARM", "by": event_id}, item.version, step("S", "A", event_id)
            )
        except StaleVersionError:
            continue
        except DuplicateEventError:
            results.put("duplicate")
            return
        results.put("applied")
        return


def _run_racers(path: str, event_ids: list[str]) -> list[str]:
    start, results = FORK.Barrier(len(event_ids)), FORK.Queue()
    racers = [FORK.Process(target=_race, args=(path, e, start, results)) for e in event_ids]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(timeout=30)
        assert racer.exitcode == 0
    return sorted(outcomes)


@pytest.mark.slow
def test_workers_racing_one_event_apply_it_once(tmp_path: Path) -> None:
    store = LocalStateStore(path=str(tmp_path / "state_store.db"))
    store.put(KEY, {"state": "SUSPECTED"}, 0, step(None, "S", "e0"))
    outcomes = _run_racers(store.path, ["e1"] * 8)
    assert outcomes == ["applied"] + ["duplicate"] * 7
    assert [r.transition.event_id for r in store.history(KEY)] == ["e0", "e1"]
    assert store.get(KEY).version == 2  # type: ignore[union-attr]


@pytest.mark.slow
def test_racing_distinct_events_each_land_once_in_some_order(tmp_path: Path) -> None:
    store = LocalStateStore(path=str(tmp_path / "state_store.db"))
    store.put(KEY, {"state": "SUSPECTED"}, 0, step(None, "S", "e0"))
    events = [f"e{i}" for i in range(1, 7)]
    assert _run_racers(store.path, events) == ["applied"] * 6
    history = store.history(KEY)
    assert [r.version for r in history] == list(range(1, 8))  # no version written twice
    assert sorted(r.transition.event_id for r in history[1:]) == events  # type: ignore[type-var]
    assert store.get(KEY).state == history[-1].state  # type: ignore[union-attr]


def _write_forever(path: str) -> None:
    store = LocalStateStore(path=path)
    version = 0
    while True:
        store.put(KEY, {"n": version + 1}, version, step(None, "N", f"e{version + 1}"))
        version += 1


@pytest.mark.slow
def test_a_writer_killed_mid_stream_leaves_state_and_history_in_step(tmp_path: Path) -> None:
    path = str(tmp_path / "state_store.db")
    writer = FORK.Process(target=_write_forever, args=(path,))
    writer.start()
    store = LocalStateStore(path=path)
    deadline = time.monotonic() + 60
    while (item := store.get(KEY)) is None or item.version < 30:
        assert time.monotonic() < deadline
        assert writer.is_alive()
        time.sleep(0.01)
    os.kill(writer.pid, signal.SIGKILL)  # type: ignore[arg-type]
    writer.join(timeout=30)
    reopened = LocalStateStore(path=path)  # a fresh process would see the same file
    item, history = reopened.get(KEY), reopened.history(KEY)
    assert item is not None
    assert item.version >= 30
    assert [r.version for r in history] == list(range(1, item.version + 1))
    assert item.state == history[-1].state == {"n": item.version}
    # The next writer carries on from where the killed one stopped.
    assert reopened.put(KEY, {"n": 0}, item.version, step("N", "N")).version == item.version + 1


def test_state_survives_reopening_the_file_in_wal_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "state_store.db")
    written = LocalStateStore(path=path).put(KEY, {"state": "ALARM"}, 0, step(None, "ALARM", "e1"))
    reopened = LocalStateStore(path=path)
    assert reopened.get(KEY) == written
    assert [r.transition for r in reopened.history(KEY)] == [step(None, "ALARM", "e1")]
    with pytest.raises(DuplicateEventError):
        reopened.put(KEY, {"state": "ALARM"}, 1, step("ALARM", "ALARM", "e1"))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
