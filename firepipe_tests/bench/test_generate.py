"""`firepipe bench generate` at a tiny size: the generator's rates, and one run's partitions side
by side against one after another (the asset end to end, through the local compute)."""

import pytest

from firepipe.bench import BenchOptions, generate
from firepipe.bench.suites import SUITES


@pytest.mark.slow
def test_generate_suite_reports_rates_and_partitions_wall_time_with_its_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(generate, "PARTITIONS", 4)
    monkeypatch.setattr(generate, "PARTITION_DEVICES", 5)
    monkeypatch.setattr(generate, "PARTITION_DURATION_S", 120)
    figures = {
        f.name: f for f in SUITES["generate"](BenchOptions(rows=10, repeats=1, min_seconds=0))
    }
    for name in ("rows_per_s", "rows_per_s_one_worker", "peak_memory_mib"):
        assert figures[name].value > 0, name
    wall = figures["partitions_wall_s"]
    assert (wall.bench, wall.unit, wall.higher_is_better) == ("generate", "s", False)
    # A run that did not land its partitions raises out of dg.materialize: no figure at all.
    assert wall.value > 0
    assert wall.baseline is not None
    assert wall.baseline > 0
    assert wall.as_json()["ratio"] == pytest.approx(wall.baseline / wall.value, rel=1e-5)
