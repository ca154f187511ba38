"""What the two fan-out runners share: firepipe.lib.pipes_subprocesses (local processes) and
firepipe.lib.pipes_batch (AWS Batch jobs).

Both fill up to `max_concurrent` slots from a queue, poll what is in flight from the calling
thread (the step's, where Dagster raises an interrupt) and stop the rest on the first failure.
Their loops differ in how they poll (one `poll()` per process against one DescribeJobs per 100
jobs) and stop (SIGINT then SIGKILL against TerminateJob), so each keeps its own; they share the
slot rule, the pause between polls and `Progress`, the caller's record of how far the run got,
which it can still read when the run raised.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


def check_max_concurrent(max_concurrent: int) -> None:
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")


def slot_free(pending: Sized, in_flight: Sized, max_concurrent: int) -> bool:
    """Whether one more of `pending` may start now."""
    return len(pending) > 0 and len(in_flight) < max_concurrent


def wait(seconds: float) -> None:
    """Sleep between polls; the step's interrupt is raised out of it."""
    time.sleep(seconds)


@dataclass
class Progress(Generic[K, R]):
    """How far a fan-out got: when each key started (UTC) and what each finished one returned.
    A key that is in `started` but not in `finished` failed or was stopped; a key in neither
    never started."""

    started: dict[K, datetime] = field(default_factory=dict)
    finished: dict[K, R] = field(default_factory=dict)

    def start(self, key: K, at: datetime | None = None) -> None:
        self.started[key] = at or datetime.now(UTC)

    def finish(self, key: K, result: R) -> None:
        self.finished[key] = result

    def results(self, keys: Iterable[K]) -> dict[K, R]:
        """Every key's result, in the order of `keys` (all must have finished)."""
        return {key: self.finished[key] for key in keys}
