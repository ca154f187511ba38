"""The feature store port: gold's latest features of each device, where serving reads them.

- `LocalFeatureStore`: the online store as a SQLite file under FIREPIPE_HOME, one record per
  device; an upsert never replaces a record with one of an older event time. (Locally gold's
  Iceberg table is the offline store.)
- `SageMakerFeatureStore`: a SageMaker Feature Store feature group with an online store and an
  offline store in Apache Iceberg format (in S3, registered in the Glue catalog by Feature
  Store), created when missing with feature definitions from gold's schema. Each device's
  latest row goes in by PutRecord, which writes both stores.

A record is what Feature Store keeps: every value as a string, the missing ones left out
(`feature_record`); `get_record` answers the same dict from both. The record identifier is
device_id and the event time ts. The simulation's labels (scenario, is_fire) are not
features and stay out.
"""

import re
import sqlite3
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.history import timestamp_text
from firepipe.lib import sqlite_state

RECORD_IDENTIFIER = "device_id"
EVENT_TIME = "ts"
LABEL_COLUMNS = ("scenario", "is_fire")
DEFAULT_FEATURE_GROUP = "firepipe-sensor-features"
# The event time as Feature Store reads a String one: yyyy-MM-dd'T'HH:mm:ss.SSSZ.
EVENT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3fZ"
# Feature Store's rules for a feature name, and the names it keeps for itself.
_FEATURE_NAME = re.compile(r"[a-zA-Z0-9]([-_]*[a-zA-Z0-9]){0,63}")
_RESERVED = frozenset({"is_deleted", "write_time", "api_invocation_time"})


class FeatureStoreError(RuntimeError):
    """The feature group cannot take gold's features."""


@dataclass(frozen=True)
class IngestReport:
    devices: int  # records sent: one per device, its latest row
    # records the online store took (not one older than the record it holds); PutRecord does
    # not say, so in AWS it is every record sent
    written: int
    location: str


def feature_definitions(schema: pl.Schema) -> dict[str, str]:
    """Feature name -> Feature Store type (String, Integral, Fractional) of gold's columns, the
    labels left out; a name Feature Store refuses is an error."""
    definitions = {}
    for name, dtype in schema.items():
        if name in LABEL_COLUMNS:
            continue
        if not _FEATURE_NAME.fullmatch(name) or name in _RESERVED:
            raise FeatureStoreError(f"{name!r} cannot name a feature in Feature Store")
        if dtype == pl.String or isinstance(dtype, pl.Datetime):
            definitions[name] = "String"
        elif dtype == pl.Boolean or dtype.is_integer():
            definitions[name] = "Integral"
        elif dtype.is_float():
            definitions[name] = "Fractional"
        else:
            raise FeatureStoreError(f"column {name} of type {dtype} has no Feature Store type")
    for key in (RECORD_IDENTIFIER, EVENT_TIME):
        if key not in definitions:
            raise FeatureStoreError(f"the features lack the column {key!r}")
    return definitions


def latest_per_device(features: pl.LazyFrame) -> pl.DataFrame:
    """Each device's row of the latest event time, labels dropped, sorted by device."""
    return (
        features.drop(LABEL_COLUMNS, strict=False)
        .group_by(RECORD_IDENTIFIER)
        .agg(pl.all().sort_by(EVENT_TIME).last())
        .sort(RECORD_IDENTIFIER)
        .collect()
    )


def feature_records(rows: pl.DataFrame) -> list[dict[str, str]]:
    """Each row as a Feature Store record: values as strings (a float32 in its shortest form
    that reads back the same, a boolean as 0/1, a time in EVENT_TIME_FORMAT), nulls and NaNs
    left out."""
    as_text = []
    for name, dtype in rows.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            column = column.dt.convert_time_zone("UTC").dt.to_string(EVENT_TIME_FORMAT)
        elif dtype == pl.Boolean:
            column = column.cast(pl.Int8)
        elif dtype.is_float():
            column = column.fill_nan(None)
        as_text.append(column.cast(pl.String).alias(name))
    return [
        {name: value for name, value in row.items() if value is not None}
        for row in rows.select(as_text).iter_rows(named=True)
    ]


class FeatureStore(dg.ConfigurableResource, ABC):
    @abstractmethod
    def ingest(self, features: pl.LazyFrame) -> IngestReport:
        """Write each device's latest row of gold `features`."""

    @abstractmethod
    def get_record(self, device_id: str) -> dict[str, str] | None:
        """The device's record in the online store; None when it has none."""

    @abstractmethod
    def describe(self) -> str: ...


class LocalFeatureStore(FeatureStore):
    """The online store as a SQLite file: one row per device."""

    path: str = Field(description="the SQLite online store; created on first ingest")

    def _connect(self) -> sqlite3.Connection:
        return sqlite_state.connect(
            self.path,
            "CREATE TABLE IF NOT EXISTS online_features (device_id TEXT PRIMARY KEY, "
            "event_time_us INTEGER NOT NULL, record TEXT NOT NULL, written_at TEXT NOT NULL)",
        )

    def ingest(self, features: pl.LazyFrame) -> IngestReport:
        import json

        rows = latest_per_device(features)
        feature_definitions(rows.schema)  # the same refusals as the feature group's
        times = rows[EVENT_TIME].dt.epoch("us").to_list()
        written_at = timestamp_text(datetime.now(UTC))
        values = [
            (record[RECORD_IDENTIFIER], us, json.dumps(record, sort_keys=True), written_at)
            for record, us in zip(feature_records(rows), times, strict=True)
        ]
        # One transaction; a record of an older event time than the stored one changes nothing
        # (an equal one replaces it, as PutRecord does).
        with closing(self._connect()) as connection, connection:
            before = connection.total_changes
            connection.executemany(
                "INSERT INTO online_features (device_id, event_time_us, record, written_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                "event_time_us = excluded.event_time_us, record = excluded.record, "
                "written_at = excluded.written_at "
                "WHERE excluded.event_time_us >= online_features.event_time_us",
                values,
            )
            written = connection.total_changes - before
        return IngestReport(len(values), written, self.path)

    def get_record(self, device_id: str) -> dict[str, str] | None:
        import json

        if not Path(self.path).exists():
            return None
        with closing(self._connect()) as connection:
            row = connection.execute(
                "SELECT record FROM online_features WHERE device_id = ?", [device_id]
            ).fetchone()
        return dict(json.loads(row[0])) if row else None

    def describe(self) -> str:
        return f"online store at {self.path}"


def _missing(error: Exception) -> bool:
    details = getattr(error, "response", {}).get("Error", {})
    return details.get("Code") in ("ResourceNotFound", "ResourceNotFoundException")


class SageMakerFeatureStore(FeatureStore):
    """A SageMaker Feature Store feature group, online and offline (Iceberg)."""

    region: str
    feature_group_name: str = DEFAULT_FEATURE_GROUP
    role_arn: str = Field(description="the role Feature Store writes the offline store with")
    offline_store_uri: str = Field(description="s3:// prefix of the offline store")
    max_workers: int = Field(default=8, ge=1, description="PutRecord requests at once")
    poll_interval_s: float = 10.0
    wait_timeout_s: float = 900.0

    def _session(self) -> Any:
        import boto3

        return boto3.Session(region_name=self.region)

    def _group(self, session: Any) -> Any:
        """The feature group, None when it does not exist."""
        from botocore.exceptions import ClientError
        from sagemaker.core.resources import FeatureGroup

        try:
            return FeatureGroup.get(
                feature_group_name=self.feature_group_name, session=session, region=self.region
            )
        except ClientError as error:
            if _missing(error):
                return None
            raise

    def _create(self, session: Any, definitions: dict[str, str]) -> Any:
        from sagemaker.core.resources import FeatureGroup
        from sagemaker.core.shapes import (
            FeatureDefinition,
            OfflineStoreConfig,
            OnlineStoreConfig,
            S3StorageConfig,
        )

        return FeatureGroup.create(
            feature_group_name=self.feature_group_name,
            record_identifier_feature_name=RECORD_IDENTIFIER,
            event_time_feature_name=EVENT_TIME,
            feature_definitions=[
                FeatureDefinition(feature_name=name, feature_type=kind)
                for name, kind in definitions.items()
            ],
            online_store_config=OnlineStoreConfig(enable_online_store=True),
            offline_store_config=OfflineStoreConfig(
                s3_storage_config=S3StorageConfig(s3_uri=self.offline_store_uri),
                table_format="Iceberg",
            ),
            role_arn=self.role_arn,
            description="firepipe gold features (gold.sensor_features), latest per device",
            session=session,
            region=self.region,
        )

    def _ready(self, group: Any, definitions: dict[str, str]) -> None:
        """Wait out the group's creation; refuse a group that failed or whose features differ
        from gold's (a new feature spec needs a new feature group)."""
        deadline = time.monotonic() + self.wait_timeout_s
        while str(group.feature_group_status) == "Creating":
            if time.monotonic() > deadline:
                raise FeatureStoreError(f"{self.feature_group_name} still Creating")
            time.sleep(self.poll_interval_s)
            group.refresh()
        if str(group.feature_group_status) != "Created":
            raise FeatureStoreError(
                f"feature group {self.feature_group_name} is {group.feature_group_status}: "
                f"{group.failure_reason or 'no reason given'}"
            )
        have = {d.feature_name: d.feature_type for d in group.feature_definitions}
        differ = sorted(n for n, kind in definitions.items() if have.get(n) != kind)
        if differ:
            raise FeatureStoreError(
                f"feature group {self.feature_group_name} lacks or types otherwise "
                f"{len(differ)} of gold's features ({', '.join(differ[:5])}): a new feature "
                "spec needs a new feature group (feature_group_name)"
            )

    def ingest(self, features: pl.LazyFrame) -> IngestReport:
        from sagemaker.core.shapes import FeatureValue

        rows = latest_per_device(features)
        definitions = feature_definitions(rows.schema)
        session = self._session()
        group = self._group(session) or self._create(session, definitions)
        self._ready(group, definitions)
        records = feature_records(rows)

        def put(record: dict[str, str]) -> None:
            values = [FeatureValue(feature_name=k, value_as_string=v) for k, v in record.items()]
            group.put_record(record=values)

        # Sequential PutRecords are a round trip each; boto3 clients are thread-safe.
        with ThreadPoolExecutor(self.max_workers) as pool:
            list(pool.map(put, records))
        return IngestReport(len(records), len(records), self.describe())

    def get_record(self, device_id: str) -> dict[str, str] | None:
        group = self._group(self._session())
        if group is None:
            return None
        response = group.get_record(record_identifier_value_as_string=device_id)
        values = getattr(response, "record", None)
        if not isinstance(values, list):
            return None  # no record for the device
        return {v.feature_name: v.value_as_string for v in values}

    def describe(self) -> str:
        return f"SageMaker feature group {self.feature_group_name} ({self.region})"
