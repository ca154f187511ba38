"""S3 helpers the resources that keep objects on S3 share."""

from typing import Any

# What S3 (and moto) answer a HEAD of a missing key with. Without s3:ListBucket on the bucket
# S3 answers 403 instead, which is raised: the caller's role lacks a permission.
_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


def object_exists(client: Any, bucket: str, key: str) -> bool:
    """Whether s3://bucket/key exists (a boto3 S3 client's HEAD)."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in _MISSING_CODES:
            return False
        raise
    return True
