"""The main job, run the way users run it, in a throwaway FIREPIPE_HOME."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from firepipe import settings
from firepipe.core.features import default_spec
from firepipe.definitions import defs
from firepipe.resources.lakehouse.catalogs import LocalLakehouse

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"devices": 6, "duration_s": 300, "seed": 11}
RUN_CONFIG = {"ops": {"bronze__synthetic_readings": {"config": SMALL}}}
TABLES = ["bronze.synthetic_readings", "gold.sensor_features", "silver.sensor_readings"]


def run_end_to_end(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("end_to_end")
    return job.execute_in_process(run_config=RUN_CONFIG, instance=instance)


def test_end_to_end_materialises_every_asset_into_the_home(firepipe_home: Path) -> None:
    dagster_home = settings.ensure_dagster_home()
    assert dagster_home == firepipe_home / "dagster"
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        result = run_end_to_end(instance)
        assert result.success
        materialised = {
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        }
        assert materialised == {t.replace(".", "/") for t in TABLES}
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3
        assert all(c.passed for c in checks)

        lake = LocalLakehouse(root=str(firepipe_home / "lake"))
        assert lake.list_tables() == TABLES
        rows = SMALL["devices"] * SMALL["duration_s"]
        assert {t: lake.table_rows(t) for t in TABLES} == dict.fromkeys(TABLES, rows)
        gold = lake.read("gold.sensor_features")
        assert set(default_spec().names) <= set(gold.columns)
        assert gold.select("device_id").n_unique() == SMALL["devices"]

        # Running it again replaces every table: same rows, nothing duplicated.
        first = {t: lake.catalog().load_table(t).current_snapshot().snapshot_id for t in TABLES}
        assert run_end_to_end(instance).success
        assert {t: lake.table_rows(t) for t in TABLES} == dict.fromkeys(TABLES, rows)
        second = {t: lake.catalog().load_table(t).current_snapshot().snapshot_id for t in TABLES}
        assert all(first[t] != second[t] for t in TABLES)
        silver = lake.read("silver.sensor_readings")
        assert silver.height == silver.select("device_id", "ts").n_unique()


@pytest.mark.slow
def test_dagster_cli_run_then_summary(tmp_path: Path) -> None:
    """What `make run` does: `dagster job execute`, then `firepipe summary`."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "FIREPIPE_HOME": str(home),
        "FIREPIPE_ENV": "local",
        "DAGSTER_HOME": str(home / "dagster"),
    }
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "firepipe", "home"], env=env, check=True, capture_output=True)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(RUN_CONFIG))  # JSON is YAML
    execute = [bin_dir / "dagster", "job", "execute", "-m", "firepipe.definitions"]
    done = subprocess.run(
        [*execute, "-j", "end_to_end", "-c", str(config)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = subprocess.run(
        [bin_dir / "firepipe", "summary", "--json"], env=env, capture_output=True, text=True
    )
    assert summary.returncode == 0, summary.stderr
    report = json.loads(summary.stdout)
    assert report["status"] == "SUCCESS"
    rows = SMALL["devices"] * SMALL["duration_s"]
    assert report["tables"] == dict.fromkeys(TABLES, rows)
    assert {m["asset"] for m in report["materialisations"]} == {t.replace(".", "/") for t in TABLES}
    assert str(home / "lake") in report["where"]["warehouse"]

    text = subprocess.run(
        [bin_dir / "firepipe", "summary"], env=env, capture_output=True, text=True
    ).stdout
    assert "Assets materialised (3)" in text
    assert "Asset checks: 3 of 3 passed" in text
    lake = LocalLakehouse(root=str(home / "lake"))
    bronze = lake.read("bronze.synthetic_readings")
    assert bronze.filter(pl.col("is_fire")).select("device_id").n_unique() >= 1
