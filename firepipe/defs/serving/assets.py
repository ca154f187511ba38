"""Serving: the champion at its endpoint, gold scored by the champion, and each device's latest
gold features in the feature store.

ml/endpoint deploys the champion through the model_endpoint resource (locally a record that
`firepipe serve --model <uri>` serves; in AWS a SageMaker endpoint with autoscaling); only an
Approved version is deployed. ml/scores scores gold's current snapshot with the champion (in
process locally, a SageMaker batch transform job over the silver readings gold was computed
from in AWS) into an Iceberg table. ml/online_features writes each device's latest gold row to
the feature store. With no champion yet, ml/endpoint and ml/scores materialise nothing.

Automation: ml/scores follows gold and the champion, ml/online_features follows gold (each is
seconds locally, a transform job or a few hundred PutRecords in AWS). ml/endpoint follows a
new champion only once it has been deployed by hand: the first deployment starts billed
instances, a person's decision; after it, a champion is Approved by the champion/challenger
policy on real fires, the same version again changes nothing, and SageMaker's blue/green
update keeps the old fleet serving until the new one passes its health checks.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl

from firepipe import names
from firepipe.core.serving import batch
from firepipe.core.training import lineage
from firepipe.core.training.models import Detector
from firepipe.core.training.promotion import ApprovalError
from firepipe.defs.automation import FOLLOW_UPSTREAM
from firepipe.defs.features.assets import ASSET_KEY as GOLD_KEY
from firepipe.defs.features.assets import SILVER_TABLE
from firepipe.defs.features.assets import TABLE as GOLD_TABLE
from firepipe.defs.training.assets import CHAMPION_KEY, MODEL_NAME, current_snapshot
from firepipe.lib.lakehouse.io_manager import ICEBERG_PARTITIONING
from firepipe.resources.endpoint import ChampionModel, EndpointError, ModelEndpoint
from firepipe.resources.feature_store import FeatureStore, FeatureStoreError
from firepipe.resources.lakehouse import Lakehouse
from firepipe.resources.registry import ModelRegistry

ENDPOINT_KEY = dg.AssetKey(names.ENDPOINT)
SCORES_KEY = dg.AssetKey(names.SCORES)
ONLINE_FEATURES_KEY = dg.AssetKey(names.ONLINE_FEATURES)
GROUP = names.group_name(names.ENDPOINT)

FOLLOW_NEW_CHAMPION = (FOLLOW_UPSTREAM & ~dg.AutomationCondition.missing()).with_label(
    "eager, once deployed by hand"
)


@contextmanager
def champion_model(model_registry: ModelRegistry) -> Iterator[ChampionModel | None]:
    """The champion downloaded for the block; None while there is none."""
    info = model_registry.champion(MODEL_NAME)
    if info is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="firepipe-champion-") as folder:
        yield ChampionModel(info, model_registry.download_model(info.uri, Path(folder)))


@dg.asset(
    key=ENDPOINT_KEY,
    group_name=GROUP,
    kinds={"sagemaker"},
    deps=[CHAMPION_KEY],
    automation_condition=FOLLOW_NEW_CHAMPION,
    output_required=False,
)
def endpoint(
    context: dg.AssetExecutionContext,
    model_registry: ModelRegistry,
    model_endpoint: ModelEndpoint,
) -> Iterator[dg.MaterializeResult]:
    """The champion served at the endpoint (Approved versions only): a SageMaker endpoint with
    target-tracking autoscaling in AWS, updated in place (blue/green); locally the deployment
    `firepipe serve` serves."""
    with champion_model(model_registry) as champion:
        if champion is None:
            context.log.info(f"{MODEL_NAME} has no champion yet: nothing to deploy")
            return
        try:
            outcome = model_endpoint.deploy(champion)
        except (ApprovalError, EndpointError) as e:
            raise dg.Failure(str(e)) from e
    deployed = outcome.deployment
    context.log.info(f"{model_endpoint.describe()}: {deployed.model_version} {outcome.action}")
    yield dg.MaterializeResult(
        metadata={
            "endpoint_name": deployed.endpoint_name,
            "model_version": deployed.model_version,
            "model_uri": deployed.model_uri,
            "model_data": deployed.model_data,
            "deployed_at": deployed.deployed_at,
            "action": outcome.action,
        }
    )


@dg.asset(
    key=SCORES_KEY,
    group_name=GROUP,
    kinds={"sagemaker", "iceberg", "polars"},
    deps=[GOLD_KEY, CHAMPION_KEY],
    automation_condition=FOLLOW_UPSTREAM,
    output_required=False,
    metadata={ICEBERG_PARTITIONING: ["day(ts)"]},
)
def scores(
    context: dg.AssetExecutionContext,
    lakehouse: Lakehouse,
    model_registry: ModelRegistry,
    model_endpoint: ModelEndpoint,
) -> Iterator[dg.Output[pl.DataFrame]]:
    """Every gold row scored by the champion: device_id, ts, score (P(fire)), alarm (at the
    device's operating point for its channel profile) and model_version."""
    gold_snapshot = current_snapshot(lakehouse, GOLD_TABLE)
    try:
        gold = lineage.gold_lineage(lakehouse.snapshot_properties(GOLD_TABLE, gold_snapshot))
    except ValueError as e:
        raise dg.Failure(f"{GOLD_TABLE} snapshot {gold_snapshot}: {e}") from e
    with champion_model(model_registry) as champion:
        if champion is None:
            context.log.info(f"{MODEL_NAME} has no champion yet: nothing to score with")
            return
        try:
            batch.require_gold_features(Detector.load(champion.model_dir), gold.spec)
            frame = model_endpoint.score(
                champion,
                lakehouse.scan(GOLD_TABLE, snapshot_id=gold_snapshot),
                lakehouse.scan(SILVER_TABLE, snapshot_id=gold.silver_snapshot_id),
            )
        except (ValueError, EndpointError) as e:  # ApprovalError is a ValueError
            raise dg.Failure(f"{champion.version}: {e}") from e
    yield dg.Output(
        frame,
        metadata={
            "model_version": champion.version,
            "gold_snapshot_id": str(gold_snapshot),
            "devices": frame["device_id"].n_unique(),
            "alarm_rows": int(frame["alarm"].sum()),
            "devices_alarming": frame.filter("alarm")["device_id"].n_unique(),
        },
    )


@dg.asset(
    key=ONLINE_FEATURES_KEY,
    group_name=GROUP,
    kinds={"sagemaker", "polars"},
    deps=[GOLD_KEY],
    automation_condition=FOLLOW_UPSTREAM,
)
def online_features(lakehouse: Lakehouse, feature_store: FeatureStore) -> dg.MaterializeResult:
    """Each device's latest gold row in the feature store: a SageMaker feature group (online,
    and offline in Iceberg format) in AWS, a SQLite online store locally."""
    gold_snapshot = current_snapshot(lakehouse, GOLD_TABLE)
    try:
        report = feature_store.ingest(lakehouse.scan(GOLD_TABLE, snapshot_id=gold_snapshot))
    except FeatureStoreError as e:
        raise dg.Failure(str(e)) from e
    return dg.MaterializeResult(
        metadata={
            "gold_snapshot_id": str(gold_snapshot),
            "devices": report.devices,
            "records_written": report.written,
            "feature_store": report.location,
        }
    )
