"""DynamoDB plumbing shared by the adapters that keep small state there (generation history,
extraction watermarks). boto3 is imported on first use, so the local path never needs it."""

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=8)
def client(region: str, endpoint_url: str | None) -> Any:
    """A DynamoDB client per region and endpoint, shared (boto3 clients are thread-safe);
    credentials from the default AWS chain."""
    import boto3

    return boto3.client("dynamodb", region_name=region, endpoint_url=endpoint_url)


def ensure_table(dynamodb: Any, definition: dict[str, Any]) -> None:
    """Create the table of `definition` (CreateTable arguments) if it is missing: for tests and
    dev accounts; the CDK app owns the production tables."""
    name = definition["TableName"]
    try:
        dynamodb.describe_table(TableName=name)
    except dynamodb.exceptions.ResourceNotFoundException:
        dynamodb.create_table(**definition)
        dynamodb.get_waiter("table_exists").wait(TableName=name)
