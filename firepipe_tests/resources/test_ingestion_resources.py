"""Which ingestion resources each environment gets, and the Snowflake sign-in choices."""

from pathlib import Path

import pytest

from firepipe.resources import resources_for
from firepipe.resources.landing import LocalLandingZone, S3LandingZone
from firepipe.resources.warehouse import DuckDBWarehouseSource, SnowflakeWarehouseSource
from firepipe.resources.watermarks import DynamoWatermarkStore, SqliteWatermarkStore
from firepipe.settings import Environment, LocalPaths, SettingsError, snowflake_auth

AWS_VARS = {
    "AWS_REGION": "eu-west-1",
    "SNOWFLAKE_ACCOUNT": "acme-eu",
    "SNOWFLAKE_USER": "firepipe",
    "SNOWFLAKE_ROLE": "INGEST",
    "SNOWFLAKE_WAREHOUSE": "XS",
    "SNOWFLAKE_DATABASE": "FIELD",
    "SNOWFLAKE_PASSWORD": "pw",
    "SNOWFLAKE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "phrase",
    "FIREPIPE_FIELD_TABLE": "RAW.FIELD_READINGS",
    "FIREPIPE_WATERMARKS_TABLE": "firepipe-watermarks",
    "FIREPIPE_LANDING_BUCKET": "acme-landing",
    "FIREPIPE_LANDING_PREFIX": "field/landing",
}


def test_local_ingestion_resources_live_under_the_home(tmp_path: Path) -> None:
    paths = LocalPaths(home=tmp_path)
    resources = resources_for(Environment.LOCAL, paths)
    source = resources["warehouse_source"]
    assert isinstance(source, DuckDBWarehouseSource)
    assert (source.path, source.table) == (
        str(tmp_path / "field_warehouse.duckdb"),
        "field_readings",
    )
    store = resources["extraction_watermarks"]
    assert isinstance(store, SqliteWatermarkStore)
    assert store.path == str(tmp_path / "extraction_watermarks.db")
    zone = resources["landing_zone"]
    assert isinstance(zone, LocalLandingZone)
    assert zone.root == str(tmp_path / "landing")


@pytest.mark.parametrize(
    ("auth", "password", "key", "passphrase"),
    [
        (None, "pw", None, None),
        ("key_pair", None, "-----BEGIN PRIVATE KEY-----", None),
        ("encrypted_key_pair", None, "-----BEGIN PRIVATE KEY-----", "phrase"),
    ],
)
def test_aws_ingestion_resources_resolve_their_settings_from_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    auth: str | None,
    password: str | None,
    key: str | None,
    passphrase: str | None,
) -> None:
    for name, value in AWS_VARS.items():
        monkeypatch.setenv(name, value)
    if auth is None:
        monkeypatch.delenv("FIREPIPE_SNOWFLAKE_AUTH", raising=False)
    else:
        monkeypatch.setenv("FIREPIPE_SNOWFLAKE_AUTH", auth)
    resources = resources_for(Environment.AWS, LocalPaths(home=tmp_path))
    # The Snowflake resource has teardown, so it resolves in a context manager.
    with resources["warehouse_source"].process_config_and_initialize_cm() as source:
        pass
    assert isinstance(source, SnowflakeWarehouseSource)
    assert source.table == "RAW.FIELD_READINGS"
    snowflake = source.snowflake
    assert (snowflake.account, snowflake.user, snowflake.role) == ("acme-eu", "firepipe", "INGEST")
    assert (snowflake.password, snowflake.private_key) == (password, key)
    assert snowflake.private_key_password == passphrase
    store = resources["extraction_watermarks"].process_config_and_initialize()
    assert isinstance(store, DynamoWatermarkStore)
    assert (store.table_name, store.region) == ("firepipe-watermarks", "eu-west-1")
    zone = resources["landing_zone"].process_config_and_initialize()
    assert isinstance(zone, S3LandingZone)
    assert zone.describe() == "s3://acme-landing/field/landing"


def test_an_unknown_snowflake_sign_in_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREPIPE_SNOWFLAKE_AUTH", "oauth")
    with pytest.raises(SettingsError, match="not one of: password, key_pair"):
        snowflake_auth()
