"""The detector: training set, candidate, evaluation and the champion.

ml/training_set (an Iceberg table) joins gold with silver's labels, synthetic readings only,
split by device. ml/detector trains a candidate through the training_backend (tuning first when
asked), picks its operating point on the validation split and registers it, pending approval.
ml/evaluation scores the held-out splits and replays the real NIST fires, and records both on
the candidate. ml/champion promotes the candidate only when it beats the champion (core
`promotion.decide`) and records why, approving or rejecting it.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe import names, settings
from firepipe.core.features.spec import FeatureSpec
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.realdata import nist
from firepipe.core.training import (
    augment,
    dataset,
    evaluation,
    inputs,
    plots,
    promotion,
    real_fires,
)
from firepipe.core.training.inputs import FeatureSet
from firepipe.core.training.job import (
    TrainingRequest,
    encode_hyperparameters,
    parse_hyperparameters,
)
from firepipe.core.training.models import MONOTONE_ALGORITHMS, Detector
from firepipe.defs.features.assets import ASSET_KEY as GOLD_KEY
from firepipe.defs.features.assets import SILVER_TABLE
from firepipe.defs.features.assets import TABLE as GOLD_TABLE
from firepipe.defs.metadata import markdown_table, png_markdown
from firepipe.resources.lakehouse import Lakehouse
from firepipe.resources.registry import ModelRegistry
from firepipe.resources.training import TrainingBackend

TRAINING_SET_KEY = dg.AssetKey(names.TRAINING_SET)
DETECTOR_KEY = dg.AssetKey(names.DETECTOR)
EVALUATION_KEY = dg.AssetKey(names.EVALUATION)
CHAMPION_KEY = dg.AssetKey(names.CHAMPION)
MODEL_NAME = names.MODEL_NAME
GROUP = names.group_name(names.DETECTOR)
GIT_SHA_VAR = "FIREPIPE_GIT_SHA"


def _latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialised yet")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def _feature_spec(metadata: dict[str, Any]) -> FeatureSpec:
    """The feature spec an asset recorded in its materialisation's metadata."""
    return FeatureSpec.from_json(json.dumps(metadata["feature_spec"]))


class TrainingSetConfig(dg.Config):
    split: Literal["device", "time_blocked", "family_holdout"] = Field(
        default="device",
        description="device: whole devices at random; time_blocked: the earliest devices train, "
        "the latest test; family_holdout: holdout_scenarios only in test",
    )
    holdout_scenarios: list[str] = Field(default_factory=list)
    validation_share: float = 0.15
    test_share: float = 0.15
    seed: int = 0
    mask_channels: bool = Field(
        default=True,
        description="give each train/validation device a channel profile (firepipe.core."
        "training.dataset.CHANNEL_PROFILES), so the detector learns to work without a sensor",
    )
    noise_copies: int = Field(
        default=augment.NoiseAugmentation.copies,
        ge=0,
        description="noisy copies of each train/validation device, its features computed "
        "again through noisier sensors (firepipe.core.training.augment); 0: none",
    )


@dg.asset(
    key=TRAINING_SET_KEY,
    group_name=GROUP,
    kinds={"polars", "iceberg"},
    deps=[GOLD_KEY],
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lakehouse: Lakehouse
) -> dg.Output[pl.DataFrame]:
    """Gold features of synthetic readings with their label (a fire burns), scenario family and
    split; whole devices in one split only. Field readings never enter it. Train and validation
    devices come again as noisy copies (features of their readings through noisier sensors)."""
    # Gold's snapshot, spec and silver snapshot from one materialisation, so they agree even
    # when gold has been written again since.
    gold = _latest_metadata(context, GOLD_KEY)
    spec = _feature_spec(gold)
    gold_snapshot = int(gold["iceberg/snapshot_id"])
    features = lakehouse.scan(GOLD_TABLE, snapshot_id=gold_snapshot).collect()
    silver_snapshot = int(gold["silver_snapshot_id"])
    augmentation = augment.NoiseAugmentation(config.noise_copies, config.seed)
    # One read of silver: the labels of every reading, and the readings themselves when the
    # noisy copies need them.
    silver = lakehouse.scan(SILVER_TABLE, snapshot_id=silver_snapshot)
    if not augmentation.copies:
        silver = silver.select(dataset.SILVER_COLUMNS)
    split_config = dataset.SplitConfig(
        kind=config.split,
        validation_share=config.validation_share,
        test_share=config.test_share,
        holdout_scenarios=tuple(config.holdout_scenarios),
        seed=config.seed,
    )
    frame = augment.build_training_set(
        features, silver.collect(), spec, split_config, augmentation, config.mask_channels
    )
    copies = frame["device_id"].str.contains(augment.COPY_MARK, literal=True)
    synthetic_rows = frame.height - int(copies.sum())
    balance = dataset.class_balance(frame)
    context.log.info(f"training set: {frame.height} rows, split {config.split}")
    return dg.Output(
        frame,
        metadata={
            "class_balance": markdown_table(balance),
            "field_rows_excluded": features.height - synthetic_rows,
            "noise_copies": augmentation.copies,
            "rows_noisy_copies": frame.height - synthetic_rows,
            "feature_spec_hash": spec.hash(),
            "feature_spec": dg.MetadataValue.json(json.loads(spec.to_json())),
            "gold_snapshot_id": str(gold_snapshot),
            "silver_snapshot_id": str(silver_snapshot),
            "split": config.split,
            **{
                f"rows_{split}": frame.filter(pl.col(dataset.SPLIT) == split).height
                for split in dataset.SPLITS
            },
        },
    )


class DetectorConfig(dg.Config):
    algorithm: Literal["lightgbm", "logistic"] = "lightgbm"
    tune: bool = Field(default=False, description="search the algorithm's space first")
    max_trials: int = Field(default=20, gt=0)
    seed: int = 0
    params: dict[str, str] = Field(
        default_factory=dict,
        description="model parameters over the algorithm's defaults, as strings (the way "
        "SageMaker passes hyperparameters), e.g. {num_boost_round: '200'}",
    )
    features: FeatureSet = Field(
        default="offset_robust",
        description="offset_robust: the changes (differences, rates of rise, rises over the "
        "300 s mean, the smoke-heat lag), which a sensor's zero offset cannot move; all: every "
        "gold feature (firepipe/core/training/inputs.py)",
    )
    monotone: bool = Field(
        default=True,
        description="LightGBM: the score never falls as a fire-raised channel's rise grows; "
        "the logistic reference takes no constraints",
    )
    profile_points: bool = Field(
        default=True,
        description="besides the one operating point, choose a threshold per channel profile "
        "on that profile's validation devices, at the one point's persistence (firepipe.core."
        "training.evaluation.choose_profile_points); a device alarms at its profile's point",
    )
    profile_min_devices: int = Field(
        default=evaluation.MIN_PROFILE_DEVICES,
        ge=1,
        description="a profile gets its own operating point only with at least this many "
        "non-fire validation devices (noisy copies of one device count once)",
    )


def git_sha() -> str:
    """The commit the code runs from: FIREPIPE_GIT_SHA (set when an image is built, which has
    no .git), else the checkout's HEAD, else 'unknown'."""
    if sha := os.environ.get(GIT_SHA_VAR):
        return sha
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _learning_columns(frame: pl.LazyFrame, feature_names: list[str]) -> list[str]:
    """The columns training and evaluation read: the labels, the features and the channel
    profile (when the training set has one)."""
    names = frame.collect_schema().names()
    wanted = {*evaluation.SPLIT_COLUMNS, dataset.PROFILE, *feature_names}
    return [c for c in names if c in wanted]


@dg.asset(
    key=DETECTOR_KEY,
    group_name=GROUP,
    kinds={"lightgbm", "mlflow"},
    ins={"frame": dg.AssetIn(TRAINING_SET_KEY)},
)
def detector(
    context: dg.AssetExecutionContext,
    config: DetectorConfig,
    frame: pl.LazyFrame,
    training_backend: TrainingBackend,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """A candidate detector trained on the train split (tuned on validation when asked), its
    operating point chosen on validation: no false alarm there, fires detected soonest; and one
    such point per channel profile, chosen on the profile's own validation devices."""
    upstream = _latest_metadata(context, TRAINING_SET_KEY)
    spec = _feature_spec(upstream)
    names = list(inputs.detector_inputs(spec, config.features))
    monotone = config.monotone and config.algorithm in MONOTONE_ALGORITHMS
    increasing = inputs.increasing_inputs(spec, tuple(names)) if monotone else ()
    # Read once, and only what training uses: the test split and the other columns stay out.
    splits = ("train", "validation")
    learning = (
        frame.filter(pl.col(dataset.SPLIT).is_in(splits))
        .select(dataset.SPLIT, *_learning_columns(frame, names))
        .collect()
    )
    channels = {
        split: learning.filter(pl.col(dataset.SPLIT) == split).drop(dataset.SPLIT)
        for split in splits
    }
    del learning
    # The channel profiles choose the operating points (none when the training set was built
    # without them); training does not read them.
    own = channels["validation"]
    profiles = [own[dataset.PROFILE].cast(pl.String)] if dataset.PROFILE in own.columns else []
    channels = {split: part.drop(dataset.PROFILE, strict=False) for split, part in channels.items()}
    for split, part in channels.items():
        if part.is_empty():
            raise dg.Failure(f"the training set has no {split} rows: generate more devices")
    request = TrainingRequest(
        config.algorithm, tuple(names), spec.hash(), config.seed, increasing=increasing
    )
    # The config's params parsed as the entry point will parse them: a bad one fails here.
    hyperparameters = encode_hyperparameters(
        parse_hyperparameters({**encode_hyperparameters(request), **config.params})
    )
    job = f"firepipe-{context.run.run_id[:8]}-{config.algorithm}"
    if config.tune:
        tuned = training_backend.tune(
            f"{job}-tune", channels, hyperparameters, config.max_trials, config.seed
        )
        hyperparameters = tuned.best_hyperparameters
        context.log.info(f"tuning: best validation average precision {tuned.objective:.4f}")
    with tempfile.TemporaryDirectory(prefix="firepipe-detector-") as tmp:
        model_dir = Path(tmp) / "model"
        metrics = training_backend.train(job, channels, hyperparameters, model_dir)
        candidate = Detector.load(model_dir)
        validation = channels["validation"].with_columns(
            pl.Series("score", candidate.scores(channels["validation"]))
        )
        threshold, persistence_s = evaluation.choose_operating_point(validation)
        profile_points: dict[str, tuple[float, int]] = {}
        if config.profile_points and profiles:
            validation = validation.with_columns(*profiles)
            # Only the threshold adapts to a profile: its persistence is the one point's, chosen
            # on every validation device (measured: on make run's data, persistences chosen on a
            # profile's own few devices raised false alarms on the test split's profile views).
            chosen = evaluation.choose_profile_points(
                validation, config.profile_min_devices, (persistence_s,)
            )
            profile_points = {name: (t, int(p)) for name, (t, p) in chosen.items()}
        candidate = candidate.with_operating_point(threshold, int(persistence_s), profile_points)
        candidate.save(model_dir)
        version = model_registry.log_candidate(
            model_dir,
            name=MODEL_NAME,
            metrics=metrics,
            params=hyperparameters,
            tags={
                "feature_spec_hash": spec.hash(),
                "training_snapshot_id": str(upstream.get("gold_snapshot_id", "")),
                "git_sha": git_sha(),
                "dagster_run_id": context.run.run_id,
            },
            artifacts={},
            # With ts and device_id: a detector with a persistence needs them to answer.
            input_example=channels["validation"]
            .select(*names, "device_id", "ts")
            .with_columns(*profiles)
            .head(5),
        )
    operating_points = _operating_points_table(validation, candidate)
    return dg.MaterializeResult(
        metadata={
            "model_name": MODEL_NAME,
            "model_version": version.version,
            "model_uri": version.uri,
            "algorithm": config.algorithm,
            "feature_set": config.features,
            "features": dg.MetadataValue.json(names),
            "increasing": dg.MetadataValue.json(list(increasing)),
            "threshold": threshold,
            "persistence_s": persistence_s,
            "operating_points": markdown_table(operating_points),
            "profile_points": len(profile_points),
            "hyperparameters": dg.MetadataValue.json(dict(hyperparameters)),
            **{name: dg.MetadataValue.float(value) for name, value in metrics.items()},
        }
    )


def _operating_points_table(validation: pl.DataFrame, detector: Detector) -> pl.DataFrame:
    """Per channel profile of validation: its devices and the operating point it alarms at
    (its own, or the one point)."""
    if dataset.PROFILE not in validation.columns:
        return pl.DataFrame(
            {"threshold": [detector.threshold], "persistence_s": [detector.persistence_s]}
        )
    devices = evaluation.profile_devices(validation)
    points = [detector.operating_point(name) for name in devices[dataset.PROFILE]]
    return devices.with_columns(
        pl.Series("own_point", [n in detector.profile_points for n in devices[dataset.PROFILE]]),
        pl.Series("threshold", [t for t, _ in points], dtype=pl.Float64),
        pl.Series("persistence_s", [p for _, p in points], dtype=pl.Int64),
    )


class EvaluationConfig(dg.Config):
    nist_data_dir: str = Field(default="", description="empty: FIREPIPE_NIST_DATA_DIR")
    warm_up_s: float = Field(
        default=real_fires.WARM_UP_S,
        ge=0,
        le=real_fires.MAX_WARM_UP_S,
        description="seconds of each NIST station's quiet start (the median of its first 10 s) "
        "replayed before ignition (the records start at ignition; "
        "firepipe.core.training.real_fires)",
    )


@dg.asset(
    key=EVALUATION_KEY,
    group_name=GROUP,
    kinds={"polars", "mlflow"},
    ins={"frame": dg.AssetIn(TRAINING_SET_KEY)},
    deps=[DETECTOR_KEY],
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    frame: pl.LazyFrame,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """The candidate on every split (ROC-AUC, PR-AUC, F1, false alarms per 1,000 device-hours,
    time to detection by fire scenario), on the test split seen through each channel profile,
    and on the real NIST fires, station by station against the commercial alarms; recorded on
    the candidate's MLflow run with the plots. Each device alarms at its profile's point."""
    candidate = _latest_metadata(context, DETECTOR_KEY)
    version = int(candidate["model_version"])
    model = model_registry.load_detector(str(candidate["model_uri"]))
    spec = _feature_spec(_latest_metadata(context, TRAINING_SET_KEY))
    try:  # the NIST replay computes the features of the training set's spec
        real_fires.check_feature_spec(model, spec)
    except ValueError as e:
        raise dg.Failure(f"model version {version}: {e}") from e
    # Only the columns the model reads (its inputs can be a part of the spec's features).
    columns = _learning_columns(frame, list(model.feature_names))
    rows = frame.select(dataset.SPLIT, *columns).collect()
    if dataset.PROFILE not in rows.columns:  # built without profiles: every channel, as simulated
        rows = rows.with_columns(pl.lit(dataset.profile_name(CHANNEL_NAMES)).alias(dataset.PROFILE))
    scored = rows.with_columns(pl.Series("score", model.scores(rows)))
    points = (model.threshold, model.persistence_s, model.profile_points)
    report: dict[str, Any] = evaluation.evaluate(scored, *points)
    # The test split once more, every device seen through each channel profile in turn.
    test = rows.filter(pl.col(dataset.SPLIT) == "test").drop(dataset.PROFILE, strict=False)
    if test.height:
        inputs_read = set(model.feature_names)
        read = FeatureSpec(tuple(f for f in spec.features if f.name in inputs_read))
        views = dataset.profile_views(test, read)
        views = views.with_columns(pl.Series("score", model.scores(views)))
        report[evaluation.PROFILES_REPORT] = evaluation.evaluate_profiles(views, *points)
    folder = Path(config.nist_data_dir) if config.nist_data_dir else settings.nist_data_dir()
    tests = nist.read_tests(folder)
    activations = nist.read_activation_times(folder)
    real = real_fires.replay_detector(tests, activations, model, spec, config.warm_up_s)
    baseline = real_fires.fixed_threshold_baseline(tests, activations, config.warm_up_s)
    detections = pl.concat(
        [
            evaluation.detection_times(
                scored.filter(pl.col(dataset.SPLIT) == split), *points
            ).with_columns(pl.lit(split).alias("split"))
            for split in evaluation.splits_in(scored)
        ],
        how="diagonal_relaxed",
    )
    pngs = {
        "roc.png": plots.roc_png(scored),
        "time_to_detection.png": plots.time_to_detection_png(detections),
        "nist_timelines.png": plots.nist_timelines_png(real),
    }
    metrics = {
        **evaluation.flat_metrics(report),
        **evaluation.flat_metrics(
            {k: v for k, v in real.summary.items() if k not in real_fires.SETTINGS},
            "real_",
        ),
    }
    model_registry.record_evaluation(MODEL_NAME, version, metrics, pngs)
    context.log.info(real.table())
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "real_fires": markdown_table(real.stations),
            "real_summary": dg.MetadataValue.json(real.summary),
            "fixed_threshold_baseline": dg.MetadataValue.json(baseline.summary),
            **{name: png_markdown(png, name) for name, png in pngs.items()},
            **{name: dg.MetadataValue.float(value) for name, value in sorted(metrics.items())},
        }
    )


class ChampionConfig(dg.Config):
    min_lead_gain_s: float = 0.0
    max_share_decrease: float = 0.0
    max_false_alarm_increase_per_1000h: float = 0.0
    max_pre_ignition_alarms: int = 0
    max_false_alarms_per_1000h: float = 0.0
    min_share_no_later_than_median: float = 0.0


@dg.asset(key=CHAMPION_KEY, group_name=GROUP, kinds={"mlflow"}, deps=[EVALUATION_KEY])
def champion(
    context: dg.AssetExecutionContext, config: ChampionConfig, model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """Champion/challenger: the evaluated candidate becomes the champion (Approved) only when
    it beats the champion on real-fire lead time and does no worse on false alarms, within the
    config's thresholds; otherwise it is Rejected. Every reason is recorded."""
    version = int(_latest_metadata(context, EVALUATION_KEY)["model_version"])
    policy = promotion.PromotionPolicy(**config.model_dump())
    current = model_registry.champion(MODEL_NAME)
    if current is not None and current.version == version:
        return dg.MaterializeResult(
            metadata={"champion_version": version, "decision": "already the champion"}
        )
    candidate_metrics = model_registry.version_metrics(MODEL_NAME, version)
    champion_metrics = (
        model_registry.version_metrics(MODEL_NAME, current.version) if current else None
    )
    decision = promotion.decide(candidate_metrics, champion_metrics, policy)
    reason = "; ".join(decision.reasons)
    status = promotion.APPROVED if decision.promote else promotion.REJECTED
    model_registry.set_approval(MODEL_NAME, version, status, reason)
    if decision.promote:
        model_registry.promote(MODEL_NAME, version, reason)
    for line in decision.reasons:
        context.log.info(line)
    return dg.MaterializeResult(
        metadata={
            "candidate_version": version,
            "previous_champion_version": current.version if current else None,
            "promoted": decision.promote,
            "champion_version": version
            if decision.promote
            else (current.version if current else None),
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
        }
    )
