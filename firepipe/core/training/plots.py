"""The detector's figures as PNG bytes, drawn on matplotlib's Agg canvas (no pyplot state), for
asset metadata and the MLflow run: ROC per split, time to detection per fire scenario, and the
NIST timelines (station scores beside the real alarms).

Sized to be read where they are shown: Dagster's UI draws a metadata image at its own pixel
width (its markdown takes no width), in a dialog up to 80 % of the window, so each figure is
WIDTH_IN * DPI = 1,300 px wide, inside a 1,920 px screen's dialog, with text of at least
SMALL_PT points.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn import metrics  # type: ignore[import-untyped]

from firepipe.core.plots import figure, png
from firepipe.core.training.dataset import SPLIT, require_columns
from firepipe.core.training.evaluation import splits_in
from firepipe.core.training.real_fires import RealFireReport

DPI = 100
WIDTH_IN = 13.0
TEXT_PT = 13.0  # axis labels, titles
SMALL_PT = 11.0  # ticks, legends, annotations
ROC_HEIGHT_IN = 9.0
# Time to detection: a box per scenario and split, on rows of this height, under a margin.
BOX_ROW_IN = 0.32
BOX_MARGIN_IN = 1.6
TIMELINE_COLUMNS = 3
TIMELINE_ROW_IN = 4.6


def _label(ax: Axes, xlabel: str, ylabel: str = "") -> None:
    ax.set_xlabel(xlabel, fontsize=TEXT_PT)
    ax.set_ylabel(ylabel, fontsize=TEXT_PT)
    ax.tick_params(labelsize=SMALL_PT)


def roc_png(frame: pl.DataFrame) -> bytes:
    """ROC curve of each split (columns split, label, score), with its AUC in the legend."""
    return png(roc_figure(frame))


def roc_figure(frame: pl.DataFrame) -> Figure:
    require_columns(frame, (SPLIT, "label", "score"), "ROC plot")
    fig = figure(WIDTH_IN, ROC_HEIGHT_IN, dpi=DPI)
    ax = fig.subplots()
    drawn = 0
    for split in splits_in(frame):
        part = frame.filter(pl.col(SPLIT) == split)
        label = part["label"].cast(pl.Boolean).fill_null(False).to_numpy()
        if not 0 < int(label.sum()) < label.size:
            continue  # a split with one class has no ROC curve
        fpr, tpr, _ = metrics.roc_curve(label, part["score"].cast(pl.Float64).to_numpy())
        auc = metrics.auc(fpr, tpr)
        ax.plot(fpr, tpr, lw=2.0, label=f"{split} (AUC {auc:.3f})")
        drawn += 1
    if not drawn:
        raise ValueError("ROC plot: no split has both fire and non-fire readings")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1.0, ls=":")
    _label(ax, "false positive rate (per reading)", "true positive rate")
    ax.legend(fontsize=SMALL_PT)
    return fig


def time_to_detection_png(detections: pl.DataFrame) -> bytes:
    """Time to detection per fire scenario, one box per scenario and split.

    `detections`: scenario, time_to_detection_s (null when undetected) and optionally split
    (`evaluation.detection_times` of each split, with the split added); the count of missed
    fires is written beside each box."""
    return png(time_to_detection_figure(detections))


def time_to_detection_figure(detections: pl.DataFrame) -> Figure:
    require_columns(detections, ("scenario", "time_to_detection_s"), "time-to-detection plot")
    if detections.is_empty():
        raise ValueError("time-to-detection plot: no fire devices")
    if SPLIT not in detections.columns:
        detections = detections.with_columns(pl.lit("all").alias(SPLIT))
    scenarios = sorted(detections["scenario"].unique().to_list())
    splits = splits_in(detections)
    fig = figure(WIDTH_IN, BOX_MARGIN_IN + BOX_ROW_IN * len(scenarios) * len(splits), dpi=DPI)
    ax = fig.subplots()
    height = 0.8 / len(splits)
    for j, split in enumerate(splits):
        for i, scenario in enumerate(scenarios):
            part = detections.filter((pl.col(SPLIT) == split) & (pl.col("scenario") == scenario))
            times = part["time_to_detection_s"].drop_nulls().cast(pl.Float64).to_numpy()
            y = i + (j - (len(splits) - 1) / 2) * height
            if times.size:
                box = ax.boxplot(
                    times,
                    positions=[y],
                    widths=height * 0.9,
                    orientation="horizontal",
                    patch_artist=True,
                    manage_ticks=False,
                )
                for patch in box["boxes"]:
                    patch.set_facecolor(f"C{j % 10}")
            missed = part.height - times.size
            if missed:
                ax.annotate(
                    f"{missed} missed",
                    (0, y),
                    xytext=(2, 0),
                    fontsize=SMALL_PT,
                    textcoords="offset points",
                    xycoords=("axes fraction", "data"),
                )
    ax.set_yticks(np.arange(len(scenarios)), scenarios)
    _label(ax, "time to detection after ignition (s)")
    handles = [ax.plot([], [], color=f"C{j % 10}", lw=6)[0] for j in range(len(splits))]
    ax.legend(handles, splits, fontsize=SMALL_PT)
    return fig


def nist_timelines_png(report: RealFireReport) -> bytes:
    """One panel per NIST test: each station's score over time (one colour per station), its
    threshold (dotted), the model's alarm (dashed vertical) and the commercial alarms (ticks
    under the axis in the station's colour)."""
    return png(nist_timelines_figure(report))


def nist_timelines_figure(report: RealFireReport) -> Figure:
    scores = report.scores
    if scores.is_empty():
        raise ValueError("timelines plot: the report has no station scores")
    tests = sorted(scores["test"].unique().to_list())
    stations = sorted(scores["station"].unique().to_list())
    colours = {st: f"C{i % 10}" for i, st in enumerate(stations)}
    columns = min(TIMELINE_COLUMNS, len(tests))
    rows = -(-len(tests) // columns)
    fig = figure(WIDTH_IN, TIMELINE_ROW_IN * rows, dpi=DPI)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, test in zip(axes, tests, strict=False):
        part = scores.filter(pl.col("test") == test)
        for (station,), s in part.group_by(["station"], maintain_order=True):
            colour = colours[str(station)]
            ax.plot(
                s["seconds"].to_numpy(),
                s["score"].to_numpy(),
                color=colour,
                lw=1.4,
                label=str(station),
            )
        ax.axvline(0.0, color="0.5", lw=0.8)  # ignition: before it, the replay's warm-up
        own = report.stations.filter(pl.col("test") == test)
        top_threshold = float(own["threshold"].max() or report.threshold)  # type: ignore[arg-type]
        ax.set_ylim(*_score_limits(part["score"].to_numpy(), top_threshold))
        for row in own.iter_rows(named=True):
            colour = colours[row["station"]]
            # each station's threshold: that of its channel profile's operating point
            ax.axhline(row["threshold"], color=colour, lw=0.8, ls=":")
            if row["model_alarm_s"] is not None:
                ax.axvline(row["model_alarm_s"], color=colour, lw=0.9, ls="--")
            for t in row["real_alarm_s"]:
                ax.plot(
                    [t],
                    [0],
                    marker="|",
                    markersize=14,
                    color=colour,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        ax.set_title(test, fontsize=TEXT_PT)
        _label(ax, "s after ignition")
        ax.legend(fontsize=SMALL_PT, ncols=2)
    for ax in axes[len(tests) :]:
        ax.set_visible(False)
    # Said once for every panel: per-panel titles this long would not fit a third of the width.
    fig.suptitle(
        "NIST tests: each station's score; dotted: its threshold; dashed: the model's alarm\n"
        "ticks under the axis: the real alarms; grey line: ignition, before it the warm-up",
        fontsize=TEXT_PT,
    )
    return fig


# Unbounded scores (the fixed-threshold reference) are cut at this multiple of the threshold,
# so the crossing stays readable; probabilities never reach it at thresholds above 0.25.
SCORE_AXIS_THRESHOLDS = 4.0


def _score_limits(scores: np.ndarray, threshold: float) -> tuple[float, float]:
    finite = scores[np.isfinite(scores)]
    top = float(finite.max()) if finite.size else 1.0
    if threshold > 0:
        top = min(top, SCORE_AXIS_THRESHOLDS * threshold)
    top = max(top, threshold * 1.1, 1e-9)
    return -0.05 * top, top * 1.05
