"""bronze/synthetic_readings materialised in process: one partition, its history, and a failure."""

from collections.abc import Hashable, Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import dagster as dg
import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from firepipe.cli import main
from firepipe.core.simulation.partitions import partition_seed
from firepipe.defs.generation.assets import ASSET_KEY, TABLE, synthetic_readings
from firepipe.lib import pipes_subprocesses
from firepipe.resources.compute import (
    GenerationProgress,
    GenerationReport,
    GenerationRequest,
    LocalCompute,
)
from firepipe.resources.history import SqliteGenerationHistory
from firepipe.resources.lakehouse import LocalLakehouse

pytestmark = pytest.mark.slow
K = TypeVar("K", bound=Hashable)
CONFIG = {"ops": {"bronze__synthetic_readings": {"config": {"devices": 5, "duration_s": 120}}}}


class SecondPartitionFails(LocalCompute):
    """The local compute whose second partition's generator fails (its output folder lies under
    a file); with one process at a time, the third never starts."""

    order: ClassVar[list[Hashable]] = []  # the keys of its last run

    def generate_all(
        self,
        context: dg.AssetExecutionContext,
        requests: Mapping[K, GenerationRequest],
        progress: GenerationProgress[K] | None = None,
    ) -> dict[K, GenerationReport]:
        SecondPartitionFails.order[:] = list(requests)
        second = list(requests)[1]
        blocked = Path(requests[second].directory)
        blocked.parent.mkdir(parents=True)
        blocked.write_text("a file where the output folder should be")
        broken = replace(requests[second], directory=str(blocked / "out"))
        return super().generate_all(context, {**requests, second: broken}, progress)


class MislabellingCompute(LocalCompute):
    """Generates, then corrupts the labels of its files as a buggy generator image would."""

    def generate_all(
        self,
        context: dg.AssetExecutionContext,
        requests: Mapping[K, GenerationRequest],
        progress: GenerationProgress[K] | None = None,
    ) -> dict[K, GenerationReport]:
        reports = super().generate_all(context, requests, progress)
        for path in (f for report in reports.values() for f in report.files):
            frame = pl.read_parquet(path)
            frame.with_columns(pl.lit(True).alias("is_fire")).write_parquet(path)
        return reports


def materialise(
    tmp_path: Path, partition: str, compute: LocalCompute, run_config: dict = CONFIG
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [synthetic_readings],
        partition_key=partition,
        run_config=run_config,
        resources={
            "lakehouse": LocalLakehouse(root=str(tmp_path / "lake")),
            "generator_compute": compute,
            "generation_history": SqliteGenerationHistory(path=str(tmp_path / "history.db")),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def materialise_range(
    tmp_path: Path, first: str, last: str, compute: LocalCompute
) -> dg.ExecuteInProcessResult:
    """One run of the partitions from `first` to `last` (a backfill's single run)."""
    return dg.materialize(
        [synthetic_readings],
        run_config=CONFIG,
        resources={
            "lakehouse": LocalLakehouse(root=str(tmp_path / "lake")),
            "generator_compute": compute,
            "generation_history": SqliteGenerationHistory(path=str(tmp_path / "history.db")),
        },
        instance=dg.DagsterInstance.ephemeral(),
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


def test_one_partition_lands_with_its_checks_and_history(tmp_path: Path) -> None:
    result = materialise(tmp_path, "003|smouldering", LocalCompute())
    assert result.success
    lake = LocalLakehouse(root=str(tmp_path / "lake"))
    rows = lake.read(TABLE)
    assert rows.height == 5 * 120
    assert rows.select("scenario_family", "batch").unique().rows() == [("smouldering", "003")]
    [materialisation] = result.get_asset_materialization_events()
    metadata = materialisation.materialization.metadata
    assert metadata["dagster/row_count"].value == 600  # one partition: its own rows
    columns = [c.name for c in metadata["dagster/column_schema"].value.columns]
    assert columns[:3] == ["site_id", "device_id", "ts"]
    assert "batch" in columns
    assert (
        rows["device_id"].str.starts_with(f"syn-{partition_seed(0, 'smouldering', '003')}-").all()
    )
    assert {c.check_name: c.passed for c in result.get_asset_check_evaluations()} == {
        "schema": True,
        "physical_ranges": True,
        "label_consistency": True,
        "scenario_mix": True,
        "distribution_vs_reference": True,  # no batch 000 yet: nothing to compare with
    }
    [record] = SqliteGenerationHistory(path=str(tmp_path / "history.db")).recent()
    assert (record.asset_key, record.partition_key) == (
        ASSET_KEY.to_user_string(),
        "003|smouldering",
    )
    seed = partition_seed(0, "smouldering", "003")
    assert (record.status, record.rows, record.seed) == ("succeeded", 600, seed)
    assert record.spec["families"] == ["smouldering"]
    assert record.dagster_run_id == result.run_id


def test_a_failed_partition_commits_nothing_and_records_only_what_started(
    tmp_path: Path,
) -> None:
    compute = SecondPartitionFails(max_concurrent=1)
    result = materialise_range(tmp_path, "000|baseline", "000|smouldering", compute)
    assert not result.success
    lake = LocalLakehouse(root=str(tmp_path / "lake"))
    assert TABLE not in lake.list_tables()
    staged = tmp_path / "lake" / "warehouse" / "bronze" / "synthetic_readings" / "data" / "staged"
    assert not list(staged.rglob("*.parquet"))  # the run's staged files were discarded
    cells = SecondPartitionFails.order
    assert len(cells) == 3
    finished, broken = (cell.key for cell in cells[:2])  # type: ignore[attr-defined]
    history = SqliteGenerationHistory(path=str(tmp_path / "history.db")).recent()
    records = {r.partition_key: r for r in history}
    assert set(records) == {finished, broken}  # the third partition never started
    assert {r.status for r in history} == {"failed"}  # nothing of the run was committed
    # The first finished: its own rows and generator seconds. The second was the failure.
    assert records[finished].rows == 5 * 120
    assert records[finished].duration_s > 0
    assert records[broken].rows == 0
    # Each has its own start: one process at a time, the second began after the first ended.
    ended = records[finished].started_at + timedelta(seconds=records[finished].duration_s)
    assert records[broken].started_at >= ended


def test_rows_failing_a_blocking_check_are_never_committed(tmp_path: Path) -> None:
    result = materialise(tmp_path, "000|nuisance", MislabellingCompute())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "label_consistency" in failure.step_failure_data.error.message
    evaluations = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert evaluations["label_consistency"] is False  # in the check history, not only the error
    assert evaluations["schema"] is True
    assert TABLE not in LocalLakehouse(root=str(tmp_path / "lake")).list_tables()
    [record] = SqliteGenerationHistory(path=str(tmp_path / "history.db")).recent()
    # Generated, then refused by a blocking check: not committed, its rows still counted.
    assert (record.status, record.rows) == ("failed", 5 * 120)


class TracedProcess(pipes_subprocesses._Process):
    """A generator process that notes when the runner started it and when it saw it finish."""

    events: ClassVar[list[str]] = []

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        TracedProcess.events.append("start")

    def finish(self) -> dg.PipesSession:
        TracedProcess.events.append("finish")
        return super().finish()


def test_partitions_of_one_run_generate_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TracedProcess, "events", [])
    monkeypatch.setattr(pipes_subprocesses, "_Process", TracedProcess)
    result = materialise_range(
        tmp_path, "000|baseline", "000|nuisance", LocalCompute(max_concurrent=3)
    )
    assert result.success
    # Three processes started before the first finished; the fourth took the first free slot.
    assert TracedProcess.events[:4] == ["start", "start", "start", "finish"]
    assert TracedProcess.events.count("start") == 4
    lakehouse = LocalLakehouse(root=str(tmp_path / "lake"))
    rows = lakehouse.read(TABLE)
    assert rows.group_by("scenario_family").len().sort("scenario_family").rows() == [
        ("baseline", 600),
        ("flaming", 600),
        ("nuisance", 600),
        ("smouldering", 600),
    ]
    # Generated side by side, committed once: one snapshot holds every partition's one file.
    table = lakehouse.catalog().load_table(TABLE)
    assert len(table.snapshots()) == 1
    files = table.inspect.files()["file_path"].to_pylist()
    assert sorted(f.split("/")[-3] for f in files) == [
        "scenario_family=baseline",
        "scenario_family=flaming",
        "scenario_family=nuisance",
        "scenario_family=smouldering",
    ]
    history = SqliteGenerationHistory(path=str(tmp_path / "history.db")).recent()
    assert sorted(r.partition_key for r in history) == [
        "000|baseline",
        "000|flaming",
        "000|nuisance",
        "000|smouldering",
    ]
    assert {r.status for r in history} == {"succeeded"}
    # Each partition has its own start; the run's rate is per second of its wall time, and
    # the generators' own seconds are reported apart, added up.
    assert len({r.started_at for r in history}) == 4
    events = result.get_asset_materialization_events()  # one a partition, the run's metadata
    assert len(events) == 4
    metadata = {k: v.value for k, v in events[0].materialization.metadata.items()}
    wall_s = metadata["generation_wall_s"]
    assert wall_s >= max(r.duration_s for r in history) - 0.001
    assert metadata["rows_per_wall_s"] == pytest.approx(2400 / wall_s, rel=0.01)
    summed = metadata["generation_s_summed_over_partitions"]
    assert summed == pytest.approx(sum(r.duration_s for r in history), abs=0.002)


def test_the_cli_makes_the_same_bytes_as_the_asset_for_a_partition(tmp_path: Path) -> None:
    # Partition (nuisance, 007) under config seed 3 with a run config of its own, through the
    # asset (generator subprocess, staged, checked, committed) and through `firepipe generate`.
    config = {"devices": 6, "duration_s": 90, "seed": 3, "sites": 2, "fault_share": 0.5}
    run_config = {"ops": {"bronze__synthetic_readings": {"config": config}}}
    assert materialise(tmp_path, "007|nuisance", LocalCompute(), run_config).success
    out = tmp_path / "cli"
    partition = ["--family", "nuisance", "--batch", "7", "--seed", "3"]
    settings = ["--devices", "6", "--duration-s", "90", "--sites", "2", "--fault-share", "0.5"]
    result = CliRunner().invoke(main, ["generate", *partition, *settings, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lake = LocalLakehouse(root=str(tmp_path / "lake"))
    [committed] = lake.catalog().load_table(TABLE).inspect.files()["file_path"].to_pylist()
    assert committed.endswith("/scenario_family=nuisance/batch=007/part-00000.parquet")
    cli_file = out / "part-00000.parquet"
    assert Path(committed.removeprefix("file://")).read_bytes() == cli_file.read_bytes()
    cli_rows = pl.read_parquet(cli_file)
    assert cli_rows.height == 6 * 90
    assert cli_rows["device_id"][0] == "syn-33007-0"  # seed 3 * 10_000 + nuisance 3_000 + 7
    assert_frame_equal(lake.read(TABLE).sort("device_id", "ts"), cli_rows.sort("device_id", "ts"))
