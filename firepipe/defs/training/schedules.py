"""The nightly retrain: the detector, its evaluation and the champion decision, at 02:00 UTC.

Training is the one step too expensive to follow its upstream eagerly (firepipe.defs.automation),
so it runs once a night, and only when the training set has been rebuilt since the detector was
last trained: a night without new data asks for no run. The candidate becomes the champion only
through ml/champion's rules (core `promotion.decide`).
"""

import dagster as dg

from firepipe.defs.training.assets import (
    CHAMPION_KEY,
    DETECTOR_KEY,
    EVALUATION_KEY,
    TRAINING_SET_KEY,
)

NIGHTLY_CRON = "0 2 * * *"

retrain = dg.define_asset_job(
    "retrain",
    selection=[DETECTOR_KEY, EVALUATION_KEY, CHAMPION_KEY],
    description="Train a candidate on the current training set, evaluate it and promote it "
    "only if it beats the champion.",
)


def _materialised_at(instance: dg.DagsterInstance, key: dg.AssetKey) -> float | None:
    event = instance.get_latest_materialization_event(key)
    return event.timestamp if event is not None else None


@dg.schedule(
    name="nightly_retrain",
    job=retrain,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Retrain the detector at 02:00 UTC when the training set changed since its "
    "last training.",
)
def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    data = _materialised_at(context.instance, TRAINING_SET_KEY)
    if data is None:
        return dg.SkipReason(f"{TRAINING_SET_KEY.to_user_string()} was never materialised")
    trained = _materialised_at(context.instance, DETECTOR_KEY)
    if trained is not None and trained >= data:
        return dg.SkipReason(
            f"{DETECTOR_KEY.to_user_string()} was trained after the newest training set"
        )
    # One run per scheduled night: a restarted daemon asks for the same key.
    return dg.RunRequest(run_key=f"retrain {context.scheduled_execution_time:%Y-%m-%d}")
