"""What runs by itself: the automation conditions evaluated with Dagster's own evaluator on the
whole code location, the schedules ticked with their contexts, and what starts by default.

Upstream updates are reported as runless materialisations: the conditions read the instance's
event log, so this is what a real run leaves behind, without running one."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from firepipe.definitions import defs
from firepipe.defs.generation.partitions import default_range_tags

SYNTHETIC = dg.AssetKey(["bronze", "synthetic_readings"])
FIELD = dg.AssetKey(["bronze", "field_readings"])
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
# updated) everything that follows it eagerly. The detector waits for the nightly retrain.
FOLLOWS_BRONZE = {
    "silver/sensor_readings",
    "silver/quarantine",
    "gold/sensor_features",
    "ml/training_set",
} | DBT_MODELS


@pytest.fixture
def definitions(firepipe_home: Path) -> dg.Definitions:
    return defs()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def materialised(
    instance: dg.DagsterInstance, *keys: dg.AssetKey, partition: str | None = None
) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))


def everything(instance: dg.DagsterInstance, definitions: dg.Definitions) -> None:
    """What a finished end_to_end run leaves: every asset, bronze in one partition."""
    materialised(instance, SYNTHETIC, partition="000|baseline")
    keys = definitions.resolve_asset_graph().get_all_asset_keys() - {SYNTHETIC}
    materialised(instance, *keys)


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

    materialised(instance, FIELD)  # the field sensor's run
    assert ticks.requested() == FOLLOWS_BRONZE
    assert ticks.requested() == set()  # handled: not asked for again

    materialised(instance, SYNTHETIC, partition="001|flaming")  # one more generated partition
    assert ticks.requested() == FOLLOWS_BRONZE


def test_silver_waits_for_a_first_synthetic_partition_but_not_for_all_of_them(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ticks = Ticks(definitions, instance)
    ticks.requested()
    materialised(instance, FIELD, dg.AssetKey(["bronze", "landed_readings"]))
    assert "silver/sensor_readings" not in ticks.requested()  # no synthetic table yet

    materialised(instance, SYNTHETIC, partition="000|smouldering")  # 1 of 64 partitions
    assert {"silver/sensor_readings", "silver/quarantine"} <= ticks.requested()


def test_a_new_detector_is_evaluated_and_judged_but_a_new_training_set_alone_is_not(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    ticks = Ticks(definitions, instance)
    everything(instance, definitions)
    ticks.requested()

    materialised(instance, TRAINING_SET)
    assert ticks.requested() == set()  # the candidate is scored on its own snapshot

    materialised(instance, DETECTOR)
    assert ticks.requested() == {"ml/evaluation", "ml/champion"}


def retrain_tick(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> dg.RunRequest | dg.SkipReason:
    schedule = definitions.resolve_schedule_def("nightly_retrain")
    night = datetime(2026, 12, 6, 2, tzinfo=UTC)
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=night)
    data = schedule.evaluate_tick(context)
    assert data.run_requests is not None
    if data.run_requests:
        return data.run_requests[0]
    return dg.SkipReason(data.skip_message)


def test_the_nightly_retrain_runs_only_on_a_training_set_newer_than_the_detector(
    definitions: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    skipped = retrain_tick(definitions, instance)
    assert isinstance(skipped, dg.SkipReason)
    assert "ml/training_set was never materialised" in str(skipped.skip_message)

    materialised(instance, TRAINING_SET)
    request = retrain_tick(definitions, instance)
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == "retrain 2026-12-06"
    retrain = definitions.resolve_job_def("retrain")
    assert retrain.asset_layer.executable_asset_keys == {DETECTOR, EVALUATION, CHAMPION}

    materialised(instance, DETECTOR)
    assert isinstance(retrain_tick(definitions, instance), dg.SkipReason)
    materialised(instance, TRAINING_SET)
    assert isinstance(retrain_tick(definitions, instance), dg.RunRequest)


def test_sensors_schedules_and_the_automation_run_by_default(
    definitions: dg.Definitions,
) -> None:
    repository = definitions.get_repository_def()
    sensors = {s.name: s for s in repository.sensor_defs}
    automation = sensors["automation"]
    assert isinstance(automation, dg.AutomationConditionSensorDefinition)
    for name in ("automation", "field_warehouse_sensor", "landing_sensor"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    schedules = {s.name: s for s in repository.schedule_defs}
    assert set(schedules) == {"field_extraction_daily", "nightly_retrain", "lake_maintenance_daily"}
    for schedule in schedules.values():
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name
    extraction = definitions.resolve_job_def(schedules["field_extraction_daily"].job_name)
    assert extraction.asset_layer.executable_asset_keys == {
        FIELD,
        dg.AssetKey(["bronze", "field_dead_letters"]),
    }


def test_silver_and_gold_carry_freshness_policies_and_the_detector_no_condition(
    definitions: dg.Definitions,
) -> None:
    graph = definitions.resolve_asset_graph()
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
