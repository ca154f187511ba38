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


def best_seconds(
    fn: Callable[[], object], repeats: int, setup: Callable[[], object] = lambda: None
) -> float:
    """The fastest of `repeats` timed calls, each after an untimed `setup`."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
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
