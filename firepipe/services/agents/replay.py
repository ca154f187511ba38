"""Push a replay plan through the running agents and read back the alarms they raised.

Batches leave on the record's clock divided by `speed` (0: as fast as the queue takes them);
the replay is over when every agent queue is empty with nothing in flight, and the alarms are
the alerts the response agent opened for the plan's devices (their event's time).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from firepipe.core.agents import messages
from firepipe.core.agents.replay import ReplayPlan, nist_plan, timeline
from firepipe.core.realdata import nist
from firepipe.core.training.real_fires import WARM_UP_S
from firepipe.resources.queue import MessageQueue
from firepipe.resources.state_store import StateStore
from firepipe.services.agents.response import alert_records
from firepipe.services.agents.runtime import QUEUE_OF

SETTLE_S = 0.5  # the queues stay empty this long before the replay is called over
SEND_EVERY = 10  # batches per send_batch call, SQS's most


class ReplayTimeoutError(RuntimeError):
    """The agents did not work through the replay in time (are they running?)."""


@dataclass(frozen=True)
class ReplayResult:
    alarms: dict[str, list[datetime]]  # device_id -> its alerts' times
    readings: int
    sent_s: float  # wall seconds to send
    drained_s: float  # wall seconds until the agents had handled everything


def new_run_id() -> str:
    return "r" + uuid.uuid4().hex[:10]


def push(
    plan: ReplayPlan,
    queues: MessageQueue,
    store: StateStore,
    speed: float,
    *,
    timeout_s: float = 600.0,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    if not (speed >= 0 and speed != float("inf")):
        raise ValueError(
            f"speed must be a finite number >= 0 (0: as fast as possible), got {speed}"
        )
    start = clock()
    profiles = plan.profiles()
    pending: list[tuple[str, dict[str, str]]] = []
    for k, batch in enumerate(plan.batches):
        if speed > 0:
            delay = start + batch.at_s / speed - clock()
            if delay > 0:
                _send(queues, pending)
                time.sleep(delay)
        named = {r["device_id"] for r in batch.readings}
        body = messages.encode_readings(
            f"{plan.run_id}-{k}",
            batch.readings,
            {d: profiles[d] for d in named},
            sent_at=time.time(),
        )
        pending.append((body, {messages.GROUP: plan.run_id}))
        if len(pending) >= SEND_EVERY:
            _send(queues, pending)
    _send(queues, pending)
    sent = clock()
    drain(queues, timeout_s=timeout_s, clock=clock)
    return ReplayResult(alarms(store, plan), plan.readings, sent - start, clock() - start)


def _send(queues: MessageQueue, pending: list[tuple[str, dict[str, str]]]) -> None:
    if pending:
        queues.send_batch(messages.READINGS_QUEUE, pending)
        pending.clear()


def drain(
    queues: MessageQueue, *, timeout_s: float, clock: Callable[[], float] = time.monotonic
) -> None:
    """Wait until every agent queue has been empty, nothing in flight, for SETTLE_S."""
    deadline = clock() + timeout_s
    quiet_since = None
    while True:
        depths = [queues.depth(q) for q in QUEUE_OF.values()]
        if all(d.visible == 0 and d.in_flight == 0 for d in depths):
            quiet_since = quiet_since or clock()
            if clock() - quiet_since >= SETTLE_S:
                return
        else:
            quiet_since = None
        if clock() > deadline:
            left = {
                q: (d.visible, d.in_flight) for q, d in zip(QUEUE_OF.values(), depths, strict=True)
            }
            raise ReplayTimeoutError(
                f"the agents had not handled the replay after {timeout_s:g} s (visible, in "
                f"flight per queue: {left}); are they running? `firepipe agents run`"
            )
        time.sleep(0.05)


def alarms(store: StateStore, plan: ReplayPlan) -> dict[str, list[datetime]]:
    found: dict[str, list[datetime]] = {}
    for record in alert_records(store):
        if record.alert.device_id in plan.devices:
            found.setdefault(record.alert.device_id, []).append(record.alert.created_at)
    return {device: sorted(times) for device, times in found.items()}


def replay_nist(
    folder: Path,
    queues: MessageQueue,
    store: StateStore,
    *,
    speed: float = 0.0,
    tests: Sequence[str] | None = None,
    timeout_s: float = 600.0,
) -> tuple[list[dict[str, Any]], int]:
    """Every NIST test of `folder` (or those named) through the agents, one after another,
    after evaluate-real's warm-up: the timeline rows of every station and the readings sent."""
    chosen = [t for t in nist.read_tests(folder) if tests is None or t.name in tests]
    missing = set(tests or ()) - {t.name for t in chosen}
    if missing:
        raise ValueError(f"no NIST test {sorted(missing)} in {folder}")
    rows, readings = [], 0
    for test in chosen:
        plan = nist_plan(test, new_run_id(), WARM_UP_S)
        result = push(plan, queues, store, speed, timeout_s=timeout_s)
        rows += timeline(plan, result.alarms)
        readings += result.readings
    return rows, readings
