"""The state store port: a small JSON state per key (the analysis agent's, per device) with a
version, and the history of every change. DynamoDB in AWS; locally a SQLite file under
FIREPIPE_HOME.

A write names the version it was computed from (`expected_version`, 0 for a new key) and lands
only if the stored version is still that one, together with its history record, in one atomic
step: of two workers that read the same version only one moves the key; the other gets
StaleVersionError, reads again and decides again. A write may carry the id of the event that
caused it; an id already applied to the key is refused with DuplicateEventError, so a redelivered
event never moves a key twice. The event guard is checked first: a duplicate is reported as one
even when the caller's version is stale as well, so the caller drops it instead of retrying.

DynamoDB layout: the state table, partition key `key` (S), with `version` (N), `state` (S, JSON)
and `updated_at` (S); the history table, partition key `key` (S) and sort key `version` (N), with
`at`, `to_state`, `reason`, `state` and, when given, `from_state` and `event_id`. An applied
event is a guard item in the history table: key `["event", <key>, <event id>]` (JSON, so no two
pairs collide), version 0 (history starts at 1), `applied_version`. One TransactWriteItems
writes the state, its history record and the guard.
"""

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.lib import dynamo, sqlite_state


class StateConflictError(Exception):
    """A put that was refused; nothing was written."""


class StaleVersionError(StateConflictError):
    def __init__(self, key: str, expected_version: int, actual_version: int) -> None:
        super().__init__(
            f"state {key!r} is at version {actual_version}, not {expected_version}: another "
            "writer moved it; read it again"
        )
        self.key = key
        self.expected_version, self.actual_version = expected_version, actual_version


class DuplicateEventError(StateConflictError):
    def __init__(self, key: str, event_id: str, applied_version: int) -> None:
        super().__init__(
            f"event {event_id!r} was already applied to {key!r} (version {applied_version})"
        )
        self.key, self.event_id, self.applied_version = key, event_id, applied_version


@dataclass(frozen=True, kw_only=True)
class Transition:
    """Why a key's state changed: the state machine's states before (None for a new key) and
    after, the reason in words, and the event that caused it."""

    from_state: str | None
    to_state: str
    reason: str
    event_id: str | None = None

    def __post_init__(self) -> None:
        if not self.to_state or not self.reason:
            raise ValueError(f"a transition needs a to_state and a reason, got {self}")
        if self.event_id == "":
            raise ValueError("an event id, when given, must not be empty")


@dataclass(frozen=True)
class Item:
    key: str
    version: int  # 1 after the first put
    state: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class HistoryRecord:
    key: str
    version: int  # the version this change produced
    at: datetime
    transition: Transition
    state: dict[str, Any]  # the state it produced


@dataclass(frozen=True)
class ItemPage:
    items: list[Item]
    next_cursor: str | None  # pass to scan() for the next page; None after the last


class StateStore(dg.ConfigurableResource, ABC):
    """Versioned state per key, with its history."""

    @abstractmethod
    def get(self, key: str) -> Item | None:
        """The current state of `key` (read after every committed put), None when absent."""

    @abstractmethod
    def put(
        self, key: str, state: Mapping[str, Any], expected_version: int, transition: Transition
    ) -> Item:
        """Write `state` as version expected_version + 1 with its history record, atomically,
        if `key` is still at `expected_version` (0: absent); else raise StaleVersionError, or
        DuplicateEventError when the transition's event was already applied to `key`."""

    @abstractmethod
    def history(self, key: str, limit: int | None = None) -> list[HistoryRecord]:
        """The changes of `key` in version order: all, or the latest `limit`."""

    @abstractmethod
    def scan(self, limit: int = 100, cursor: str | None = None) -> ItemPage:
        """At most `limit` items after `cursor`, in no promised order (DynamoDB's Scan); a page
        may be short, even empty, before the last."""

    @abstractmethod
    def describe(self) -> str:
        """Where the state is kept, for people."""


def _state_text(state: Mapping[str, Any]) -> str:
    if not isinstance(state, Mapping):
        raise TypeError(f"a state is a mapping, got {type(state).__name__}")
    try:
        return json.dumps(dict(state), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"state is not JSON ({error}): {state!r}") from None


def _check_put(key: str, expected_version: int) -> None:
    if not key:
        raise ValueError("a state key must not be empty")
    if expected_version < 0:
        raise ValueError(f"expected_version must be >= 0, got {expected_version}")


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


_SCHEMA = (
    # WAL: readers (`get`, `history`) do not wait for a writer, nor a writer for them. NORMAL
    # sync loses nothing in WAL mode when a process is killed, only on power loss (FULL's
    # fsync per put measured 0.3 ms idle and tens of ms with the disk busy).
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "CREATE TABLE IF NOT EXISTS states (key TEXT PRIMARY KEY, version INTEGER NOT NULL, "
    "state TEXT NOT NULL, updated_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS history (key TEXT NOT NULL, version INTEGER NOT NULL, "
    "at TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, reason TEXT NOT NULL, "
    "event_id TEXT, state TEXT NOT NULL, PRIMARY KEY (key, version))",
    "CREATE UNIQUE INDEX IF NOT EXISTS history_events ON history (key, event_id) "
    "WHERE event_id IS NOT NULL",
)
_HISTORY_COLUMNS = "key, version, at, from_state, to_state, reason, event_id, state"


class LocalStateStore(StateStore):
    """A SQLite file under FIREPIPE_HOME, shared safely by the local worker processes."""

    path: str = Field(description="the SQLite database file; created on first use")

    def _connect(self) -> sqlite3.Connection:
        # Kept per process and thread; isolation_level None: put begins its own transaction.
        return sqlite_state.kept(self.path, *_SCHEMA)

    def get(self, key: str) -> Item | None:
        connection = self._connect()
        row = connection.execute(
            "SELECT key, version, state, updated_at FROM states WHERE key = ?", [key]
        ).fetchone()
        return None if row is None else _item(*row)

    def put(
        self, key: str, state: Mapping[str, Any], expected_version: int, transition: Transition
    ) -> Item:
        _check_put(key, expected_version)
        text, at, new = _state_text(state), timestamp_text(datetime.now(UTC)), expected_version + 1
        t = transition
        # IMMEDIATE takes the write lock before the checks, so no other process can move
        # the key between the check and the write.
        with sqlite_state.immediate(self._connect()) as connection:
            _refuse_locally(connection, key, expected_version, t.event_id)
            connection.execute(
                "INSERT INTO states (key, version, state, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET version = excluded.version, "
                "state = excluded.state, updated_at = excluded.updated_at",
                [key, new, text, at],
            )
            connection.execute(
                f"INSERT INTO history ({_HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [key, new, at, t.from_state, t.to_state, t.reason, t.event_id, text],
            )
        return _item(key, new, text, at)

    def history(self, key: str, limit: int | None = None) -> list[HistoryRecord]:
        _check_limit(limit)
        query = f"SELECT {_HISTORY_COLUMNS} FROM history WHERE key = ? ORDER BY version DESC"
        connection = self._connect()
        rows = connection.execute(f"{query} LIMIT ?", [key, limit or -1]).fetchall()
        return [_record(*row) for row in reversed(rows)]

    def scan(self, limit: int = 100, cursor: str | None = None) -> ItemPage:
        _check_limit(limit)
        connection = self._connect()
        rows = connection.execute(
            "SELECT key, version, state, updated_at FROM states WHERE key > ? ORDER BY key LIMIT ?",
            [cursor or "", limit + 1],
        ).fetchall()
        items = [_item(*row) for row in rows[:limit]]
        return ItemPage(items, items[-1].key if len(rows) > limit else None)

    def describe(self) -> str:
        return f"SQLite at {self.path}"


def _refuse_locally(
    connection: sqlite3.Connection, key: str, expected_version: int, event_id: str | None
) -> None:
    if event_id is not None:
        applied = connection.execute(
            "SELECT version FROM history WHERE key = ? AND event_id = ?", [key, event_id]
        ).fetchone()
        if applied is not None:
            raise DuplicateEventError(key, event_id, int(applied[0]))
    row = connection.execute("SELECT version FROM states WHERE key = ?", [key]).fetchone()
    actual = 0 if row is None else int(row[0])
    if actual != expected_version:
        raise StaleVersionError(key, expected_version, actual)


def _item(key: str, version: int | str, state: str, updated_at: str) -> Item:
    return Item(key, int(version), json.loads(state), parse_timestamp(updated_at))


def _record(
    key: str,
    version: int | str,
    at: str,
    from_state: str | None,
    to_state: str,
    reason: str,
    event_id: str | None,
    state: str,
) -> HistoryRecord:
    transition = Transition(
        from_state=from_state, to_state=to_state, reason=reason, event_id=event_id
    )
    return HistoryRecord(key, int(version), parse_timestamp(at), transition, json.loads(state))


class DynamoStateStore(StateStore):
    """Two DynamoDB tables (the layout in the module docstring); credentials from the default
    AWS chain."""

    state_table: str
    history_table: str
    region: str
    endpoint_url: str | None = None

    def _client(self) -> Any:
        return dynamo.client(self.region, self.endpoint_url)

    def table_definitions(self) -> list[dict[str, Any]]:
        """CreateTable arguments of both tables, on-demand billing (for tests and dev accounts;
        the CDK app owns the production tables, with point-in-time recovery)."""
        key = {"AttributeName": "key", "AttributeType": "S"}
        version = {"AttributeName": "version", "AttributeType": "N"}
        hash_key = {"AttributeName": "key", "KeyType": "HASH"}
        return [
            {
                "TableName": self.state_table,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [key],
                "KeySchema": [hash_key],
            },
            {
                "TableName": self.history_table,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [key, version],
                "KeySchema": [hash_key, {"AttributeName": "version", "KeyType": "RANGE"}],
            },
        ]

    def ensure_tables(self) -> None:
        for definition in self.table_definitions():
            dynamo.ensure_table(self._client(), definition)

    def get(self, key: str) -> Item | None:
        item = (
            self._client()
            .get_item(TableName=self.state_table, Key={"key": {"S": key}}, ConsistentRead=True)
            .get("Item")
        )
        return None if item is None else _dynamo_item(item)

    def put(
        self, key: str, state: Mapping[str, Any], expected_version: int, transition: Transition
    ) -> Item:
        _check_put(key, expected_version)
        text, at, new = _state_text(state), timestamp_text(datetime.now(UTC)), expected_version + 1
        t = transition
        writes = [
            _put(
                self.state_table,
                _attributes(key=key, version=new, state=text, updated_at=at),
                _at_version(expected_version),
            ),
            _put(
                self.history_table,
                _attributes(
                    key=key,
                    version=new,
                    at=at,
                    from_state=t.from_state,
                    to_state=t.to_state,
                    reason=t.reason,
                    event_id=t.event_id,
                    state=text,
                ),
            ),
        ]
        if t.event_id is not None:
            guard = _attributes(key=_guard_key(key, t.event_id), version=0, applied_version=new)
            writes.append(_put(self.history_table, guard, _at_version(0)))
        client = self._client()
        try:
            client.transact_write_items(TransactItems=writes)
        except client.exceptions.TransactionCanceledException as error:
            raise self._refusal(key, expected_version, t.event_id, error) from None
        return _item(key, new, text, at)

    def _refusal(
        self, key: str, expected_version: int, event_id: str | None, error: Any
    ) -> Exception:
        """The refusal a cancelled transaction means: a duplicate event, a stale version (or a
        concurrent transaction on the item: a writer moving it), else the error itself."""
        reasons = error.response.get("CancellationReasons", [])
        codes = [reason.get("Code") for reason in reasons]
        if event_id is not None and len(reasons) > 2 and codes[2] == "ConditionalCheckFailed":
            applied = reasons[2].get("Item", {}).get("applied_version", {}).get("N", "0")
            return DuplicateEventError(key, event_id, int(applied))
        if codes and codes[0] in ("ConditionalCheckFailed", "TransactionConflict"):
            old = reasons[0].get("Item")
            current = _dynamo_item(old) if old else self.get(key)
            return StaleVersionError(key, expected_version, current.version if current else 0)
        return error

    def history(self, key: str, limit: int | None = None) -> list[HistoryRecord]:
        _check_limit(limit)
        request: dict[str, Any] = {
            "TableName": self.history_table,
            "KeyConditionExpression": "#k = :k",
            "ExpressionAttributeNames": {"#k": "key"},
            "ExpressionAttributeValues": {":k": {"S": key}},
            "ConsistentRead": True,
            "ScanIndexForward": False,  # newest first, so a limit keeps the latest
        }
        records: list[HistoryRecord] = []
        while limit is None or len(records) < limit:
            if limit is not None:
                request["Limit"] = limit - len(records)
            page = self._client().query(**request)
            records += [_dynamo_record(item) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return records[::-1]

    def scan(self, limit: int = 100, cursor: str | None = None) -> ItemPage:
        _check_limit(limit)
        request: dict[str, Any] = {
            "TableName": self.state_table,
            "Limit": limit,
            "ConsistentRead": True,
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = {"key": {"S": cursor}}
        page = self._client().scan(**request)
        last = page.get("LastEvaluatedKey")
        return ItemPage(
            [_dynamo_item(item) for item in page["Items"]], last["key"]["S"] if last else None
        )

    def describe(self) -> str:
        return f"DynamoDB tables {self.state_table} and {self.history_table} ({self.region})"


def _guard_key(key: str, event_id: str) -> str:
    return json.dumps(["event", key, event_id])


def _at_version(version: int) -> dict[str, Any]:
    """The condition that an item is at `version` (0: absent)."""
    if version == 0:
        return {
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": "key"},
        }
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":v": {"N": str(version)}},
    }


def _put(table: str, item: dict[str, Any], condition: dict[str, Any] | None = None) -> Any:
    """A TransactWriteItems Put; a failed condition reports the item it found."""
    checked = {"ReturnValuesOnConditionCheckFailure": "ALL_OLD", **condition} if condition else {}
    return {"Put": {"TableName": table, "Item": item, **checked}}


def _attributes(**values: str | int | None) -> dict[str, Any]:
    """DynamoDB attribute values: text as S, integers as N; None left out."""
    return {
        name: {"N": str(value)} if isinstance(value, int) else {"S": value}
        for name, value in values.items()
        if value is not None
    }


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item's S and N attributes as their text."""
    return {name: next(iter(value.values())) for name, value in item.items()}


def _dynamo_item(item: dict[str, Any]) -> Item:
    a = _plain(item)
    return _item(a["key"], a["version"], a["state"], a["updated_at"])


def _dynamo_record(item: dict[str, Any]) -> HistoryRecord:
    a = _plain(item)
    return _record(
        a["key"],
        a["version"],
        a["at"],
        a.get("from_state"),
        a["to_state"],
        a["reason"],
        a.get("event_id"),
        a["state"],
    )
