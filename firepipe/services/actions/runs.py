"""Fire-scenario generations as Dagster runs of bronze/synthetic_readings on the instance.

Each run of a generation (one per family, see firepipe.core.genai.fire_request) carries the tag
GENERATION_TAG, so the run list, the asset's lineage and the generation history (whose records
hold the Dagster run id) all lead back to the generation id.

How a run starts: when the instance's run-queue daemon is alive (`dagster dev`, the ECS
daemon), the run is created from the code location "firepipe" and submitted to the queue, as
`dagster job launch` does; otherwise it is executed in this process, one run at a time on a
worker thread (runs writing one Iceberg table would only contend), so the HTTP answer comes at
once with the run ids. A run waiting for that thread is kept in a file beside the instance
(firepipe.services.actions.pending) and is "queued" until it starts; a service that stops
first leaves it there, and the next one to start (`firepipe actions serve`) runs it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from firepipe import names, settings
from firepipe.core.genai.fire_request import FamilyRun, FirePlan
from firepipe.services.actions.pending import Pending, PendingRuns, this_process

_log = logging.getLogger(__name__)
GENERATION_TAG = "firepipe/generation_id"
LOCATION_NAME = "firepipe"  # workspace.yaml's and [tool.dagster]'s code location
ASSET_PATH = names.SYNTHETIC_READINGS
_QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"
PENDING_FILE = "firepipe_pending_runs.db"
LAUNCH_LOCK_FILE = "firepipe_launch.lock"
# On a PostgreSQL instance (ECS, Lambda), the launch lock is a session advisory lock of the
# instance's database, shared by every task and function; its key, and how long to wait for it.
LAUNCH_LOCK_KEY = int.from_bytes(hashlib.sha256(b"firepipe/launch").digest()[:8], signed=True)
LAUNCH_LOCK_WAIT_S = 30.0
_PAGE = 200  # run records read at a time when listing generations
_QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# Dagster's run statuses, grouped as a generation reports them.
_WAITING = frozenset({"QUEUED", "NOT_STARTED"})
_RUNNING = frozenset({"STARTING", "STARTED", "CANCELING"})
_FAILED = frozenset({"FAILURE", "CANCELED"})


@dataclass(frozen=True)
class RunState:
    """A run of a generation as the instance (or the waiting list) knows it."""

    run_id: str
    partition_key: str | None
    status: str  # Dagster's DagsterRunStatus name, e.g. "SUCCESS"
    created_at: datetime
    checks: dict[str, bool] = field(default_factory=dict)  # the bronze checks' outcomes


def generation_status(states: Sequence[RunState]) -> str:
    """One status for a generation's runs: failed, running, queued or succeeded."""
    statuses = {s.status for s in states}
    if statuses & _FAILED:
        return "failed"
    if statuses & _RUNNING or (statuses & _WAITING and "SUCCESS" in statuses):
        return "running"
    if statuses & _WAITING or not statuses:
        return "queued"
    return "succeeded"


class FireRuns(Protocol):
    """Where the runs of fire generations go: Dagster's instance, or a test's recorder."""

    def occupied(self) -> dict[str, set[str]]:
        """Per family, the batches that hold rows or that a waiting or running generation
        writes."""

    def launch(self, generation_id: str, make_plan: PlanMaker) -> tuple[FirePlan, list[RunState]]:
        """The plan `make_plan` makes of the batches occupied now, and its runs, tagged with
        the generation id, as started; planning and starting are one step, so two requests
        never choose the same free batch."""

    def runs_of(self, generation_id: str) -> list[RunState]:
        """The generation's runs, oldest first; empty for an unknown id."""

    def generations(self, limit: int) -> list[tuple[str, datetime]]:
        """The latest generation ids with when their first run was created, newest first."""


PlanMaker = Callable[[dict[str, set[str]]], FirePlan]


class PartitionBusyError(RuntimeError):
    """Another generation writes one of the plan's partitions now."""


class NoInstanceError(RuntimeError):
    """No Dagster instance to run on: DAGSTER_HOME names no folder, or (out of process) is
    unset or has no daemon."""


def dagster_home() -> Path:
    """DAGSTER_HOME, else the firepipe home's instance folder; the firepipe home's folder is
    created with its config when missing, another is the caller's to create."""
    raw = os.environ.get("DAGSTER_HOME")
    home = Path(raw) if raw else settings.local_paths().dagster_home
    if home == settings.local_paths().dagster_home:
        return settings.ensure_dagster_home()
    if not home.is_dir():
        raise NoInstanceError(f"no Dagster instance at DAGSTER_HOME={home}")
    return home


class DagsterRuns:
    """FireRuns on the Dagster instance at DAGSTER_HOME."""

    def __init__(self, home: Path | None = None, *, in_process: bool = True) -> None:
        """`in_process` False (a Lambda function, whose threads freeze between invocations):
        runs only through a daemon's queue, and an instance named by DAGSTER_HOME."""
        self.home, self.in_process = home, in_process
        self._lock = threading.Lock()
        self._instance: Any = None
        self._job: Any = None
        self._pending: PendingRuns | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fire-generation")
        self._stopping = threading.Event()
        self._lock_local = threading.Lock()  # threads of this process, before the file lock

    @property
    def instance(self) -> Any:
        import dagster as dg

        with self._lock:
            if self._instance is None:
                if self.home is None and not self.in_process and not os.environ.get("DAGSTER_HOME"):
                    raise NoInstanceError(
                        "DAGSTER_HOME is not set: fire generations from here go to the run queue "
                        "of the deployment's Dagster instance, which it names"
                    )
                self._instance = dg.DagsterInstance.from_config(str(self.home or dagster_home()))
            return self._instance

    @property
    def pending(self) -> PendingRuns:
        """The runs this service executes itself, until Dagster holds them (beside the
        instance, so every process serving it shares them)."""
        if self._pending is None:
            folder = Path(self.instance.root_directory)
            self._pending = PendingRuns(str(folder / PENDING_FILE))
        return self._pending

    def _waiting_rows(self, generation_id: str | None = None) -> list[Pending]:
        """The pending file's rows; none out of process (no run waits there)."""
        return self.pending.rows(generation_id) if self.in_process else []

    def daemon_alive(self) -> bool:
        """Whether the instance's run queue is served by a daemon with a recent heartbeat."""
        from dagster._daemon.controller import get_daemon_statuses

        if _QUEUE_DAEMON not in self.instance.get_required_daemon_types():
            return False
        status = get_daemon_statuses(self.instance, [_QUEUE_DAEMON], ignore_errors=True)
        return bool(status[_QUEUE_DAEMON].healthy)

    def occupied(self) -> dict[str, set[str]]:
        import dagster as dg

        keys = set(self.instance.get_materialized_partitions(dg.AssetKey(ASSET_PATH)))
        keys |= self._in_flight()
        taken: dict[str, set[str]] = {}
        for key in keys:
            batch, _, family = key.partition("|")
            taken.setdefault(family, set()).add(batch)
        return taken

    def _in_flight(self) -> set[str]:
        """The bronze partitions that runs write now or will: queued or running in Dagster
        (from the UI, a backfill or a generation alike), or waiting in the pending file."""
        import dagster as dg

        statuses = [dg.DagsterRunStatus[s] for s in (*_WAITING, *_RUNNING)]
        runs = self.instance.get_runs(filters=dg.RunsFilter(statuses=statuses))
        keys = {
            r.tags["dagster/partition"]
            for r in runs
            if "dagster/partition" in r.tags
            and (r.asset_selection is None or _asset_key() in r.asset_selection)
        }
        return keys | {p.partition_key for p in self._waiting_rows() if p.status == "QUEUED"}

    def launch(self, generation_id: str, make_plan: PlanMaker) -> tuple[FirePlan, list[RunState]]:
        """The plan made of the batches occupied now, and its runs, queued: planned and queued
        under one lock shared by every process of this instance, so two requests never write
        one partition (a batch named by the request that a run writes now is refused)."""
        from dagster._core.utils import make_new_run_id

        if self._stopping.is_set():
            raise NoInstanceError("the service is stopping: ask again when it is back")
        daemon = self.daemon_alive()
        if not daemon and not self.in_process:
            where = self.home or os.environ.get("DAGSTER_HOME")
            raise NoInstanceError(
                f"no Dagster daemon serves the run queue of the instance at {where}: fire "
                "generations from here need one"
            )
        with self._launch_lock():
            chosen = make_plan(self.occupied())
            busy = sorted(self._in_flight() & {run.partition_key for run in chosen.runs})
            if busy:
                raise PartitionBusyError(
                    f"another generation writes {', '.join(busy)} now: ask again when it is "
                    "done, or leave the batch out to take a free one"
                )
            if daemon:
                return chosen, self._submit(generation_id, chosen.runs)
            runs = [(make_new_run_id(), r.partition_key, r.run_config()) for r in chosen.runs]
            created = self.pending.add(generation_id, runs)
        self.resume()
        return chosen, [RunState(run_id, key, "QUEUED", created) for run_id, key, _ in runs]

    @contextmanager
    def _launch_lock(self) -> Iterator[None]:
        """Exclusive among every process of this instance: an advisory lock of its database
        when that is PostgreSQL (the tasks and Lambda functions of a deployment share nothing
        else), a file lock beside it otherwise. Out of process on another storage (a function
        whose folder is its own) there is nobody to share a lock with: Dagster's run queue,
        read under no lock, is what tells a busy partition there."""
        storage = self.instance.run_storage
        if _is_postgres(storage):
            with self._lock_local, _advisory_lock(storage):
                yield
            return
        if not self.in_process:
            yield
            return
        path = Path(self.instance.root_directory) / LAUNCH_LOCK_FILE
        try:
            handle = open(path, "a")  # noqa: SIM115 (closed below, after the lock's release)
        except OSError as exc:
            raise NoInstanceError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        with self._lock_local, handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def resume(self) -> None:
        """Execute the queued runs in this process, one at a time on the worker thread: those
        just asked for, and those a stopped process left (a service calls this at start)."""
        self.pending.release_dead()
        self._worker.submit(self._drain)

    def close(self) -> None:
        """Start no further run (they stay queued for the next service); the one running
        finishes first. The worker and the instance are released."""
        self._stopping.set()
        self._worker.shutdown(wait=True, cancel_futures=True)
        if self._instance is not None:
            self._instance.dispose()

    def _drain(self) -> None:
        owner = this_process()
        while not self._stopping.is_set():
            try:
                run = self.pending.claim_next(owner)
            except Exception:  # the file is out of reach: the next resume tries again
                _log.exception("fire generations: cannot read the pending runs")
                return
            if run is None:
                return
            try:
                self._run_claimed(run)
            except Exception as exc:  # never leave a claimed run behind
                _log.exception("fire generation %s: run %s", run.generation_id, run.run_id)
                self.pending.failed(run.run_id, f"{type(exc).__name__}: {exc}")

    def _run_claimed(self, run: Pending) -> None:
        from firepipe.lib.runs import fail_if_worker_gone

        held = self.instance.get_run_by_id(run.run_id)
        if held is not None:  # started by a process that has stopped since
            if held.status.name == "NOT_STARTED":
                self.instance.report_run_failed(held, "the process to run it stopped first")
            else:
                fail_if_worker_gone(self.instance, held)  # it cannot finish any more
            self.pending.done(run.run_id)
            return
        try:
            self._asset_job().execute_in_process(
                # The run's events are in the instance (the UI shows them); the caller's
                # terminal gets only warnings and errors.
                run_config={**run.run_config, **_QUIET_CONSOLE},
                instance=self.instance,
                partition_key=run.partition_key,
                asset_selection=[_asset_key()],
                run_id=run.run_id,
                tags={GENERATION_TAG: run.generation_id},
                raise_on_error=False,
            )
        except Exception as exc:
            # Before Dagster stored the run (the code location failed to load): the run
            # stays listed under its generation as failed, with the reason.
            _log.exception(
                "fire generation %s: run %s did not start", run.generation_id, run.run_id
            )
            self.pending.failed(run.run_id, f"{type(exc).__name__}: {exc}")
        else:
            self.pending.done(run.run_id)

    def _asset_job(self) -> Any:
        """The code location's implicit asset job, with the environment's resources."""
        if self._job is None:
            from firepipe.definitions import defs

            self._job = defs().resolve_implicit_global_asset_job_def()
        return self._job

    def _submit(self, generation_id: str, runs: Sequence[FamilyRun]) -> list[RunState]:
        """Create the runs from the code location (as `dagster job launch` does, loading it
        once) and queue them. In a deployment that is the code location's gRPC server, so each
        run carries its image and container context, as one launched from the UI does."""
        from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME
        from dagster._core.definitions.selector import JobSubsetSelector
        from dagster._core.workspace.context import WorkspaceProcessContext

        states = []
        target = _code_location_target()
        with WorkspaceProcessContext(self.instance, target) as process:
            workspace = process.create_request_context()
            location = workspace.get_code_location(LOCATION_NAME)
            [repository] = location.get_repositories().values()
            job_name = IMPLICIT_ASSET_JOB_NAME
            selector = JobSubsetSelector(
                location_name=LOCATION_NAME,
                repository_name=repository.name,
                job_name=job_name,
                op_selection=None,
                asset_selection={_asset_key()},
            )
            remote_job = location.get_job(selector)
            for run in runs:
                tags = {GENERATION_TAG: generation_id, "dagster/partition": run.partition_key}
                config = run.run_config()
                execution_plan = location.get_execution_plan(
                    remote_job, config, step_keys_to_execute=None, known_state=None
                ).execution_plan_snapshot
                created = self.instance.create_run(
                    job_name=job_name,
                    run_id=None,
                    run_config=config,
                    resolved_op_selection=remote_job.resolved_op_selection,
                    step_keys_to_execute=execution_plan.step_keys_to_execute,
                    op_selection=None,
                    status=None,
                    root_run_id=None,
                    parent_run_id=None,
                    tags={**remote_job.tags, **tags},
                    job_snapshot=remote_job.job_snapshot,
                    execution_plan_snapshot=execution_plan,
                    parent_job_snapshot=remote_job.parent_job_snapshot,
                    remote_job_origin=remote_job.get_remote_origin(),
                    job_code_origin=remote_job.get_python_origin(),
                    asset_selection=frozenset({_asset_key()}),
                    asset_check_selection=None,
                    asset_graph=repository.asset_graph,
                )
                submitted = self.instance.submit_run(created.run_id, workspace)
                states.append(_state(submitted, datetime.now(UTC)))
        return states

    def runs_of(self, generation_id: str) -> list[RunState]:
        import dagster as dg

        records = self.instance.get_run_records(
            filters=dg.RunsFilter(tags={GENERATION_TAG: generation_id})
        )
        states = [self._with_checks(_state(r.dagster_run, r.create_timestamp)) for r in records]
        known = {s.run_id for s in states}
        waiting = [
            RunState(p.run_id, p.partition_key, p.status, p.created_at.astimezone(UTC))
            for p in self._waiting_rows(generation_id)
            if p.run_id not in known
        ]
        return sorted([*states, *waiting], key=lambda s: (s.created_at, s.partition_key or ""))

    def _with_checks(self, state: RunState) -> RunState:
        from dagster._core.events import DagsterEventType

        events = self.instance.get_records_for_run(
            state.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        checks = {}
        for record in events:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            checks[evaluation.check_name] = bool(evaluation.passed)
        return RunState(state.run_id, state.partition_key, state.status, state.created_at, checks)

    def generations(self, limit: int) -> list[tuple[str, datetime]]:
        """Newest first: the asset job's runs are read a page at a time, newest first, until
        `limit` generations are seen; a generation's time is its newest run's."""
        import dagster as dg
        from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME

        newest: dict[str, datetime] = {}
        for p in self._waiting_rows():
            newest.setdefault(p.generation_id, p.created_at)
        seen: set[str] = set()
        cursor = None
        while len(seen) < limit:
            page = self.instance.get_run_records(
                filters=dg.RunsFilter(job_name=IMPLICIT_ASSET_JOB_NAME), limit=_PAGE, cursor=cursor
            )
            for r in page:
                gid = r.dagster_run.tags.get(GENERATION_TAG)
                if gid is not None:
                    seen.add(gid)
                    newest[gid] = max(newest.get(gid, r.create_timestamp), r.create_timestamp)
            if len(page) < _PAGE:
                break
            cursor = page[-1].dagster_run.run_id
        return sorted(newest.items(), key=lambda item: item[1], reverse=True)[:limit]


def _asset_key() -> Any:
    import dagster as dg

    return dg.AssetKey(ASSET_PATH)


def _state(run: Any, created: datetime) -> RunState:
    return RunState(
        run.run_id, run.tags.get("dagster/partition"), run.status.name, created.astimezone(UTC)
    )


def _is_postgres(storage: Any) -> bool:
    try:
        from dagster_postgres import PostgresRunStorage
    except ImportError:  # the aws extra is not installed: no PostgreSQL instance either
        return False
    return isinstance(storage, PostgresRunStorage)


@contextmanager
def _advisory_lock(storage: Any) -> Iterator[None]:
    """PostgreSQL's session advisory lock LAUNCH_LOCK_KEY on a connection of the run storage,
    held until the block ends (or the session does: a process that dies releases it). Waits
    LAUNCH_LOCK_WAIT_S at most, then answers that the instance is busy."""
    from sqlalchemy import text

    deadline = time.monotonic() + LAUNCH_LOCK_WAIT_S
    with storage.connect() as connection:
        while not connection.execute(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": LAUNCH_LOCK_KEY}
        ).scalar():
            if time.monotonic() > deadline:
                raise NoInstanceError(
                    f"another generation has been queueing its runs for {LAUNCH_LOCK_WAIT_S:.0f}"
                    " s: ask again shortly"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LAUNCH_LOCK_KEY})


# Where a deployment's code location serves (docker/workspace.yaml reads the same variable).
CODE_LOCATION_HOST_VAR = "DAGSTER_CODE_LOCATION_HOST"
CODE_LOCATION_PORT = 4000


def _code_location_target() -> Any:
    """The deployed code location's gRPC server when DAGSTER_CODE_LOCATION_HOST names it (ECS,
    Lambda: the runs then carry the image and the variables it hands them), else the module
    loaded in this process (a local instance)."""
    from dagster._core.workspace.load_target import GrpcServerTarget, ModuleTarget

    host = os.environ.get(CODE_LOCATION_HOST_VAR, "").strip()
    if host:
        return GrpcServerTarget(
            host=host, port=CODE_LOCATION_PORT, socket=None, location_name=LOCATION_NAME
        )
    return ModuleTarget(
        module_name="firepipe.definitions",
        attribute=None,
        working_directory=None,
        location_name=LOCATION_NAME,
    )
