"""`firepipe serve`: the inference service on this machine (or in an ECS task)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from firepipe.services.inference.source import ModelSource, ServingModel


def listen_options(port: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--host and --port of a command that serves HTTP, listening on `port` by default."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        command = click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=port,
            show_default=True,
            help="Port to listen on (0: any free port, printed).",
        )(command)
        return click.option(
            "--host", default="127.0.0.1", show_default=True, help="Address to listen on."
        )(command)

    return decorate


@click.command()
@listen_options(8080)
@click.option(
    "--model",
    "model_uri",
    default=None,
    help="models:/NAME/VERSION, models:/NAME@ALIAS or a folder holding a saved detector or an "
    "MLflow model [default: the champion, followed: a new champion is served without a "
    "restart].",
)
@click.option(
    "--wait-for-model",
    is_flag=True,
    help="Following the champion and there is none yet (a new deployment): serve anyway, "
    "answering 503 until one is registered, instead of stopping with an error.",
)
@click.option(
    "--openapi",
    "openapi_out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path, allow_dash=True),
    default=None,
    help="Write the service's OpenAPI document to this file ('-': standard output) and exit.",
)
def serve(
    host: str, port: int, model_uri: str | None, wait_for_model: bool, openapi_out: Path | None
) -> None:
    """Score readings over HTTP on the SageMaker serving contract: GET /ping, POST
    /invocations (JSON, JSON lines or CSV readings), GET /execution-parameters, GET
    /openapi.json. API keys (x-api-key) when FIREPIPE_API_KEYS or FIREPIPE_API_KEYS_SECRET
    names some, rate-limited per key by FIREPIPE_RATE_LIMIT_RPS and _BURST."""
    from firepipe.services.inference import app, keys, server, source

    if openapi_out is not None:
        with click.open_file(str(openapi_out), "w") as out:
            out.write(app.openapi_text())
        return
    model_source = _source(model_uri)
    access = keys.load_access(os.environ, sagemaker=server.in_sagemaker(os.environ))
    holder = source.ModelHolder(model_source, poll_s=server.poll_s(os.environ))
    model: ServingModel | None
    try:
        model = holder.load_now()
    except source.NoModelError as e:
        if not (wait_for_model and model_source.follows):
            raise
        # A new deployment has no champion until training registers one: serve anyway,
        # /ping and /invocations answering 503 with the reason, and load it once it exists.
        click.echo(f"no model yet: {e}; waiting for the champion", err=True)
        model = None
    except Exception as e:
        raise click.ClickException(f"cannot load the model {model_source.description}: {e}") from e
    try:
        sock = server.listen(host, port)
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    bound = sock.getsockname()[1]
    followed = " (the champion: followed)" if model_source.follows else ""
    if model is not None:
        click.echo(f"serving {server.describe(model)}{followed}")
    click.echo(f"listening on http://{host}:{bound}; {access.describe()}")
    server.run(app.create_app(holder, access), sock)


def _source(model_uri: str | None) -> ModelSource:
    from firepipe import names
    from firepipe.cli.context import model_registry
    from firepipe.resources.registry import CHAMPION_ALIAS
    from firepipe.services.inference import source

    uri = model_uri or f"models:/{names.MODEL_NAME}@{CHAMPION_ALIAS}"
    if uri.startswith("models:/"):
        return source.RegistrySource(model_registry(), uri)
    if "://" in uri or ":/" in uri:
        raise click.BadParameter(
            "a models:/ URI or a folder is served, not another URI", param_hint="--model"
        )
    folder = Path(uri).expanduser()
    if not folder.is_dir():
        raise click.BadParameter(f"{uri} is not a folder", param_hint="--model")
    return source.FolderSource(folder)
