"""ECS-form secret references read on moto's Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from firepipe.lib.secret_refs import SecretReference, SecretReferenceError, fill_from_reference


@pytest.fixture
def client() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


@pytest.fixture
def secret_arn(client: Any) -> str:
    created = client.create_secret(
        Name="firepipe-dev/dagster-db",
        SecretString=json.dumps({"username": "dagster", "password": "s3cret:with:colons"}),
    )
    return str(created["ARN"])


def test_an_ecs_reference_names_the_secret_and_its_json_key(secret_arn: str) -> None:
    reference = SecretReference.parse(f"{secret_arn}:password::")
    assert (reference.arn, reference.key, reference.stage, reference.version) == (
        secret_arn,
        "password",
        None,
        None,
    )
    assert SecretReference.parse(secret_arn) == SecretReference(secret_arn)


def test_the_password_is_filled_from_the_reference_once(client: Any, secret_arn: str) -> None:
    environ = {"DAGSTER_PG_PASSWORD_SECRET_ARN": f"{secret_arn}:password::"}
    assert fill_from_reference(
        "DAGSTER_PG_PASSWORD", "DAGSTER_PG_PASSWORD_SECRET_ARN", environ, client
    )
    assert environ["DAGSTER_PG_PASSWORD"] == "s3cret:with:colons"
    # A value already given (an ECS task's injected secret) is kept; no reference, nothing.
    environ["DAGSTER_PG_PASSWORD"] = "injected"
    assert not fill_from_reference(
        "DAGSTER_PG_PASSWORD", "DAGSTER_PG_PASSWORD_SECRET_ARN", environ, client
    )
    assert environ["DAGSTER_PG_PASSWORD"] == "injected"
    assert not fill_from_reference("X", "NOT_SET", {}, client)


def test_a_whole_secret_string_and_a_version_stage(client: Any, secret_arn: str) -> None:
    client.put_secret_value(SecretId=secret_arn, SecretString="plain", VersionStages=["NEXT"])
    assert SecretReference.parse(f"{secret_arn}::NEXT:").read(client) == "plain"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("password", "is not a Secrets Manager secret ARN"),
        ("arn:aws:s3:::bucket/key:x:y:z", "is not a Secrets Manager secret ARN"),
        (
            "arn:aws:secretsmanager:eu-west-1:1:secret:n:a:b:c:d",
            "not a Secrets Manager secret reference",
        ),
    ],
)
def test_a_malformed_reference_is_refused(text: str, message: str) -> None:
    with pytest.raises(SecretReferenceError, match=message):
        SecretReference.parse(text)


def test_a_missing_key_names_the_secret_and_the_key(client: Any, secret_arn: str) -> None:
    with pytest.raises(SecretReferenceError, match="holds no JSON key 'pass'"):
        SecretReference.parse(f"{secret_arn}:pass::").read(client)


def test_a_binary_secret_is_refused_by_name(client: Any) -> None:
    from firepipe.services.inference.keys import KeyConfigError, read_secret

    client.create_secret(Name="firepipe-dev/binary", SecretBinary=b"\x00\x01")
    with pytest.raises(SecretReferenceError, match="firepipe-dev/binary holds no SecretString"):
        SecretReference("firepipe-dev/binary").read(client)
    # The inference service's keys secret, read by name, says which secret it was.
    with pytest.raises(KeyConfigError, match="API keys secret: firepipe-dev/binary holds no"):
        read_secret("firepipe-dev/binary", client)
