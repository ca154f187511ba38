"""`firepipe actions`: the action API (generate, validate, measure, follow generations, search
the knowledge base) on this machine, and its OpenAPI document."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from firepipe.cli.serve import listen_options

OPENAPI_PATH = Path("docs") / "openapi" / "actions.json"


@click.group()
def actions() -> None:
    """The action API that the Bedrock agent's action group (and anyone with a key) calls."""


@actions.command()
@listen_options(8090)
def serve(host: str, port: int) -> None:
    """Serve the action API: POST /generate-synthetic-data, /validate-schema,
    /calculate-quality-metrics, /search-knowledge-base, GET /generations[/{id}] and GET
    /openapi.json. API keys (x-api-key) as the inference service's: FIREPIPE_API_KEYS or
    FIREPIPE_API_KEYS_SECRET, rate-limited per key by FIREPIPE_RATE_LIMIT_RPS and _BURST.
    Fire-scenario runs go to the Dagster instance's queue when its daemon runs, else they
    run in this process."""
    from firepipe.services.actions import app
    from firepipe.services.actions.operations import Actions
    from firepipe.services.actions.runs import DagsterRuns
    from firepipe.services.inference import keys, server

    access = keys.load_access(os.environ, sagemaker=False)
    operations = Actions.from_environment()
    if operations.knowledge_base is None:  # searchKnowledgeBase then answers 503 with the reason
        click.echo("no knowledge base: its settings are missing", err=True)
    try:
        sock = server.listen(host, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    bound = sock.getsockname()[1]
    click.echo(f"listening on http://{host}:{bound}; {access.describe()}")
    runs = operations.runs
    local_runs = isinstance(runs, DagsterRuns) and runs.in_process
    if local_runs:
        runs.resume()  # the runs a stopped service left queued
    api = app.create_app(access, actions=operations)
    # The inference service's uvicorn settings; its annotation names that app, any ASGI app runs.
    try:
        server.run(api, sock)  # type: ignore[arg-type]
    finally:
        if local_runs:
            click.echo("stopping: the run under way finishes; queued runs wait for the next start")
            runs.close()


@actions.command()
@click.option(
    "--check",
    is_flag=True,
    help=f"Compare the generated document with the committed {OPENAPI_PATH} instead of "
    "printing it; exit 1 when they differ.",
)
@click.option(
    "--path",
    "committed",
    type=click.Path(dir_okay=False, path_type=Path),
    default=OPENAPI_PATH,
    show_default=True,
    help="The committed document (with --check).",
)
def openapi(check: bool, committed: Path) -> None:
    """Print the action API's OpenAPI 3.0.0 document (the one Bedrock's action group takes)."""
    from firepipe.services.actions.app import create_app
    from firepipe.services.actions.openapi import document_text
    from firepipe.services.inference.keys import Access

    text = document_text(create_app(Access(None, None)))
    if not check:
        sys.stdout.write(text)
        return
    if not committed.is_file():
        raise click.ClickException(f"no committed document at {committed}")
    if committed.read_text() != text:
        raise click.ClickException(
            f"{committed} differs from the generated document: regenerate it with "
            f"`firepipe actions openapi > {committed}`"
        )
    click.echo(f"{committed} is the generated document")
