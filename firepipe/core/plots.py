"""Figures as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state)."""

from __future__ import annotations

import io

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CHANNEL_LABELS: dict[str, str] = {
    "temperature_c": "temperature (degC)",
    "smoke_obscuration_pct_per_m": "obscuration (%/m)",
    "co_ppm": "CO (ppm)",
    "co2_ppm": "CO2 (ppm)",
}
PANEL_SIZE_IN = (3.6, 2.4)
DPI = 72


def figure(width_in: float, height_in: float, dpi: int = DPI) -> Figure:
    """A figure on its own Agg canvas (no pyplot state, safe in worker threads); savefig keeps
    the dpi it was created with."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def simulated_vs_measured_png(curves: pl.DataFrame) -> bytes:
    """One row of panels per test, one column per channel; stations overlaid in colours,
    measured solid, simulated dashed.

    `curves` has test, station, channel, seconds_since_ignition, measured, simulated.
    """
    needed = {"test", "station", "channel", "seconds_since_ignition", "measured", "simulated"}
    if missing := needed - set(curves.columns):
        raise ValueError(f"curves lack column(s) {', '.join(sorted(missing))}")
    if curves.is_empty():
        raise ValueError("no curves to plot")
    tests = sorted(curves["test"].unique().to_list())
    channels = [c for c in CHANNEL_LABELS if c in set(curves["channel"].to_list())]
    stations = sorted(curves["station"].unique().to_list())
    colours = {st: f"C{i % 10}" for i, st in enumerate(stations)}
    fig = figure(PANEL_SIZE_IN[0] * len(channels), PANEL_SIZE_IN[1] * len(tests))
    axes = fig.subplots(len(tests), len(channels), squeeze=False)
    for i, test in enumerate(tests):
        for j, channel in enumerate(channels):
            ax = axes[i][j]
            part = curves.filter((pl.col("test") == test) & (pl.col("channel") == channel))
            for (station,), s in part.group_by(["station"], maintain_order=True):
                t = s["seconds_since_ignition"].to_numpy()
                colour = colours[str(station)]
                ax.plot(t, s["measured"].to_numpy(), color=colour, lw=1.2, label=str(station))
                ax.plot(t, s["simulated"].to_numpy(), color=colour, lw=1.2, ls="--")
            ax.set_title(f"{test} {CHANNEL_LABELS[channel]}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(tests) - 1:
                ax.set_xlabel("s after ignition", fontsize=8)
            if part.height:
                ax.legend(fontsize=6, ncols=2, title="solid measured, dashed sim", title_fontsize=6)
    return png(fig)
