"""The estimate of a generation's size on disk: an upper bound of what write_parquet writes,
growing with the readings."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firepipe.core.simulation.output_size import (
    BYTES_PER_READING,
    FILE_OVERHEAD_BYTES,
    estimated_parquet_bytes,
)
from firepipe.core.simulation.simulator import GenerationSpec, write_parquet


@settings(max_examples=200, deadline=None)
@given(
    devices=st.integers(1, 10**9),
    more_devices=st.integers(1, 10**6),
    duration_s=st.integers(2, 10**6),
)
def test_the_estimate_grows_with_the_readings(
    devices: int, more_devices: int, duration_s: int
) -> None:
    small = GenerationSpec(devices=devices, duration_s=duration_s)
    large = GenerationSpec(devices=devices + more_devices, duration_s=duration_s)
    assert estimated_parquet_bytes(large) > estimated_parquet_bytes(small)
    assert estimated_parquet_bytes(small) >= small.rows * BYTES_PER_READING


def test_each_file_adds_its_footer() -> None:
    spec = GenerationSpec(devices=10, duration_s=100)  # 1,000 readings
    one_file = estimated_parquet_bytes(spec, rows_per_file=1_000)
    assert one_file == 1_000 * BYTES_PER_READING + FILE_OVERHEAD_BYTES
    assert estimated_parquet_bytes(spec, rows_per_file=300) == one_file + 3 * FILE_OVERHEAD_BYTES
    with pytest.raises(ValueError, match="rows_per_file must be >= 1"):
        estimated_parquet_bytes(spec, rows_per_file=0)


@pytest.mark.parametrize(
    ("families", "devices", "duration_s"),
    [
        (("flaming",), 2, 2),  # all footer
        (("smouldering",), 3, 20_000),  # the family and length that compress worst
        (("baseline", "flaming", "smouldering", "nuisance"), 40, 600),
    ],
)
def test_the_estimate_bounds_what_write_parquet_writes(
    tmp_path: Path, families: tuple[str, ...], devices: int, duration_s: int
) -> None:
    spec = GenerationSpec(devices=devices, duration_s=duration_s, families=families)
    files = write_parquet(spec, str(tmp_path), rows_per_file=25_000, workers=1).files
    written = sum(Path(f).stat().st_size for f in files)
    estimate = estimated_parquet_bytes(spec, rows_per_file=25_000)
    assert written <= estimate
    # An upper bound, not a wild one: it would refuse sizes that fit.
    assert estimate < 3 * written
