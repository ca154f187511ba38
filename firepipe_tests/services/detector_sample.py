"""A small trained detector on random features, for the registry and pyfunc tests."""

from pathlib import Path

import numpy as np
import polars as pl

from firepipe.core.training.dataset import LABEL
from firepipe.core.training.models import Detector, train_detector
from firepipe.resources.registry import ModelRegistry, ModelVersionInfo

FEATURES = ("temperature__mean_30s", "smoke__max_60s", "co__slope_30s")


def feature_frame(rows: int = 400, seed: int = 0) -> pl.DataFrame:
    """Float32 features (every 7th co value null: a device without a gas sensor), a label that
    depends on two of them, and device_id/ts at 1 Hz over four devices."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
    label = (x[:, 0] + x[:, 1] + rng.normal(scale=0.5, size=rows)) > 1.0
    frame = pl.DataFrame({name: x[:, i] for i, name in enumerate(FEATURES)})
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) % 7 == 0)
        .then(None)
        .otherwise(pl.col(FEATURES[2]))
        .alias(FEATURES[2]),
        pl.Series(LABEL, label),
        device_id=pl.format("dev-{}", pl.int_range(pl.len()) % 4),
        ts=pl.datetime(2026, 1, 1) + pl.duration(seconds=pl.int_range(pl.len()) // 4),
    )


def saved_detector(
    directory: Path, algorithm: str = "lightgbm", threshold: float = 0.5, persistence_s: int = 0
) -> Detector:
    # random features without ignition times: every fire row weighs the same
    params = {"early_fire_weight": 1.0}
    if algorithm == "lightgbm":
        params["num_boost_round"] = 20
    detector = train_detector(feature_frame(), None, FEATURES, "spec-hash", algorithm, params)
    detector = detector.with_operating_point(threshold, persistence_s)
    detector.save(directory)
    return detector


def register_detector(
    registry: ModelRegistry,
    directory: Path,
    name: str,
    example: pl.DataFrame,
    spec_hash: str = "spec-hash",
    snapshot: str = "1",
) -> ModelVersionInfo:
    """Register the detector saved in `directory` as a new version of `name`, with the tags a
    candidate needs and no metrics or plots (the tests' shortcut around ml/detector)."""
    tags = {"feature_spec_hash": spec_hash, "training_snapshot_id": snapshot, "git_sha": "test"}
    return registry.log_candidate(
        directory,
        name=name,
        metrics={},
        params={},
        tags=tags,
        artifacts={},
        input_example=example,
    )
