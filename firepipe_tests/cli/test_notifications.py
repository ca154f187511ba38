"""`firepipe notifications list`: the local outbox as a table or JSON lines; in AWS, one error."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from firepipe import settings
from firepipe.cli import main
from firepipe.core.notifications import Notification
from firepipe.lib.aws_env import NOTIFICATIONS_TOPIC_ARN_VAR
from firepipe.resources.notifier import LocalNotifier


def invoke(*args: str):
    return CliRunner().invoke(main, ["notifications", "list", *args])


def notify(key: str, severity: str = "error") -> None:
    outbox = LocalNotifier(path=str(settings.local_paths().notifications))
    outbox.notify(
        Notification(
            subject=f"firepipe: job end_to_end failed (run {key})",
            body=f"Run: {key}",
            severity=severity,
            source="dagster/run_failure",
            dedup_key=key,
            attributes={"job": "end_to_end"},
        )
    )


def test_an_empty_outbox_says_so(firepipe_home: Path) -> None:
    result = invoke()
    assert result.exit_code == 0, result.output
    assert result.output == f"no notifications (outbox at {firepipe_home / 'notifications.db'})\n"
    assert invoke("--json").output == ""


def test_the_table_lists_newest_first_up_to_the_limit(firepipe_home: Path) -> None:
    for key in ("run-1", "run-2", "run-3"):
        notify(key, severity="critical" if key == "run-2" else "error")

    lines = invoke().output.splitlines()
    assert lines[0].split() == ["created", "(UTC)", "severity", "source", "subject"]
    assert [line.split()[-1] for line in lines[1:]] == ["run-3)", "run-2)", "run-1)"]
    assert lines[2].split()[2:4] == ["critical", "dagster/run_failure"]

    limited = invoke("--limit", "2").output.splitlines()
    assert len(limited) == 3
    assert limited[-1].endswith("(run run-2)")


def test_json_lines_carry_every_field(firepipe_home: Path) -> None:
    notify("run-1")
    notify("run-1")  # deduplicated
    [line] = invoke("--json").output.splitlines()
    record = json.loads(line)
    assert record["dedup_key"] == "run-1"
    assert record["body"] == "Run: run-1"
    assert record["attributes"] == {"job": "end_to_end"}
    assert set(record) == {
        "id",
        "created_at",
        "severity",
        "source",
        "subject",
        "body",
        "dedup_key",
        "attributes",
    }
    assert invoke("--since", "2999-01-01").output.startswith("no notifications")


def test_in_aws_listing_is_one_clear_error(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch, aws_credentials: None
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    monkeypatch.delenv(NOTIFICATIONS_TOPIC_ARN_VAR, raising=False)
    unset = invoke()
    assert unset.exit_code == 1
    assert f"Error: {NOTIFICATIONS_TOPIC_ARN_VAR} is not set" in unset.output

    monkeypatch.setenv(NOTIFICATIONS_TOPIC_ARN_VAR, "arn:aws:sns:eu-west-1:123456789012:alerts")
    result = invoke()
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: SNS does not keep what it published")
    assert "arn:aws:sns:eu-west-1:123456789012:alerts" in line
