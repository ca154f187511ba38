"""The runs a service executes itself (no daemon serves the instance's queue) until Dagster
holds them: a SQLite file beside the instance, so a run asked for is neither lost when the
service stops before starting it nor started twice by two processes.

A row is a run with its generation id, partition and run config. A process claims the oldest
unclaimed row in one transaction, executes the run under the row's run id, and deletes the row
once Dagster holds the run. A row claimed by a process that died is unclaimed again by
`release_dead`; its run is executed only if Dagster does not hold it already. A run that could
not start (its code failed to load) stays as a row with status FAILURE and the reason.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from firepipe.lib import sqlite_state

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pending_runs ("
    "run_id TEXT PRIMARY KEY, generation_id TEXT NOT NULL, partition_key TEXT NOT NULL, "
    "run_config TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'QUEUED', "
    "owner TEXT, reason TEXT)"
)


@dataclass(frozen=True)
class Pending:
    run_id: str
    generation_id: str
    partition_key: str
    run_config: dict[str, Any]
    created_at: datetime
    status: str  # QUEUED (waiting or being started) or FAILURE (it could not start)
    reason: str | None = None


# Told apart from an earlier process of the same pid on the same host (a restarted container
# is often pid 1 again): made once per process.
_TOKEN = uuid.uuid4().hex


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def _alive(owner: str) -> bool:
    """Whether `owner` (host:pid:token) may still run. The file lives beside one machine's
    Dagster instance, so a process of another host (a shared folder) is assumed alive."""
    host, pid, token = [*owner.split(":"), "", ""][:3]
    if host != socket.gethostname():
        return True
    if pid == str(os.getpid()):
        return token == _TOKEN
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class PendingRuns:
    def __init__(self, path: str) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite_state.connect(self.path, _SCHEMA)

    def add(self, generation_id: str, runs: list[tuple[str, str, dict[str, Any]]]) -> datetime:
        """Queue (run id, partition key, run config) of one generation; answers its time."""
        now = datetime.now(UTC)  # ordered as text: one zone for every process
        with closing(self._connect()) as connection, connection:
            connection.executemany(
                "INSERT INTO pending_runs (run_id, generation_id, partition_key, run_config, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                [(r, generation_id, p, json.dumps(c), now.isoformat()) for r, p, c in runs],
            )
        return now

    def claim_next(self, owner: str) -> Pending | None:
        """The oldest unclaimed queued run, now claimed by `owner`; None when there is none."""
        with closing(self._connect()) as connection:
            connection.isolation_level = None
            connection.execute("BEGIN IMMEDIATE")  # one claimant at a time
            try:
                row = connection.execute(
                    "SELECT * FROM pending_runs WHERE status = 'QUEUED' AND owner IS NULL "
                    "ORDER BY created_at, partition_key LIMIT 1"
                ).fetchone()
                if row is not None:
                    connection.execute(
                        "UPDATE pending_runs SET owner = ? WHERE run_id = ?", (owner, row[0])
                    )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return None if row is None else _pending(row)

    def done(self, run_id: str) -> None:
        """Dagster holds the run now."""
        with closing(self._connect()) as connection, connection:
            connection.execute("DELETE FROM pending_runs WHERE run_id = ?", (run_id,))

    def failed(self, run_id: str, reason: str) -> None:
        with closing(self._connect()) as connection, connection:
            connection.execute(
                "UPDATE pending_runs SET status = 'FAILURE', reason = ? WHERE run_id = ?",
                (reason, run_id),
            )

    def release_dead(self, alive: Callable[[str], bool] = _alive) -> int:
        """Unclaim the queued runs of owners that are no longer alive; answers how many."""
        with closing(self._connect()) as connection, connection:
            owners = [
                o
                for (o,) in connection.execute(
                    "SELECT DISTINCT owner FROM pending_runs "
                    "WHERE status = 'QUEUED' AND owner IS NOT NULL"
                )
                if not alive(o)
            ]
            released = 0
            for owner in owners:
                released += connection.execute(
                    "UPDATE pending_runs SET owner = NULL WHERE status = 'QUEUED' AND owner = ?",
                    (owner,),
                ).rowcount
        return released

    def rows(self, generation_id: str | None = None) -> list[Pending]:
        """Every row (of one generation), oldest first."""
        every = generation_id is None
        where, params = ("", ()) if every else ("WHERE generation_id = ?", (generation_id,))
        with closing(self._connect()) as connection:
            found = connection.execute(
                f"SELECT * FROM pending_runs {where} ORDER BY created_at, partition_key", params
            ).fetchall()
        return [_pending(row) for row in found]


def _pending(row: tuple[Any, ...]) -> Pending:
    run_id, generation_id, partition_key, config, created_at, status, _, reason = row
    return Pending(
        run_id,
        generation_id,
        partition_key,
        json.loads(config),
        datetime.fromisoformat(created_at),
        status,
        reason,
    )
