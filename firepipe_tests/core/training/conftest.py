"""A small training set as ml/training_set builds it, and a trainer that runs in the test."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from firepipe.core.features.spec import compute_features, default_spec
from firepipe.core.lake.standardise import to_silver
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import augment
from firepipe.core.training.dataset import SplitConfig
from firepipe.core.training.job import encode_hyperparameters, fit_request, parse_hyperparameters


@pytest.fixture(scope="session")
def small_training_set() -> pl.DataFrame:
    """80 simulated devices of 600 s, split, with noisy copies and channel profiles."""
    spec = default_spec()
    bronze = simulate(GenerationSpec(devices=80, duration_s=600, seed=11), workers=1)
    silver = to_silver({"synthetic": bronze}).readings
    return augment.build_training_set(
        compute_features(silver, spec),
        silver,
        spec,
        SplitConfig(seed=0),
        augment.NoiseAugmentation(seed=0),
    )


@dataclass(frozen=True)
class Tuned:
    best_hyperparameters: dict[str, str]
    objective: float


@dataclass
class InProcessTrainer:
    """A `Trainer` that fits in the test process and records what it was asked."""

    calls: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    tuned_params: Mapping[str, float | int] = field(default_factory=lambda: {"num_leaves": 8})

    def train(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        hyperparameters: Mapping[str, str],
        model_dir: Path,
    ) -> dict[str, float]:
        self.calls.append(("train", job_name, dict(hyperparameters)))
        request = parse_hyperparameters(hyperparameters)
        fit_request(request, channels["train"], channels["validation"]).save(model_dir)
        return {"train:rows": float(channels["train"].height)}

    def tune(
        self,
        job_name: str,
        channels: Mapping[str, pl.DataFrame],
        static_hyperparameters: Mapping[str, str],
        max_trials: int,
        seed: int,
    ) -> Tuned:
        self.calls.append(("tune", job_name, dict(static_hyperparameters)))
        request = parse_hyperparameters(static_hyperparameters)
        params = {**(request.params or {}), **self.tuned_params}
        best = parse_hyperparameters(
            {**static_hyperparameters, **{k: str(v) for k, v in params.items()}}
        )
        return Tuned(encode_hyperparameters(best), 0.5)
