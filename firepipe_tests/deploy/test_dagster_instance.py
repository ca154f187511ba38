"""The production Dagster instance configs (docker/dagster.yaml on ECS, docker/dagster.compose.yaml
for the compose deployment): valid for Dagster's own schemas, consistent with each other and
with firepipe's local instance, and a firepipe asset run on a real PostgreSQL-backed instance."""

from __future__ import annotations

import copy
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.tags import TagConcurrencyLimitsCounter
from dagster_postgres.utils import pg_url_from_config
from sqlalchemy.engine import make_url

from firepipe import settings
from firepipe.defs.generation.assets import ASSET_KEY, synthetic_readings
from firepipe.lib.instance import FirepipeInstance, PartitionSelectionError
from firepipe.resources.compute import LocalCompute
from firepipe.resources.history import SqliteGenerationHistory
from firepipe.resources.lakehouse import LocalLakehouse
from firepipe.services.actions import runs as runs_module
from firepipe.services.actions.runs import LAUNCH_LOCK_KEY, DagsterRuns, NoInstanceError
from firepipe_tests.conftest import REPO_ROOT
from firepipe_tests.deploy.conftest import Postgres

ECS = REPO_ROOT / "docker" / "dagster.yaml"
COMPOSE = REPO_ROOT / "docker" / "dagster.compose.yaml"
# What the CDK app (ECS) or the compose file gives the tasks, with test values.
ENV = {
    "DAGSTER_PG_HOST": "dagster.cluster-x.eu-west-1.rds.amazonaws.com",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "s3cret/pw",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_PG_PASSWORD_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:db-AbC:password::",
    "DAGSTER_RUN_TASK_ROLE_ARN": "arn:aws:iam::1:role/firepipe-run",
    "DAGSTER_RUN_EXECUTION_ROLE_ARN": "arn:aws:iam::1:role/firepipe-run-execution",
    "DAGSTER_RUN_LOG_GROUP": "/firepipe/dagster/runs",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "firepipe-dagster-logs",
    "DAGSTER_COMPUTE_LOGS_PREFIX": "compute-logs",
}
CONFIG = {"ops": {"bronze__synthetic_readings": {"config": {"devices": 3, "duration_s": 60}}}}
PARTITION = "003|smouldering"


def load(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict)
    return config


def instance_home(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def validate(home: Path) -> InstanceRef:
    """Check the instance folder's dagster.yaml as Dagster does when it loads one: the instance
    schema (with the instance class's own keys), then each configured class's config against
    that class's `config_type()`, env references resolved (ConfigurableClassData.rehydrate),
    without constructing the classes (the ECS launcher would call AWS, storage would connect)."""
    ref = InstanceRef.from_dir(str(home))
    for data in class_data(ref):
        klass = getattr(importlib.import_module(data.module_name), data.class_name)
        result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
        if not result.success:
            raise DagsterInvalidConfigError(
                f"{data.class_name}'s config is invalid", result.errors, data.config_dict
            )
    return ref


def class_data(ref: InstanceRef) -> list[ConfigurableClassData]:
    """The configurable classes the instance would construct (the instance class itself has
    no config of its own: its keys were checked with the instance schema)."""
    fields = [v for k, v in ref._asdict().items() if k != "custom_instance_class_data"]
    return [v for v in fields if isinstance(v, ConfigurableClassData)]


def processed(data: ConfigurableClassData | None) -> dict[str, Any]:
    """A class's config as its constructor would get it (defaults filled, env resolved)."""
    assert data is not None
    klass = getattr(importlib.import_module(data.module_name), data.class_name)
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    assert result.success, result.errors
    return dict(result.value or {})


def env_references(node: object) -> set[str]:
    """The variables a config reads through `env:` references."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {str(node["env"])}
        return set().union(*(env_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node))
    return set()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("env")
def test_ecs_instance_is_valid_and_reads_its_settings_from_the_environment(tmp_path: Path) -> None:
    ref = validate(instance_home(tmp_path, load(ECS)))
    assert ref.custom_instance_class_data is not None
    assert ref.custom_instance_class_data.class_name == FirepipeInstance.__name__
    assert ref.storage_data is not None
    assert ref.storage_data.class_name == "DagsterPostgresStorage"
    url = make_url(pg_url_from_config(processed(ref.storage_data)))
    assert url.drivername == "postgresql+psycopg2"  # psycopg 3 is not installed
    assert (url.username, url.password) == ("dagster", "s3cret/pw")
    assert (url.host, url.port, url.database) == (ENV["DAGSTER_PG_HOST"], 5432, "dagster")
    assert dict(url.query) == {"sslmode": "require"}
    launcher = processed(ref.run_launcher_data)
    assert ref.run_launcher_data is not None
    assert ref.run_launcher_data.class_name == "EcsRunLauncher"
    assert launcher["task_definition"]["task_role_arn"] == ENV["DAGSTER_RUN_TASK_ROLE_ARN"]
    assert launcher["task_definition"]["log_group"] == "/firepipe/dagster/runs"
    assert launcher["secrets"] == [
        {"name": "DAGSTER_PG_PASSWORD", "valueFrom": ENV["DAGSTER_PG_PASSWORD_SECRET_ARN"]}
    ]
    assert launcher["secrets_tag"] is None  # no ListSecrets on every launch
    # include_sidecars applies to a task definition copied from the daemon's task only: with
    # task_definition given, the launcher never reads it, so the file does not set it.
    assert "include_sidecars" not in load(ECS)["run_launcher"]["config"]
    assert len(launcher["task_definition_prefix"]) <= 16  # the launcher's own limit
    logs = processed(ref.compute_logs_data)
    assert (logs["bucket"], logs["prefix"]) == ("firepipe-dagster-logs", "compute-logs")
    assert ref.run_coordinator_data is not None
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    monitoring = ref.settings["run_monitoring"]
    assert isinstance(monitoring, dict)
    assert monitoring["enabled"] is True
    assert ref.settings["telemetry"] == {"enabled": False}


@pytest.mark.usefixtures("env")
def test_compose_instance_is_valid(tmp_path: Path) -> None:
    ref = validate(instance_home(tmp_path, load(COMPOSE)))
    assert ref.run_launcher_data is not None
    assert ref.run_launcher_data.class_name == "DefaultRunLauncher"
    url = make_url(pg_url_from_config(processed(ref.storage_data)))
    assert (url.drivername, url.host, url.password) == (
        "postgresql+psycopg2",
        ENV["DAGSTER_PG_HOST"],
        "s3cret/pw",
    )
    assert dict(url.query) == {}  # no TLS inside the compose network


def _misspell(path: list[str], new: str) -> Callable[[dict[str, Any]], None]:
    def change(config: dict[str, Any]) -> None:
        node = config
        for key in path[:-1]:
            node = node[key]
        node[new] = node.pop(path[-1])

    return change


def _drop_limit(config: dict[str, Any]) -> None:
    del config["concurrency"]["runs"]["tag_concurrency_limits"][0]["limit"]


BROKEN = {
    "top-level key": (_misspell(["run_monitoring"], "run_monitorng"), "run_monitorng"),
    "monitoring key": (
        _misspell(["run_monitoring", "start_timeout_seconds"], "start_timout_seconds"),
        "start_timout_seconds",
    ),
    "storage key": (
        _misspell(["storage", "postgres", "postgres_db", "hostname"], "hostnme"),
        "hostnme",
    ),
    "launcher key": (
        _misspell(["run_launcher", "config", "secrets_tag"], "secret_tag"),
        "secret_tag",
    ),
    "tag limit without its limit": (_drop_limit, "limit"),
}


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("change", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_ecs_instance_is_refused(
    tmp_path: Path, change: tuple[Callable[[dict[str, Any]], None], str]
) -> None:
    mutate, named = change
    config = load(ECS)
    mutate(config)
    with pytest.raises(DagsterInvalidConfigError) as error:
        validate(instance_home(tmp_path, config))
    assert named in str(error.value)


def test_a_missing_variable_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_RUN_LOG_GROUP")
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_RUN_LOG_GROUP"):
        validate(instance_home(tmp_path, load(ECS)))


def test_a_run_task_gets_every_variable_the_instance_reads() -> None:
    """The run's own process loads the instance from the same settings: each variable the file
    reads must reach the run's task, the password as a secret, never as plain environment."""
    config = load(ECS)
    launcher = config["run_launcher"]["config"]
    secrets = {secret["name"] for secret in launcher["secrets"]}
    assert secrets == {"DAGSTER_PG_PASSWORD"}
    assert env_references(config) == set(launcher["env_vars"]) | secrets
    assert env_references(config) == set(ENV)


def test_compose_and_ecs_instances_differ_only_where_aws_does() -> None:
    ecs, compose = load(ECS), load(COMPOSE)
    for key in ("instance_class", "telemetry", "run_coordinator"):
        assert compose[key] == ecs[key], key
    ecs_db = copy.deepcopy(ecs["storage"]["postgres"]["postgres_db"])
    assert ecs_db.pop("params") == {"sslmode": "require"}
    assert compose["storage"]["postgres"]["postgres_db"] == ecs_db
    limits = [c["concurrency"]["runs"]["tag_concurrency_limits"] for c in (ecs, compose)]
    assert limits[0] == limits[1]
    assert set(compose) == set(ecs)


def test_production_instances_keep_what_the_local_instance_holds(tmp_path: Path) -> None:
    """firepipe's local dagster.yaml (settings.ensure_dagster_home) is what firepipe relies on:
    its instance class and no telemetry everywhere; the compose run monitoring as the local
    one; on ECS the same cancel timeout and backstop runtime, a longer start (image pulls)."""
    home = settings.ensure_dagster_home(settings.LocalPaths(home=tmp_path))
    local = load(home / "dagster.yaml")
    ecs, compose = load(ECS), load(COMPOSE)
    for config in (ecs, compose):
        assert config["instance_class"] == local["instance_class"]
        assert config["telemetry"] == local["telemetry"]
    assert compose["run_monitoring"] == local["run_monitoring"]
    for key in ("enabled", "cancel_timeout_seconds", "max_runtime_seconds"):
        assert ecs["run_monitoring"][key] == local["run_monitoring"][key], key
    assert (
        ecs["run_monitoring"]["start_timeout_seconds"]
        > local["run_monitoring"]["start_timeout_seconds"]
    )


@dataclass(frozen=True)
class PgInstance:
    instance: dg.DagsterInstance
    database: str  # its database on the test server


@pytest.fixture
def pg(postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgInstance]:
    """docker/dagster.compose.yaml's instance on a new database of the test server. pgserver
    listens on a Unix socket only: an empty host makes libpq take the socket from PGHOST. Step
    logs go to the test's folder instead of the container's volume."""
    database = postgres.create_database()
    for name, value in {
        "DAGSTER_PG_HOST": "",
        "PGHOST": str(postgres.socket_dir),
        "DAGSTER_PG_PORT": str(postgres.port),
        "DAGSTER_PG_USERNAME": postgres.user,
        "DAGSTER_PG_PASSWORD": "",
        "DAGSTER_PG_DB": database,
    }.items():
        monkeypatch.setenv(name, value)
    config = load(COMPOSE)
    config["compute_logs"]["config"]["base_dir"] = str(tmp_path / "compute_logs")
    home = instance_home(tmp_path / "dagster_home", config)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield PgInstance(instance, database)


def materialise(instance: dg.DagsterInstance, tmp_path: Path, **kwargs: Any) -> Any:
    return dg.materialize(
        [synthetic_readings],
        run_config=CONFIG,
        resources={
            "lakehouse": LocalLakehouse(root=str(tmp_path / "lake")),
            "generator_compute": LocalCompute(),
            "generation_history": SqliteGenerationHistory(path=str(tmp_path / "history.db")),
        },
        instance=instance,
        **kwargs,
    )


@pytest.mark.slow
def test_a_firepipe_run_is_stored_in_postgresql(
    pg: PgInstance, postgres: Postgres, tmp_path: Path
) -> None:
    pg_instance = pg.instance
    assert isinstance(pg_instance, FirepipeInstance)
    result = materialise(pg_instance, tmp_path, partition_key=PARTITION)
    assert result.success

    [run] = pg_instance.get_runs()
    assert (run.run_id, run.status) == (result.run_id, dg.DagsterRunStatus.SUCCESS)
    assert run.tags["dagster/partition"] == PARTITION
    [event] = pg_instance.fetch_materializations(ASSET_KEY, limit=10).records
    assert (event.run_id, event.partition_key) == (result.run_id, PARTITION)
    assert event.asset_materialization is not None
    assert event.asset_materialization.metadata["dagster/row_count"].value == 3 * 60

    # firepipe's instance class still refuses a run that names no partition, before storing it.
    with pytest.raises(PartitionSelectionError, match="names no partition"):
        materialise(pg_instance, tmp_path)

    connection = psycopg2.connect(postgres.dsn(pg.database))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            assert cursor.fetchall() == [(result.run_id, "SUCCESS")]
            cursor.execute(
                "SELECT run_id, partition FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s",
                (ASSET_KEY.to_string(),),
            )
            assert cursor.fetchall() == [(result.run_id, PARTITION)]
    finally:
        connection.close()


def test_runs_of_one_partition_queue_behind_each_other(pg: PgInstance) -> None:
    """The queue's tag limits as the daemon applies them (Dagster's own counter over the limits
    the instance loaded): a run of a partition waits while another run of it is in flight; a
    run of another partition, or of another range, goes."""
    queue = pg.instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.max_concurrent_runs == 4

    def run(**tags: str) -> dg.DagsterRun:
        return dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.STARTED, tags=tags)

    partition, start = "dagster/partition", "dagster/asset_partition_range_start"
    limits = list(queue.tag_concurrency_limits)
    in_flight = [run(**{partition: PARTITION}), run(**{start: "000|baseline"})]
    counter = TagConcurrencyLimitsCounter(limits, in_flight)
    assert counter.is_blocked(run(**{partition: PARTITION}))
    assert not counter.is_blocked(run(**{partition: "003|flaming"}))
    assert counter.is_blocked(run(**{start: "000|baseline"}))
    assert not counter.is_blocked(run(**{start: "001|baseline"}))
    extraction = "firepipe/extraction_after"
    busy = TagConcurrencyLimitsCounter(limits, [run(**{extraction: "2026-01-01T00:00:00"})])
    assert busy.is_blocked(run(**{extraction: "2026-01-02T00:00:00"}))


def test_the_action_apis_launch_lock_is_shared_through_the_database(
    pg: PgInstance, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services of one PostgreSQL instance with no folder in common (as two Lambda
    functions are) take turns at choosing and queueing a generation's batches: the lock is the
    database's, so the second waits for the first, and gives up with a 503-worthy error when
    the wait is too long."""
    home = Path(pg.instance.root_directory)
    first, second = DagsterRuns(home, in_process=False), DagsterRuns(home, in_process=False)
    holding, release, order = threading.Event(), threading.Event(), []

    def hold() -> None:
        with first._launch_lock():
            order.append("first in")
            holding.set()
            release.wait(10)
            order.append("first out")

    def wait_turn() -> None:
        with second._launch_lock():
            order.append("second in")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    connection = psycopg2.connect(postgres.dsn(pg.database))
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                # A bigint key is held as its two halves (objsubid 1 marks the form).
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s",
                ((LAUNCH_LOCK_KEY >> 32) & 0xFFFFFFFF, LAUNCH_LOCK_KEY & 0xFFFFFFFF),
            )
            assert cursor.fetchone() == (1,)
    finally:
        connection.close()
    monkeypatch.setattr(runs_module, "LAUNCH_LOCK_WAIT_S", 0.3)
    with pytest.raises(NoInstanceError, match="ask again shortly"):
        wait_turn()
    monkeypatch.setattr(runs_module, "LAUNCH_LOCK_WAIT_S", 10.0)
    waiter = threading.Thread(target=wait_turn)
    waiter.start()
    time.sleep(0.3)
    assert order == ["first in"]  # the second service is still waiting
    release.set()
    holder.join(10)
    waiter.join(10)
    assert order == ["first in", "first out", "second in"]
    for runs in (first, second):
        runs.close()
