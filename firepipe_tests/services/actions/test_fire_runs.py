"""A fire-scenario request through the HTTP API, end to end on a temporary firepipe home: Dagster
runs tagged with the generation id on the instance, rows in the lake's bronze table, the
generation history, getGeneration and the quality metrics against the reference batch; and,
with a live queue daemon, the runs queued on the instance instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from firepipe import settings
from firepipe.resources.history import SqliteGenerationHistory
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.services.actions.app import create_app
from firepipe.services.actions.operations import Actions
from firepipe.services.actions.runs import GENERATION_TAG, DagsterRuns
from firepipe.services.inference.keys import Access
from firepipe_tests.services.inference.serving_sample import running

pytestmark = pytest.mark.slow


@pytest.fixture
def home(firepipe_home: Path) -> Path:
    settings.ensure_dagster_home()
    return firepipe_home


@pytest.fixture
def url(home: Path) -> Iterator[str]:
    with running(create_app(Access(None, None), actions=Actions())) as url:
        yield url


def settled(http: requests.Session, url: str, generation_id: str) -> dict[str, Any]:
    for _ in range(240):
        body: dict[str, Any] = http.get(f"{url}/generations/{generation_id}").json()
        if body["status"] in ("succeeded", "failed"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"generation {generation_id} still {body['status']}")


def test_a_fire_request_lands_in_the_lake_through_tagged_dagster_runs(url, home):  # type: ignore[no-untyped-def]
    http = requests.Session()
    answer = http.post(
        f"{url}/generate-synthetic-data",
        json={
            "data_type": "fire_scenarios",
            "mix": {"flaming": 0.5, "smouldering": 0.5},
            "devices": 4,
            "duration_s": 40,
            "seed": 3,
            "batch": 0,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] in ("queued", "running")
    assert body["partitions"] == ["000|flaming", "000|smouldering"]
    generation_id = body["generation_id"]
    done = settled(http, url, generation_id)
    assert done["status"] == "succeeded", done
    assert done["records_generated"] == 4 * 40
    lake = LocalLakehouse(root=str(home / "lake"))
    assert (
        done["output_location"] == lake.catalog().load_table("bronze.synthetic_readings").location()
    )
    assert [r["status"] for r in done["runs"]] == ["SUCCESS", "SUCCESS"]
    assert all(r["checks"]["schema"] and r["checks"]["physical_ranges"] for r in done["runs"])
    # the runs, in the instance, carry the generation id
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        tagged = instance.get_runs(filters=dg.RunsFilter(tags={GENERATION_TAG: generation_id}))
        assert {r.run_id for r in tagged} == {r["run_id"] for r in body["runs"]}
        assert {r.tags["dagster/partition"] for r in tagged} == set(body["partitions"])
        assert instance.get_materialized_partitions(
            dg.AssetKey(["bronze", "synthetic_readings"])
        ) == {
            "000|flaming",
            "000|smouldering",
        }
    rows = lake.read("bronze.synthetic_readings")
    assert sorted(rows.group_by("scenario_family", "batch").len().rows()) == [
        ("flaming", "000", 80),
        ("smouldering", "000", 80),
    ]
    history = SqliteGenerationHistory(path=str(settings.local_paths().generation_history))
    recorded = [
        r for r in history.recent(10) if r.dagster_run_id in {x["run_id"] for x in body["runs"]}
    ]
    assert sorted(r.partition_key or "" for r in recorded) == ["000|flaming", "000|smouldering"]
    # a second request takes the next free batch and is measured against the reference
    second = http.post(
        f"{url}/generate-synthetic-data",
        json={
            "data_type": "fire_scenarios",
            "families": ["flaming"],
            "devices": 3,
            "seed": 4,
            "duration_s": 40,
        },
    ).json()
    assert second["partitions"] == ["001|flaming"]
    assert second["warnings"] == []
    assert settled(http, url, second["generation_id"])["status"] == "succeeded"
    metrics = http.post(
        f"{url}/calculate-quality-metrics", json={"generation_id": second["generation_id"]}
    ).json()
    assert metrics["rows"] == 120
    assert metrics["validity"]["overall"] == 1.0
    assert metrics["completeness"]["fields"]["device_id"] == 1.0
    comparison = metrics["distribution_vs_reference"]["flaming"]
    assert comparison["reference"] == "000|flaming"
    assert 0.0 < comparison["overall"] <= 1.0
    assert set(comparison["ks_complement"]) >= {"temperature_c", "co_ppm"}
    listed = http.get(f"{url}/generations").json()["generations"]
    assert [g["generation_id"] for g in listed] == [second["generation_id"], generation_id]


def test_with_a_live_daemon_the_runs_are_queued_on_the_instance(home):  # type: ignore[no-untyped-def]
    from dagster._daemon.types import DaemonHeartbeat
    from dagster._time import get_current_timestamp

    runs = DagsterRuns()
    beat = DaemonHeartbeat(get_current_timestamp(), "QUEUED_RUN_COORDINATOR", "test", None)
    runs.instance.add_daemon_heartbeat(beat)
    assert runs.daemon_alive()
    actions = Actions(runs=runs)
    with running(create_app(Access(None, None), actions=actions)) as url:
        answer = requests.post(
            f"{url}/generate-synthetic-data",
            json={"data_type": "fire_scenarios", "families": ["baseline"], "devices": 2},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
    assert body["status"] == "queued"
    [run] = runs.instance.get_runs(
        filters=dg.RunsFilter(tags={GENERATION_TAG: body["generation_id"]})
    )
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags["dagster/partition"] == "001|baseline"
    assert run.remote_job_origin.location_name == "firepipe"
    assert run.asset_selection == {dg.AssetKey(["bronze", "synthetic_readings"])}
    assert run.run_config["ops"]["bronze__synthetic_readings"]["config"]["devices"] == 2


def test_a_run_that_cannot_start_is_reported_failed(home, monkeypatch):  # type: ignore[no-untyped-def]
    runs = DagsterRuns()

    def broken() -> None:
        raise ImportError("the code location does not load")

    monkeypatch.setattr(runs, "_asset_job", broken)
    actions = Actions(runs=runs)
    with running(create_app(Access(None, None), actions=actions)) as url:
        http = requests.Session()
        answer = http.post(
            f"{url}/generate-synthetic-data",
            json={"data_type": "fire_scenarios", "families": ["nuisance"], "devices": 2},
        ).json()
        done = settled(http, url, answer["generation_id"])
    assert done["status"] == "failed"
    assert [r["status"] for r in done["runs"]] == ["FAILURE"]
    assert runs.occupied() == {}  # its batch is free again


NEVER, HELD = "0b5e0d6c-6d7b-4a37-9d5e-5d1f0a3c2b11", "7f1c9e2a-3b4d-4e5f-8a6b-1c2d3e4f5a6b"


def test_runs_a_stopped_service_left_queued_are_run_by_the_next_once(home):  # type: ignore[no-untyped-def]
    from firepipe.services.actions.pending import PendingRuns

    runs = DagsterRuns()
    config = {"ops": {"bronze__synthetic_readings": {"config": {"devices": 2, "duration_s": 30}}}}
    # A service that died after queueing: one run never started, one started (Dagster holds
    # it) before the process stopped, both still claimed by a process that no longer exists.
    pending = PendingRuns(str(home / "dagster" / "firepipe_pending_runs.db"))
    pending.add("gen-left", [(NEVER, "001|flaming", config), (HELD, "002|flaming", config)])
    assert pending.claim_next("a-host-that-is-gone:1") is not None
    runs.instance.add_run(
        dg.DagsterRun(job_name="__ASSET_JOB", run_id=HELD, status=dg.DagsterRunStatus.FAILURE)
    )
    assert pending.claim_next("a-host-that-is-gone:1") is not None
    pending.release_dead(alive=lambda owner: False)

    runs.resume()
    for _ in range(240):
        if not pending.rows():
            break
        time.sleep(0.5)
    assert pending.rows() == []
    [ran] = runs.instance.get_runs(filters=dg.RunsFilter(tags={GENERATION_TAG: "gen-left"}))
    assert ran.run_id == NEVER
    assert ran.status == dg.DagsterRunStatus.SUCCESS
    assert ran.tags["dagster/partition"] == "001|flaming"
    # the run Dagster already held was not run again
    assert runs.instance.get_run_by_id(HELD).status == dg.DagsterRunStatus.FAILURE
