"""A real PostgreSQL for the deployment tests, started by the pgserver package (its own
server binaries, no system install; as root it runs the server as a `pgserver` user)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import psycopg2
import pytest


@dataclass(frozen=True)
class Postgres:
    """A running server: pgserver listens on a Unix socket in `socket_dir`, on no TCP port."""

    socket_dir: Path
    port: int
    user: str = "postgres"  # pgserver's superuser; local connections are trusted

    def dsn(self, database: str) -> str:
        return f"host={self.socket_dir} port={self.port} user={self.user} dbname={database}"

    def create_database(self) -> str:
        """A new empty database, so that each test starts from nothing; its name."""
        name = f"test_{uuid4().hex[:12]}"
        connection = psycopg2.connect(self.dsn("postgres"))
        try:
            connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return name


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    """One server for the session (about a second to start), stopped at its end."""
    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers,
        # CI) and falls back to /tmp, which serves.
        warnings.simplefilter("ignore")
        import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        info = server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:
            raise RuntimeError(f"pgserver started without a socket: {info.__dict__}")
        yield Postgres(socket_dir=info.socket_dir, port=info.port)
    finally:
        server.cleanup()
