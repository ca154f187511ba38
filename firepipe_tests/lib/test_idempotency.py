"""One idempotency contract for the local SQLite layer and Powertools' DynamoDB layer on moto,
through Powertools' own `idempotent_function`: a key runs once and answers its stored result
(to a second layer instance and to another process), an expired record runs again, a raised
exception frees the key, a call killed mid-flight holds its key until its record (or, with a
Lambda context, its in-progress expiry) runs out, and racing processes run a key once.

Without a Lambda context Powertools writes no in-progress expiry (save_inprogress warns and
leaves it None), so a killed call's INPROGRESS record holds the key until `expires_after_seconds`:
the context-less tests use a 2 s expiry; one test registers a context to cover the other clause.
"""

import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import (
    DynamoDBPersistenceLayer,
)

from firepipe.lib import dynamo
from firepipe.lib.idempotency import SqlitePersistenceLayer, persistence_layer

REGION = "eu-west-1"
# spawn, not fork: each child opens its own SQLite connections and boto3 clients, as a separate
# worker process does.
SPAWN = multiprocessing.get_context("spawn")

# The local workers run without a Lambda context: that warning is the setup under test.
pytestmark = pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left")


class StubLambdaContext:
    """The one thing Powertools asks a Lambda context for."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def handler(
    spec: dict[str, Any],
    *,
    expires_after_seconds: int = 3600,
    remaining_ms: int | None = None,
    validate: bool = False,
) -> Callable[..., Any]:
    """An idempotent handler on a fresh layer from `spec`, keyed on the message's id. Each run
    appends its pid to the message's log; `sleep_s` holds it in flight, `fail` makes it raise."""
    config = IdempotencyConfig(
        event_key_jmespath="message_id",
        payload_validation_jmespath="value" if validate else "",
        expires_after_seconds=expires_after_seconds,
    )
    if remaining_ms is not None:
        config.register_lambda_context(StubLambdaContext(remaining_ms))  # type: ignore[arg-type]

    @idempotent_function(
        data_keyword_argument="message",
        persistence_store=persistence_layer(**spec),
        config=config,
        key_prefix="firepipe-test.handle",  # the same key in every process
    )
    def handle(*, message: dict[str, Any]) -> dict[str, Any]:
        with open(message["log"], "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(message.get("sleep_s", 0))
        if message.get("fail"):
            raise RuntimeError(message["fail"])
        return {"doubled": message["value"] * 2, "pid": os.getpid()}

    return handle


def in_child(
    spec: dict[str, Any],
    handler_options: dict[str, Any],
    message: dict[str, Any],
    results: Any = None,
    barrier: Any = None,
) -> None:
    handle = handler(spec, **handler_options)
    if barrier is not None:
        barrier.wait()
    try:
        outcome: tuple[str, Any] = ("ran", handle(message=message))
    except IdempotencyAlreadyInProgressError:
        outcome = ("in progress", None)
    except Exception as error:  # reported, so the test fails on it instead of waiting
        outcome = ("error", repr(error))
    if results is not None:
        results.put(outcome)


def runs(log: Path) -> list[int]:
    """The pids of the handler's runs, in order."""
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """`persistence_layer` arguments of a fresh store: a file, or a table on the moto server
    (reachable from child processes too)."""
    if request.param == "sqlite":
        return {"sqlite_path": str(tmp_path / "state" / "idempotency.db")}
    request.getfixturevalue("aws_credentials")
    endpoint = request.getfixturevalue("moto_endpoint")
    table = f"idempotency-{uuid.uuid4().hex[:8]}"
    # The table Powertools' documentation asks for: partition key `id` (a string).
    dynamo.ensure_table(
        boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint),
        {
            "TableName": table,
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    return {"dynamodb_table": table, "region": REGION, "endpoint_url": endpoint}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "runs.log"


def message(log: Path, key: str, value: int = 21, **extra: Any) -> dict[str, Any]:
    return {"message_id": key, "value": value, "log": str(log), **extra}


def test_a_key_runs_once_and_answers_its_stored_result(spec: dict[str, Any], log: Path) -> None:
    handle = handler(spec)
    first = handle(message=message(log, "m-1", 21))
    assert first == {"doubled": 42, "pid": os.getpid()}
    # The key is the message id alone: another value under it is still the first result.
    assert handle(message=message(log, "m-1", 5)) == first
    assert handle(message=message(log, "m-2", 5)) == {"doubled": 10, "pid": os.getpid()}
    assert len(runs(log)) == 2

    # A second layer on the same store, as the next worker opens it.
    assert handler(spec)(message=message(log, "m-1", 7)) == first
    assert len(runs(log)) == 2


@pytest.mark.slow
def test_another_process_answers_the_stored_result(spec: dict[str, Any], log: Path) -> None:
    handler(spec)(message=message(log, "m-1", 21))
    results = SPAWN.Queue()
    for key in ("m-1", "m-2"):
        child = SPAWN.Process(target=in_child, args=(spec, {}, message(log, key, 4), results))
        child.start()
        child.join(60)
        assert child.exitcode == 0
    stored, fresh = results.get(timeout=5), results.get(timeout=5)

    assert stored == ("ran", {"doubled": 42, "pid": os.getpid()})  # the parent's result
    assert fresh[1]["doubled"] == 8
    assert fresh[1]["pid"] != os.getpid()
    # ... and the child's result comes back to the parent without a run.
    assert handler(spec)(message=message(log, "m-2", 0)) == fresh[1]
    assert runs(log) == [os.getpid(), fresh[1]["pid"]]


def test_an_expired_record_runs_again(spec: dict[str, Any], log: Path) -> None:
    handle = handler(spec, expires_after_seconds=1)
    assert handle(message=message(log, "m-1", 1))["doubled"] == 2
    # Expiry is whole seconds: expiration = int(now + 1), taken over once it is < int(now).
    time.sleep(2.05)
    assert handle(message=message(log, "m-1", 3))["doubled"] == 6
    assert len(runs(log)) == 2


def test_a_raised_exception_frees_the_key(spec: dict[str, Any], log: Path) -> None:
    handle = handler(spec)
    with pytest.raises(RuntimeError, match="device offline"):
        handle(message=message(log, "m-1", fail="device offline"))
    assert handle(message=message(log, "m-1", 2)) == {"doubled": 4, "pid": os.getpid()}
    assert handle(message=message(log, "m-1", 9))["doubled"] == 4  # now it is kept
    assert len(runs(log)) == 2


def test_a_changed_payload_under_a_stored_key_is_refused(spec: dict[str, Any], log: Path) -> None:
    handle = handler(spec, validate=True)
    assert handle(message=message(log, "m-1", 3))["doubled"] == 6
    with pytest.raises(IdempotencyValidationError):
        handle(message=message(log, "m-1", 4))
    assert handle(message=message(log, "m-1", 3))["doubled"] == 6
    assert len(runs(log)) == 1


def kill_in_flight(spec: dict[str, Any], options: dict[str, Any], log: Path) -> float:
    """Start a child whose call sleeps inside the handler, SIGKILL it there; when it died."""
    child = SPAWN.Process(target=in_child, args=(spec, options, message(log, "m-1", sleep_s=60)))
    child.start()
    wait_for(lambda: len(runs(log)) == 1)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    return time.monotonic()


def retry_until_it_runs(handle: Callable[..., Any], log: Path, timeout_s: float) -> int:
    """Call until the key is free again; how many calls found it in progress."""
    refused = 0
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            assert handle(message=message(log, "m-1", 5)) == {"doubled": 10, "pid": os.getpid()}
            return refused
        except IdempotencyAlreadyInProgressError:
            refused += 1
            assert time.monotonic() < deadline, "the killed call's key was never freed"
            time.sleep(0.1)


@pytest.mark.slow
def test_a_call_killed_without_a_lambda_context_holds_its_key_until_expiry(
    spec: dict[str, Any], log: Path
) -> None:
    options = {"expires_after_seconds": 2}
    killed_at = kill_in_flight(spec, options, log)
    handle = handler(spec, **options)
    with pytest.raises(IdempotencyAlreadyInProgressError):
        handle(message=message(log, "m-1", 5))  # right after the kill: still locked

    assert retry_until_it_runs(handle, log, timeout_s=10) >= 1
    # Freed by the record's expiry (int(start + 2) < int(now)): within 3 s of its start.
    assert time.monotonic() - killed_at < 3.5
    assert len(runs(log)) == 2


@pytest.mark.slow
def test_a_call_killed_with_a_lambda_context_is_retried_after_its_in_progress_expiry(
    spec: dict[str, Any], log: Path
) -> None:
    # The record itself lives an hour: only the in-progress expiry (1.5 s) can free the key.
    options = {"expires_after_seconds": 3600, "remaining_ms": 1500}
    kill_in_flight(spec, options, log)
    handle = handler(spec, **options)
    with pytest.raises(IdempotencyAlreadyInProgressError):
        handle(message=message(log, "m-1", 5))

    assert retry_until_it_runs(handle, log, timeout_s=10) >= 1
    assert len(runs(log)) == 2


@pytest.mark.slow
def test_racing_processes_run_a_key_once(spec: dict[str, Any], log: Path) -> None:
    racers = 4
    results, barrier = SPAWN.Queue(), SPAWN.Barrier(racers)
    children = [
        SPAWN.Process(
            target=in_child, args=(spec, {}, message(log, "m-1", 1, sleep_s=1), results, barrier)
        )
        for _ in range(racers)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(10)

    [winner] = runs(log)
    ran = [result for outcome, result in outcomes if outcome == "ran"]
    # Every other racer saw the winner's record: in flight, or already its result.
    assert ran
    assert all(result == {"doubled": 2, "pid": winner} for result in ran)
    assert len(ran) + sum(outcome == "in progress" for outcome, _ in outcomes) == racers


def test_threads_sharing_one_layer_run_a_key_once(spec: dict[str, Any], log: Path) -> None:
    handle = handler(spec)
    outcomes: list[Any] = []

    def call() -> None:
        try:
            outcomes.append(handle(message=message(log, "m-1", 1, sleep_s=0.3)))
        except IdempotencyAlreadyInProgressError:
            outcomes.append("in progress")

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(runs(log)) == 1
    assert outcomes.count("in progress") == 3
    assert handle(message=message(log, "m-1", 0)) == {"doubled": 2, "pid": os.getpid()}


@pytest.mark.slow
def test_a_layer_used_before_a_fork_works_in_the_child(tmp_path: Path, log: Path) -> None:
    """The child does not touch the SQLite connection it inherited, it opens its own."""
    spec = {"sqlite_path": str(tmp_path / "idempotency.db")}
    handle = handler(spec)
    handle(message=message(log, "m-1", 1))
    results = multiprocessing.get_context("fork").Queue()

    def child() -> None:
        results.put([handle(message=message(log, key, 3)) for key in ("m-1", "m-2")])

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    stored, fresh = results.get(timeout=30)
    process.join(10)
    assert process.exitcode == 0
    assert stored == {"doubled": 2, "pid": os.getpid()}
    assert fresh == {"doubled": 6, "pid": process.pid}
    assert handle(message=message(log, "m-2", 0)) == fresh  # the parent's connection sees it
    assert runs(log) == [os.getpid(), process.pid]


# -- the put condition, case by case (DynamoDBPersistenceLayer's ConditionExpression) ----------

HOUR, PAST = 3600, -60


@pytest.mark.parametrize(
    ("status", "expiry_in_s", "in_progress_expiry_in_s", "taken"),
    [
        ("INPROGRESS", HOUR, None, False),  # no in-progress expiry: held until the record expires
        ("INPROGRESS", HOUR, HOUR, False),
        ("INPROGRESS", HOUR, PAST, True),  # the in-progress expiry passed
        ("INPROGRESS", PAST, HOUR, True),  # the record expired
        ("COMPLETED", HOUR, PAST, False),  # the in-progress expiry counts only when INPROGRESS
        ("COMPLETED", PAST, None, True),
    ],
)
def test_put_takes_a_key_exactly_when_dynamodb_would(
    spec: dict[str, Any],
    status: str,
    expiry_in_s: int,
    in_progress_expiry_in_s: int | None,
    taken: bool,
) -> None:
    layer = persistence_layer(**spec)
    now = int(time.time())
    in_progress_s = None if in_progress_expiry_in_s is None else now + in_progress_expiry_in_s
    in_progress_ms = None if in_progress_s is None else in_progress_s * 1000
    existing = DataRecord("k", "INPROGRESS", now + expiry_in_s, in_progress_ms)
    with pytest.raises(IdempotencyItemNotFoundError):
        layer._get_record("k")
    layer._put_record(existing)
    if status == "COMPLETED":
        layer._update_record(DataRecord("k", status, now + expiry_in_s, response_data='{"a":1}'))
    new = DataRecord("k", "INPROGRESS", now + HOUR)

    if taken:
        layer._put_record(new)
        stored = layer._get_record("k")
        # The whole record replaced: no earlier result or in-progress expiry survives.
        assert (stored.status, stored.expiry_timestamp) == ("INPROGRESS", now + HOUR)
        assert not stored.response_data
        assert stored.in_progress_expiry_timestamp is None
        return
    with pytest.raises(IdempotencyItemAlreadyExistsError) as refused:
        layer._put_record(new)
    old = refused.value.old_data_record  # the record it lost to, with the refusal
    assert old is not None
    assert (old.status, old.expiry_timestamp) == (status, now + expiry_in_s)
    assert (old.response_data or "") == ('{"a":1}' if status == "COMPLETED" else "")
    assert layer._get_record("k").status == status  # unchanged
    layer._delete_record(DataRecord("k"))
    layer._delete_record(DataRecord("k"))  # deleting a missing key is no error
    with pytest.raises(IdempotencyItemNotFoundError):
        layer._get_record("k")


def test_the_factory_takes_exactly_one_store(tmp_path: Path) -> None:
    local = persistence_layer(sqlite_path=str(tmp_path / "i.db"))
    assert isinstance(local, SqlitePersistenceLayer)
    assert local.path == str(tmp_path / "i.db")
    aws = persistence_layer(dynamodb_table="idem", region=REGION)
    assert isinstance(aws, DynamoDBPersistenceLayer)
    assert aws.table_name == "idem"
    with pytest.raises(ValueError, match="exactly one of sqlite_path"):
        persistence_layer()
    with pytest.raises(ValueError, match="exactly one of sqlite_path"):
        persistence_layer(sqlite_path="i.db", dynamodb_table="idem")
    with pytest.raises(ValueError, match="DynamoDB settings"):
        persistence_layer(sqlite_path="i.db", region=REGION)
