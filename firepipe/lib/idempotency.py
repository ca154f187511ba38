"""Powertools idempotency for the agents' handlers, durable in both worlds: DynamoDB in AWS (the
Powertools layer itself) and, locally, `SqlitePersistenceLayer`, its twin on one SQLite file
under FIREPIPE_HOME that the worker processes share.

The twin keeps DynamoDB's semantics, so one contract test suite runs against both: the same
columns as the DynamoDB item's attributes, the same condition on taking a key (a record can be
taken over when it is absent, expired, or INPROGRESS past its in-progress expiry), the
refused write carrying the record it found, UpdateItem's upsert and DeleteItem's no-op on a
missing key.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import (
    STATUS_CONSTANTS,
    DataRecord,
)

from firepipe.lib import sqlite_state

_SCHEMA = (
    # WAL: a handler reading its record does not wait for another process's write; NORMAL
    # sync loses nothing in WAL mode when a process is killed, only on power loss.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # Named as DynamoDBPersistenceLayer's default attributes: expiration in epoch seconds,
    # in_progress_expiration in epoch milliseconds (Powertools' units).
    "CREATE TABLE IF NOT EXISTS idempotency (id TEXT PRIMARY KEY, expiration INTEGER NOT NULL, "
    "in_progress_expiration INTEGER, status TEXT NOT NULL, data TEXT, validation TEXT)",
)
_COLUMNS = "id, expiration, in_progress_expiration, status, data, validation"


class SqlitePersistenceLayer(BasePersistenceLayer):
    """Idempotency records in the SQLite file at `path` (created on first use)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools leaves it unannotated

    def _connection(self) -> sqlite3.Connection:
        # Kept per process and thread (`sqlite_state.kept`): one opened per call measured
        # ~3 ms per handler call (the last close checkpoints the WAL), a kept one ~0.1 ms.
        connection = sqlite_state.kept(self.path, *_SCHEMA)
        connection.row_factory = sqlite3.Row
        return connection

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One BEGIN IMMEDIATE transaction: the write lock is taken before the read, so of two
        processes taking one key, the second sees the first's record."""
        with sqlite_state.immediate(self._connection()) as connection:
            yield connection

    def _get_record(self, idempotency_key: str) -> DataRecord:
        row = _select(self._connection(), idempotency_key)
        if row is None:
            raise IdempotencyItemNotFoundError
        return _data_record(row)

    def _put_record(self, data_record: DataRecord) -> None:
        now = dt.datetime.now()
        validation = data_record.payload_hash if self.payload_validation_enabled else ""
        with self._write() as connection:
            row = _select(connection, data_record.idempotency_key)
            if row is not None and not _can_take(
                row, int(now.timestamp()), int(now.timestamp() * 1000)
            ):
                # As DynamoDB answers with ReturnValuesOnConditionCheckFailure=ALL_OLD: the
                # caller gets the record it lost to, checked against its payload, no second read.
                old = _data_record(row)
                self._validate_payload(data_payload=data_record, stored_data_record=old)
                self._save_to_cache(data_record=old)
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            # PutItem replaces the whole item: an earlier result does not survive.
            connection.execute(
                f"INSERT OR REPLACE INTO idempotency ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    data_record.idempotency_key,
                    data_record.expiry_timestamp,
                    data_record.in_progress_expiry_timestamp,
                    data_record.status,
                    None,
                    validation or None,
                ],
            )

    def _update_record(self, data_record: DataRecord) -> None:
        # UpdateItem creates a missing item, so a record deleted meanwhile comes back COMPLETED.
        validation = data_record.payload_hash if self.payload_validation_enabled else None
        with self._write() as connection:
            connection.execute(
                "INSERT INTO idempotency (id, expiration, status, data, validation) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "expiration = excluded.expiration, status = excluded.status, "
                "data = excluded.data, validation = coalesce(excluded.validation, validation)",
                [
                    data_record.idempotency_key,
                    data_record.expiry_timestamp,
                    data_record.status,
                    data_record.response_data,
                    validation,
                ],
            )

    def _delete_record(self, data_record: DataRecord) -> None:
        with self._write() as connection:
            connection.execute(
                "DELETE FROM idempotency WHERE id = ?", [data_record.idempotency_key]
            )


def _can_take(row: sqlite3.Row, now_s: int, now_ms: int) -> bool:
    """DynamoDBPersistenceLayer's ConditionExpression on an existing record, clause by clause:
    `#expiry < :now OR (#status = :inprogress AND attribute_exists(#in_progress_expiry) AND
    #in_progress_expiry < :now_in_millis)` (its `attribute_not_exists(#id)` is the absent row)."""
    return bool(
        row["expiration"] < now_s
        or (
            row["status"] == STATUS_CONSTANTS["INPROGRESS"]
            and row["in_progress_expiration"] is not None
            and row["in_progress_expiration"] < now_ms
        )
    )


def _select(connection: sqlite3.Connection, idempotency_key: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = connection.execute(
        f"SELECT {_COLUMNS} FROM idempotency WHERE id = ?", [idempotency_key]
    ).fetchone()
    return row


def _data_record(row: sqlite3.Row) -> DataRecord:
    return DataRecord(
        idempotency_key=row["id"],
        status=row["status"],
        expiry_timestamp=row["expiration"],
        in_progress_expiry_timestamp=row["in_progress_expiration"],
        response_data=row["data"] or "",
        payload_hash=row["validation"] or "",
    )


def persistence_layer(
    *,
    sqlite_path: str | None = None,
    dynamodb_table: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
) -> BasePersistenceLayer:
    """The idempotency records' store: the SQLite file `sqlite_path` locally, or the DynamoDB
    table `dynamodb_table` (partition key `id`, TTL on `expiration`) in `region` (default: the
    AWS chain's), at `endpoint_url` when given (moto, DynamoDB Local)."""
    if (sqlite_path is None) == (dynamodb_table is None):
        raise ValueError(
            "persistence_layer needs exactly one of sqlite_path (local) or dynamodb_table "
            f"(AWS), got sqlite_path={sqlite_path!r}, dynamodb_table={dynamodb_table!r}"
        )
    if sqlite_path is not None:
        if region is not None or endpoint_url is not None:
            raise ValueError(
                "region and endpoint_url are DynamoDB settings; a sqlite_path layer takes none"
            )
        return SqlitePersistenceLayer(sqlite_path)
    import boto3  # type: ignore[import-untyped]
    from aws_lambda_powertools.utilities.idempotency.persistence.dynamodb import (
        DynamoDBPersistenceLayer,
    )

    client: Any = boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)
    layer: BasePersistenceLayer = DynamoDBPersistenceLayer(
        table_name=str(dynamodb_table), boto3_client=client
    )
    return layer
