"""firepipe's instance refuses a run whose partition selection cannot work before the run is
stored: checked on the real jobs, and through `dagster job execute` in a fresh home."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from firepipe import settings
from firepipe.definitions import defs
from firepipe.lib.instance import (
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    PartitionSelectionError,
    agreeing_tags,
    partition_selection_problem,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC = dg.AssetKey(["bronze", "synthetic_readings"])


@pytest.fixture
def definitions(firepipe_home: Path) -> dg.Definitions:
    return defs()


def problem(
    definitions: dg.Definitions,
    job: str,
    tags: dict[str, str],
    asset_selection: list[dg.AssetKey] | None = None,
) -> str:
    job_def = definitions.resolve_job_def(job)
    return partition_selection_problem(job_def, tags, asset_selection) or ""


def test_a_range_of_existing_keys_or_one_key_is_accepted(definitions: dg.Definitions) -> None:
    job = definitions.resolve_job_def("end_to_end")
    assert partition_selection_problem(job, job.run_tags) is None  # the job's own range
    one = {RANGE_START_TAG: "003|flaming", RANGE_END_TAG: "003|flaming"}
    assert partition_selection_problem(job, one) is None
    assert partition_selection_problem(job, {PARTITION_TAG: "015|nuisance"}) is None


def test_one_partition_named_replaces_the_jobs_range(firepipe_home: Path) -> None:
    """The launchpad and `--tags` add dagster/partition to the job's own range tags, a mix
    Dagster refuses: the one partition is what the user chose."""
    job = defs().resolve_job_def("end_to_end")
    assert agreeing_tags({**job.run_tags, PARTITION_TAG: "003|flaming"}) == {
        PARTITION_TAG: "003|flaming"
    }
    assert agreeing_tags(job.run_tags) == job.run_tags
    with dg.DagsterInstance.from_config(str(settings.ensure_dagster_home())) as instance:
        run = instance.create_run_for_job(job, tags={**job.run_tags, PARTITION_TAG: "003|flaming"})
        assert run.tags[PARTITION_TAG] == "003|flaming"
        assert RANGE_START_TAG not in run.tags
        assert RANGE_END_TAG not in run.tags
        # The path of the UI, sensors and schedules: a run made from the job's snapshot.
        launched = create_run_for_test(
            instance, job_name="end_to_end", tags={**job.run_tags, PARTITION_TAG: "000|nuisance"}
        )
        assert launched.tags == {PARTITION_TAG: "000|nuisance"}


@pytest.mark.parametrize(
    ("tags", "says"),
    [
        ({}, "bronze/synthetic_readings is partitioned and the run names no partition"),
        ({RANGE_START_TAG: "000|baseline"}, "needs both"),
        (
            {RANGE_START_TAG: "000|baseline", RANGE_END_TAG: "016|nuisance"},
            "no partition '016|nuisance'; its keys run from '000|baseline' to '015|nuisance'",
        ),
        (
            {RANGE_START_TAG: "002|baseline", RANGE_END_TAG: "001|nuisance"},
            "starts at '002|baseline', after its end '001|nuisance'",
        ),
        ({PARTITION_TAG: "baseline|000"}, "no partition 'baseline|000'"),
    ],
)
def test_a_selection_that_cannot_work_is_named(
    definitions: dg.Definitions, tags: dict[str, str], says: str
) -> None:
    assert says in problem(definitions, "end_to_end", tags)


def test_runs_without_partitioned_assets_need_no_tags(definitions: dg.Definitions) -> None:
    assert problem(definitions, "field_extraction", {}) == ""
    assert problem(definitions, "retrain", {}) == ""
    silver = [dg.AssetKey(["silver", "sensor_readings"])]
    assert problem(definitions, "end_to_end", {}, asset_selection=silver) == ""
    assert "partitioned" in problem(definitions, "end_to_end", {}, asset_selection=[SYNTHETIC])


def test_the_instance_refuses_before_storing_the_run(firepipe_home: Path) -> None:
    home = settings.ensure_dagster_home()
    job = defs().resolve_job_def("end_to_end")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        with pytest.raises(PartitionSelectionError, match=r"end_to_end: .* no partition"):
            instance.create_run_for_job(job, tags={RANGE_START_TAG: "000|x", RANGE_END_TAG: "0"})
        assert instance.get_runs() == []


@pytest.mark.slow
def test_dagster_job_execute_refuses_a_bad_range_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "FIREPIPE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "firepipe", "home"], env=env, check=True, capture_output=True)
    tags = {RANGE_START_TAG: "000|baseline", RANGE_END_TAG: "099|nuisance"}
    execute = [bin_dir / "dagster", "job", "execute", "-m", "firepipe.definitions"]
    done = subprocess.run(
        [*execute, "-j", "end_to_end", "--tags", json.dumps(tags)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: end_to_end: bronze/synthetic_readings has no partition '099|nuisance'; "
        "its keys run from '000|baseline' to '015|nuisance'"
    ]
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        assert instance.get_runs() == []
