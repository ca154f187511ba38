"""SQLite plumbing shared by the local adapters that keep small state in a file (generation
history, extraction watermarks)."""

import sqlite3
import time
from pathlib import Path

# Processes opening a fresh file at once race to switch it to WAL, and SQLite answers the
# losers "database is locked" at once, without waiting its busy timeout (measured: 4 of 40
# six-process starts): they try again for this long.
_OPEN_TIMEOUT_S = 30.0


def connect(path: str, *schema: str) -> sqlite3.Connection:
    """A connection to the SQLite file at `path`, its folder created and the `schema` statements
    (CREATE ... IF NOT EXISTS) applied in one transaction.

    Several processes of one local run share the file: a connection waits up to 30 s for
    another's lock instead of failing.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _OPEN_TIMEOUT_S
    while True:
        connection = sqlite3.connect(path, timeout=30.0)
        try:
            with connection:
                for statement in schema:
                    connection.execute(statement)
            return connection
        except sqlite3.OperationalError as error:
            connection.close()
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
