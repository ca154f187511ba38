"""The Pipes channels of firepipe's entry points: S3 when the launching resource (AWS Batch,
EMR Serverless) names a bucket in the bootstrap parameters, else the defaults a local
subprocess uses (a temp file for the context, a file for the messages)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster_pipes import (
    PipesContext,
    PipesContextLoader,
    PipesEnvVarParamsLoader,
    PipesMessageWriter,
    PipesParamsLoader,
    open_dagster_pipes,
)

# How often the S3 message writer uploads buffered messages; its default is 10 s. Chosen so a
# log line shows up in Dagster within seconds without an S3 PUT per message.
S3_MESSAGE_INTERVAL_S = 5.0


def pipes_io(
    params_loader: PipesParamsLoader,
) -> tuple[PipesContextLoader | None, PipesMessageWriter[Any] | None]:
    """S3 context loader and message writer when the bootstrap parameters name a bucket,
    otherwise None for each (open_dagster_pipes then uses its defaults)."""
    on_s3 = "bucket" in params_loader.load_context_params()
    messages_on_s3 = "bucket" in params_loader.load_messages_params()
    if not (on_s3 or messages_on_s3):
        return None, None
    import boto3  # only the AWS path needs it
    from dagster_pipes import PipesS3ContextLoader, PipesS3MessageWriter

    s3 = boto3.client("s3")
    return (
        PipesS3ContextLoader(client=s3) if on_s3 else None,
        PipesS3MessageWriter(client=s3, interval=S3_MESSAGE_INTERVAL_S) if messages_on_s3 else None,
    )


def run_under_pipes(
    run: Callable[[PipesContext], object],
    *,
    outside_dagster: str,
    params_loader: PipesParamsLoader | None = None,
) -> None:
    """The `main` of an entry point: `run` in the Pipes session Dagster opened for this process,
    over the channels its bootstrap parameters name; exits with `outside_dagster` (what to run
    instead) when no Dagster process started it. The bootstrap parameters come from the
    environment unless `params_loader` reads them elsewhere (a Glue job's arguments)."""
    params_loader = params_loader or PipesEnvVarParamsLoader()
    if not params_loader.is_dagster_pipes_process():
        raise SystemExit(outside_dagster)
    context_loader, message_writer = pipes_io(params_loader)
    with open_dagster_pipes(
        context_loader=context_loader, message_writer=message_writer, params_loader=params_loader
    ) as pipes:
        run(pipes)
