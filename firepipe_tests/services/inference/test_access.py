"""API keys and per-key rate limits: the rules directly, then against the running service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import orjson
import pytest
from moto import mock_aws

from firepipe.services.inference.app import create_app
from firepipe.services.inference.keys import (
    ApiKeys,
    KeyConfigError,
    RateLimiter,
    load_access,
    load_keys,
    secret_keys,
)
from firepipe.services.inference.server import in_sagemaker
from firepipe.services.inference.source import FolderSource, ModelHolder
from firepipe_tests.services.inference.serving_sample import readings, running


def test_a_key_matches_only_itself() -> None:
    keys = ApiKeys(["alpha", "beta", "alpha"])
    assert len(keys) == 2
    assert keys.match(b"alpha") == 0
    assert keys.match(b"beta") == 1
    for wrong in (b"", b"alph", b"alphaa", b"ALPHA", b"beta "):
        assert keys.match(wrong) is None


@pytest.mark.parametrize(
    ("secret", "keys"),
    [
        ('["k1", " k2 "]', ["k1", "k2"]),
        ('{"mobile-app": "k1", "partner": "k2"}', ["k1", "k2"]),
        ("k1, k2,,", ["k1", "k2"]),
    ],
)
def test_a_secret_holds_keys_in_three_forms(secret: str, keys: list[str]) -> None:
    assert secret_keys(secret) == keys


def test_keys_from_the_environment_and_off_in_sagemaker() -> None:
    environ = {"FIREPIPE_API_KEYS": " a , b"}
    keys = load_keys(environ, sagemaker=False)
    assert keys is not None
    assert keys.match(b"b") == 1
    assert load_keys(environ, sagemaker=True) is None
    assert load_keys({}, sagemaker=False) is None
    with pytest.raises(KeyConfigError, match="names no key"):
        load_keys({"FIREPIPE_API_KEYS": ",,"}, sagemaker=False)
    # only what SageMaker itself sets counts, not the SDK's variables on a laptop
    assert in_sagemaker({"SAGEMAKER_BIND_TO_PORT": "8080"})
    assert not in_sagemaker({"SAGEMAKER_VALIDATE_ROLE": "false"})


@pytest.fixture
def secrets(aws_credentials: None) -> Iterator[object]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def test_keys_from_a_secrets_manager_secret(secrets) -> None:  # type: ignore[no-untyped-def]
    arn = secrets.create_secret(
        Name="firepipe/api-keys", SecretString=json.dumps({"app": "s1", "ops": "s2"})
    )["ARN"]
    environ = {"FIREPIPE_API_KEYS_SECRET": arn, "FIREPIPE_API_KEYS": "local"}
    keys = load_keys(environ, sagemaker=False)
    assert keys is not None
    assert [keys.match(k) for k in (b"local", b"s1", b"s2", b"s3")] == [0, 1, 2, None]
    secrets.create_secret(Name="empty", SecretString="[]")
    with pytest.raises(KeyConfigError, match="holds no key"):
        load_keys({"FIREPIPE_API_KEYS_SECRET": "empty"}, sagemaker=False)


def test_a_token_bucket_per_caller() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, burst=3, clock=lambda: now[0])
    assert [limiter.wait_s(0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_s(0) == pytest.approx(0.5)
    assert limiter.wait_s(1) == 0.0  # another key has its own bucket
    now[0] = 0.5
    assert limiter.wait_s(0) == 0.0
    assert limiter.wait_s(0) == pytest.approx(0.5)
    now[0] = 100.0  # saving up stops at the burst
    assert [limiter.wait_s(0) for _ in range(4)][-1] > 0


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"FIREPIPE_RATE_LIMIT_RPS": "fast"}, "must be a number"),
        ({"FIREPIPE_RATE_LIMIT_RPS": "0"}, "rate > 0"),
        ({"FIREPIPE_RATE_LIMIT_RPS": "5", "FIREPIPE_RATE_LIMIT_BURST": "0"}, "burst >= 1"),
        ({"FIREPIPE_RATE_LIMIT_RPS": "inf"}, "must be a number"),
    ],
)
def test_a_bad_rate_limit_refuses_to_start(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(KeyConfigError, match=problem):
        load_access({"FIREPIPE_API_KEYS": "k", **environ}, sagemaker=False)


@pytest.fixture(scope="module")
def keyed_server(detector_dir: Path) -> Iterator[str]:
    environ = {
        "FIREPIPE_API_KEYS": "key-one,key-two",
        "FIREPIPE_RATE_LIMIT_RPS": "0.5",
        "FIREPIPE_RATE_LIMIT_BURST": "3",
    }
    holder = ModelHolder(FolderSource(detector_dir))
    holder.load_now()
    with running(create_app(holder, load_access(environ, sagemaker=False))) as url:
        yield url


@pytest.mark.slow
def test_invocations_need_a_valid_key_the_rest_does_not(keyed_server, http) -> None:  # type: ignore[no-untyped-def]
    body = orjson.dumps({"readings": readings("keys", 1)})
    url = f"{keyed_server}/invocations"
    json_type = {"content-type": "application/json"}
    for headers in ({}, {"x-api-key": "key-three"}, {"x-api-key": ""}):
        refused = http.post(url, data=body, headers=json_type | headers)
        assert refused.status_code == 401
        assert refused.json() == {"detail": "a valid x-api-key header is required"}
    # a wrong key is refused before the content type is looked at
    assert http.post(url, data=b"x", headers={"x-api-key": "no"}).status_code == 401
    accepted = http.post(url, data=body, headers=json_type | {"x-api-key": "key-two"})
    assert accepted.status_code == 200, accepted.text
    for path in ("/ping", "/execution-parameters", "/openapi.json"):
        assert http.get(f"{keyed_server}{path}").status_code == 200, path


@pytest.mark.slow
def test_a_key_over_its_rate_gets_429_with_retry_after(keyed_server, http) -> None:  # type: ignore[no-untyped-def]
    body = orjson.dumps({"readings": readings("rate", 1)})
    url = f"{keyed_server}/invocations"
    headers = {"content-type": "application/json", "x-api-key": "key-one"}
    codes = [http.post(url, data=body, headers=headers).status_code for _ in range(3)]
    assert codes == [200, 200, 200]  # the burst
    limited = http.post(url, data=body, headers=headers)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"  # a token every 2 s at 0.5/s
    assert "rate limit" in limited.json()["detail"]
    # the other key has its own bucket (the 401 test above took none of it)
    other = http.post(url, data=body, headers=headers | {"x-api-key": "key-two"})
    assert other.status_code == 200
