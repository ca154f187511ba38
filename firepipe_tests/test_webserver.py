"""The Dagster UI's backend, started as `make dev` starts it, queried over its GraphQL API."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from firepipe_tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.slow
STARTUP_TIMEOUT_S = 180

LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries {
    name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } }
} } } }
"""
ASSET_GRAPH = """
{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }
"""


def graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


def wait_until_loaded(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"dagster-webserver exited with {server.returncode}")
        try:
            entries = graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
            continue
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            errors = [e["locationOrLoadError"] for e in entries]
            assert all(e["__typename"] == "RepositoryLocation" for e in errors), errors
            return
        time.sleep(0.5)
    pytest.fail(f"the code location did not load within {STARTUP_TIMEOUT_S} s")


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    env = {
        **os.environ,
        "FIREPIPE_HOME": str(home),
        "FIREPIPE_ENV": "local",
        "DAGSTER_HOME": str(home / "dagster"),
    }
    command = [
        str(Path(sys.executable).parent / "dagster-webserver"),
        "-w",
        "workspace.yaml",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = (tmp_path / "webserver.log").open("w")
    server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_loaded(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_ui_serves_the_asset_lineage(webserver: str) -> None:
    nodes = graphql(webserver, ASSET_GRAPH)["assetNodes"]
    keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
    assert keys == {
        "bronze/synthetic_readings",
        "bronze/field_readings",
        "bronze/field_dead_letters",
        "bronze/landed_readings",
        "silver/sensor_readings",
        "silver/quarantine",
        "gold/sensor_features",
        "gold/generator_validation",
        "analytics/stg_sensor_readings",
        "analytics/site_daily_summary",
        "analytics/device_alarm_events",
        "analytics/site_daily_alarm_rates",
        "ml/training_set",
        "ml/detector",
        "ml/evaluation",
        "ml/champion",
        "ml/endpoint",
        "ml/scores",
        "ml/online_features",
        "agents/nist_replay",
        "genai/kb_index",
    }
    edges = {
        ("/".join(d["path"]), "/".join(n["assetKey"]["path"]))
        for n in nodes
        for d in n["dependencyKeys"]
    }
    bronze = ("synthetic_readings", "field_readings", "landed_readings")
    silver = ("sensor_readings", "quarantine")
    assert edges == {
        *((f"bronze/{b}", f"silver/{s}") for b in bronze for s in silver),
        ("silver/sensor_readings", "gold/sensor_features"),
        # the lineage runs from silver through the dbt models
        ("silver/sensor_readings", "analytics/stg_sensor_readings"),
        ("analytics/stg_sensor_readings", "analytics/site_daily_summary"),
        ("analytics/stg_sensor_readings", "analytics/device_alarm_events"),
        ("analytics/stg_sensor_readings", "analytics/site_daily_alarm_rates"),
        ("analytics/device_alarm_events", "analytics/site_daily_alarm_rates"),
        # the detector's lineage: gold -> training set -> candidate -> evaluation -> champion
        ("gold/sensor_features", "ml/training_set"),
        ("ml/training_set", "ml/detector"),
        ("ml/training_set", "ml/evaluation"),
        ("ml/detector", "ml/evaluation"),
        ("ml/evaluation", "ml/champion"),
        # serving: the champion deployed, gold scored by it, gold's latest rows in the store
        ("ml/champion", "ml/endpoint"),
        ("ml/champion", "ml/scores"),
        ("gold/sensor_features", "ml/scores"),
        ("gold/sensor_features", "ml/online_features"),
        # the agents replay the NIST tests with each new champion
        ("ml/champion", "agents/nist_replay"),
    }
    groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
    # Each asset sits in the group of its layer, the first part of its key.
    assert {key: key.split("/")[0] for key in groups} == groups
    assert set(groups.values()) == {
        "bronze",
        "silver",
        "gold",
        "ml",
        "analytics",
        "agents",
        "genai",
    }
