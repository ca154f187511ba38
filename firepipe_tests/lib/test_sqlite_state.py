"""The connections `sqlite_state.kept` keeps: one per file, process and thread, made again for a
file replaced at its path, never left inside a transaction."""

from __future__ import annotations

import threading
from pathlib import Path

from firepipe.lib import sqlite_state

SCHEMA = ("PRAGMA journal_mode=WAL", "CREATE TABLE IF NOT EXISTS t (x INTEGER)")


def test_a_thread_keeps_one_connection_per_file(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    first = sqlite_state.kept(path, *SCHEMA)
    assert sqlite_state.kept(path, *SCHEMA) is first
    assert first.isolation_level is None  # the caller's transactions
    assert sqlite_state.kept(str(tmp_path / "b.db"), *SCHEMA) is not first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(sqlite_state.kept(path, *SCHEMA)))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_a_file_made_again_at_the_path_gets_a_new_connection(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    sqlite_state.kept(str(path), *SCHEMA).execute("INSERT INTO t VALUES (1)")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    connection = sqlite_state.kept(str(path), *SCHEMA)
    connection.execute("INSERT INTO t VALUES (2)")
    # The new file holds the new row only, and another connection reads it there.
    assert connection.execute("SELECT x FROM t").fetchall() == [(2,)]
    fresh = sqlite_state.connect(str(path))
    assert fresh.execute("SELECT x FROM t").fetchall() == [(2,)]
    fresh.close()


def test_a_transaction_left_open_is_rolled_back(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    connection = sqlite_state.kept(path, *SCHEMA)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO t VALUES (1)")
    again = sqlite_state.kept(path, *SCHEMA)
    assert not again.in_transaction
    assert again.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_a_thread_keeps_at_most_a_few_files_open(tmp_path: Path) -> None:
    first = sqlite_state.kept(str(tmp_path / "0.db"), *SCHEMA)
    for k in range(1, 40):
        sqlite_state.kept(str(tmp_path / f"{k}.db"), *SCHEMA)
    assert sqlite_state.kept(str(tmp_path / "0.db"), *SCHEMA) is not first
