"""`firepipe bench train` at a tiny size: both algorithms timed, the exported model's latency
measured against the native call it wraps, on the pipeline's own training set."""

import polars as pl
import pytest

from firepipe.bench import BenchOptions
from firepipe.bench.train import run, training_set
from firepipe.core.training import dataset


def test_training_set_is_split_by_device_and_masked():
    frame = training_set(devices=12)
    assert (
        frame.group_by("device_id").agg(pl.col(dataset.SPLIT).n_unique())[dataset.SPLIT].max() == 1
    )
    test_profiles = frame.filter(pl.col(dataset.SPLIT) == "test")[dataset.PROFILE].unique()
    assert test_profiles.len() <= 1  # test rows keep every channel


@pytest.mark.slow
def test_bench_train_reports_training_and_latency():
    figures = {f.name: f for f in run(BenchOptions(rows=12_000, repeats=1, min_seconds=0))}
    assert figures["train_rows"].value > 0
    for name in ("lightgbm_train_s", "logistic_train_s", "single_row_ms", "batch_10k_ms"):
        assert figures[name].value > 0, name
    # Each latency is compared with Detector.scores on the same rows.
    assert figures["single_row_ms"].baseline > 0
    assert figures["batch_10k_rows_per_s"].value == pytest.approx(
        10_000 / (figures["batch_10k_ms"].value / 1_000)
    )
    assert figures["single_row_p99_ms"].value >= figures["single_row_ms"].value
