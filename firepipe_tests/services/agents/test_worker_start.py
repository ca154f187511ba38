"""A monitoring worker of a new deployment: no champion yet is no crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firepipe_tests.services.agents.processes import STARTED


@pytest.mark.slow
def test_the_monitoring_worker_starts_before_a_champion_exists(firepipe_home: Path) -> None:
    """ECS would restart a worker that exits, and its deployment would roll back: without a
    champion the worker says so and polls its queue, whose readings wait for one."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FIREPIPE_HOME": str(firepipe_home)}
    command = [sys.executable, "-m", "firepipe.services.agents.worker", "monitoring"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        try:
            while time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if STARTED in line:
                    break
            assert any(STARTED in line for line in lines), lines
            assert any("no model yet" in line for line in lines), lines
            assert process.poll() is None  # still running, polling its queue
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
