"""What runs by itself: the automation conditions the assets declare, the sensor that evaluates
them, and the freshness the lake promises.

- Bronze is filled from outside: the field warehouse and landing sensors (firepipe.defs.ingestion),
  a daily field extraction schedule, and generation runs that people start.
- Silver, gold, the dbt models, the training set, the evaluation and the champion follow their
  upstream as soon as it changes (`FOLLOW_UPSTREAM`): each is minutes of work at most.
- The detector, the one expensive step, is retrained by the nightly schedule
  (firepipe.defs.training.schedules), which skips a night with no new training data.

Dagster's own automation sensor starts stopped; `automation` below is declared with
`default_status=RUNNING` so that a new deployment runs its conditions from the first tick.
"""

from datetime import timedelta

import dagster as dg

# How often the automation conditions are evaluated: Dagster's default tick (30 s) is for
# conditions that must react within seconds; a lake that takes minutes to refresh can wait one.
AUTOMATION_INTERVAL_S = 60

# Eager: run once any upstream was updated (by a run that did not already include this asset),
# when no upstream is missing or still running and this asset is not running.
FOLLOW_UPSTREAM = dg.AutomationCondition.eager()


def follow_partial_upstream(partitioned: dg.AssetKey) -> dg.AutomationCondition:
    """Eager, for an unpartitioned asset that reads all of a partitioned upstream.

    That upstream never has every partition (bronze/synthetic_readings has 64 cells and a run
    generates those asked for): its missing partitions must not hold the asset back, which
    plain `eager` does. Only an upstream without a single partition counts as missing.
    """
    partial = dg.AssetSelection.assets(partitioned)
    some_partition = dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing())
    none_there = (~some_partition.allow(partial)).with_label(
        f"no partition of {partitioned.to_user_string()}"
    )
    other_missing = dg.AutomationCondition.any_deps_missing().ignore(partial)
    return FOLLOW_UPSTREAM.replace("any_deps_missing", other_missing | none_there).with_label(
        f"eager, with partitions of {partitioned.to_user_string()} missing"
    )


# Silver and gold are refreshed at least daily (the 01:00 field extraction), so a day and an
# hour without a new materialisation (the daily run's own time, and some jitter) means the
# chain is late, and two more hours mean it is stuck.
LAKE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=27), warn_window=timedelta(hours=25)
)

automation = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    description="Evaluates every asset's automation condition: silver, gold, the dbt models and "
    "the ml assets follow their upstream.",
)
