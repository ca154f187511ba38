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
from firepipe.settings import NIST_DATA_VAR
from firepipe_tests.conftest import nist_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"devices": 6, "duration_s": 300, "seed": 11}
RUN_CONFIG = {"ops": {"bronze__synthetic_readings": {"config": SMALL}}}
# What `make run` passes: batches 000 and 001 of every scenario family, in one run (bronze's
# partitions); 001 is checked against the reference batch 000.
FAMILIES = ("baseline", "flaming", "smouldering", "nuisance")
BATCHES = ("000", "001")
RUN_TAGS = {
    "dagster/asset_partition_range_start": "000|baseline",
    "dagster/asset_partition_range_end": "001|nuisance",
}
ROWS = len(BATCHES) * len(FAMILIES) * SMALL["devices"] * SMALL["duration_s"]
READING_TABLES = ["bronze.synthetic_readings", "gold.sensor_features", "silver.sensor_readings"]
VALIDATION = "gold.generator_validation"
TABLES = sorted([*READING_TABLES, VALIDATION])
# bronze: schema, physical_ranges, label_consistency, scenario_mix, distribution_vs_reference;
# silver and gold: one each.
CHECKS = 7


def run_end_to_end(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def("end_to_end")
    return job.execute_in_process(run_config=RUN_CONFIG, instance=instance, tags=RUN_TAGS)


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
        assert len(checks) == CHECKS
        assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
        distribution = next(c for c in checks if c.check_name == "distribution_vs_reference")
        assert "no reference" not in json.dumps(
            {k: str(v) for k, v in distribution.metadata.items()}
        )

        lake = LocalLakehouse(root=str(firepipe_home / "lake"))
        assert lake.list_tables() == TABLES
        rows = ROWS
        assert {t: lake.table_rows(t) for t in READING_TABLES} == dict.fromkeys(
            READING_TABLES, rows
        )
        assert lake.table_rows(VALIDATION) > 0
        bronze_partitions = {
            e.partition for e in result.get_asset_materialization_events() if e.partition
        }
        assert bronze_partitions == {f"{b}|{f}" for b in BATCHES for f in FAMILIES}
        gold = lake.read("gold.sensor_features")
        assert set(default_spec().names) <= set(gold.columns)
        assert (
            gold.select("device_id").n_unique() == len(BATCHES) * len(FAMILIES) * SMALL["devices"]
        )

        # Running it again replaces every table: same rows, nothing duplicated.
        first = {t: lake.catalog().load_table(t).current_snapshot().snapshot_id for t in TABLES}
        assert run_end_to_end(instance).success
        assert {t: lake.table_rows(t) for t in READING_TABLES} == dict.fromkeys(
            READING_TABLES, rows
        )
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
        NIST_DATA_VAR: nist_data_dir(),
    }
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "firepipe", "home"], env=env, check=True, capture_output=True)
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(RUN_CONFIG))  # JSON is YAML
    execute = [bin_dir / "dagster", "job", "execute", "-m", "firepipe.definitions"]
    done = subprocess.run(
        [*execute, "-j", "end_to_end", "-c", str(config), "--tags", json.dumps(RUN_TAGS)],
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
    assert {t: report["tables"][t] for t in READING_TABLES} == dict.fromkeys(READING_TABLES, ROWS)
    assert set(report["tables"]) == set(TABLES)
    assert {m["asset"] for m in report["materialisations"]} == {t.replace(".", "/") for t in TABLES}
    assert str(home / "lake") in report["where"]["warehouse"]

    text = subprocess.run(
        [bin_dir / "firepipe", "summary"], env=env, capture_output=True, text=True
    ).stdout
    # bronze (its eight partitions on one line), silver, gold and the NIST validation.
    assert "Assets materialised (4)" in text
    assert "bronze/synthetic_readings (8 partitions)" in text
    assert "median" in text
    assert f"Asset checks: {CHECKS} of {CHECKS} passed" in text
    assert "SDC02" in text  # the NIST comparison's errors
    lake = LocalLakehouse(root=str(home / "lake"))
    bronze = lake.read("bronze.synthetic_readings")
    assert bronze.filter(pl.col("is_fire")).select("device_id").n_unique() >= 1
