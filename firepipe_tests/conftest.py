"""Shared fixtures: a throwaway firepipe home, a local lakehouse, and a moto AWS server."""

from __future__ import annotations

import faulthandler
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from firepipe import settings
from firepipe.resources.lakehouse import LocalLakehouse

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """A crash (segfault) prints the crashing thread's stack only. With every thread's stack
    (pytest's faulthandler plugin, turned off in pyproject), idle pool threads came first and
    CI's excerpt of the log ended before the thread that crashed. Capturing is suspended here,
    so this is the terminal's stderr, kept open for the whole session."""
    faulthandler.enable(file=os.dup(sys.stderr.fileno()), all_threads=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def firepipe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh FIREPIPE_HOME (and DAGSTER_HOME inside it) for one test, local environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("FIREPIPE_HOME", str(home))
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.delenv(settings.NIST_DATA_VAR, raising=False)  # the packaged NIST tests
    return home


def nist_data_dir() -> str:
    """The real NIST tests: the copy packaged with firepipe, or FIREPIPE_NIST_DATA_DIR's."""
    return str(settings.nist_data_dir())


@pytest.fixture
def lakehouse(tmp_path: Path) -> LocalLakehouse:
    return LocalLakehouse(root=str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a loopback port: S3 and Glue as real HTTP endpoints, so boto3 and
    pyarrow's own S3 client both reach it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
