"""The main job, run the way users run it, in a throwaway FIREPIPE_HOME: the field sources
seeded first (`firepipe seed`), then every asset from generation through dbt."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner

from firepipe import settings
from firepipe.cli import main
from firepipe.core.features.spec import default_spec
from firepipe.core.training import promotion
from firepipe.definitions import defs
from firepipe.lib.field_seed import landing_demo_files
from firepipe.names import MODEL_NAME
from firepipe.resources import LOCAL_FIELD_TABLE, resources_for
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.resources.landing import LocalLandingZone
from firepipe.resources.registry import LocalModelRegistry
from firepipe.resources.warehouse import DuckDBWarehouseSource

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"devices": 6, "duration_s": 300, "seed": 11}
RUN_CONFIG = {"ops": {"bronze__synthetic_readings": {"config": SMALL}}}
# What `make run` passes: batches 000 and 001 of every scenario family, in one run (bronze's
# partitions); 001 is checked against the reference batch 000.
FAMILIES = ("baseline", "flaming", "smouldering", "nuisance")
BATCHES = ("000", "001")
ROWS = len(BATCHES) * len(FAMILIES) * SMALL["devices"] * SMALL["duration_s"]
TABLES = [
    "bronze.field_dead_letters",
    "bronze.field_readings",
    "bronze.landed_readings",
    "bronze.synthetic_readings",
    "gold.generator_validation",
    "gold.sensor_features",
    "ml.training_set",
    "silver.quarantine",
    "silver.sensor_readings",
]
DBT_MODELS = {
    "analytics/stg_sensor_readings",
    "analytics/site_daily_summary",
    "analytics/device_alarm_events",
    "analytics/site_daily_alarm_rates",
}
ML_ASSETS = {"ml/detector", "ml/evaluation", "ml/champion", "ml/online_features"}
# The knowledge base over the project's documents is built by every end_to_end run.
ASSETS = {t.replace(".", "/") for t in TABLES} | DBT_MODELS | ML_ASSETS | {"genai/kb_index"}
# Materialised only when the candidate became the champion (no champion: nothing to serve).
SERVING_TABLES = ["ml.scores"]
SERVING_ASSETS = {"ml/endpoint", "ml/scores", "agents/nist_replay"}


def expected_tables(champion: bool) -> list[str]:
    return sorted(TABLES + SERVING_TABLES) if champion else TABLES


def expected_assets(champion: bool) -> set[str]:
    return ASSETS | SERVING_ASSETS if champion else ASSETS


# bronze: schema, physical_ranges, label_consistency, scenario_mix, distribution_vs_reference;
# bronze/field_readings: daily_counts_match_source; silver: null_rate, ranges, duplicate_rate,
# freshness; gold: finite_features. dbt's tests come on top, one check each.
LAKE_CHECKS = 11


def seed() -> None:
    result = CliRunner().invoke(main, ["seed"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def run_end_to_end(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("end_to_end")
    # No partition tags: the job's own range (batches 000 and 001 of every family).
    return job.execute_in_process(run_config=RUN_CONFIG, instance=instance)


def source_ids(home: Path) -> list[int]:
    warehouse = DuckDBWarehouseSource(
        path=str(home / "field_warehouse.duckdb"), table=LOCAL_FIELD_TABLE
    )
    return sorted(warehouse.next_chunk(None, 10_000_000)["id"].to_list())


def landed_ids(lake: LocalLakehouse) -> list[int]:
    tables = ("bronze.field_readings", "bronze.field_dead_letters")
    return sorted(i for t in tables for i in lake.read(t)["id"].to_list())


@pytest.mark.slow
def test_end_to_end_materialises_every_asset_into_the_home(
    firepipe_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dagster_home = settings.ensure_dagster_home()
    assert dagster_home == firepipe_home / "dagster"
    seed()
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = run_end_to_end(instance)
        assert result.success
        registry = LocalModelRegistry(root=str(firepipe_home / "mlflow"))
        champion = registry.champion(MODEL_NAME) is not None
        materialised = {
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        }
        assert materialised == expected_assets(champion)
        if champion:  # the agents alarm when evaluate-real does, station by station
            (replayed,) = [
                e.materialization.metadata
                for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == "agents/nist_replay"
            ]
            stations = replayed["stations"].value
            assert stations > 0
            assert replayed["agree_with_evaluate_real"].value == stations
        checks = result.get_asset_check_evaluations()
        assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
        lake_checks = [c for c in checks if c.asset_key.path[0] != "analytics"]
        assert len(lake_checks) == LAKE_CHECKS
        assert len(checks) > LAKE_CHECKS  # the dbt tests
        distribution = next(c for c in checks if c.check_name == "distribution_vs_reference")
        assert "no reference" not in json.dumps(
            {k: str(v) for k, v in distribution.metadata.items()}
        )

        lake = LocalLakehouse(root=str(firepipe_home / "lake"))
        assert lake.list_tables() == expected_tables(champion)
        assert lake.table_rows("bronze.synthetic_readings") == ROWS
        assert lake.table_rows("gold.generator_validation") > 0
        bronze_partitions = {
            e.partition for e in result.get_asset_materialization_events() if e.partition
        }
        assert bronze_partitions == {f"{b}|{f}" for b in BATCHES for f in FAMILIES}
        # Every warehouse row landed exactly once, as a reading or a dead letter.
        assert landed_ids(lake) == source_ids(firepipe_home)
        assert lake.table_rows("bronze.field_dead_letters") == 3  # the seeded firmware faults
        # Two demo files landed; the truncated Parquet one went to quarantine.
        landed = lake.read("bronze.landed_readings")
        assert sorted(landed["source_file"].unique().str.split("/").list.last()) == [
            "gateway.jsonl",
            "gateway_us_units.csv",
        ]
        assert [p.name for p in (firepipe_home / "landing").rglob("*.parquet")] == [
            "truncated_upload.parquet"
        ]
        silver = lake.read("silver.sensor_readings")
        assert silver.height == silver.select("device_id", "ts").n_unique()
        readings = silver.filter(~pl.col("is_gap"))
        by_source = dict(readings.group_by("source").len().iter_rows())
        assert by_source["synthetic"] == ROWS
        assert by_source["landed"] == landed.height - 1  # the out-of-range humidity reading
        quarantine = lake.read("silver.quarantine")
        assert quarantine.select("rule", "source").rows() == [("out_of_range", "landed")]
        gold = lake.read("gold.sensor_features")
        assert set(default_spec().names) <= set(gold.columns)
        assert gold.height == readings.height
        assert gold.select("device_id").n_unique() == readings.select("device_id").n_unique()
        # The detector: trained on synthetic devices only, registered in the home's MLflow,
        # evaluated on every NIST station with commercial alarms, and judged.
        training = lake.read("ml.training_set")
        copies = training["device_id"].str.contains("~noise", literal=True)
        originals = training.filter(~copies)
        assert originals.height == by_source["synthetic"]
        learning = originals.filter(pl.col("split") != "test").height
        assert training.filter(copies).height == 2 * learning > 0  # two sensor copies each
        candidate = registry.version(MODEL_NAME, 1)
        assert candidate.approval_status in (promotion.APPROVED, promotion.REJECTED)
        assert registry.version_metrics(MODEL_NAME, 1)["real_stations"] == 29
        assert champion == (candidate.approval_status == promotion.APPROVED)
        if champion:  # the champion scored gold, every row once
            scores = lake.read("ml.scores")
            assert scores.height == gold.height
            assert scores["model_version"].unique().to_list() == [f"{MODEL_NAME}/1"]

        # Then the field stream delivers its next batch and a gateway uploads a file: the
        # sensors, the automation and the nightly retrain take both to gold and a new candidate
        # with no run started by hand.
        first = {t: lake.catalog().load_table(t).current_snapshot().snapshot_id for t in TABLES}
        seed()
        assert len(source_ids(firepipe_home)) > len(landed_ids(lake))  # the stream's new seconds
        zone = LocalLandingZone(root=str(firepipe_home / "landing"))
        zone.drop("gateway-7/later.jsonl", late_gateway_file())
        follow_without_a_click(instance, champion)

        assert landed_ids(lake) == source_ids(firepipe_home)  # only the new rows, once each
        second = {t: lake.catalog().load_table(t).current_snapshot().snapshot_id for t in TABLES}
        moved = {t for t in TABLES if first[t] != second[t]}
        untouched = {"bronze.synthetic_readings", "gold.generator_validation"}
        assert moved == set(TABLES) - untouched
        if champion:  # the new gold was scored by the champion
            assert lake.read("ml.scores").height == lake.read("gold.sensor_features").height
        silver = lake.read("silver.sensor_readings")
        assert silver.height == silver.select("device_id", "ts").n_unique()
        assert silver.filter(pl.col("device_id").str.starts_with("late-")).height > 0
        assert registry.version(MODEL_NAME, 2).tags["feature_spec_hash"] == default_spec().hash()
        assert registry.version(MODEL_NAME, 2).approval_status in (
            promotion.APPROVED,
            promotion.REJECTED,
        )


def late_gateway_file() -> bytes:
    """The demo JSON lines file as another gateway's devices would send it."""
    jsonl = next(v for k, v in landing_demo_files().items() if k.endswith(".jsonl"))
    return jsonl.replace(b'"landed-', b'"late-')


def follow_without_a_click(instance: dg.DagsterInstance, champion: bool) -> None:
    """What the daemon does: tick both sensors and run what they ask for, tick the automation
    until it asks for nothing, then tick the nightly retrain and run it. `champion`: the first
    run made one (so the endpoint, deployed then, follows the champion)."""
    definitions = defs()
    graph = definitions.resolve_asset_graph()
    assets = definitions.resolve_implicit_global_asset_job_def()
    repository = definitions.get_repository_def()
    resources = resources_for(settings.Environment.LOCAL, settings.local_paths())
    # The automation sensor has ticked before (its cursor holds what it has seen): the new
    # materialisations below are news to it.
    cursor = dg.evaluate_automation_conditions(defs=definitions, instance=instance).cursor
    for name in ("field_warehouse_sensor", "landing_sensor"):
        sensor = repository.get_sensor_def(name)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            request = sensor(context)
        assert isinstance(request, dg.RunRequest), (name, request)
        keys = sensor.asset_selection.resolve(graph)
        run = assets.execute_in_process(
            instance=instance, asset_selection=sorted(keys), tags=request.tags
        )
        assert run.success, name
    rounds = []
    while True:
        result = dg.evaluate_automation_conditions(
            defs=definitions, instance=instance, cursor=cursor
        )
        cursor = result.cursor
        keys = {r.key for r in result.results if r.true_subset.size}
        if not keys:
            break
        rounds.append({k.to_user_string() for k in keys})
        assert assets.execute_in_process(instance=instance, asset_selection=sorted(keys)).success
    # One round: silver, with what follows it eagerly in the same run.
    assert rounds == [
        {
            "silver/sensor_readings",
            "silver/quarantine",
            "gold/sensor_features",
            "ml/training_set",
            "ml/online_features",
            "ml/scores",  # with no champion it finds nothing to score
        }
        | DBT_MODELS
    ]
    night = datetime.now(UTC)
    tick = repository.get_schedule_def("nightly_retrain").evaluate_tick(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=night)
    )
    assert tick.run_requests is not None
    assert len(tick.run_requests) == 1, tick.skip_message
    assert definitions.resolve_job_def("retrain").execute_in_process(instance=instance).success
    after = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor)
    # evaluation and champion ran in the retrain; the scores and the agents' replay follow the
    # champion's run, and the endpoint too once it was deployed
    requested = {r.key.to_user_string() for r in after.results if r.true_subset.size}
    follow = {"ml/scores", "agents/nist_replay"}
    assert requested == (follow | {"ml/endpoint"} if champion else follow)


@pytest.mark.slow
def test_dagster_cli_run_then_summary(tmp_path: Path) -> None:
    """What `make run` does: `firepipe seed`, `dagster job execute`, then `firepipe summary`."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "FIREPIPE_HOME": str(home),
        "FIREPIPE_ENV": "local",
        "DAGSTER_HOME": str(home / "dagster"),
    }
    bin_dir = Path(sys.executable).parent
    for command in ("home", "seed"):
        subprocess.run([bin_dir / "firepipe", command], env=env, check=True, capture_output=True)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(RUN_CONFIG))  # JSON is YAML
    execute = [bin_dir / "dagster", "job", "execute", "-m", "firepipe.definitions"]
    done = subprocess.run(
        [*execute, "-j", "end_to_end", "-c", str(config)],  # the job names its partitions
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = subprocess.run(
        [bin_dir / "firepipe", "summary", "--json"], env=env, capture_output=True, text=True
    )
    assert summary.returncode == 0, summary.stderr
    report = json.loads(summary.stdout)
    assert report["status"] == "SUCCESS"
    assert report["tables"]["bronze.synthetic_readings"] == ROWS
    champion = LocalModelRegistry(root=str(home / "mlflow")).champion(MODEL_NAME) is not None
    assert set(report["tables"]) == set(expected_tables(champion))
    assert {m["asset"] for m in report["materialisations"]} == expected_assets(champion)
    assert str(home / "lake") in report["where"]["warehouse"]

    text = subprocess.run(
        [bin_dir / "firepipe", "summary"], env=env, capture_output=True, text=True
    ).stdout
    assert f"Assets materialised ({len(expected_assets(champion))})" in text
    assert "bronze/synthetic_readings (8 partitions)" in text
    assert "median" in text
    passed = len(report["checks"])
    assert passed > LAKE_CHECKS
    assert f"Asset checks: {passed} of {passed} passed" in text
    assert "SDC02" in text  # the NIST comparison's errors
    lake = LocalLakehouse(root=str(home / "lake"))
    bronze = lake.read("bronze.synthetic_readings")
    assert bronze.filter(pl.col("is_fire")).select("device_id").n_unique() >= 1
