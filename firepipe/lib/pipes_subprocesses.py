"""Pipes subprocesses side by side, all waited on from the calling thread.

dagster's `PipesSubprocessClient` runs one process and blocks in `process.wait()`. A run that
generates many partitions wants them side by side, and Dagster delivers an interrupt only to the
step's main thread, so processes waited on by worker threads would outlive it.
`run_side_by_side` starts up to `max_concurrent` processes, each in its own Pipes session (a temp
file for the context and one for the messages, as dagster's client), polls them from the
calling thread, starts the next as one ends, and on the first failure or an interrupt ends the
others (SIGINT, as dagster's client forwards it, then SIGKILL after a grace period) before it
raises. What started when, and what finished, is kept in a `Progress` the caller may hold
(firepipe.lib.fan_out).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import dagster as dg

from firepipe.lib import fan_out
from firepipe.lib.fan_out import K, Progress, R

# Popen offers no portable handle to wait on several processes at once, so they are polled. A
# generator process of make run's size lives about half a second: 20 ms leaves a slot idle
# for little time next to that.
POLL_INTERVAL_S = 0.02
# How long processes get to close their Pipes sessions after SIGINT before they are killed.
STOP_GRACE_S = 10.0


class SubprocessError(RuntimeError):
    """A process of the group exited with a non-zero code."""


def available_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class _Process:
    """One subprocess inside its own Pipes session."""

    def __init__(
        self, context: dg.AssetExecutionContext, command: Sequence[str], extras: Mapping[str, Any]
    ) -> None:
        self._command = " ".join(command)
        self._closing = ExitStack()
        self.session = self._closing.enter_context(
            dg.open_pipes_session(
                context=context,
                context_injector=dg.PipesTempFileContextInjector(),
                message_reader=dg.PipesTempFileMessageReader(),
                extras=dict(extras),
            )
        )
        try:
            env = {**os.environ, **self.session.get_bootstrap_env_vars()}
            self.process = subprocess.Popen(list(command), env=env)
        except BaseException:
            self._closing.close()
            raise

    def finish(self) -> dg.PipesSession:
        """The session of the exited process, closed once its last messages were read."""
        self._closing.close()
        code = self.process.returncode
        if code != 0:
            raise SubprocessError(
                f"{self._command} (pid {self.process.pid}) failed with code {code}"
            )
        return self.session

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def stop(self, deadline: float) -> None:
        """Wait for the interrupted process until `deadline`, kill it after, close its session."""
        try:
            self.process.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._closing.close()


def run_side_by_side(
    context: dg.AssetExecutionContext,
    command: Sequence[str],
    extras: Mapping[K, Mapping[str, Any]],
    max_concurrent: int,
    result: Callable[[dg.PipesSession], R],
    progress: Progress[K, R] | None = None,
) -> dict[K, R]:
    """Run `command` once per entry of `extras` (its Pipes extras), at most `max_concurrent` at
    a time; `result` of each one's closed Pipes session, by key in the order of `extras`.
    `progress` records each start and result as they happen."""
    fan_out.check_max_concurrent(max_concurrent)
    progress = Progress() if progress is None else progress
    pending = deque(extras.items())
    running: dict[K, _Process] = {}
    try:
        while pending or running:
            while fan_out.slot_free(pending, running, max_concurrent):
                key, job_extras = pending.popleft()
                running[key] = _Process(context, command, job_extras)
                progress.start(key)
            for key in [k for k, p in running.items() if p.process.poll() is not None]:
                progress.finish(key, result(running.pop(key).finish()))
            if running and not fan_out.slot_free(pending, running, max_concurrent):
                fan_out.wait(POLL_INTERVAL_S)
    finally:
        if running:
            pids = ", ".join(str(p.process.pid) for p in running.values())
            context.log.warning(f"[pipes] stopping the processes still running: {pids}")
            for process in running.values():
                process.interrupt()
            deadline = time.monotonic() + STOP_GRACE_S
            for process in running.values():
                process.stop(deadline)
    return progress.results(extras)
