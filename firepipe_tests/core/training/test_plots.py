"""The detector's figures: PNG bytes that change with their input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

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


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height in pixels, from the PNG's IHDR chunk."""
    assert data.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def smallest_text_pt(fig: Figure) -> float:
    fig.canvas.draw()  # tick labels exist once drawn
    sizes = [
        t.get_fontsize()
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None
    ]
    assert sizes
    return float(min(sizes))


def test_every_figure_is_wide_enough_to_read_with_text_of_at_least_10_pt() -> None:
    folder = Path(nist_data_dir())
    tests = [nist.read_test(folder / f"NIST_Smoke_Alarms_{t}.csv") for t in ("SDC02", "SDC05")]
    real = rf.evaluate_real(
        tests, nist.read_activation_times(folder), None, rf.fixed_threshold_scores, 1.0, 0
    )
    detections = pl.DataFrame(
        {
            "split": ["validation", "test"] * 3,
            "scenario": ["flaming_fast", "flaming_fast", "candle", "candle", "toast", "toast"],
            "time_to_detection_s": [10.0, 14.0, None, 80.0, 5.0, 6.0],
        }
    )
    figures = {
        "roc": (plots.roc_figure(scored(0, 0.5)), plots.roc_png(scored(0, 0.5))),
        "times": (
            plots.time_to_detection_figure(detections),
            plots.time_to_detection_png(detections),
        ),
        "nist": (plots.nist_timelines_figure(real), plots.nist_timelines_png(real)),
    }
    for name, (fig, data) in figures.items():
        width, height = png_size(data)
        assert width >= 1200, (name, width)
        assert (width, height) == tuple(round(v) for v in fig.get_size_inches() * fig.dpi), name
        assert smallest_text_pt(fig) >= 10, name
