"""The extraction watermark port: the last committed (updated_at, id) per extraction, in SQLite
locally and in DynamoDB on AWS. Both commit compare-and-set on the previous watermark, so a stale
writer (a second run that read the watermark before the first committed) cannot move it, least of
all backwards.

The port also lets one run at a time extract: `exclusive(name, run_id)` refuses a second run at
once with ExtractionBusyError, naming the run that holds it and since when. Locally that is a
file lock beside the SQLite file, which the kernel drops when its process dies; on AWS a lease
item in the watermark table, renewed while its run lives (`firepipe.lib.locks`).

DynamoDB layout: partition key `name` (S); a watermark's attributes `updated_at` (S, fixed-width
UTC text, so text order is time order) and `row_id` (N); a lease's item is `<name>#lease`, with
`token` (S), `holder` (S, JSON: run_id, since) and `expires_at` (N, epoch seconds).
"""

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.history import parse_timestamp, timestamp_text
from firepipe.core.ingestion.extraction import (
    ExtractionBusyError,
    StaleWatermarkError,
    Watermark,
    check_forward,
)
from firepipe.lib import dynamo, locks, sqlite_state


class WatermarkStore(dg.ConfigurableResource, ABC):
    """Where extraction watermarks are committed (firepipe.core.extraction.WatermarkStore)."""

    @abstractmethod
    def get(self, name: str) -> Watermark | None:
        """The committed watermark of extraction `name`, None before its first chunk."""

    @abstractmethod
    def commit(self, name: str, expected: Watermark | None, new: Watermark) -> None:
        """Move `name` from `expected` to `new` or raise StaleWatermarkError."""

    @abstractmethod
    def describe(self) -> str:
        """Where the watermarks are kept, for people."""

    @abstractmethod
    def exclusive(self, name: str, run_id: str) -> AbstractContextManager[None]:
        """Hold extraction `name` for run `run_id` while inside; raise ExtractionBusyError at
        once, without waiting, when another run holds it."""


def _holder(run_id: str) -> dict[str, str]:
    return {"run_id": run_id, "since": datetime.now(UTC).isoformat(timespec="seconds")}


@contextmanager
def _refused_when_held(name: str) -> Iterator[None]:
    """LockHeldError as the extraction's error, naming the run that holds it."""
    try:
        yield
    except locks.LockHeldError as held:
        holder = held.holder or {}
        since = holder.get("since")
        raise ExtractionBusyError(
            name, datetime.fromisoformat(since) if since else None, holder.get("run_id")
        ) from None


class SqliteWatermarkStore(WatermarkStore):
    """A SQLite file under FIREPIPE_HOME."""

    path: str = Field(description="the SQLite database file; created on first use")

    def _connect(self) -> sqlite3.Connection:
        return sqlite_state.connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, "
            "updated_at TEXT NOT NULL, row_id INTEGER NOT NULL)",
        )

    def get(self, name: str) -> Watermark | None:
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT updated_at, row_id FROM watermarks WHERE name = ?", [name]
            ).fetchone()
        return None if row is None else Watermark(parse_timestamp(row[0]), int(row[1]))

    def commit(self, name: str, expected: Watermark | None, new: Watermark) -> None:
        check_forward(expected, new)
        values = [timestamp_text(new.updated_at), new.id, name]
        with closing(self._connect()) as connection, connection:
            if expected is None:
                changed = connection.execute(
                    "INSERT OR IGNORE INTO watermarks (updated_at, row_id, name) VALUES (?, ?, ?)",
                    values,
                ).rowcount
            else:
                changed = connection.execute(
                    "UPDATE watermarks SET updated_at = ?, row_id = ? "
                    "WHERE name = ? AND updated_at = ? AND row_id = ?",
                    [*values, timestamp_text(expected.updated_at), expected.id],
                ).rowcount
        if changed != 1:
            raise StaleWatermarkError(
                f"watermark {name!r} is no longer at {expected}: another run moved it"
            )

    def describe(self) -> str:
        return f"SQLite at {self.path}"

    def lock_path(self, name: str) -> Path:
        """The lock file of extraction `name`, beside the SQLite file (under FIREPIPE_HOME)."""
        database = Path(self.path)
        return database.with_name(f"{database.stem}.{name}.lock")

    @contextmanager
    def exclusive(self, name: str, run_id: str) -> Iterator[None]:
        with _refused_when_held(name), locks.file_lock(self.lock_path(name), _holder(run_id)):
            yield


class DynamoWatermarkStore(WatermarkStore):
    """A DynamoDB table; credentials from the default AWS chain."""

    table_name: str
    region: str
    endpoint_url: str | None = None
    # 5 minutes, renewed every 100 s: a run killed without a word (OOM, a lost machine) blocks
    # the next extraction at most this long. A choice, not a measurement.
    lease_s: float = Field(
        default=300.0, gt=0, description="how long an extraction's lease outlives its last renewal"
    )

    def _client(self) -> Any:
        return dynamo.client(self.region, self.endpoint_url)

    def table_definition(self) -> dict[str, Any]:
        """CreateTable arguments: the layout in the module docstring, on-demand billing."""
        return {
            "TableName": self.table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "name", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "name", "KeyType": "HASH"}],
        }

    def ensure_table(self) -> None:
        dynamo.ensure_table(self._client(), self.table_definition())

    def get(self, name: str) -> Watermark | None:
        item = (
            self._client()
            .get_item(TableName=self.table_name, Key={"name": {"S": name}}, ConsistentRead=True)
            .get("Item")
        )
        if item is None:
            return None
        return Watermark(parse_timestamp(item["updated_at"]["S"]), int(item["row_id"]["N"]))

    def commit(self, name: str, expected: Watermark | None, new: Watermark) -> None:
        check_forward(expected, new)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": {
                "name": {"S": name},
                "updated_at": {"S": timestamp_text(new.updated_at)},
                "row_id": {"N": str(new.id)},
            },
        }
        if expected is None:
            request["ConditionExpression"] = "attribute_not_exists(#n)"
            request["ExpressionAttributeNames"] = {"#n": "name"}
        else:
            request["ConditionExpression"] = "updated_at = :u AND row_id = :i"
            request["ExpressionAttributeValues"] = {
                ":u": {"S": timestamp_text(expected.updated_at)},
                ":i": {"N": str(expected.id)},
            }
        client = self._client()
        try:
            client.put_item(**request)
        except client.exceptions.ConditionalCheckFailedException:
            raise StaleWatermarkError(
                f"watermark {name!r} is no longer at {expected}: another run moved it"
            ) from None

    def describe(self) -> str:
        return f"DynamoDB table {self.table_name} ({self.region})"

    @contextmanager
    def exclusive(self, name: str, run_id: str) -> Iterator[None]:
        lease = locks.DynamoLease(
            self._client(), self.table_name, "name", f"{name}#lease", self.lease_s
        )
        with _refused_when_held(name), lease.held(_holder(run_id)):
            yield
