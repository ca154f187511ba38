"""The detector's assets on a small simulated lake: training set, candidate, evaluation on the
held-out splits and the real NIST fires, and champion/challenger, with MLflow on SQLite."""

import json
from dataclasses import replace

import dagster as dg
import polars as pl
import pytest

from firepipe.core.features.spec import FeatureSpec
from firepipe.core.lake.standardise import to_silver
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import dataset, promotion
from firepipe.core.training.inputs import detector_inputs, increasing_inputs
from firepipe.defs.features.assets import SILVER_TABLE, sensor_features
from firepipe.defs.lake.assets import READINGS_PARTITIONING
from firepipe.defs.training.assets import (
    CHAMPION_KEY,
    DETECTOR_KEY,
    EVALUATION_KEY,
    MODEL_NAME,
    champion,
    detector,
    model_evaluation,
    training_set,
)
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import IcebergIOManager
from firepipe.resources.registry import CHAMPION_ALIAS, LocalModelRegistry
from firepipe.resources.spark import LocalSparkCompute
from firepipe.resources.training import LocalTrainingBackend

ASSETS = [sensor_features, training_set, detector, model_evaluation, champion]
FAST = {"params": {"num_boost_round": "30", "num_threads": "1"}}
# The goal floors (no false alarm, no alarm before ignition) are not what this test is about.
LENIENT = {"max_false_alarms_per_1000h": 1e9, "max_pre_ignition_alarms": 1000}


@pytest.fixture
def lake(lakehouse, tmp_path, firepipe_home):
    bronze = simulate(GenerationSpec(devices=80, duration_s=600, seed=11), workers=1)
    silver = to_silver({"synthetic": bronze}).readings
    tables.write_table(
        lakehouse.catalog(), SILVER_TABLE, silver, tables.parse_partitioning(READINGS_PARTITIONING)
    )
    return {
        "lakehouse": lakehouse,
        "io_manager": IcebergIOManager(lakehouse=lakehouse),
        "spark_compute": LocalSparkCompute(master="local[1]"),
        "training_backend": LocalTrainingBackend(work_dir=str(tmp_path / "training")),
        "model_registry": LocalModelRegistry(root=str(tmp_path / "mlflow")),
    }


def run(resources, instance, detector_config=None, champion_config=None):
    config = {"ml__detector": {"config": {**FAST, **(detector_config or {})}}}
    if champion_config:
        config["ml__champion"] = {"config": champion_config}
    result = dg.materialize(
        ASSETS, resources=resources, instance=instance, run_config={"ops": config}
    )
    assert result.success
    return {
        key.to_user_string(): {k: v.value for k, v in m.metadata.items()}
        for key, m in (
            (e.asset_key, e.materialization) for e in result.get_asset_materialization_events()
        )
    }


@pytest.mark.slow
def test_training_evaluation_and_champion_on_a_simulated_lake(lake, tmp_path):
    registry = lake["model_registry"]
    with dg.instance_for_test() as instance:
        # 80 devices: a profile has a non-fire validation device or two, so the bar is 1.
        first = run(lake, instance, {"profile_min_devices": 1}, champion_config=LENIENT)
        ts = first["ml/training_set"]
        assert ts["rows_train"] > 0
        assert ts["rows_validation"] > 0
        assert ts["rows_test"] > 0
        # The gold snapshot of the materialisation whose spec and silver snapshot it used.
        assert ts["gold_snapshot_id"] == first["gold/sensor_features"]["iceberg/snapshot_id"]
        frame = lake["lakehouse"].read("ml.training_set")
        # Whole devices in one split; only synthetic readings.
        assert (
            frame.group_by("device_id").agg(pl.col(dataset.SPLIT).n_unique())[dataset.SPLIT].max()
            == 1
        )
        assert frame["device_id"].str.starts_with("syn-").all()
        # Two noisy copies of every train and validation device, none of a test device.
        copy = frame["device_id"].str.contains("~noise", literal=True)
        originals = frame.filter(~copy)
        learning = originals.filter(pl.col(dataset.SPLIT) != "test").height
        assert ts["noise_copies"] == 2
        assert ts["rows_noisy_copies"] == frame.filter(copy).height == 2 * learning > 0
        assert set(frame.filter(copy)[dataset.SPLIT].unique()) == {"train", "validation"}

        candidate = first["ml/detector"]
        assert candidate["model_version"] == 1
        assert 0.0 <= candidate["threshold"] <= 1.0
        # The default inputs: the offset-robust set, monotone in the rises.
        spec = FeatureSpec.from_json(json.dumps(ts["feature_spec"]))
        assert candidate["feature_set"] == "offset_robust"
        read = detector_inputs(spec, "offset_robust")
        assert candidate["features"] == list(read)
        assert candidate["increasing"] == list(increasing_inputs(spec, read))
        assert json.loads(candidate["hyperparameters"]["increasing"]) == candidate["increasing"]
        version = registry.version(MODEL_NAME, 1)
        assert version.tags["feature_spec_hash"] == ts["feature_spec_hash"]
        assert version.tags["training_snapshot_id"] == ts["gold_snapshot_id"]

        # A threshold per channel profile, at the one point's persistence, saved with the model.
        model = registry.load_detector(candidate["model_uri"])
        assert candidate["profile_points"] == len(model.profile_points) > 0
        assert set(model.profile_points) <= {
            dataset.profile_name(p) for p in dataset.CHANNEL_PROFILES
        }
        assert {p for _, p in model.profile_points.values()} == {candidate["persistence_s"]}
        assert len({t for t, _ in model.profile_points.values()}) > 1
        table = candidate["operating_points"]
        assert "| channel_profile | fire_devices | non_fire_devices | own_point |" in table

        evaluation = first["ml/evaluation"]
        # The test split seen through each channel profile: every test device in each.
        test_devices = evaluation["test/devices"]
        for profile in dataset.CHANNEL_PROFILES:
            name = dataset.profile_name(profile).replace("+", ".")
            assert evaluation[f"test_profiles/{name}/devices"] == test_devices, name
        assert evaluation["test_profiles/all/devices"] == test_devices * len(
            dataset.CHANNEL_PROFILES
        )
        summary = evaluation["real_summary"]
        assert summary["profile_points"] == {k: list(v) for k, v in model.profile_points.items()}
        assert summary["stations"] == 29  # NIST stations with commercial alarms
        assert 0.0 <= summary["share_no_later_than_median_alarm"] <= 1.0
        metrics = registry.version_metrics(MODEL_NAME, 1)
        for name in promotion.PROMOTION_METRICS:
            assert name in metrics, name
        assert metrics["real_stations"] == 29
        assert metrics["real_warm_up_s"] == summary["warm_up_s"] == 300.0
        assert metrics["real_warm_up_basis_s"] == summary["warm_up_basis_s"] == 10.0

        # Floors opened wide: the first candidate becomes the champion, Approved.
        decision = first["ml/champion"]
        assert decision["promoted"] is True
        assert registry.version(MODEL_NAME, 1).approval_status == promotion.APPROVED
        assert registry.champion(MODEL_NAME).version == 1

        # A second candidate must beat the champion by 1,000 s of lead: refused, with reasons.
        second = run(lake, instance, champion_config={**LENIENT, "min_lead_gain_s": 1000.0})
        assert second["ml/detector"]["model_version"] == 2
        assert second["ml/champion"]["promoted"] is False
        assert "fail: " in second["ml/champion"]["reasons"]
        assert registry.version(MODEL_NAME, 2).approval_status == promotion.REJECTED
        assert registry.champion(MODEL_NAME).version == 1
        # The same decision taken again: the rejected candidate stays rejected, no error.
        again = dg.materialize(
            ASSETS,
            selection=[CHAMPION_KEY],
            resources=lake,
            instance=instance,
            run_config={
                "ops": {"ml__champion": {"config": {**LENIENT, "min_lead_gain_s": 1000.0}}}
            },
        )
        assert again.success
        assert registry.version(MODEL_NAME, 2).approval_status == promotion.REJECTED
        assert registry.champion(MODEL_NAME).version == 1
        champion_model = registry.load_detector(f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}")
        assert champion_model.threshold == first["ml/detector"]["threshold"]
        assert champion_model.feature_names == tuple(candidate["features"])

        # A candidate of another feature spec is not replayed with this one.
        other = replace(champion_model, feature_spec_hash="another-spec")
        other.save(tmp_path / "other")
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                DETECTOR_KEY, metadata={"model_version": 9, "model_uri": str(tmp_path / "other")}
            )
        )
        result = dg.materialize(
            ASSETS,
            selection=[EVALUATION_KEY],
            resources=lake,
            instance=instance,
            raise_on_error=False,
        )
        assert not result.success
        failure = result.failure_data_for_node("ml__evaluation")
        assert "trained on feature spec another-spec" in str(failure.error)


def test_git_sha_prefers_the_image_variable(monkeypatch):
    from firepipe.defs.training.assets import GIT_SHA_VAR, git_sha

    monkeypatch.setenv(GIT_SHA_VAR, "abc123")
    assert git_sha() == "abc123"
    monkeypatch.delenv(GIT_SHA_VAR)
    sha = git_sha()
    assert sha == "unknown" or len(sha) == 40
