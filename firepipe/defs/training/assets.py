"""The detector: training set, candidate, evaluation and the champion.

ml/training_set (an Iceberg table) joins gold's current snapshot with silver's labels at the
snapshot gold read, synthetic readings only, split by device; its snapshot carries the feature
spec and both upstream snapshots (core `lineage`). ml/detector trains a candidate through the
training_backend (tuning first when asked), picks its operating points on the validation split
and registers it, pending approval, with its feature spec inside the model (core `candidate`).
ml/evaluation judges the newest registered version on the held-out splits and the real NIST
fires with the model's own spec, and records both on it (core `assessment`). ml/champion
promotes that version only when it beats the champion (core `promotion.decide`) and records
why, approving or rejecting it.
"""

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe import names, settings
from firepipe.core.training import (
    assessment,
    augment,
    candidate,
    dataset,
    evaluation,
    lineage,
    promotion,
    real_fires,
)
from firepipe.core.training.inputs import FeatureSet
from firepipe.defs.automation import FOLLOW_UPSTREAM
from firepipe.defs.features.assets import ASSET_KEY as GOLD_KEY
from firepipe.defs.features.assets import SILVER_TABLE
from firepipe.defs.features.assets import TABLE as GOLD_TABLE
from firepipe.defs.metadata import markdown_table, png_markdown
from firepipe.lib.lakehouse import tables
from firepipe.lib.lakehouse.io_manager import SNAPSHOT_PROPERTIES
from firepipe.resources.lakehouse import Lakehouse
from firepipe.resources.registry import ModelRegistry, ModelVersionInfo
from firepipe.resources.training import TrainingBackend

TRAINING_SET_KEY = dg.AssetKey(names.TRAINING_SET)
DETECTOR_KEY = dg.AssetKey(names.DETECTOR)
EVALUATION_KEY = dg.AssetKey(names.EVALUATION)
CHAMPION_KEY = dg.AssetKey(names.CHAMPION)
TRAINING_SET_TABLE = names.table_name(names.TRAINING_SET)
MODEL_NAME = names.MODEL_NAME
GROUP = names.group_name(names.DETECTOR)
GIT_SHA_VAR = "FIREPIPE_GIT_SHA"
# The training-set snapshot a candidate was fitted on: ml/evaluation scores that very snapshot,
# so a training set rebuilt since (another split) cannot put training devices in the test split.
TRAINING_SET_SNAPSHOT_TAG = "training_set_snapshot_id"


def current_snapshot(lakehouse: Lakehouse, table: str) -> int:
    """The id of `table`'s current snapshot, read once so that its data and its properties
    are read at the same version."""
    loaded = tables.load_table(lakehouse.catalog(), table)
    snapshot = loaded.current_snapshot() if loaded is not None else None
    if snapshot is None:
        raise dg.Failure(f"{table} has no snapshot yet: materialise it first")
    return snapshot.snapshot_id


def newest_candidate(model_registry: ModelRegistry) -> ModelVersionInfo:
    """The newest registered version of the detector: the candidate ml/detector logged last."""
    info = model_registry.latest_version(MODEL_NAME)
    if info is None:
        raise dg.Failure(f"{MODEL_NAME} has no registered version: materialise ml/detector")
    return info


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
    automation_condition=FOLLOW_UPSTREAM,
)
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, lakehouse: Lakehouse
) -> dg.Output[pl.DataFrame]:
    """Gold features of synthetic readings with their label (a fire burns), scenario family and
    split; whole devices in one split only. Field readings never enter it. Train and validation
    devices come again as noisy copies (features of their readings through noisier sensors)."""
    # Gold's data, spec and silver snapshot from one snapshot, so they agree even when gold is
    # written again meanwhile.
    gold_snapshot = current_snapshot(lakehouse, GOLD_TABLE)
    try:
        gold = lineage.gold_lineage(lakehouse.snapshot_properties(GOLD_TABLE, gold_snapshot))
    except ValueError as e:
        raise dg.Failure(f"{GOLD_TABLE} snapshot {gold_snapshot}: {e}") from e
    features = lakehouse.scan(GOLD_TABLE, snapshot_id=gold_snapshot).collect()
    augmentation = augment.NoiseAugmentation(config.noise_copies, config.seed)
    # One read of silver: the labels of every reading, and the readings themselves when the
    # noisy copies need them.
    silver = lakehouse.scan(SILVER_TABLE, snapshot_id=gold.silver_snapshot_id)
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
        features, silver.collect(), gold.spec, split_config, augmentation, config.mask_channels
    )
    copies = frame["device_id"].str.contains(dataset.COPY_MARK, literal=True)
    synthetic_rows = frame.height - int(copies.sum())
    balance = dataset.class_balance(frame)
    context.log.info(f"training set: {frame.height} rows, split {config.split}")
    built = lineage.Lineage(gold.spec, gold.silver_snapshot_id, gold_snapshot)
    return dg.Output(
        frame,
        metadata={
            SNAPSHOT_PROPERTIES: lineage.training_set_properties(built),
            "class_balance": markdown_table(balance),
            "field_rows_excluded": features.height - synthetic_rows,
            "noise_copies": augmentation.copies,
            "rows_noisy_copies": frame.height - synthetic_rows,
            "feature_spec_hash": gold.spec.hash(),
            "gold_snapshot_id": str(gold_snapshot),
            "silver_snapshot_id": str(gold.silver_snapshot_id),
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


@dg.asset(
    key=DETECTOR_KEY,
    group_name=GROUP,
    kinds={"lightgbm", "mlflow"},
    deps=[TRAINING_SET_KEY],
)
def detector(
    context: dg.AssetExecutionContext,
    config: DetectorConfig,
    lakehouse: Lakehouse,
    training_backend: TrainingBackend,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """A candidate detector trained on the train split (tuned on validation when asked), its
    operating point chosen on validation: no false alarm there, fires detected soonest; and one
    such point per channel profile, chosen on the profile's own validation devices. The model
    carries the feature spec of its training set."""
    # The rows and their lineage from one snapshot, read once: a training set written
    # meanwhile cannot pair one version's spec with another's rows.
    training_snapshot = current_snapshot(lakehouse, TRAINING_SET_TABLE)
    frame = lakehouse.scan(TRAINING_SET_TABLE, snapshot_id=training_snapshot)
    try:
        built = lineage.training_set_lineage(
            lakehouse.snapshot_properties(TRAINING_SET_TABLE, training_snapshot)
        )
    except ValueError as e:
        raise dg.Failure(f"{TRAINING_SET_TABLE}: {e}") from e
    with tempfile.TemporaryDirectory(prefix="firepipe-detector-") as tmp:
        fitted = candidate.fit_candidate(
            frame,
            built.spec,
            training_backend,
            context.run.run_id,
            Path(tmp) / "model",
            candidate.CandidateSettings(**config.model_dump()),
        )
        version = model_registry.log_candidate(
            fitted.model_dir,
            name=MODEL_NAME,
            metrics=fitted.metrics,
            params=fitted.hyperparameters,
            tags={
                "feature_spec_hash": built.spec.hash(),
                "training_snapshot_id": str(built.gold_snapshot_id),
                TRAINING_SET_SNAPSHOT_TAG: str(training_snapshot),
                "git_sha": git_sha(),
                "dagster_run_id": context.run.run_id,
                **fitted.serving.tags(),
            },
            artifacts={},
            input_example=fitted.input_example,
        )
    if fitted.tuning_objective is not None:
        context.log.info(f"tuning: best validation average precision {fitted.tuning_objective:.4f}")
    model = fitted.detector
    return dg.MaterializeResult(
        metadata={
            "model_name": MODEL_NAME,
            "model_version": version.version,
            "model_uri": version.uri,
            "algorithm": config.algorithm,
            "feature_set": config.features,
            "feature_spec_hash": built.spec.hash(),
            "features": dg.MetadataValue.json(list(model.feature_names)),
            "increasing": dg.MetadataValue.json(list(fitted.increasing)),
            "threshold": model.threshold,
            "persistence_s": model.persistence_s,
            "operating_points": markdown_table(fitted.operating_points),
            "profile_points": len(model.profile_points),
            "hyperparameters": dg.MetadataValue.json(fitted.hyperparameters),
            **fitted.serving.tags(),
            **{name: dg.MetadataValue.float(value) for name, value in fitted.metrics.items()},
        }
    )


class EvaluationConfig(dg.Config):
    nist_data_dir: str = Field(
        default="",
        description="empty: FIREPIPE_NIST_DATA_DIR, else the NIST tests packaged with firepipe",
    )
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
    deps=[TRAINING_SET_KEY, DETECTOR_KEY],
    # A new candidate is evaluated; a rebuilt training set alone is not a reason to evaluate
    # the same candidate again (it is scored on the snapshot it was fitted on).
    automation_condition=FOLLOW_UPSTREAM.replace(
        "any_deps_updated",
        dg.AutomationCondition.any_deps_updated().ignore(
            dg.AssetSelection.assets(TRAINING_SET_KEY)
        ),
    ).with_label("eager, on a new detector"),
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    lakehouse: Lakehouse,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """The newest candidate on every split (ROC-AUC, PR-AUC, F1, false alarms per 1,000
    device-hours, time to detection by fire scenario), on the test split seen through each
    channel profile, and on the real NIST fires, station by station against the commercial
    alarms; recorded on the candidate's MLflow run with the plots. Each device alarms at its
    profile's point; the features are those of the model's own spec."""
    info = newest_candidate(model_registry)
    model = model_registry.load_detector(info.uri)
    # The training set the candidate was fitted on (a version logged before the tag existed:
    # the current one).
    tagged = info.tags.get(TRAINING_SET_SNAPSHOT_TAG)
    snapshot = int(tagged) if tagged else current_snapshot(lakehouse, TRAINING_SET_TABLE)
    frame = lakehouse.scan(TRAINING_SET_TABLE, snapshot_id=snapshot)
    folder = Path(config.nist_data_dir) if config.nist_data_dir else settings.nist_data_dir()
    try:
        judged = assessment.assess(frame, model, folder, config.warm_up_s)
    except ValueError as e:  # a model saved without its spec, bad NIST data
        raise dg.Failure(f"model version {info.version}: {e}") from e
    model_registry.record_evaluation(MODEL_NAME, info.version, judged.metrics, judged.plots)
    real, baseline = judged.replay.model, judged.replay.baseline
    context.log.info(real.table())
    return dg.MaterializeResult(
        metadata={
            "model_version": info.version,
            **{name: dg.MetadataValue.float(value) for name, value in judged.headline.items()},
            **{name: markdown_table(table) for name, table in judged.tables().items()},
            "real_summary": dg.MetadataValue.json(real.summary),
            "fixed_threshold_baseline": dg.MetadataValue.json(baseline.summary),
            **{name: png_markdown(png, name) for name, png in judged.plots.items()},
        }
    )


class ChampionConfig(dg.Config):
    min_lead_gain_s: float = 0.0
    max_share_decrease: float = 0.0
    max_false_alarm_increase_per_1000h: float = 0.0
    max_pre_ignition_alarms: int = 0
    max_false_alarms_per_1000h: float = 0.0
    min_share_no_later_than_median: float = 0.0


@dg.asset(
    key=CHAMPION_KEY,
    group_name=GROUP,
    kinds={"mlflow"},
    deps=[EVALUATION_KEY],
    automation_condition=FOLLOW_UPSTREAM,
)
def champion(
    context: dg.AssetExecutionContext, config: ChampionConfig, model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """Champion/challenger: the evaluated candidate becomes the champion (Approved) only when
    it beats the champion on real-fire lead time and does no worse on false alarms, within the
    config's thresholds; otherwise it is Rejected. Every reason is recorded."""
    version = newest_candidate(model_registry).version
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
    try:
        decision = promotion.decide(candidate_metrics, champion_metrics, policy)
    except ValueError as e:  # a version without the evaluation's metrics
        raise dg.Failure(f"{MODEL_NAME} version {version}: {e} (materialise ml/evaluation)") from e
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
