"""The action API served by uvicorn on a loopback port (as the inference tests serve theirs)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from firepipe.core.genai.fire_request import FirePlan
from firepipe.resources.history import SqliteGenerationHistory
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.services.actions.app import create_app
from firepipe.services.actions.operations import Actions
from firepipe.services.actions.runs import PlanMaker, RunState
from firepipe.services.inference.keys import Access
from firepipe_tests.services.inference.serving_sample import running

KEY = "actions-key"
SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "customer_id", "type": "uuid", "constraints": {"unique": True}},
        {"name": "age", "type": "integer", "constraints": {"min": 18, "max": 90}},
        {"name": "email", "type": "email"},
        {"name": "joined", "type": "date", "constraints": {"min": "2024-01-01", "nullable": True}},
        {"name": "code", "type": "string", "constraints": {"format": "AB-###"}},
    ]
}


@dataclass
class RecordingRuns:
    """FireRuns that start nothing: each launch is recorded, its runs stay queued (or take
    the status a test sets)."""

    taken: dict[str, set[str]] = field(default_factory=dict)
    launched: list[tuple[str, FirePlan]] = field(default_factory=list)
    states: dict[str, list[RunState]] = field(default_factory=dict)

    def occupied(self) -> dict[str, set[str]]:
        return {family: set(batches) for family, batches in self.taken.items()}

    def launch(self, generation_id: str, make_plan: PlanMaker) -> tuple[FirePlan, list[RunState]]:
        plan = make_plan(self.occupied())
        self.launched.append((generation_id, plan))
        now = datetime.now(UTC)
        self.states[generation_id] = [
            RunState(f"run-{generation_id[:8]}-{i}", run.partition_key, "QUEUED", now)
            for i, run in enumerate(plan.runs)
        ]
        for run in plan.runs:
            self.taken.setdefault(run.family, set()).add(run.batch)
        return plan, self.states[generation_id]

    def runs_of(self, generation_id: str) -> list[RunState]:
        return self.states.get(generation_id, [])

    def generations(self, limit: int) -> list[tuple[str, datetime]]:
        firsts = {g: min(s.created_at for s in states) for g, states in self.states.items()}
        return sorted(firsts.items(), key=lambda item: item[1], reverse=True)[:limit]


def recording_actions(root: Path, **more: Any) -> Actions:
    """Actions whose history and lake (unless given) are under `root` and whose fire runs are
    recorded."""
    return Actions(
        root / "generated",
        runs=more.pop("runs", None) or RecordingRuns(),
        history=SqliteGenerationHistory(path=str(root / "history.db")),
        lakehouse=more.pop("lakehouse", None) or LocalLakehouse(root=str(root / "lake")),
        **more,
    )


@pytest.fixture(scope="module")
def output_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated")


@pytest.fixture(scope="module")
def actions(output_root: Path) -> Actions:
    return recording_actions(output_root.parent / f"{output_root.name}-state", runs=None)


@pytest.fixture(scope="module")
def open_url(output_root: Path, actions: Actions) -> Iterator[str]:
    """The service without keys, its custom files under `output_root`."""
    actions.output_root = output_root.resolve()
    with running(create_app(Access(None, None), actions=actions)) as url:
        yield url


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
