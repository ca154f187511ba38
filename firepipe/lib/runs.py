"""Runs whose processes died (SIGKILL, out of memory, a reboot): find them, mark them failed.

Dagster's run monitoring asks the run launcher whether a run's worker is alive, but the local
(default) launcher cannot tell, and a `dagster job execute` run has no launcher at all: a killed
worker leaves its run STARTED for good. Dagster does record the pids a run ran in (on its
RUN_START and STEP_START events), so on the host the run ran on, a run none of whose processes
is left is dead. Anything less certain is left alone: the run monitoring daemon's start timeout
and maximum runtime (firepipe.settings) end those runs.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.storage.runs.in_memory import InMemoryRunStorage
from dagster._core.storage.runs.sqlite import SqliteRunStorage
from dagster._core.storage.tags import GRPC_INFO_TAG

IN_FLIGHT = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED)
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# A launched run's first engine events, among which the worker's "Started process for run".
_FIRST_ENGINE_EVENTS = 10


def fail_if_worker_gone(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Mark `run` failed when it is in flight on this host and every process it ran in is gone,
    and return the reason; None (run untouched) when one lives, the run ran on another host, or
    it has not recorded a pid yet."""
    if run.status not in IN_FLIGHT or not _ran_here(instance, run):
        return None
    pids = _run_pids(instance, run)
    if not pids or any(_alive(pid) for pid in pids):
        return None
    # Its processes are gone, so nothing will change the run any more: a run that ended just
    # before its processes exited keeps the status it ended with.
    latest = instance.get_run_by_id(run.run_id)
    if latest is None or latest.status not in IN_FLIGHT:
        return None
    reason = (
        f"run worker gone: no process of the run ({', '.join(map(str, sorted(pids)))}) is left "
        f"on {socket.gethostname()} (killed, out of memory, or the host restarted) while the "
        f"run was {latest.status.value}"
    )
    failure = JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION)
    instance.report_run_failed(latest, reason, failure)
    return reason


def _ran_here(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the run's worker ran on this host, so that its pid means something here."""
    grpc_info = run.tags.get(GRPC_INFO_TAG)
    if grpc_info is not None:
        # Launched: the code server the launcher reached started the worker.
        server = json.loads(grpc_info)
        host = server.get("host")
        return "socket" in server or host in _LOOPBACK or host == socket.gethostname()
    # Not launched (`dagster job execute`): the process that ran it wrote to this instance's
    # storage itself, which for SQLite files (or this process's memory) means on this host.
    return isinstance(instance.run_storage, SqliteRunStorage | InMemoryRunStorage)


def _run_pids(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[int]:
    """The processes the run ran in: its worker (RUN_START) and its step processes (STEP_START;
    a multiprocess step outlives a killed worker until the step ends); before RUN_START, the
    worker that a launched run's code server started."""
    records = instance.get_records_for_run(
        run.run_id, of_type={DagsterEventType.RUN_START, DagsterEventType.STEP_START}
    ).records
    events = [r.event_log_entry.dagster_event for r in records]
    pids = {event.pid for event in events if event is not None and event.pid is not None}
    if pids:
        return pids
    engine_events = instance.get_records_for_run(
        run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=_FIRST_ENGINE_EVENTS
    ).records
    for record in engine_events:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            return {int(str(pid.value))}
    return set()


def _alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited; a process this cannot judge is alive."""
    if os.name == "nt":
        return True  # os.kill(pid, 0) would terminate it there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        # Exited since the signal, or a system without /proc (macOS), where it exists.
        return not Path("/proc/self").exists()
    # A killed child its parent has not reaped yet is a zombie ("Z"): it has exited. The state
    # follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}
