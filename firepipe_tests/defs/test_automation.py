"""What runs by itself: the automation conditions evaluated with Dagster's own evaluator on the
code location's asset graph, the schedules ticked with their contexts, and what starts by
default.

The conditions run on a stand-in of the graph (each asset's own condition and partitions,
bodies that do nothing), materialised by real runs: what a condition reads is the instance's
runs and materialisations, and which assets a run included."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun

from firepipe.definitions import defs
from firepipe.defs.generation.partitions import default_range_tags
from firepipe.defs.lake import sensors as lake_sensors
from firepipe.defs.lake.sensors import silver_catch_up
from firepipe.lib.instance import RANGE_END_TAG, RANGE_START_TAG

STARTED = dg.DagsterRunStatus.STARTED
SYNTHETIC = dg.AssetKey(["bronze", "synthetic_readings"])
FIELD = dg.AssetKey(["bronze", "field_readings"])
LANDED = dg.AssetKey(["bronze", "landed_readings"])
SILVER = dg.AssetKey(["silver", "sensor_readings"])
QUARANTINE = dg.AssetKey(["silver", "quarantine"])
GOLD = dg.AssetKey(["gold", "sensor_features"])
TRAINING_SET = dg.AssetKey(["ml", "training_set"])
DETECTOR = dg.AssetKey(["ml", "detector"])
EVALUATION = dg.AssetKey(["ml", "evaluation"])
CHAMPION = dg.AssetKey(["ml", "champion"])
DBT_MODELS = {
    "analytics/stg_sensor_readings",
    "analytics/site_daily_summary",
    "analytics/device_alarm_events",
    "analytics/site_daily_alarm_rates",
}
# What a change in bronze sets off within one tick: silver, then (as will-be-requested counts as
# updated) everything that follows it eagerly, the champion's scores of gold and the online
# features included. The detector waits for the nightly retrain.
FOLLOWS_BRONZE = {
    "silver/sensor_readings",
    "silver/quarantine",
    "gold/sensor_features",
    "ml/training_set",
    "ml/scores",
    "ml/online_features",
} | DBT_MODELS


@pytest.fixture
def location(firepipe_home: Path) -> dg.Definitions:
    """The whole code location."""
    return defs()


@pytest.fixture
def definitions(location: dg.Definitions) -> dg.Definitions:
    """The code location's asset graph, each asset with its own automation condition and
    partitions, and bodies that do nothing: the conditions read the runs and materialisations
    in the instance, and which assets a run included is what they turn on."""
    graph = location.resolve_asset_graph()
    order = graph.toposorted_asset_keys
    specs = {
        key: dg.AssetSpec(
            key,
            deps=graph.get(key).parent_keys,
            automation_condition=graph.get(key).automation_condition,
            partitions_def=graph.get(key).partitions_def,
        )
        for key in graph.get_all_asset_keys()
    }

    @dg.multi_asset(specs=[s for k, s in specs.items() if k != SYNTHETIC], can_subset=True)
    def lake(context: dg.AssetExecutionContext) -> Iterator[dg.MaterializeResult]:
        for key in order:  # a multi-asset yields in dependency order
            if key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)

    @dg.multi_asset(specs=[specs[SYNTHETIC]])
    def synthetic() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    return dg.Definitions(assets=[lake, synthetic])


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def materialised(
    instance: dg.DagsterInstance,
    definitions: dg.Definitions,
    *keys: dg.AssetKey,
    partition: str | None = None,
) -> None:
    """One run that materialises `keys` (bronze/synthetic_readings in `partition`)."""
    tags = {RANGE_START_TAG: partition, RANGE_END_TAG: partition} if partition else {}
    assets = definitions.resolve_implicit_global_asset_job_def()
    assert assets.execute_in_process(
        instance=instance, asset_selection=list(keys), tags=tags
    ).success


def everything(instance: dg.DagsterInstance, definitions: dg.Definitions) -> None:
    """What a finished end_to_end run leaves: every asset, bronze in one partition, one run."""
    keys = definitions.resolve_asset_graph().get_all_asset_keys()
    materialised(instance, definitions, *keys, partition="000|baseline")


class Ticks:
    """Successive evaluations of the automation sensor, its cursor carried from one to the next."""

    def __init__(self, definitions: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.definitions, self.instance = definitions, instance
        self.cursor = None

    def requested(self) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=self.definitions, instance=self.instance, cursor=self.cursor
        )
        self.cursor = result.cursor
        return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def test_a_new_bronze_materialisation_sets_off_silver_gold_dbt_and_the_training_set_once(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ticks = Ticks(definitions, instance)
    assert ticks.requested() == set()  # nothing there: nothing to follow
    everything(instance, definitions)
    assert ticks.requested() == set()  # all up to date

    materialised(instance, definitions, FIELD)  # the field sensor's run
    assert ticks.requested() == FOLLOWS_BRONZE
    assert ticks.requested() == set()  # handled: not asked for again

    materialised(
        instance, definitions, SYNTHETIC, partition="001|flaming"
    )  # one more generated partition
    assert ticks.requested() == FOLLOWS_BRONZE


def test_silver_waits_for_a_first_synthetic_partition_but_not_for_all_of_them(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ticks = Ticks(definitions, instance)
    ticks.requested()
    materialised(instance, definitions, FIELD, LANDED)
    assert "silver/sensor_readings" not in ticks.requested()  # no synthetic table yet

    materialised(
        instance, definitions, SYNTHETIC, partition="000|smouldering"
    )  # 1 of 64 partitions
    assert {"silver/sensor_readings", "silver/quarantine"} <= ticks.requested()


def test_a_new_detector_is_evaluated_and_judged_but_a_new_training_set_alone_is_not(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ticks = Ticks(definitions, instance)
    everything(instance, definitions)
    ticks.requested()

    materialised(instance, definitions, TRAINING_SET)
    assert ticks.requested() == set()  # the candidate is scored on its own snapshot

    materialised(instance, definitions, DETECTOR)
    # and, should it promote, the endpoint (deployed once already), the scores and the agents'
    # replay of the NIST tests follow
    assert ticks.requested() == {
        "ml/evaluation",
        "ml/champion",
        "ml/endpoint",
        "ml/scores",
        "agents/nist_replay",
    }


def retrain_tick(
    location: dg.Definitions, instance: dg.DagsterInstance
) -> dg.RunRequest | dg.SkipReason:
    schedule = location.resolve_schedule_def("nightly_retrain")
    night = datetime(2026, 12, 6, 2, tzinfo=UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=night)
    data = schedule.evaluate_tick(context)
    assert data.run_requests is not None
    if data.run_requests:
        return data.run_requests[0]
    return dg.SkipReason(data.skip_message)


def test_the_nightly_retrain_runs_only_on_a_training_set_newer_than_the_detector(
    location: dg.Definitions, definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    skipped = retrain_tick(location, instance)
    assert isinstance(skipped, dg.SkipReason)
    assert "ml/training_set was never materialised" in str(skipped.skip_message)

    materialised(instance, definitions, TRAINING_SET)
    request = retrain_tick(location, instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "retrain 2026-12-06"
    retrain = location.resolve_job_def("retrain")
    assert retrain.asset_layer.executable_asset_keys == {DETECTOR, EVALUATION, CHAMPION}

    materialised(instance, definitions, DETECTOR)
    assert isinstance(retrain_tick(location, instance), dg.SkipReason)
    materialised(instance, definitions, TRAINING_SET)
    assert isinstance(retrain_tick(location, instance), dg.RunRequest)


def test_sensors_schedules_and_the_automation_run_by_default(location: dg.Definitions) -> None:
    repository = location.get_repository_def()
    sensors = {s.name: s for s in repository.sensor_defs}
    automation = sensors["automation"]
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    for name in ("automation", "field_warehouse_sensor", "landing_sensor", "silver_catch_up"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    schedules = {s.name: s for s in repository.schedule_defs}
    assert set(schedules) == {"field_extraction_daily", "nightly_retrain", "lake_maintenance_daily"}
    for schedule in schedules.values():
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name
    extraction = location.resolve_job_def(schedules["field_extraction_daily"].job_name)
    assert extraction.asset_layer.executable_asset_keys == {
        FIELD,
        dg.AssetKey(["bronze", "field_dead_letters"]),
    }


def test_silver_and_gold_carry_freshness_policies_and_the_detector_no_condition(
    location: dg.Definitions,
) -> None:
    graph = location.resolve_asset_graph()
    for key in (SILVER, GOLD):
        policy = graph.get(key).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), key
    assert graph.get(DETECTOR).automation_condition is None  # the nightly retrain's
    assert graph.get(SYNTHETIC).automation_condition is None  # people start generation
    followers = [SILVER, QUARANTINE, GOLD, TRAINING_SET, EVALUATION, CHAMPION]
    followers += [dg.AssetKey.from_user_string(m) for m in DBT_MODELS]
    for key in followers:
        assert graph.get(key).automation_condition is not None, key


def test_end_to_end_names_its_own_partitions() -> None:
    tags = default_range_tags()
    assert tags == {
        "dagster/asset_partition_range_start": "000|baseline",
        "dagster/asset_partition_range_end": "001|nuisance",
    }


def catch_up_tick(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    with dg.build_sensor_context(instance=instance) as context:
        return silver_catch_up(context)


def test_silver_catches_up_on_a_bronze_update_its_latest_run_did_not_read(
    definitions: dg.Definitions, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "never materialised" in str(catch_up_tick(instance).skip_message)
    everything(instance, definitions)
    assert isinstance(catch_up_tick(instance), dg.SkipReason)

    # A file lands after silver's run started (here: after it ended), and eager, whose tick
    # counted it as handled, does not ask again.
    materialised(instance, definitions, LANDED)
    assert "older than the grace" in str(catch_up_tick(instance).skip_message)  # eager's turn
    monkeypatch.setattr(lake_sensors, "GRACE_S", 0)
    request = catch_up_tick(instance)
    assert isinstance(request, dg.RunRequest)
    assert "bronze/landed_readings" in str(request.run_key)
    assert catch_up_tick(instance).run_key == request.run_key  # one run per missed update

    in_flight = instance.add_run(DagsterRun(job_name="__ASSET_JOB", status=STARTED))
    assert f"in flight: {in_flight.run_id}" in str(catch_up_tick(instance).skip_message)
    instance.report_run_failed(in_flight, "stopped")

    materialised(instance, definitions, SILVER, QUARANTINE)  # silver rebuilt: nothing missed
    assert isinstance(catch_up_tick(instance), dg.SkipReason)
