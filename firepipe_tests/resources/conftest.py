"""What the Pipes clients' tests share: S3 on the moto server for the Pipes context and
messages, and a clock whose sleep is where a step's interrupt arrives."""

import time
import uuid
from typing import Any

import boto3
import dagster as dg
import pytest

REGION = "eu-west-1"


@pytest.fixture
def s3(moto_endpoint: str, aws_credentials: None) -> Any:
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)


@pytest.fixture
def pipes_bucket(s3: Any) -> str:
    """A fresh bucket per test (parametrised tests share a node name prefix)."""
    bucket = f"pipes-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return bucket


class InterruptingClock:
    """The `time` module as a wait loop sees it, but its sleep is where the step's interrupt
    arrives (Dagster raises it in the step's thread, which waits there between polls)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        raise dg.DagsterExecutionInterruptedError("SIGTERM while waiting")
