"""`firepipe bench train` at a tiny size: both algorithms timed, the exported model's latency
measured against the native call it wraps, on the pipeline's own training set."""

import polars as pl
import pytest

from firepipe.bench import BenchOptions
from firepipe.bench.train import run, training_set
from firepipe.core.readings import CHANNEL_NAMES
from firepipe.core.training import dataset


def test_training_set_is_the_pipelines_split_masked_and_with_sensor_copies():
    frame = training_set(devices=24)
    splits = frame.group_by("device_id").agg(pl.col(dataset.SPLIT).n_unique())
    assert splits[dataset.SPLIT].max() == 1  # whole devices
    test = frame.filter(pl.col(dataset.SPLIT) == "test")
    learning = frame.filter(pl.col(dataset.SPLIT) != "test")
    assert test.height > 0
    assert test[dataset.PROFILE].unique().to_list() == [dataset.profile_name(CHANNEL_NAMES)]
    assert learning[dataset.PROFILE].n_unique() > 1  # train/validation devices are masked
    copies = learning["device_id"].str.contains("~noise", literal=True)
    assert copies.sum() == 2 * (~copies).sum() > 0  # two sensor copies, as ml/training_set
    assert not test["device_id"].str.contains("~noise", literal=True).any()


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
