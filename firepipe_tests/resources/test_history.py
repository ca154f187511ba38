"""The generation history: one contract, run against SQLite and against DynamoDB on moto."""

import getpass
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from firepipe import settings
from firepipe.cli import main
from firepipe.core.history import GenerationRecord
from firepipe.resources import resource_for, resources_for
from firepipe.resources.history import (
    DynamoGenerationHistory,
    GenerationHistory,
    SqliteGenerationHistory,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
READINGS = "bronze/synthetic_readings"


def entry(run: str, partition: str | None, minutes: int, **changes) -> GenerationRecord:
    fields = {
        "run_id": run,
        "asset_key": READINGS,
        "partition_key": partition,
        "spec": {"devices": 24, "duration_s": 600, "families": ["flaming"]},
        "seed": 2**63 + minutes,  # beyond a signed 64-bit integer on purpose
        "rows": 14_400,
        "location": f"s3://lake/bronze/synthetic_readings/{partition}",
        "started_at": T0 + timedelta(minutes=minutes),
        "duration_s": 1.25,
        "backend": "numpy",
        "status": "succeeded",
        "user": "ana",
        "host": "worker-1",
        "dagster_job": "end_to_end",
        "dagster_run_id": run,
    }
    return GenerationRecord(**{**fields, **changes})


@pytest.fixture(params=["sqlite", pytest.param("dynamodb", marks=pytest.mark.aws)])
def store(request, tmp_path: Path) -> GenerationHistory:
    if request.param == "sqlite":
        return SqliteGenerationHistory(path=str(tmp_path / "state" / "history.db"))
    request.getfixturevalue("aws_credentials")
    dynamo = DynamoGenerationHistory(
        table_name=f"history-{uuid.uuid4().hex[:8]}",
        region="eu-west-1",
        endpoint_url=request.getfixturevalue("moto_endpoint"),
    )
    dynamo.ensure_table()
    dynamo.ensure_table()  # a second call finds the table
    return dynamo


def test_an_empty_history_has_no_records(store: GenerationHistory) -> None:
    assert store.recent(5) == []


def test_records_round_trip_every_field(store: GenerationHistory) -> None:
    first = entry("run-a", "flaming|000", 0)
    bare = entry("run-b", None, 1, dagster_job=None, dagster_run_id=None, duration_s=0.1)
    store.record(first)
    store.record(bare)
    assert store.recent(10) == [bare, first]


def test_recent_is_newest_first_limited_and_per_asset(store: GenerationHistory) -> None:
    for minutes, partition in [(5, "flaming|001"), (1, "flaming|000"), (9, "nuisance|000")]:
        store.record(entry(f"run-{minutes}", partition, minutes))
    store.record(entry("run-features", None, 7, asset_key="gold/sensor_features"))
    assert [r.run_id for r in store.recent(10)] == ["run-9", "run-features", "run-5", "run-1"]
    assert [r.run_id for r in store.recent(2)] == ["run-9", "run-features"]
    assert [r.run_id for r in store.recent(2, asset_key=READINGS)] == ["run-9", "run-5"]
    assert [r.run_id for r in store.recent(5, asset_key="gold/sensor_features")] == ["run-features"]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        store.recent(0)


def test_recording_a_run_and_partition_again_replaces_it(store: GenerationHistory) -> None:
    store.record(entry("run-a", "flaming|000", 0, status="failed", rows=0))
    store.record(entry("run-a", "flaming|001", 1))
    store.record(entry("run-a", "flaming|000", 2, rows=99))
    records = store.recent(10)
    assert [(r.partition_key, r.rows, r.status) for r in records] == [
        ("flaming|000", 99, "succeeded"),
        ("flaming|001", 14_400, "succeeded"),
    ]


def test_a_runs_records_are_found_by_run_id_however_old(store: GenerationHistory) -> None:
    store.record(entry("run-a", "flaming|001", 0))
    store.record(entry("run-a", "flaming|000", 1))
    store.record(entry("run-a", None, 2, asset_key="gold/sensor_features"))
    store.record(entry("run-ab", "flaming|002", 3))  # its id starts with the other's
    for minutes in range(4, 30):
        store.record(entry(f"run-{minutes}", "nuisance|001", minutes))
    assert [r.partition_key for r in store.of_run(READINGS, "run-a")] == [
        "flaming|000",
        "flaming|001",
    ]
    assert [r.asset_key for r in store.of_run("gold/sensor_features", "run-a")] == [
        "gold/sensor_features"
    ]
    assert store.of_run(READINGS, "run-zz") == []


def test_bad_records_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        entry("r", None, 0, status="done")
    with pytest.raises(ValueError, match="timezone-aware"):
        entry("r", None, 0, started_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="JSON-serialisable"):
        entry("r", None, 0, spec={"start": datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match=">= 0"):
        entry("r", None, 0, rows=-1)


def test_who_ran_it_defaults_to_this_user_and_host() -> None:
    fields = {k: v for k, v in vars(entry("r", None, 0)).items() if k not in ("user", "host")}
    record = GenerationRecord(**fields)
    assert record.user == getpass.getuser()
    assert record.host == socket.gethostname()


def test_resources_bind_sqlite_locally_and_dynamodb_in_aws(firepipe_home: Path) -> None:
    paths = settings.local_paths()
    local = resources_for(settings.Environment.LOCAL, paths)["generation_history"]
    assert isinstance(local, SqliteGenerationHistory)
    assert Path(local.path) == firepipe_home / "generation_history.db"
    aws = resource_for("generation_history", settings.Environment.AWS, paths)
    assert isinstance(aws, DynamoGenerationHistory)


def test_history_command_lists_the_local_records(firepipe_home: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(main, ["history"], catch_exceptions=False)
    assert empty.exit_code == 0
    assert "no generation runs recorded" in empty.output
    store = SqliteGenerationHistory(path=str(settings.local_paths().generation_history))
    store.record(entry("run-old", "flaming|000", 0))
    store.record(entry("run-new", "nuisance|003", 3, rows=1_234_567))

    table = runner.invoke(main, ["history", "--limit", "1"], catch_exceptions=False)
    lines = table.output.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[:5] == ["2026-03-01", "12:03:00", READINGS, "nuisance|003", "1,234,567"]
    assert lines[1].endswith("ana@worker-1")

    as_json = runner.invoke(main, ["history", "--json"], catch_exceptions=False)
    rows = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["run_id"] for r in rows] == ["run-new", "run-old"]
    assert json.loads(rows[0]["spec"])["families"] == ["flaming"]
    assert runner.invoke(main, ["history", "--limit", "0"]).exit_code == 2
