"""Benchmarks: each suite measures firepipe and a reference in the same run, on the same data.

A suite returns `Figure`s; `firepipe bench` prints them as a table or as JSON lines.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """How many times better than the baseline (above 1 is better)."""
        if self.baseline is None or self.value == 0 or self.baseline == 0:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    def as_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "name": self.name,
            "value": _significant(self.value),
            "unit": self.unit,
            "baseline": _significant(self.baseline),
            "ratio": _significant(self.ratio),
        }


def _significant(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")


@dataclass(frozen=True)
class BenchOptions:
    rows: int | None = None
    repeats: int = 3
    min_seconds: float = 1.0  # time each figure at least this long, over repeated calls
    devices: int | None = None  # `bench lake`: devices x seconds readings instead of rows
    seconds: int | None = None  # `bench serve`: seconds of load at `rate`; devices streaming
    rate: float | None = None  # `bench serve`: requests per second (open loop)
    model: str | None = None  # `bench serve`: a model URI or a firepipe home; None: its own


def best_seconds(
    fn: Callable[[], object],
    repeats: int,
    setup: Callable[[], object] = lambda: None,
    min_total_s: float = 1.0,
    max_runs: int = 50,
) -> float:
    """The fastest timed call of `fn`, each after an untimed `setup`: at least `repeats` calls,
    and more while less than `min_total_s` has been timed, so quick steps get enough samples."""
    best, total, runs = float("inf"), 0.0, 0
    while runs < max(repeats, 1) or (total < min_total_s and runs < max_runs):
        setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total, runs = min(best, elapsed), total + elapsed, runs + 1
    return best


def render_table(figures: list[Figure]) -> str:
    header = ("bench", "name", "value", "unit", "baseline", "ratio")
    rows = [header]
    for f in figures:
        j = f.as_json()
        rows.append(
            (
                f.bench,
                f.name,
                f"{f.value:,.1f}",
                f.unit,
                f"{f.baseline:,.1f}" if f.baseline is not None else "-",
                f"{j['ratio']:.2f}x" if j["ratio"] is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
