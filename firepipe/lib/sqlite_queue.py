"""The SQLite file behind the local queues and topics (firepipe.resources.queue.LocalQueue,
firepipe.resources.topic.LocalTopic): several named queues, their dead letters and the topics'
subscriptions in one file, so a topic's fan-out is one transaction.

Workers in several processes share the file: WAL lets readers go on while one writer commits,
and every change runs under BEGIN IMMEDIATE, which takes the write lock before reading, so two
receivers can never claim the same visible message.

A message's body is kept apart from its row (`queue_bodies`): a receive rewrites the row (its
receipt, count and visibility), and a body of 60 KB in the row spilled into 15 overflow pages
that SQLite rewrote, and logged to the WAL, on every receive (measured, 10 messages of 60 KB:
7-11 ms a receive with the body in the row, 0.3 ms apart).
"""

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from firepipe.lib import sqlite_state


def _move_bodies_out(connection: sqlite3.Connection) -> None:
    """Move a file written before bodies were kept apart (one `messages` table, body in the
    row) to the current tables, its messages kept."""
    if not connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'"
    ).fetchone():
        return
    with sqlite_state.immediate(connection):
        connection.execute(
            f"INSERT INTO queue_messages ({_ROW}) SELECT {_ROW} FROM messages ORDER BY seq"
        )
        connection.execute("INSERT INTO queue_bodies (seq, body) SELECT seq, body FROM messages")
        connection.execute("DROP TABLE messages")


_ROW = "seq, id, queue, attributes, sent_at, visible_at, receive_count, receipt, dead, reason"
_SCHEMA: tuple[sqlite_state.SchemaStep, ...] = (
    # WAL is a property of the file (set once, kept); synchronous=NORMAL is per connection and,
    # in WAL mode, loses nothing when a process is killed, only on power loss.
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    # This SQLite is built to zero every freed page (SECURE_DELETE): a deleted body's 15
    # overflow pages were written again, as zeros, through the WAL (measured: 3-5 ms to delete
    # 10 messages of 60 KB). FAST zeroes what costs no extra write; a body's pages are reused.
    "PRAGMA secure_delete=FAST",
    "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, max_receives INTEGER NOT NULL)",
    # One row per message; a dead letter stays in its queue's rows with dead = 1 and its reason.
    "CREATE TABLE IF NOT EXISTS queue_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "id TEXT NOT NULL UNIQUE, queue TEXT NOT NULL, attributes TEXT NOT NULL, "
    "sent_at REAL NOT NULL, visible_at REAL NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, "
    "receipt TEXT UNIQUE, dead INTEGER NOT NULL DEFAULT 0, reason TEXT)",
    "CREATE TABLE IF NOT EXISTS queue_bodies (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)",
    # A message leaves with its body, whichever statement deletes it.
    "CREATE TRIGGER IF NOT EXISTS queue_bodies_go AFTER DELETE ON queue_messages "
    "BEGIN DELETE FROM queue_bodies WHERE seq = old.seq; END",
    "CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, dead, visible_at)",
    "CREATE TABLE IF NOT EXISTS subscriptions (topic TEXT NOT NULL, queue TEXT NOT NULL, "
    "filter_policy TEXT NOT NULL, PRIMARY KEY (topic, queue))",
    _move_bodies_out,
)


def connection(path: str) -> sqlite3.Connection:
    """The kept connection to the queue file at `path` (no transaction open): for reads,
    which WAL runs beside the writers without a lock."""
    return sqlite_state.kept(path, *_SCHEMA)


@contextmanager
def write(path: str) -> Iterator[sqlite3.Connection]:
    """A connection to the queue file at `path` inside one BEGIN IMMEDIATE transaction:
    committed when the block ends, rolled back when it raises."""
    # Kept per process and thread (isolation_level None: the transactions are ours); one
    # opened per call cost 1-12 ms a receive or publish (the last close checkpoints the WAL).
    with sqlite_state.immediate(connection(path)) as db:
        yield db


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
    seq = connection.execute(
        "INSERT INTO queue_messages (id, queue, attributes, sent_at, visible_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [message_id, queue, json.dumps(dict(attributes), sort_keys=True), now, now],
    ).lastrowid
    connection.execute("INSERT INTO queue_bodies (seq, body) VALUES (?, ?)", [seq, body])
    return message_id
