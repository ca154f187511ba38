"""A long-running agent worker (what ECS runs, and `firepipe agents run` starts locally):
receive a batch from the agent's queue, deliver each message, delete the handled ones; the
response worker also fires the local escalation timers and retries undelivered webhooks.

`python -m firepipe.services.agents.worker AGENT` runs one until SIGTERM or SIGINT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

if __name__ == "__main__":
    # Before the model's libraries load libgomp, which reads it once: OpenMP's threads (the
    # compiled trees' Predictor, LightGBM) otherwise spin on a core for a while after each
    # parallel call, waiting for the next. Measured in the monitoring worker over 72,000
    # readings: 1.99 s of CPU in 1.33 s spinning, 1.16 s in 1.15 s passive; the spinning took
    # the core the analysis and response workers needed (`firepipe bench agents`).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from firepipe.core.agents.messages import GROUP
from firepipe.resources.queue import MAX_VISIBILITY_TIMEOUT_S
from firepipe.services.agents import observability as obs
from firepipe.services.agents.delivery import Outcome, deliver
from firepipe.services.agents.runtime import AGENTS, QUEUE_OF, Agents, idempotent, ports
from firepipe.services.inference.source import NoModelError

# A message is hidden this long while a worker has it: long enough for a batch, short enough
# that a killed worker's messages come back soon.
VISIBILITY_S = 10
# Overrides VISIBILITY_S: the fault tests bring a killed worker's messages back sooner.
VISIBILITY_VAR = "FIREPIPE_AGENTS_VISIBILITY_S"
WAIT_S = 1
METRICS_EVERY_S = 10.0
TIMER_LEASE_S = 30.0


class Worker:
    def __init__(self, agent: str, agents: Agents, *, visibility_s: int = VISIBILITY_S) -> None:
        if agent not in AGENTS:
            raise ValueError(f"no agent {agent!r}: one of {', '.join(AGENTS)}")
        self.agent, self.agents, self.visibility_s = agent, agents, visibility_s
        self.queue = QUEUE_OF[agent]
        p = agents.ports
        self.handle = idempotent(agents.handler(agent), p.idempotency, agent, None, visibility_s)

    def poll(self, wait_s: int = WAIT_S) -> int:
        """One receive and its messages; returns how many were received."""
        queues = self.agents.ports.queues
        received = queues.receive(self.queue, 10, wait_s, self.visibility_s)
        done, held = [], set()
        for message in received:
            group = message.attributes.get(GROUP)
            if group is not None and group in held:
                # An earlier message of its group failed: this one waits for it (it comes back
                # after its visibility timeout, after the earlier one).
                continue
            outcome = deliver(queues, self.queue, message, self.handle, queues.max_receives)
            if outcome is Outcome.RETRY and group is not None:
                held.add(group)
            obs.count(f"messages_{outcome.value}")
            if outcome is Outcome.DONE:
                done.append(message.receipt)
        if done:
            queues.delete_batch(self.queue, done)
        return len(received)

    def tick(self) -> int:
        """The response worker's timers: escalation levels due now; returns how many fired."""
        from firepipe.resources.escalation import LocalEscalationTimer

        timer = self.agents.ports.escalation
        if self.agent != "response" or not isinstance(timer, LocalEscalationTimer):
            return 0
        due = timer.claim_due(time.time(), TIMER_LEASE_S)
        for level in due:
            status = self.agents.response.escalate(level.alert_id, level.level)
            obs.logger.info(
                "escalation", alert_id=level.alert_id, escalation_level=level.level, status=status
            )
            timer.done(level.alert_id, level.level)
        redeliver = getattr(self.agents.ports.notifier, "redeliver_webhooks", None)
        if redeliver is not None:
            redeliver()
        return len(due)

    def run(self, stop: threading.Event) -> None:
        obs.logger.info("worker started", agent=self.agent, queue=self.queue)
        flushed = time.monotonic()
        while not stop.is_set():
            self.poll()
            self.tick()
            self._record_latency()
            if time.monotonic() - flushed >= METRICS_EVERY_S:
                obs.metrics.flush_metrics()
                flushed = time.monotonic()
        obs.metrics.flush_metrics()
        obs.logger.info("worker stopped", agent=self.agent)

    def _record_latency(self) -> None:
        if self.agent == "response":
            latencies = self.agents.response.alarm_latencies_s
            for latency in latencies:
                obs.milliseconds("alarm_latency", latency * 1000)
            latencies.clear()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in AGENTS:
        print(f"Error: usage: worker {{{','.join(AGENTS)}}}", file=sys.stderr)
        return 2
    raw = os.environ.get(VISIBILITY_VAR, str(VISIBILITY_S))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_VISIBILITY_TIMEOUT_S:
        limit = MAX_VISIBILITY_TIMEOUT_S
        print(f"Error: {VISIBILITY_VAR}={raw!r}: whole seconds, 1-{limit}", file=sys.stderr)
        return 2
    agents = Agents(ports())
    agents.ports.wire()
    worker = Worker(argv[0], agents, visibility_s=int(raw))
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if argv[0] == "monitoring":
        # Load the model before the first message, not on it. A new deployment has no
        # champion yet: the worker runs all the same (a crash loop would fail the deployment),
        # and readings wait in the queue, then its dead-letter queue, until one is registered.
        try:
            obs.logger.info("model loaded", version=agents.holder.source.current())
        except NoModelError as e:
            obs.logger.warning("no model yet: readings wait for the champion", reason=str(e))
    worker.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
