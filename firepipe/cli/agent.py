"""`firepipe agent ask "REQUEST"`: ask the synthetic-data agent in words. Locally a
deterministic planner (not a language model) reads the request and runs the action API's
operations in this process; with FIREPIPE_ENV=aws the Bedrock agent answers (FIREPIPE_AGENT_ID,
FIREPIPE_AGENT_ALIAS_ID), streaming its answer and trace."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from firepipe import settings
from firepipe.cli.context import initialised

if TYPE_CHECKING:
    from firepipe.resources.agent_runtime import AgentRuntime


def _agent() -> AgentRuntime:
    from firepipe.resources import resource_for

    return initialised(
        resource_for("agent_runtime", settings.environment(), settings.local_paths())
    )


@click.group()
def agent() -> None:
    """The synthetic-data agent: requests in words, answered with generated, validated and
    measured data (the request grammar of the local planner: docs/generator-agent.md)."""


@agent.command("ask")
@click.argument("request")
@click.option("--session", "session_id", help="Continue this conversation (Bedrock).")
@click.option("--json", "as_json", is_flag=True, help="The answer, tool calls and trace as JSON.")
def ask(request: str, session_id: str | None, as_json: bool) -> None:
    """Ask for REQUEST, e.g. "two hundred kitchens with frying and a few smouldering fires,
    ten minutes each, five percent faulty sensors"."""
    from firepipe.resources.agent_runtime import AgentError

    runtime = _agent()
    try:
        answer = runtime.ask(request, session_id)
    except AgentError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(asdict(answer), indent=1, default=str))
        return
    click.echo(answer.text)
    click.echo(f"(session {answer.session_id})")
