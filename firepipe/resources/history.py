"""The generation history port: a record per generated partition, in SQLite locally and in
DynamoDB on AWS, with the same interface and the same idempotency (run id + partition).

DynamoDB layout (the CDK table must match `DynamoGenerationHistory.table_definition()`):

- partition key `asset_key`, sort key `record_id` = "<run_id>#<partition_key>": one item per
  generated partition, so recording the same run and partition again overwrites it;
- local secondary index `by_started_at` (asset_key, started_at): the recent records of one
  asset, newest first, by one Query;
- global secondary index `all_by_started_at` (entity = "generation", started_at): the recent
  records of every asset. One constant partition is fine at a few writes per run.
"""

import sqlite3
from abc import ABC, abstractmethod
from contextlib import closing
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from firepipe.core.history import GenerationRecord
from firepipe.lib import dynamo, sqlite_state

_COLUMNS = (
    "run_id",
    "partition_key",
    "asset_key",
    "spec",
    "seed",
    "rows",
    "location",
    "started_at",
    "duration_s",
    "backend",
    "status",
    "user",
    "host",
    "dagster_job",
    "dagster_run_id",
)
_NUMBERS = ("seed", "rows", "duration_s")
_ENTITY = "generation"
_ASSET_INDEX = "by_started_at"
_ALL_INDEX = "all_by_started_at"


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")


class GenerationHistory(dg.ConfigurableResource, ABC):
    """Where generation runs are recorded."""

    @abstractmethod
    def record(self, entry: GenerationRecord) -> None:
        """Store `entry`, replacing an earlier record of the same run and partition."""

    @abstractmethod
    def recent(self, limit: int = 20, asset_key: str | None = None) -> list[GenerationRecord]:
        """The latest `limit` records by started_at, newest first, of one asset or of all."""

    @abstractmethod
    def of_run(self, asset_key: str, run_id: str) -> list[GenerationRecord]:
        """The records one run made of one asset (one per partition), by partition key."""

    @abstractmethod
    def describe(self) -> str:
        """Where the records are kept, for people."""


class SqliteGenerationHistory(GenerationHistory):
    """A SQLite file under FIREPIPE_HOME; safe for the several processes of a local run."""

    path: str = Field(description="the SQLite database file; created on first record")

    def _connect(self) -> sqlite3.Connection:
        columns = ", ".join(
            f'"{c}" {"REAL" if c == "duration_s" else "INTEGER" if c == "rows" else "TEXT"}'
            + (" NOT NULL" if c not in ("dagster_job", "dagster_run_id") else "")
            for c in _COLUMNS
        )
        return sqlite_state.connect(
            self.path,
            f"CREATE TABLE IF NOT EXISTS generation_history ({columns}, "
            'PRIMARY KEY ("run_id", "partition_key"))',
            "CREATE INDEX IF NOT EXISTS generation_history_by_asset "
            'ON generation_history ("asset_key", "started_at")',
            "CREATE INDEX IF NOT EXISTS generation_history_by_time "
            'ON generation_history ("started_at")',
        )

    def record(self, entry: GenerationRecord) -> None:
        row = entry.to_flat()
        # SQLite treats NULLs in a primary key as distinct; '' stands for "not partitioned".
        row["partition_key"] = row["partition_key"] or ""
        row["seed"] = str(row["seed"])  # seeds may exceed SQLite's signed 64-bit integers
        names = ", ".join(f'"{c}"' for c in _COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        with closing(self._connect()) as connection, connection:
            connection.execute(
                f"INSERT OR REPLACE INTO generation_history ({names}) VALUES ({marks})",
                [row[c] for c in _COLUMNS],
            )

    def recent(self, limit: int = 20, asset_key: str | None = None) -> list[GenerationRecord]:
        _check_limit(limit)
        if not Path(self.path).exists():
            return []
        where, params = ('WHERE "asset_key" = ?', [asset_key]) if asset_key else ("", [])
        query = (
            f"SELECT * FROM generation_history {where} "
            'ORDER BY "started_at" DESC, "run_id", "partition_key" LIMIT ?'
        )
        with closing(self._connect()) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query, [*params, limit]).fetchall()
        return [
            GenerationRecord.from_flat({**dict(r), "partition_key": r["partition_key"] or None})
            for r in rows
        ]

    def of_run(self, asset_key: str, run_id: str) -> list[GenerationRecord]:
        if not Path(self.path).exists():
            return []
        query = (
            'SELECT * FROM generation_history WHERE "run_id" = ? AND "asset_key" = ? '
            'ORDER BY "partition_key"'
        )
        with closing(self._connect()) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query, [run_id, asset_key]).fetchall()
        return [
            GenerationRecord.from_flat({**dict(r), "partition_key": r["partition_key"] or None})
            for r in rows
        ]

    def describe(self) -> str:
        return f"SQLite at {self.path}"


class DynamoGenerationHistory(GenerationHistory):
    """A DynamoDB table; credentials from the default AWS chain."""

    table_name: str
    region: str
    endpoint_url: str | None = None

    def _client(self) -> Any:
        return dynamo.client(self.region, self.endpoint_url)

    def table_definition(self) -> dict[str, Any]:
        """CreateTable arguments: the layout in the module docstring, on-demand billing."""
        by_time = {"AttributeName": "started_at", "KeyType": "RANGE"}
        return {
            "TableName": self.table_name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": "S"}
                for name in ("asset_key", "record_id", "started_at", "entity")
            ],
            "KeySchema": [
                {"AttributeName": "asset_key", "KeyType": "HASH"},
                {"AttributeName": "record_id", "KeyType": "RANGE"},
            ],
            "LocalSecondaryIndexes": [
                {
                    "IndexName": _ASSET_INDEX,
                    "KeySchema": [{"AttributeName": "asset_key", "KeyType": "HASH"}, by_time],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": _ALL_INDEX,
                    "KeySchema": [{"AttributeName": "entity", "KeyType": "HASH"}, by_time],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        }

    def ensure_table(self) -> None:
        dynamo.ensure_table(self._client(), self.table_definition())

    def record(self, entry: GenerationRecord) -> None:
        item: dict[str, dict[str, str]] = {
            "record_id": {"S": f"{entry.run_id}#{entry.partition_key or ''}"},
            "entity": {"S": _ENTITY},
        }
        for name, value in entry.to_flat().items():
            if value is None:
                continue  # an absent attribute reads back as None
            item[name] = {"N": str(value)} if name in _NUMBERS else {"S": str(value)}
        self._client().put_item(TableName=self.table_name, Item=item)

    def recent(self, limit: int = 20, asset_key: str | None = None) -> list[GenerationRecord]:
        _check_limit(limit)
        if asset_key:
            index, key, value = _ASSET_INDEX, "asset_key", asset_key
        else:
            index, key, value = _ALL_INDEX, "entity", _ENTITY
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": {"S": value}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        client = self._client()
        items: list[dict[str, Any]] = []
        while len(items) < limit:
            page = client.query(**request)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [GenerationRecord.from_flat(_plain(item)) for item in items[:limit]]

    def of_run(self, asset_key: str, run_id: str) -> list[GenerationRecord]:
        # One Query: the run's items share the sort key's prefix "<run_id>#" under the asset.
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "asset_key = :a AND begins_with(record_id, :r)",
            "ExpressionAttributeValues": {":a": {"S": asset_key}, ":r": {"S": f"{run_id}#"}},
        }
        client = self._client()
        items: list[dict[str, Any]] = []
        while True:
            page = client.query(**request)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(
            (GenerationRecord.from_flat(_plain(item)) for item in items),
            key=lambda r: r.partition_key or "",
        )

    def describe(self) -> str:
        return f"DynamoDB table {self.table_name} ({self.region})"


def _plain(item: dict[str, dict[str, str]]) -> dict[str, str]:
    return {name: next(iter(typed.values())) for name, typed in item.items()}
