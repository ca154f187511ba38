"""The serving assets on a small simulated lake with local resources: the champion's local
deployment, gold scored by it into ml.scores, and the latest features in the online store."""

import dagster as dg
import polars as pl
import pytest

from firepipe.core.features.spec import spec_from_properties
from firepipe.core.lake.standardise import to_silver
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training.dataset import LABEL, profile_name
from firepipe.core.training.models import Detector, train_detector
from firepipe.defs.features.assets import SILVER_TABLE, sensor_features
from firepipe.defs.features.assets import TABLE as GOLD_TABLE
from firepipe.defs.lake.assets import READINGS_PARTITIONING
from firepipe.defs.serving.assets import (
    ENDPOINT_KEY,
    FOLLOW_NEW_CHAMPION,
    endpoint,
    online_features,
    scores,
)
from firepipe.defs.training.assets import CHAMPION_KEY
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.names import MODEL_NAME, SCORES, table_name
from firepipe.resources.endpoint import LocalModelEndpoint
from firepipe.resources.feature_store import LocalFeatureStore, feature_records, latest_per_device
from firepipe.resources.registry import LocalModelRegistry
from firepipe.resources.spark import LocalSparkCompute
from firepipe_tests.services.detector_sample import register_detector

SERVING = [endpoint, scores, online_features]
# A device whose CO sensor never reported: its own channel profile.
NO_CO = "syn-5-3"
NO_CO_PROFILE = profile_name(c for c in CHANNEL_NAMES if c != "co_ppm")
INPUTS = (
    "temperature_c__mean_30s",
    "smoke_obscuration_pct_per_m__mean_30s",
    "co_ppm__max_30s",
    "temperature_c__rise_30s_over_300s",
)


@pytest.fixture
def lake(lakehouse, tmp_path, firepipe_home):
    bronze = simulate(GenerationSpec(devices=8, duration_s=400, seed=5), workers=1)
    silver = to_silver({"synthetic": bronze}).readings
    silver = silver.with_columns(
        pl.when(pl.col("device_id") == NO_CO).then(None).otherwise(pl.col("co_ppm")).alias("co_ppm")
    )
    assert NO_CO in silver["device_id"].to_list()
    tables.write_table(
        lakehouse.catalog(), SILVER_TABLE, silver, tables.parse_partitioning(READINGS_PARTITIONING)
    )
    resources = {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
        "spark_compute": LocalSparkCompute(master="local[1]"),
        "model_registry": LocalModelRegistry(root=str(tmp_path / "mlflow")),
        "model_endpoint": LocalModelEndpoint(path=str(tmp_path / "endpoint.db")),
        "feature_store": LocalFeatureStore(path=str(tmp_path / "online.db")),
    }
    with dg.instance_for_test() as instance:
        assert dg.materialize([sensor_features], resources=resources, instance=instance).success
    return resources


def promote_a_champion(lake, tmp_path) -> Detector:
    """A small LightGBM detector on gold, registered and promoted: it alarms at once at every
    score, except on a device without CO, whose profile's point (1.0) no score reaches."""
    lakehouse, registry = lake["lakehouse"], lake["model_registry"]
    spec = spec_from_properties(lakehouse.snapshot_properties(GOLD_TABLE))
    gold = lakehouse.read(GOLD_TABLE)
    detector = (
        train_detector(
            gold.with_columns(pl.col("is_fire").alias(LABEL)),
            None,
            INPUTS,
            spec.hash(),
            "lightgbm",
            {"num_boost_round": 10, "num_threads": 1, "early_fire_weight": 1.0},
        )
        .with_feature_spec(spec)
        .with_operating_point(0.0, 0, {NO_CO_PROFILE: (1.0, 0)})
    )
    detector.save(tmp_path / "detector")
    register_detector(registry, tmp_path / "detector", MODEL_NAME, gold.head(5), spec.hash())
    registry.promote(MODEL_NAME, 1, "the test's champion")
    return detector


def materialised(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    assert result.success
    return {
        e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }


@pytest.mark.slow
def test_serving_assets_deploy_score_and_fill_the_online_store(lake, tmp_path):
    detector = promote_a_champion(lake, tmp_path)
    lakehouse = lake["lakehouse"]
    gold = lakehouse.read(GOLD_TABLE).sort("device_id", "ts")
    with dg.instance_for_test() as instance:
        first = materialised(dg.materialize(SERVING, resources=lake, instance=instance))
        again = materialised(dg.materialize([endpoint], resources=lake, instance=instance))

    deployed = first["ml/endpoint"]
    assert deployed["model_version"] == f"{MODEL_NAME}/1"
    assert deployed["model_uri"] == f"models:/{MODEL_NAME}/1"
    assert deployed["action"] == "created"
    assert again["ml/endpoint"]["action"] == "unchanged"
    assert lake["model_endpoint"].current().model_version == f"{MODEL_NAME}/1"

    table = lakehouse.read(table_name(SCORES)).sort("device_id", "ts")
    assert table.select("device_id", "ts").equals(gold.select("device_id", "ts"))
    assert table["score"].to_list() == pytest.approx(list(detector.scores(gold)), abs=1e-9)
    assert set(table["model_version"]) == {f"{MODEL_NAME}/1"}
    # Every device alarms at once (threshold 0) but the one without CO, at its profile's point.
    no_co = pl.col("device_id") == NO_CO
    assert table.filter(~no_co)["alarm"].all()
    assert not table.filter(no_co)["alarm"].any()
    metadata = first["ml/scores"]
    assert metadata["dagster/row_count"] == gold.height
    assert metadata["devices_alarming"] == gold["device_id"].n_unique() - 1

    store = lake["feature_store"]
    assert first["ml/online_features"]["devices"] == gold["device_id"].n_unique()
    latest = feature_records(latest_per_device(gold.lazy()))
    assert [store.get_record(r["device_id"]) for r in latest] == latest
    assert store.get_record(NO_CO)["ts"] == gold.filter(no_co)["ts"].max().strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    assert "co_ppm__max_30s" not in store.get_record(NO_CO)


@pytest.mark.slow
def test_without_a_champion_nothing_is_deployed_or_scored(lake):
    with dg.instance_for_test() as instance:
        done = materialised(dg.materialize(SERVING, resources=lake, instance=instance))
    assert set(done) == {"ml/online_features"}
    assert lake["model_endpoint"].current() is None
    assert table_name(SCORES) not in lake["lakehouse"].list_tables()


def test_the_endpoint_follows_a_new_champion_only_once_deployed_by_hand():
    specs = [
        dg.AssetSpec(CHAMPION_KEY),
        dg.AssetSpec(ENDPOINT_KEY, deps=[CHAMPION_KEY], automation_condition=FOLLOW_NEW_CHAMPION),
    ]

    @dg.multi_asset(specs=specs, can_subset=True)
    def stand_in(context: dg.AssetExecutionContext):
        for key in (CHAMPION_KEY, ENDPOINT_KEY):
            if key in context.selected_asset_keys:
                yield dg.MaterializeResult(asset_key=key)

    definitions = dg.Definitions(assets=[stand_in])
    job = definitions.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        cursor = None

        def requested() -> set[str]:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(
                defs=definitions, instance=instance, cursor=cursor
            )
            cursor = result.cursor
            return {r.key.to_user_string() for r in result.results if r.true_subset.size}

        def run(key: dg.AssetKey) -> None:
            assert job.execute_in_process(instance=instance, asset_selection=[key]).success

        assert requested() == set()
        run(CHAMPION_KEY)
        assert requested() == set()  # the first deployment is a person's
        run(ENDPOINT_KEY)
        assert requested() == set()
        run(CHAMPION_KEY)
        assert requested() == {"ml/endpoint"}
        assert requested() == set()
