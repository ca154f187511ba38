"""Commands about notifications: what the notifier sent (run failures, later alerts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from firepipe import settings
from firepipe.cli.context import initialised

if TYPE_CHECKING:
    from firepipe.core.notifications import NotificationRecord
    from firepipe.resources.notifier import Notifier

_SINCE_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]


@click.group()
def notifications() -> None:
    """Notifications sent through the notifier (the local outbox; SNS with FIREPIPE_ENV=aws)."""


@notifications.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--since", type=click.DateTime(_SINCE_FORMATS), help="Only those from this UTC time on."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per notification and line.")
def notifications_list(limit: int, since: datetime | None, as_json: bool) -> None:
    """The latest notifications, newest first. SNS keeps none, so in AWS read a subscription."""
    from firepipe.resources import resource_for

    notifier: Notifier = initialised(
        resource_for("notifier", settings.environment(), settings.local_paths())
    )
    records = notifier.recent(limit, since.replace(tzinfo=UTC) if since else None)
    if as_json:
        for record in records:
            click.echo(json.dumps(_flat(record)))
        return
    if not records:
        click.echo(f"no notifications ({notifier.describe()})")
        return
    click.echo(f"{'created (UTC)':<21}{'severity':<10}{'source':<22}subject")
    for r in records:
        n = r.notification
        click.echo(f"{r.created_at:%Y-%m-%d %H:%M:%S}  {n.severity:<10}{n.source:<22}{n.subject}")


def _flat(record: NotificationRecord) -> dict[str, object]:
    n = record.notification
    return {
        "id": record.id,
        "created_at": record.created_at.isoformat(),
        "severity": n.severity,
        "source": n.source,
        "subject": n.subject,
        "body": n.body,
        "dedup_key": n.dedup_key,
        "attributes": dict(n.attributes),
    }
