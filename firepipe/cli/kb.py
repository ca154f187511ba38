"""`firepipe kb`: search firepipe's knowledge base (the index `make run` leaves, or the Bedrock
Knowledge Base with FIREPIPE_ENV=aws), and build it."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from firepipe import settings
from firepipe.cli.context import initialised

if TYPE_CHECKING:
    from firepipe.resources.knowledge_base import KnowledgeBase


def _knowledge_base() -> KnowledgeBase:
    from firepipe.resources import resource_for

    return initialised(
        resource_for("knowledge_base", settings.environment(), settings.local_paths())
    )


@click.group()
def kb() -> None:
    """The knowledge base over firepipe's documents (README, docs/, scenario catalog, NIST)."""


@kb.command("search")
@click.argument("question")
@click.option("--k", type=click.IntRange(min=1, max=50), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON list of passages.")
def kb_search(question: str, k: int, as_json: bool) -> None:
    """The K passages that best answer QUESTION, with their source documents."""
    from firepipe.core.genai.kb.index import IndexMissingError

    try:
        passages = _knowledge_base().search(question, k)
    except IndexMissingError as error:
        raise click.ClickException(
            f"{error}: run `firepipe kb build` (or `make run`) first"
        ) from None
    if as_json:
        click.echo(json.dumps([asdict(p) for p in passages], indent=1))
        return
    for rank, p in enumerate(passages, start=1):
        click.echo(f"{rank}. {p.source} - {p.heading} (score {p.score:.3f})")
        click.echo("   " + p.text.replace("\n", "\n   "))
        click.echo("")


@kb.command("build")
def kb_build() -> None:
    """Index the documents again (only the changed chunks are embedded)."""
    report = _knowledge_base().sync()
    what = "updated" if report.changed else "unchanged"
    chunks = f", {report.chunks} chunks" if report.chunks is not None else ""
    click.echo(
        f"knowledge base {what}: {report.documents} documents{chunks}, "
        f"{report.updated} updated, at {report.location}"
    )
