"""The operations as the Bedrock Lambda runs them in AWS (`serverless`): no local files, fire
runs only through a daemon's queue; and listGenerations' bounds, the same from every caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from firepipe.resources.history import SqliteGenerationHistory
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.services.actions.models import DEFAULT_LIST_LIMIT, GenerateRequest
from firepipe.services.actions.operations import ActionError, Actions
from firepipe.services.actions.runs import DagsterRuns
from firepipe_tests.services.actions.conftest import SCHEMA, recording_actions

FIRE: dict[str, Any] = {
    "data_type": "fire_scenarios",
    "families": ["flaming"],
    "devices": 2,
    "duration_s": 60,
}


def _serverless(root: Path, runs: DagsterRuns) -> Actions:
    return Actions(
        root / "generated",
        runs=runs,
        history=SqliteGenerationHistory(path=str(root / "history.db")),
        lakehouse=LocalLakehouse(root=str(root / "lake")),
        local_files=False,
    )


def test_a_serverless_service_writes_no_local_file_but_answers_inline(tmp_path: Path) -> None:
    actions = _serverless(tmp_path, DagsterRuns(in_process=False))
    local = {"data_type": "custom", "volume": 5, "schema": SCHEMA, "destination": {"type": "local"}}
    with pytest.raises(ActionError, match="no local files") as refused:
        actions.generate_synthetic_data(GenerateRequest.model_validate(local))
    assert refused.value.status == 400
    assert not (tmp_path / "generated").exists()
    inline = actions.generate_synthetic_data(
        GenerateRequest.model_validate({**local, "destination": {"type": "inline"}})
    )
    assert inline.records_generated == 5
    assert inline.data is not None
    assert len(inline.data) == 5


def test_out_of_process_runs_need_dagster_home(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    actions = _serverless(tmp_path, DagsterRuns(in_process=False))
    with pytest.raises(ActionError, match="DAGSTER_HOME is not set") as refused:
        actions.generate_synthetic_data(GenerateRequest.model_validate(FIRE))
    assert refused.value.status == 503


def test_out_of_process_runs_need_a_daemon(tmp_path: Path, monkeypatch: Any) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    runs = DagsterRuns(in_process=False)
    actions = _serverless(tmp_path, runs)
    with pytest.raises(ActionError, match="no Dagster daemon") as refused:
        actions.generate_synthetic_data(GenerateRequest.model_validate(FIRE))
    assert refused.value.status == 503
    assert runs.instance.get_runs() == []  # nothing was started in this process


@pytest.mark.parametrize("limit", [0, 201])
def test_list_limit_is_bounded_for_every_caller(tmp_path: Path, limit: int) -> None:
    with pytest.raises(ActionError, match="between 1 and 200"):
        recording_actions(tmp_path).list_generations(limit)


def test_list_limit_has_a_default(tmp_path: Path) -> None:
    actions = recording_actions(tmp_path)
    tiny = {
        "data_type": "custom",
        "volume": 1,
        "schema": {"fields": [{"name": "n", "type": "uuid"}]},
    }
    for _ in range(DEFAULT_LIST_LIMIT + 1):
        actions.generate_synthetic_data(GenerateRequest.model_validate(tiny))
    assert len(actions.list_generations().generations) == DEFAULT_LIST_LIMIT


def test_search_answers_from_the_local_index(tmp_path: Path) -> None:
    """searchKnowledgeBase over the real local knowledge base (not a double): 503 before the
    index is built, then the passage of the document that answers."""
    from firepipe.resources.knowledge_base import LocalKnowledgeBase
    from firepipe.services.actions.models import SearchRequest
    from firepipe_tests.core.genai.kb.shared import MODEL_CACHE, write_project

    kb = LocalKnowledgeBase(
        folder=str(tmp_path / "kb"),
        model_cache=str(MODEL_CACHE),
        project_root=str(write_project(tmp_path / "project")),
    )
    actions = recording_actions(tmp_path, knowledge_base=kb)
    question = SearchRequest.model_validate({"query": "where are table snapshots kept?", "k": 2})
    with pytest.raises(ActionError, match="kb build") as missing:
        actions.search_knowledge_base(question)
    assert missing.value.status == 503
    kb.sync()
    found = actions.search_knowledge_base(question).passages
    assert next(p.source for p in found) == "docs/lake.md"
    assert len(found) == 2
    assert found[0].score >= found[1].score


@pytest.mark.parametrize(("env", "remote"), [("local", False), ("aws", True)])
def test_in_aws_every_action_service_queues_runs_and_keeps_no_local_file(
    monkeypatch: pytest.MonkeyPatch, env: str, remote: bool
) -> None:
    """The ECS service as the Lambda function: its role runs no generation and its disk is
    thrown away, so in AWS runs go to the daemon's queue and files to S3 only."""
    monkeypatch.setenv("FIREPIPE_ENV", env)
    actions = Actions.from_environment()
    runs = actions.runs
    assert isinstance(runs, DagsterRuns)
    assert runs.in_process is not remote
    assert actions.local_files is not remote


def test_runs_are_created_from_the_deployed_code_location_when_it_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a deployment the runs come from the code location's gRPC server (their image and
    variables with them), as the UI's; locally from the module in this process."""
    from dagster._core.workspace.load_target import GrpcServerTarget, ModuleTarget

    from firepipe.services.actions.runs import LOCATION_NAME, _code_location_target

    monkeypatch.delenv("DAGSTER_CODE_LOCATION_HOST", raising=False)
    local = _code_location_target()
    assert isinstance(local, ModuleTarget)
    assert (local.module_name, local.location_name) == ("firepipe.definitions", LOCATION_NAME)
    monkeypatch.setenv("DAGSTER_CODE_LOCATION_HOST", "code.firepipe-dev.local")
    deployed = _code_location_target()
    assert isinstance(deployed, GrpcServerTarget)
    assert (deployed.host, deployed.port, deployed.location_name) == (
        "code.firepipe-dev.local",
        4000,
        LOCATION_NAME,
    )
