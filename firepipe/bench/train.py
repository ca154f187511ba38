"""Train: how long a detector takes to train, and how fast the exported model answers.

The data is the pipeline's own at a small scale: simulated devices (600 s each, every scenario
family) through silver and the default feature spec into a training set, split by device and
channel-masked as `ml/training_set` does. LightGBM (the default parameters) and the logistic
reference are each timed on the train split. The LightGBM detector is then registered in a
throwaway local MLflow (as `ml/detector` does) and loaded back as its pyfunc, the serving form:
one-row and 10,000-row predictions are timed against `Detector.scores` on the same rows, the
native call the pyfunc wraps. The one-row figure is the median of many calls (a single call is
too short for the best-of rule), the others the best of --repeats calls, sampled until
--min-seconds was timed (the training figures at most 5 calls).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from firepipe.bench import BenchOptions, Figure, best_seconds
from firepipe.core.features.spec import compute_features, default_spec
from firepipe.core.lake.standardise import to_silver
from firepipe.core.simulation.simulator import GenerationSpec, simulate
from firepipe.core.training import augment, dataset, inputs
from firepipe.core.training.models import MONOTONE_ALGORITHMS, Detector, train_detector

DURATION_S = 600
DEFAULT_DEVICES = 200  # 120,000 readings
BATCH_ROWS = 10_000
SINGLE_ROW_CALLS = 200


def training_set(devices: int, seed: int = 0) -> pl.DataFrame:
    spec = default_spec()
    bronze = simulate(GenerationSpec(devices=devices, duration_s=DURATION_S, seed=seed))
    silver = to_silver({"synthetic": bronze}).readings
    return augment.build_training_set(  # as ml/training_set builds it
        compute_features(silver, spec),
        silver,
        spec,
        dataset.SplitConfig(seed=seed),
        augment.NoiseAugmentation(seed=seed),
    )


def _pyfunc(detector: Detector, example: pl.DataFrame, root: Path):  # type: ignore[no-untyped-def]
    """The detector registered in a local MLflow under `root` and loaded back as a pyfunc."""
    from firepipe.resources.registry import LocalModelRegistry

    registry = LocalModelRegistry(root=str(root))
    model_dir = root / "detector"
    detector.save(model_dir)
    version = registry.log_candidate(
        model_dir,
        name="bench-detector",
        metrics={},
        params={},
        tags={
            "feature_spec_hash": detector.feature_spec_hash,
            "training_snapshot_id": "bench",
            "git_sha": "bench",
        },
        artifacts={},
        input_example=example,
    )
    return registry.load_pyfunc(version.uri)


def run(options: BenchOptions) -> list[Figure]:
    devices = max(options.rows // DURATION_S, 10) if options.rows else DEFAULT_DEVICES
    frame = training_set(devices)
    spec = default_spec()
    # The inputs ml/detector trains with by default (offset-robust, monotone for LightGBM).
    names = inputs.detector_inputs(spec, "offset_robust")
    rising = inputs.increasing_inputs(spec, names)
    train = frame.filter(pl.col(dataset.SPLIT) == "train")
    validation = frame.filter(pl.col(dataset.SPLIT) == "validation")
    trained: dict[str, Detector] = {}

    def fit(algorithm: str) -> None:
        trained[algorithm] = train_detector(
            train,
            validation,
            names,
            spec.hash(),
            algorithm,
            increasing=rising if algorithm in MONOTONE_ALGORITHMS else (),
        )

    figures = [Figure("train", "train_rows", float(train.height), "rows", None)]
    for algorithm in ("lightgbm", "logistic"):
        seconds = best_seconds(
            lambda a=algorithm: fit(a), options.repeats, min_total_s=options.min_seconds, max_runs=5
        )
        figures.append(Figure("train", f"{algorithm}_train_s", seconds, "s", None, False))
    detector = trained["lightgbm"].with_operating_point(0.5, 0)
    rows = pl.concat([validation] * (BATCH_ROWS // max(validation.height, 1) + 1)).head(BATCH_ROWS)
    batch_pl = rows.select(names)
    with tempfile.TemporaryDirectory(prefix="firepipe-bench-train-") as tmp:
        model = _pyfunc(detector, batch_pl.head(5), Path(tmp))
        batch_pd = batch_pl.to_pandas()
        one_pd, one_pl = batch_pd.head(1), batch_pl.head(1)
        model.predict(one_pd)  # first call: lazy imports
        single, native_single = [], []
        for _ in range(SINGLE_ROW_CALLS):
            start = time.perf_counter()
            model.predict(one_pd)
            single.append(time.perf_counter() - start)
            start = time.perf_counter()
            detector.scores(one_pl)
            native_single.append(time.perf_counter() - start)
        batch_s = best_seconds(
            lambda: model.predict(batch_pd), options.repeats, min_total_s=options.min_seconds
        )
        native_batch_s = best_seconds(
            lambda: detector.scores(batch_pl), options.repeats, min_total_s=options.min_seconds
        )
    ms = 1_000.0
    return [
        *figures,
        Figure(
            "train",
            "single_row_ms",
            statistics.median(single) * ms,
            "ms",
            statistics.median(native_single) * ms,
            False,
        ),
        Figure(
            "train",
            "single_row_p99_ms",
            sorted(single)[int(0.99 * (len(single) - 1))] * ms,
            "ms",
            None,
            False,
        ),
        Figure("train", "batch_10k_ms", batch_s * ms, "ms", native_batch_s * ms, False),
        Figure(
            "train",
            "batch_10k_rows_per_s",
            BATCH_ROWS / batch_s,
            "rows/s",
            BATCH_ROWS / native_batch_s,
        ),
    ]
