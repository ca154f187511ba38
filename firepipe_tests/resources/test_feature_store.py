"""The feature store port: the SQLite online store, and the SageMaker feature group through the
SDK with botocore's Stubber (moto's Feature Store fails on a group that does not exist and
keeps no online store or records)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from botocore.stub import ANY, Stubber

from firepipe.core.readings import TIMESTAMP
from firepipe.resources.feature_store import (
    FeatureStoreError,
    LocalFeatureStore,
    SageMakerFeatureStore,
    feature_definitions,
    feature_records,
    latest_per_device,
)

T0 = datetime(2026, 12, 6, tzinfo=UTC)
GROUP = "firepipe-sensor-features"


def gold(rows: list[tuple[str, int, float | None]]) -> pl.DataFrame:
    """Gold-shaped rows: (device, second, feature value), with the labels gold carries."""
    return pl.DataFrame(
        {
            "site_id": ["s1"] * len(rows),
            "device_id": [d for d, _, _ in rows],
            "ts": [T0 + timedelta(seconds=s) for _, s, _ in rows],
            "scenario": ["flaming"] * len(rows),
            "is_fire": [True] * len(rows),
            "temperature_c__mean_30s": [v for _, _, v in rows],
            "co_ppm__per__co2_ppm": [0.125] * len(rows),
        },
        schema_overrides={
            "ts": TIMESTAMP,
            "temperature_c__mean_30s": pl.Float32,
            "co_ppm__per__co2_ppm": pl.Float32,
        },
    )


def test_the_latest_row_per_device_becomes_a_record_of_strings():
    rows = latest_per_device(gold([("a", 5, 21.3), ("b", 1, None), ("a", 2, 99.0)]).lazy())
    assert rows["device_id"].to_list() == ["a", "b"]
    assert feature_records(rows) == [
        {
            "device_id": "a",
            "site_id": "s1",
            "ts": "2026-12-06T00:00:05.000Z",
            "temperature_c__mean_30s": "21.3",  # float32's shortest form, not 21.299999237...
            "co_ppm__per__co2_ppm": "0.125",
        },
        # A missing feature is left out; the simulation's labels are not features.
        {
            "device_id": "b",
            "site_id": "s1",
            "ts": "2026-12-06T00:00:01.000Z",
            "co_ppm__per__co2_ppm": "0.125",
        },
    ]
    assert feature_definitions(rows.schema) == {
        "device_id": "String",
        "site_id": "String",
        "ts": "String",
        "temperature_c__mean_30s": "Fractional",
        "co_ppm__per__co2_ppm": "Fractional",
    }


def test_a_name_feature_store_refuses_is_an_error():
    with pytest.raises(FeatureStoreError, match="'write_time' cannot name a feature"):
        feature_definitions(
            pl.Schema({"device_id": pl.String, "ts": TIMESTAMP, "write_time": pl.Int64})
        )


# --- local ------------------------------------------------------------------------------------


def test_local_store_keeps_the_latest_record_per_device(tmp_path):
    path = str(tmp_path / "online.db")
    store = LocalFeatureStore(path=path)
    assert store.get_record("a") is None
    report = store.ingest(gold([("a", 1, 20.0), ("a", 3, 23.5), ("b", 2, 19.0)]).lazy())
    assert (report.devices, report.written) == (2, 2)
    assert store.get_record("a")["temperature_c__mean_30s"] == "23.5"
    assert store.get_record("zzz") is None
    # An older row never replaces a newer one; a newer one does; another process sees it.
    older = store.ingest(gold([("a", 2, 1.0), ("b", 4, 30.0)]).lazy())
    assert (older.devices, older.written) == (2, 1)
    again = LocalFeatureStore(path=path)
    assert again.get_record("a")["ts"] == "2026-12-06T00:00:03.000Z"
    assert again.get_record("a")["temperature_c__mean_30s"] == "23.5"
    assert again.get_record("b")["temperature_c__mean_30s"] == "30.0"


def test_the_same_event_time_again_replaces_the_record(tmp_path):
    store = LocalFeatureStore(path=str(tmp_path / "online.db"))
    store.ingest(gold([("a", 3, 20.0)]).lazy())
    assert store.ingest(gold([("a", 3, 25.0)]).lazy()).written == 1
    assert store.get_record("a")["temperature_c__mean_30s"] == "25.0"


# --- SageMaker with Stubber -------------------------------------------------------------------

REGION = "eu-west-1"
SETTINGS = {
    "region": REGION,
    "role_arn": "arn:aws:iam::123456789012:role/firepipe-feature-store",
    "offline_store_uri": "s3://firepipe-features/offline/",
    "max_workers": 1,  # the stubbed responses in order
    "poll_interval_s": 0.0,
}
DEFINITIONS = [
    {"FeatureName": "device_id", "FeatureType": "String"},
    {"FeatureName": "site_id", "FeatureType": "String"},
    {"FeatureName": "ts", "FeatureType": "String"},
    {"FeatureName": "temperature_c__mean_30s", "FeatureType": "Fractional"},
    {"FeatureName": "co_ppm__per__co2_ppm", "FeatureType": "Fractional"},
]


def described(status: str, definitions: list[dict[str, str]] = DEFINITIONS, **more: Any) -> dict:
    return {
        "FeatureGroupArn": f"arn:aws:sagemaker:{REGION}:123456789012:feature-group/{GROUP}",
        "FeatureGroupName": GROUP,
        "RecordIdentifierFeatureName": "device_id",
        "EventTimeFeatureName": "ts",
        "FeatureDefinitions": definitions,
        "CreationTime": T0,
        "NextToken": "",
        "FeatureGroupStatus": status,
        **more,
    }


@pytest.fixture
def stubs(aws_credentials, monkeypatch):
    """Stubbers on the SageMaker and Feature Store runtime clients the SDK makes from the
    resource's session (it keeps one client of each per session)."""
    import boto3
    from sagemaker.core.utils.utils import SageMakerClient

    session = boto3.Session(region_name=REGION)
    monkeypatch.setattr(SageMakerFeatureStore, "_session", lambda self: session)
    clients = SageMakerClient(session=session, region_name=REGION)
    control = Stubber(clients.get_client("sagemaker"))
    runtime = Stubber(clients.get_client("sagemaker-featurestore-runtime"))
    with control, runtime:
        yield control, runtime
    control.assert_no_pending_responses()
    runtime.assert_no_pending_responses()


def put(record: dict[str, str]) -> dict[str, Any]:
    values = [{"FeatureName": k, "ValueAsString": v} for k, v in record.items()]
    return {"FeatureGroupName": GROUP, "Record": values}


@pytest.mark.aws
def test_a_missing_feature_group_is_created_online_and_offline_in_iceberg(stubs):
    control, runtime = stubs
    control.add_client_error("describe_feature_group", "ResourceNotFound", "no such group")
    control.add_response(
        "create_feature_group",
        {"FeatureGroupArn": described("Creating")["FeatureGroupArn"]},
        {
            "FeatureGroupName": GROUP,
            "RecordIdentifierFeatureName": "device_id",
            "EventTimeFeatureName": "ts",
            "FeatureDefinitions": DEFINITIONS,
            "OnlineStoreConfig": {"EnableOnlineStore": True},
            "OfflineStoreConfig": {
                "S3StorageConfig": {"S3Uri": SETTINGS["offline_store_uri"]},
                "TableFormat": "Iceberg",
            },
            "RoleArn": SETTINGS["role_arn"],
            "Description": ANY,
        },
    )
    control.add_response("describe_feature_group", described("Creating"))
    control.add_response("describe_feature_group", described("Created"))
    frame = gold([("a", 1, 20.0), ("a", 3, 23.5), ("b", 2, None)])
    # The records the local store keeps, the same strings, one PutRecord per device.
    for record in feature_records(latest_per_device(frame.lazy())):
        runtime.add_response("put_record", {}, put(record))
    report = SageMakerFeatureStore(**SETTINGS).ingest(frame.lazy())
    assert (report.devices, report.written) == (2, 2)


@pytest.mark.aws
def test_a_group_with_other_features_is_refused_before_any_record(stubs):
    control, _ = stubs
    control.add_response("describe_feature_group", described("Created", DEFINITIONS[:3]))
    with pytest.raises(FeatureStoreError, match="lacks or types otherwise 2"):
        SageMakerFeatureStore(**SETTINGS).ingest(gold([("a", 1, 20.0)]).lazy())


@pytest.mark.aws
def test_a_group_that_failed_to_create_is_a_clear_error(stubs):
    control, _ = stubs
    control.add_response(
        "describe_feature_group", described("CreateFailed", FailureReason="role cannot write")
    )
    with pytest.raises(FeatureStoreError, match="is CreateFailed: role cannot write"):
        SageMakerFeatureStore(**SETTINGS).ingest(gold([("a", 1, 20.0)]).lazy())


@pytest.mark.aws
def test_get_record_reads_the_online_store(stubs):
    control, runtime = stubs
    control.add_response("describe_feature_group", described("Created"))
    record = {"device_id": "a", "ts": "2026-12-06T00:00:03.000Z", "temperature_c__mean_30s": "23.5"}
    runtime.add_response(
        "get_record",
        {"Record": [{"FeatureName": k, "ValueAsString": v} for k, v in record.items()]},
        {"FeatureGroupName": GROUP, "RecordIdentifierValueAsString": "a"},
    )
    control.add_response("describe_feature_group", described("Created"))
    runtime.add_response(
        "get_record", {}, {"FeatureGroupName": GROUP, "RecordIdentifierValueAsString": "b"}
    )
    store = SageMakerFeatureStore(**SETTINGS)
    assert store.get_record("a") == record
    assert store.get_record("b") is None
