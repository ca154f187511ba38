"""The agents as real worker processes on a temporary FIREPIPE_HOME, for the fault tests: the
sample detector registered as the champion they load, kill -9 at random while they work, and
the checks a device's history must pass whatever was killed."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from firepipe import settings
from firepipe.names import MODEL_NAME
from firepipe.resources.queue import MessageQueue
from firepipe.resources.registry import LocalModelRegistry
from firepipe.resources.state_store import HistoryRecord
from firepipe.services.agents.runtime import QUEUE_OF
from firepipe.services.agents.supervisor import Supervisor, agents_dir
from firepipe_tests.services.detector_sample import register_detector
from firepipe_tests.services.inference.serving_sample import FEATURES, saved_detector

STARTED = '"message":"worker started"'
# The moves of the analysis state machine (None: a device's first event).
MOVES = {
    (None, "NORMAL"),
    (None, "SUSPECTED"),
    (None, "ALARM"),
    ("NORMAL", "SUSPECTED"),
    ("NORMAL", "ALARM"),
    ("SUSPECTED", "NORMAL"),
    ("SUSPECTED", "ALARM"),
    ("ALARM", "RESOLVED"),
    ("RESOLVED", "NORMAL"),
    ("RESOLVED", "ALARM"),
}


def register_champion(folder: Path) -> int:
    """The sample detector (fires when hot or smoky), saved in `folder` and promoted champion
    of the current FIREPIPE_HOME's registry, where the worker processes look for it."""
    registry = LocalModelRegistry(root=str(settings.local_paths().mlflow))
    saved_detector(folder)
    example = pl.DataFrame({name: [1.0] for name in FEATURES})
    version = register_detector(registry, folder, MODEL_NAME, example).version
    registry.promote(MODEL_NAME, version, "the fault tests' champion")
    return version


def starts(home: Path, agent: str) -> int:
    """How many of `agent`'s workers have come up (loaded, polling) under `home`."""
    log = agents_dir(home) / f"{agent}.log"
    return log.read_text(errors="replace").count(STARTED) if log.exists() else 0


class Chaos:
    """kill -9 of the supervisor's workers at random moments: each worker a random 0-2 s after
    it came up (loaded and polling, so that it mostly dies holding messages), until its agent
    has had the kills asked of it."""

    def __init__(self, supervisor: Supervisor, queues: MessageQueue, seed: int) -> None:
        self.supervisor, self.queues, self.rng = supervisor, queues, random.Random(seed)
        self.kills: Counter[str] = Counter()
        # kills of a worker whose queue had messages in flight: most likely held by it
        self.holding: Counter[str] = Counter()
        self.spawned = dict.fromkeys(supervisor.agents, 1)
        # (agent, spawn number) of a worker up -> when it dies; 0 once killed
        self._doomed: dict[tuple[str, int], float] = {}

    def check(self) -> None:
        """Restart the dead workers (the supervisor's own loop, run here)."""
        for agent in self.supervisor.check():
            self.spawned[agent] += 1

    def kill_due(self, wanted: Mapping[str, int]) -> list[str]:
        """Kill -9 the workers whose moment has come, of agents killed fewer than `wanted`
        times; the agents killed."""
        now, killed = time.monotonic(), []
        for agent in self.supervisor.agents:
            worker = (agent, self.spawned[agent])
            if self.kills[agent] >= wanted.get(agent, 0):
                continue
            if worker not in self._doomed:
                if starts(self.supervisor.home, agent) >= self.spawned[agent]:
                    self._doomed[worker] = now + self.rng.uniform(0.0, 2.0)
            elif 0 < self._doomed[worker] <= now:
                self.holding[agent] += self._await_held(QUEUE_OF[agent])
                os.kill(self.supervisor.pid(agent), signal.SIGKILL)
                self._doomed[worker] = 0  # not killed twice before its restart is seen
                self.kills[agent] += 1
                killed.append(agent)
        return killed

    def _await_held(self, queue: str, within_s: float = 1.0) -> bool:
        """Wait (briefly) until `queue` has a message in flight, so the kill falls on a worker
        holding messages: a fast worker holds the readings just sent for milliseconds only.
        Whether it did."""
        deadline = time.monotonic() + within_s
        while self.queues.depth(queue).in_flight == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0005)
        return True


def settle(chaos: Chaos, timeout_s: float, settle_s: float = 1.0) -> None:
    """Restart dead workers until every agent queue has stayed empty, nothing in flight, for
    `settle_s`; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        chaos.check()
        depths = {q: chaos.queues.depth(q) for q in QUEUE_OF.values()}
        if all(d.visible == 0 and d.in_flight == 0 for d in depths.values()):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle_s:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise AssertionError(f"the agents did not empty their queues in {timeout_s:g} s: {depths}")


def phases(history: list[HistoryRecord]) -> list[str]:
    """A device's phases in its history, once its history is checked: versions 1, 2, ... with
    no gap; each transition leaves the phase the one before entered, by a move of the state
    machine; no event makes two transitions; each transition's event is newer than the one
    before (a redelivered or stale reading moved nothing)."""
    assert [h.version for h in history] == list(range(1, len(history) + 1))
    events = [h.transition.event_id for h in history]
    assert None not in events
    assert len(set(events)) == len(events), events
    before: str | None = None
    for record in history:
        t = record.transition
        assert t.from_state == before, history
        assert (t.from_state, t.to_state) in MOVES, history
        before = t.to_state
    times = [h.state["last_ts"] for h in history]
    assert times == sorted(set(times)), times
    return [h.transition.to_state for h in history]
