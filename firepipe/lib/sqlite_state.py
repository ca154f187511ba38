"""SQLite plumbing shared by the local adapters that keep small state in a file (generation
history, extraction watermarks)."""

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Processes opening a fresh file at once race to switch it to WAL, and SQLite answers the
# losers "database is locked" at once, without waiting its busy timeout (measured: 4 of 40
# six-process starts): they try again for this long.
_OPEN_TIMEOUT_S = 30.0
# Files a thread keeps a connection to (`kept`); the least recently used is closed beyond it.
_KEPT_PER_THREAD = 16
_kept = threading.local()
_INHERITED: list[sqlite3.Connection] = []
# A schema step: a statement, or a function of the connection for a step that depends on what
# the file holds (moving an older layout's rows).
SchemaStep = str | Callable[[sqlite3.Connection], None]


def connect(path: str, *schema: SchemaStep) -> sqlite3.Connection:
    """A connection to the SQLite file at `path`, its folder created and the `schema` steps
    (CREATE ... IF NOT EXISTS statements, or functions of the connection) applied in order.

    Several processes of one local run share the file: a connection waits up to 30 s for
    another's lock instead of failing.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _OPEN_TIMEOUT_S
    while True:
        connection = sqlite3.connect(path, timeout=30.0)
        try:
            with connection:
                for step in schema:
                    if isinstance(step, str):
                        connection.execute(step)
                    else:
                        step(connection)
            return connection
        except sqlite3.OperationalError as error:
            connection.close()
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def kept(path: str, *schema: SchemaStep) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` (made by `connect`, isolation_level None: the
    caller runs its own transactions) kept open for this process and thread.

    Opening a connection per call costs more than a small write itself: the schema statements,
    and the close of a file's last connection checkpoints its WAL, with an fsync (measured per
    state-store put: 1.8 ms opened per call, 0.06 ms kept). A file replaced since (deleted and
    made again at the path) gets a new connection.
    """
    held: OrderedDict[str, tuple[sqlite3.Connection, int]] | None = getattr(_kept, "held", None)
    if held is None or _kept.pid != os.getpid():
        if held is not None:
            # Inherited through fork: SQLite forbids using it here, and closing it could
            # disturb the parent's locks, so it is only kept from being collected.
            _INHERITED.extend(connection for connection, _ in held.values())
        held = _kept.held = OrderedDict()
        _kept.pid = os.getpid()
    found = held.pop(path, None)
    inode = _inode(path)
    if found is not None and found[1] == inode:
        connection = found[0]
        if connection.in_transaction:  # left open by an interrupt before its handler ran
            connection.rollback()
    else:
        if found is not None:
            found[0].close()
        connection = connect(path, *schema)
        connection.isolation_level = None
        inode = _inode(path)
    held[path] = (connection, inode)
    while len(held) > _KEPT_PER_THREAD:
        _, (oldest, _) = held.popitem(last=False)
        oldest.close()
    return connection


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


# How long a change waits for another process's write lock before it fails.
LOCK_TIMEOUT_S = 30.0
# SQLite's own wait for a lock (its busy timeout) sleeps 1, 2, 5, 10, ... up to 100 ms between
# tries, so a writer lost up to 25-100 ms to a lock that another worker held for one ms
# (measured in the agents' bench: BEGIN IMMEDIATE waits of 8-34 ms). BEGIN IMMEDIATE is tried
# here instead with sleeps from 0.1 ms, doubling up to this.
_LOCK_RETRY_MAX_S = 0.002
# The busy timeout of the file's other statements (reads, which WAL rarely makes wait).
_BUSY_TIMEOUT_MS = int(LOCK_TIMEOUT_S * 1000)


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One BEGIN IMMEDIATE transaction on `db` (isolation_level None): the write lock is taken
    before anything is read, so no other process changes what the block reads before it
    writes; committed when the block ends, rolled back when it raises."""
    _begin_immediate(db)
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _begin_immediate(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock in short sleeps."""
    db.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        pause = 0.0001
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, _LOCK_RETRY_MAX_S)
    finally:
        db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
