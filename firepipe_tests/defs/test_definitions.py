"""The whole code location: loads in both environments, and its asset graph is as recorded."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from firepipe import settings
from firepipe.definitions import defs
from firepipe.resources.lakehouse import GlueLakehouse, LocalLakehouse

SNAPSHOT = Path(__file__).parents[1] / "snapshots" / "asset_graph.json"


def asset_graph_snapshot(definitions: dg.Definitions) -> dict[str, object]:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "checks": sorted(c.name for c in node.check_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "has_description": bool(node.description),
            "automation": node.automation_condition.get_label()
            if node.automation_condition
            else None,
            "freshness_policy": node.freshness_policy is not None,
        }
    jobs = sorted(j.name for j in definitions.resolve_all_job_defs() if j.name != "__ASSET_JOB")
    return {"assets": assets, "jobs": jobs}


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials, region or config anywhere: what a fresh laptop has."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("FIREPIPE_LAKE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent"))


def test_local_definitions_load_with_local_resources(firepipe_home: Path) -> None:
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    lakehouse = definitions.resources["lakehouse"]
    assert isinstance(lakehouse, LocalLakehouse)
    assert lakehouse.root == str(firepipe_home / "lake")
    assert definitions.resolve_job_def("end_to_end") is not None


def test_aws_definitions_load_without_credentials(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch, no_aws: None
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    definitions = defs()
    dg.Definitions.validate_loadable(definitions)
    assert isinstance(definitions.resources["lakehouse"], GlueLakehouse)
    assert asset_graph_snapshot(definitions) == asset_graph_snapshot(
        _local_definitions(monkeypatch)
    )


def test_aws_resources_report_missing_configuration_when_used(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch, no_aws: None
) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "aws")
    job = defs().resolve_job_def("end_to_end")
    with pytest.raises(Exception, match="FIREPIPE_LAKE_WAREHOUSE"):
        job.execute_in_process(instance=dg.DagsterInstance.ephemeral())


def _local_definitions(monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("FIREPIPE_ENV", "local")
    return defs()


def test_unknown_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIREPIPE_ENV", "staging")
    with pytest.raises(settings.SettingsError, match="'staging' is not one of: local, aws"):
        defs()


def test_asset_graph_matches_the_recorded_snapshot(firepipe_home: Path) -> None:
    """The lineage users see. After an intended change, regenerate with
    FIREPIPE_UPDATE_SNAPSHOTS=1 and review the diff of the JSON file."""
    current = asset_graph_snapshot(defs())
    if os.environ.get("FIREPIPE_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_description_group_and_kind(firepipe_home: Path) -> None:
    for key, node in asset_graph_snapshot(defs())["assets"].items():
        assert node["has_description"], key
        assert node["group"] != "default", key
        assert node["kinds"], key
