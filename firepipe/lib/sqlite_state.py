"""SQLite plumbing shared by the local adapters that keep small state in a file (generation
history, extraction watermarks)."""

import sqlite3
from pathlib import Path


def connect(path: str, *schema: str) -> sqlite3.Connection:
    """A connection to the SQLite file at `path`, its folder created and the `schema` statements
    (CREATE ... IF NOT EXISTS) applied in one transaction.

    Several processes of one local run share the file: a connection waits up to 30 s for
    another's lock instead of failing.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0)
    with connection:
        for statement in schema:
            connection.execute(statement)
    return connection
