"""The agents on a temporary FIREPIPE_HOME, driven in process: ports, a sample detector, the
three workers polled in turn until every queue is empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firepipe.core.agents import messages
from firepipe.services.agents.runtime import AGENTS, QUEUE_OF, Agents, Ports, ports
from firepipe.services.agents.worker import Worker
from firepipe.services.inference.source import FolderSource

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOT = {"temperature_c": 95.0, "smoke_obscuration_pct_per_m": 6.0}
QUIET = {"temperature_c": 21.0, "smoke_obscuration_pct_per_m": 0.1}
# The agents' policies, short so that a test's timeline stays short.
ENVIRON = {"FIREPIPE_ACK_TIMEOUT_S": "60", "FIREPIPE_ESCALATION_LEVELS": "60:on-call"}


def local_agents(detector_dir: Path, environ: dict[str, str] | None = None) -> Agents:
    """The agents over the current FIREPIPE_HOME's local ports (set it before)."""
    found = ports(environ or ENVIRON)
    found.wire()
    return Agents(found, environ or ENVIRON, FolderSource(detector_dir))


def workers(agents: Agents) -> dict[str, Worker]:
    return {agent: Worker(agent, agents, visibility_s=2) for agent in AGENTS}


def pump(running: dict[str, Worker], rounds: int = 500) -> None:
    """Poll the workers in turn until every agent queue is empty."""
    queues = next(iter(running.values())).agents.ports.queues
    for _ in range(rounds):
        handled = sum(w.poll(wait_s=0) for w in running.values())
        if not handled and all(
            queues.depth(q).visible == 0 and queues.depth(q).in_flight == 0
            for q in QUEUE_OF.values()
        ):
            return
    raise AssertionError("the agents did not empty their queues")


def timeline(device: str, pattern: list[tuple[int, dict[str, float]]]) -> list[dict[str, Any]]:
    """Readings at 1 Hz: (seconds, channel values) runs, one after another from START."""
    rows, t = [], 0
    for seconds, values in pattern:
        for _ in range(seconds):
            ts = (START + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rows.append({"device_id": device, "ts": ts, **values})
            t += 1
    return rows


def send(p: Ports, rows: list[dict[str, Any]], batch: str, size: int = 50) -> None:
    bodies = [
        (messages.encode_readings(f"{batch}-{k}", rows[i : i + size]), {})
        for k, i in enumerate(range(0, len(rows), size))
    ]
    p.queues.send_batch(messages.READINGS_QUEUE, bodies)
