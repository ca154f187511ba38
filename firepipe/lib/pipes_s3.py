"""The Pipes channels of a remote job whose context and messages travel through S3: an AWS
Batch job (compute.py) or an EMR Serverless job run (spark.py). The entry point's side is
firepipe/services/pipes_io.py."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg


def s3_pipes_channels(
    s3: Any, *, bucket: str, prefix: str, message_interval_s: float
) -> tuple[dg.PipesContextInjector, dg.PipesMessageReader]:
    """dagster-aws's S3 context injector and message reader, both under `prefix` in `bucket`
    (the stock reader puts its random key prefix at the bucket's root)."""
    from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

    class PrefixedS3MessageReader(PipesS3MessageReader):
        @contextmanager
        def get_params(self) -> Iterator[dict[str, Any]]:
            with super().get_params() as params:
                yield {**params, "key_prefix": f"{prefix}{params['key_prefix']}"}

    return (
        PipesS3ContextInjector(bucket=bucket, client=s3, key_prefix=prefix),
        PrefixedS3MessageReader(bucket=bucket, client=s3, interval=message_interval_s),
    )
