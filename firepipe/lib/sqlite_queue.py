"""The SQLite file behind the local queues and topics (firepipe.resources.queue.LocalQueue,
firepipe.resources.topic.LocalTopic): several named queues, their dead letters and the topics'
subscriptions in one file, so a topic's fan-out is one transaction.

Workers in several processes share the file: WAL lets readers go on while one writer commits,
and every change runs under BEGIN IMMEDIATE, which takes the write lock before reading, so two
receivers can never claim the same visible message.
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from firepipe.lib import sqlite_state

_SCHEMA = (
    # WAL is a property of the file (set once, kept); synchronous=NORMAL is per connection and,
    # in WAL mode, loses nothing when a process is killed, only on power loss.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, max_receives INTEGER NOT NULL)",
    # One row per message; a dead letter stays in its queue's rows with dead = 1 and its reason.
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL, "
    "body TEXT NOT NULL, attributes TEXT NOT NULL, sent_at REAL NOT NULL, "
    "visible_at REAL NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, receipt TEXT UNIQUE, "
    "dead INTEGER NOT NULL DEFAULT 0, reason TEXT)",
    "CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, dead, visible_at)",
    "CREATE TABLE IF NOT EXISTS subscriptions (topic TEXT NOT NULL, queue TEXT NOT NULL, "
    "filter_policy TEXT NOT NULL, PRIMARY KEY (topic, queue))",
)


@contextmanager
def write(path: str) -> Iterator[sqlite3.Connection]:
    """A connection to the queue file at `path` inside one BEGIN IMMEDIATE transaction:
    committed when the block ends, rolled back when it raises."""
    # Kept per process and thread (isolation_level None: the transactions are ours); one
    # opened per call cost 1-12 ms a receive or publish (the last close checkpoints the WAL).
    connection = sqlite_state.kept(path, *_SCHEMA)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def max_receives(connection: sqlite3.Connection, queue: str) -> int:
    """The receive limit of `queue`; KeyError when the file holds no such queue."""
    row = connection.execute("SELECT max_receives FROM queues WHERE name = ?", [queue]).fetchone()
    if row is None:
        raise KeyError(queue)
    return int(row[0])


def insert(
    connection: sqlite3.Connection, queue: str, body: str, attributes: Mapping[str, str]
) -> str:
    """Add a visible message to `queue` and return its id."""
    message_id = str(uuid.uuid4())
    now = time.time()
    connection.execute(
        "INSERT INTO messages (id, queue, body, attributes, sent_at, visible_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [message_id, queue, body, json.dumps(dict(attributes), sort_keys=True), now, now],
    )
    return message_id
