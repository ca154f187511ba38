"""The local agents: one worker process per agent under FIREPIPE_HOME, each started again when
it dies (a crash, a kill -9), until the supervisor is stopped.

Workers write their logs to `<home>/agents/<agent>.log`; `<home>/agents/workers.json` names the
running ones (a replay finds the agents there and starts its own when there are none).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from firepipe.services.agents.runtime import AGENTS

STATE_FILE = "workers.json"
RESTART_DELAY_S = 0.5
STOP_TIMEOUT_S = 20.0


def agents_dir(home: Path) -> Path:
    return home / "agents"


@dataclass
class _Process:
    agent: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    started: float = field(default_factory=time.time)


class Supervisor:
    def __init__(
        self, home: Path, agents: tuple[str, ...] = AGENTS, env: dict[str, str] | None = None
    ) -> None:
        unknown = set(agents) - set(AGENTS)
        if unknown or not agents:
            raise ValueError(f"agents must be some of {', '.join(AGENTS)}, got {agents}")
        self.home, self.agents = home, agents
        self.env = dict(os.environ if env is None else env)
        self.restarts = 0
        self._running: dict[str, _Process] = {}

    @property
    def folder(self) -> Path:
        return agents_dir(self.home)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for agent in self.agents:
            self._spawn(agent)
        self._write_state()

    def pid(self, agent: str) -> int:
        return self._running[agent].popen.pid

    def check(self) -> list[str]:
        """Start again every worker that has exited; returns the agents restarted."""
        restarted = []
        for agent, process in list(self._running.items()):
            if process.popen.poll() is not None:
                process.log.close()
                self._spawn(agent)
                self.restarts += 1
                restarted.append(agent)
        if restarted:
            self._write_state()
        return restarted

    def run(self, until: Any = None) -> None:
        """Watch the workers until `until()` is true (forever without it)."""
        while until is None or not until():
            self.check()
            time.sleep(RESTART_DELAY_S)

    def stop(self) -> None:
        for process in self._running.values():
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self._running.values():
            try:
                process.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()
            process.log.close()
        self._running.clear()
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def _spawn(self, agent: str) -> None:
        log = (self.folder / f"{agent}.log").open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "firepipe.services.agents.worker", agent],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self._running[agent] = _Process(agent, popen, log)

    def _write_state(self) -> None:
        state = {
            "supervisor": os.getpid(),
            "workers": {
                a: {"pid": p.popen.pid, "started": p.started} for a, p in self._running.items()
            },
        }
        path = self.folder / STATE_FILE
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(state, indent=2))
        scratch.replace(path)


def running_supervisor(home: Path) -> int | None:
    """The pid of a supervisor running for `home`, None when there is none."""
    path = agents_dir(home) / STATE_FILE
    try:
        pid = int(json.loads(path.read_text())["supervisor"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


@contextmanager
def agents_running(home: Path, *, local: bool) -> Iterator[Supervisor | None]:
    """The agents for a block: those already running for `home` (or, in AWS, the deployed
    ones), else local workers started for it and stopped after it."""
    if not local or running_supervisor(home) is not None:
        yield None
        return
    supervisor = Supervisor(home)
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
