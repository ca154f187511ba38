"""The local outbox's webhook, against a real HTTP server on a loopback port: one POST per new
notification with its fields, failures kept on the row (never raised, never losing it) and
delivered by a later redelivery pass, an older outbox file migrated."""

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from firepipe.core.history import timestamp_text
from firepipe.core.notifications import Notification
from firepipe.lib.aws_env import ALERT_WEBHOOK_URL_VAR
from firepipe.resources import resource_for
from firepipe.resources.notifier import LocalNotifier, UndeliveredWebhook
from firepipe.settings import Environment, LocalPaths
from firepipe_tests.conftest import free_port


@dataclass
class Hook:
    """What the webhook server received, and how it answers."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay_s: float = 0.0


@pytest.fixture
def hook() -> Iterator[Hook]:
    received = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.posts.append(
                {"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)}
            )
            time.sleep(received.delay_s)
            self.send_response(received.status)
            self.send_header("Location", "/elsewhere")  # read only on a redirect
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `received`."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.url = f"http://127.0.0.1:{server.server_port}/hooks/firepipe?token=s3cret"
    yield received
    server.shutdown()
    server.server_close()


def alert(key: str, **changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "subject": f"FIRE: device {key} in alarm",
        "body": f"Device {key} entered ALARM.\nScore 0.97 above 0.62 for 3 readings.",
        "severity": "critical",
        "source": "agents/response",
        "dedup_key": f"incident/{key}",
        "attributes": {"device": key, "site": "Flur 2, Küche"},
    }
    return Notification(**{**fields, **changes})


def outbox(tmp_path: Path, url: str, timeout_s: float = 5.0) -> LocalNotifier:
    return LocalNotifier(
        path=str(tmp_path / "notifications.db"), webhook_url=url, webhook_timeout_s=timeout_s
    )


def test_each_new_notification_is_posted_once_with_its_fields(tmp_path: Path, hook: Hook) -> None:
    notifier = outbox(tmp_path, hook.url)
    first = notifier.notify(alert("d-7"))
    assert notifier.notify(alert("d-7", body="raised again by a redelivered message")) == first
    notifier.notify(alert("d-8"))

    assert [post["json"]["dedup_key"] for post in hook.posts] == ["incident/d-7", "incident/d-8"]
    [record] = [r for r in notifier.recent() if r.id == first]
    post = hook.posts[0]
    assert post["path"] == "/hooks/firepipe?token=s3cret"
    assert post["type"] == "application/json"
    assert post["json"] == {
        "id": first,
        "subject": "FIRE: device d-7 in alarm",
        "body": "Device d-7 entered ALARM.\nScore 0.97 above 0.62 for 3 readings.",
        "severity": "critical",
        "source": "agents/response",
        "dedup_key": "incident/d-7",
        "attributes": {"device": "d-7", "site": "Flur 2, Küche"},
        "created_at": timestamp_text(record.created_at),
    }
    assert notifier.undelivered_webhooks() == []
    assert notifier.redeliver_webhooks() == 0
    assert len(hook.posts) == 2


def test_a_failing_webhook_keeps_the_row_until_a_redelivery_gets_through(
    tmp_path: Path, hook: Hook, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = outbox(tmp_path, hook.url)
    hook.status = 500
    with caplog.at_level(logging.WARNING, logger="firepipe.resources.notifier"):
        kept = notifier.notify(alert("d-7"))
    assert [r.id for r in notifier.recent()] == [kept]  # the row is there regardless
    assert notifier.undelivered_webhooks() == [
        UndeliveredWebhook(kept, "incident/d-7", 1, "HTTP 500 Internal Server Error")
    ]
    assert "HTTP 500" in caplog.text
    assert "incident/d-7" in caplog.text
    assert "s3cret" not in caplog.text  # the URL's token stays out of the log

    assert notifier.redeliver_webhooks() == 0  # still failing: one more attempt recorded
    assert notifier.undelivered_webhooks()[0].attempts == 2
    hook.status = 200
    assert notifier.redeliver_webhooks() == 1
    assert notifier.undelivered_webhooks() == []
    assert notifier.redeliver_webhooks() == 0  # delivered once, not again
    assert len(hook.posts) == 3
    assert hook.posts[2]["json"] == hook.posts[0]["json"]  # the same notification, as first sent


@pytest.mark.parametrize(
    ("status", "reason"), [(404, "HTTP 404 Not Found"), (302, "HTTP 302 Found")]
)
def test_any_answer_but_2xx_is_a_failed_delivery(
    tmp_path: Path, hook: Hook, status: int, reason: str
) -> None:
    hook.status = status  # a redirect too: urllib would follow it as a GET without the body
    notifier = outbox(tmp_path, hook.url)
    kept = notifier.notify(alert("d-7"))
    assert notifier.undelivered_webhooks() == [UndeliveredWebhook(kept, "incident/d-7", 1, reason)]
    assert len(hook.posts) == 1


def test_a_refused_or_silent_webhook_is_recorded_not_raised(tmp_path: Path, hook: Hook) -> None:
    refused = outbox(tmp_path / "refused", f"http://127.0.0.1:{free_port()}/hook")
    refused.notify(alert("d-7"))
    [undelivered] = refused.undelivered_webhooks()
    assert undelivered.error is not None
    assert undelivered.error.startswith("unreachable:")

    hook.delay_s = 1.0
    silent = outbox(tmp_path / "silent", hook.url, timeout_s=0.2)
    started = time.monotonic()
    silent.notify(alert("d-7"))
    assert time.monotonic() - started < 0.9  # gave up after its timeout
    assert [u.error for u in silent.undelivered_webhooks()] == ["no answer within 0.2 s"]


def test_a_pass_stops_at_the_first_failure_and_tries_the_least_tried_first(
    tmp_path: Path, hook: Hook
) -> None:
    hook.status = 503
    notifier = outbox(tmp_path, hook.url)
    for key in ("d-1", "d-2", "d-3"):
        notifier.notify(alert(key))
    assert notifier.redeliver_webhooks() == 0
    # One attempt in the pass (d-1's second), not one per row while the webhook is down.
    assert [u.attempts for u in notifier.undelivered_webhooks()] == [2, 1, 1]
    assert notifier.redeliver_webhooks() == 0
    assert [u.attempts for u in notifier.undelivered_webhooks()] == [2, 2, 1]

    hook.status = 200
    assert notifier.redeliver_webhooks() == 3
    assert [p["json"]["dedup_key"] for p in hook.posts[-3:]] == [
        "incident/d-3",  # tried least
        "incident/d-1",
        "incident/d-2",
    ]


def test_a_post_in_flight_is_not_sent_again_by_a_redelivery_pass(
    tmp_path: Path, hook: Hook
) -> None:
    hook.delay_s = 0.5
    notifier = outbox(tmp_path, hook.url)
    sender = threading.Thread(target=notifier.notify, args=[alert("d-7")])
    sender.start()
    deadline = time.monotonic() + 10
    while not hook.posts:  # the first POST has arrived and waits for its answer
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert notifier.redeliver_webhooks() == 0
    sender.join()
    assert len(hook.posts) == 1
    assert notifier.undelivered_webhooks() == []


def test_an_outbox_from_before_the_webhook_is_migrated(tmp_path: Path, hook: Hook) -> None:
    path = tmp_path / "notifications.db"
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE notifications (id TEXT PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, "
            "created_at TEXT NOT NULL, severity TEXT NOT NULL, source TEXT NOT NULL, "
            "subject TEXT NOT NULL, body TEXT NOT NULL, attributes TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO notifications VALUES ('old-1', 'run-1', '2026-05-01T08:00:00.000000Z', "
            "'error', 'dagster/run_failure', 'job failed', 'Job failed.', '{}')"
        )
    old.close()
    notifier = outbox(tmp_path, hook.url)
    assert [r.id for r in notifier.recent()] == ["old-1"]
    assert notifier.redeliver_webhooks() == 0  # stored before any webhook: nothing owed
    notifier.notify(alert("d-7"))

    assert [p["json"]["dedup_key"] for p in hook.posts] == ["incident/d-7"]
    with sqlite3.connect(path) as check:
        columns = {row[1] for row in check.execute("PRAGMA table_info(notifications)")}
        statuses = dict(check.execute("SELECT dedup_key, webhook_status FROM notifications"))
    check.close()
    assert {"webhook_status", "webhook_attempts", "webhook_error"} <= columns
    assert statuses == {"run-1": None, "incident/d-7": "delivered"}


def test_the_webhook_must_be_http_and_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(Exception, match=r"http:// or https://"):
        LocalNotifier(path=str(tmp_path / "n.db"), webhook_url="file:///etc/passwd")
    with pytest.raises(Exception, match="greater than 0"):
        LocalNotifier(path=str(tmp_path / "n.db"), webhook_url="http://x", webhook_timeout_s=0)

    paths = LocalPaths(home=tmp_path)
    monkeypatch.delenv(ALERT_WEBHOOK_URL_VAR, raising=False)
    assert resource_for("notifier", Environment.LOCAL, paths).webhook_url is None
    monkeypatch.setenv(ALERT_WEBHOOK_URL_VAR, "https://hooks.example.com/T0/B1/s3cret")
    notifier = resource_for("notifier", Environment.LOCAL, paths)
    assert notifier.webhook_url == "https://hooks.example.com/T0/B1/s3cret"
    assert notifier.describe() == (
        f"outbox at {tmp_path / 'notifications.db'}, webhook to https://hooks.example.com"
    )
