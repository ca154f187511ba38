"""The detector's figures: PNG bytes that change with their input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from firepipe.core.features.spec import default_spec
from firepipe.core.realdata import nist
from firepipe.core.training import plots
from firepipe.core.training import real_fires as rf
from firepipe_tests.conftest import nist_data_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def scored(seed: int, separation: float) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.random(400) < 0.3
    score = np.clip(rng.normal(0.3 + separation * label, 0.2), 0, 1)
    split = np.where(np.arange(400) < 300, "train", "validation")
    return pl.DataFrame({"split": split, "label": label, "score": score})


def test_roc_png_is_a_png_that_depends_on_the_scores() -> None:
    weak = plots.roc_png(scored(0, 0.1))
    strong = plots.roc_png(scored(0, 0.5))
    assert weak.startswith(PNG_SIGNATURE)
    assert strong.startswith(PNG_SIGNATURE)
    assert weak != strong
    with pytest.raises(ValueError, match="both fire and non-fire"):
        plots.roc_png(scored(0, 0.5).with_columns(pl.lit(True).alias("label")))


def test_time_to_detection_png_depends_on_the_times() -> None:
    def detections(shift_s: float) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "split": ["validation"] * 4 + ["test"] * 4,
                "scenario": ["flaming_fast", "flaming_fast", "smouldering_cotton", "candle"] * 2,
                "time_to_detection_s": [10.0, 14.0, 90.0, None, 12.0, 20.0, 80.0 + shift_s, 5.0],
            }
        )

    first = plots.time_to_detection_png(detections(0.0))
    second = plots.time_to_detection_png(detections(60.0))
    assert first.startswith(PNG_SIGNATURE)
    assert first != second
    with pytest.raises(ValueError, match="no fire devices"):
        plots.time_to_detection_png(detections(0.0).clear())


def test_nist_timelines_png_depends_on_the_operating_point() -> None:
    folder = Path(nist_data_dir())
    tests = [nist.read_test(folder / "NIST_Smoke_Alarms_SDC05.csv")]
    real = nist.read_activation_times(folder)
    spec = default_spec()
    low = rf.evaluate_real(tests, real, spec, rf.fixed_threshold_scores, 1.0, 0)
    high = rf.evaluate_real(tests, real, spec, rf.fixed_threshold_scores, 2.0, 10)
    low_png, high_png = plots.nist_timelines_png(low), plots.nist_timelines_png(high)
    assert low_png.startswith(PNG_SIGNATURE)
    assert low_png != high_png
