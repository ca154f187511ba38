"""A landed-file parse that misbehaves as a Rust reader can, for the landing isolation tests
(`ingest_landing(..., parser=HOSTILE_PARSER)` runs it in the parsing child process).

`parse` is production's `parse_landed_file`, except for a file whose name (no folders, no
extension) is one of: `panics` (a BaseException, as pyo3 raises on a Rust panic), `aborts`
(SIGABRT), `hogs` (a Python allocation past any test's memory limit), `hogs_in_rust` (a polars
allocation past it: Rust aborts), `hangs` (sleeps for an hour).
"""

import os
import time
from datetime import datetime
from pathlib import PurePosixPath

import polars as pl

from firepipe.core.ingestion.landing import parse_landed_file

HOSTILE_PARSER = f"{__name__}:parse"
_BEYOND_ANY_LIMIT = 2**36  # 64 GiB


class PanicException(BaseException):
    """Like pyo3's PanicException: not an Exception, so `except Exception` lets it through, and
    not picklable (its module, pyo3_runtime, cannot be imported)."""

    def __reduce__(self) -> tuple[()]:
        raise TypeError("cannot pickle 'PanicException' object")


def parse(source_file: str, data: bytes, ingested_at: datetime) -> pl.DataFrame:
    name = PurePosixPath(source_file).stem
    if name == "panics":
        raise PanicException("range end index 18446744073709551534 out of range for slice")
    if name == "aborts":
        os.abort()
    if name == "hogs":
        bytearray(_BEYOND_ANY_LIMIT)
    if name == "hogs_in_rust":
        pl.zeros(_BEYOND_ANY_LIMIT // 8, dtype=pl.Float64, eager=True)
    if name == "hangs":
        time.sleep(3600)
    return parse_landed_file(source_file, data, ingested_at)
