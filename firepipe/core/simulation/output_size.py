"""How many bytes `write_parquet` will write for a spec, known before anything is generated, so a
caller can check the destination's free space first (`firepipe generate` does)."""

from __future__ import annotations

import math

from firepipe.core.simulation.simulator import ROWS_PER_FILE, GenerationSpec

# Bytes per reading in write_parquet's files (polars' default zstd, statistics on), measured as
# the files' total size over spec.rows for write_parquet(spec, folder) on this simulator:
# each family alone and the catalog mix, 2 s to 1,000,000 s per device, 4 to 2.5 M readings,
# fault shares 0, 0.05 and 1, with and without a constant batch column. Over 1 M readings:
# baseline 6.7, nuisance 8.1-9.8, catalog mix 8.4-11.1, flaming 10.3-14.1 and smouldering
# 10.3-14.8 (the worst: 12 devices x 86,400 s; a long run per device compresses worse, its
# times and gas levels repeat less). 20 is that worst case with a third more for specs not
# measured: an estimate that errs towards refusing, never towards a full disk.
BYTES_PER_READING = 20
# A file's footer (schema, row-group statistics) and headers: a 4-reading file took 6.1 kB;
# taken as 16 kB.
FILE_OVERHEAD_BYTES = 16_000


def estimated_parquet_bytes(spec: GenerationSpec, rows_per_file: int = ROWS_PER_FILE) -> int:
    """An upper estimate of the bytes `write_parquet(spec, ..., rows_per_file=...)` writes."""
    if rows_per_file < 1:
        raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
    # Every file but the last holds at least rows_per_file readings.
    files = max(1, math.ceil(spec.rows / rows_per_file))
    return spec.rows * BYTES_PER_READING + files * FILE_OVERHEAD_BYTES
