"""The local SQL catalog opened, and a namespace created in it, by several processes at once, as
the steps of one run do on a new home: each must get both, none a "table iceberg_tables
already exists" or a UNIQUE constraint error."""

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

import pytest

from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import LocalLakehouse

PROCESSES = 4
ROUNDS = 3


def open_catalog(job: tuple[str, Any]) -> str:
    root, start = job
    start.wait()  # every process opens the new catalog at the same moment
    try:
        tables.ensure_namespace(LocalLakehouse(root=root).catalog(), "bronze")
    except Exception:  # the failure is what the test reports
        return traceback.format_exc(limit=1)
    return "ok"


@pytest.mark.slow
def test_processes_opening_a_new_catalog_at_once_all_get_it(tmp_path: Path) -> None:
    # Without the lock and the namespace check, 2 of 3 runs of 3 rounds failed on a 2-core
    # machine (the lock alone: 2 of 6).
    context = mp.get_context("spawn")  # fresh processes: no catalog cached from this one
    with context.Manager() as manager, context.Pool(PROCESSES) as pool:
        for round_ in range(ROUNDS):
            root = str(tmp_path / f"home-{round_}")
            start = manager.Barrier(PROCESSES)
            outcomes = pool.map(open_catalog, [(root, start)] * PROCESSES)
            assert outcomes == ["ok"] * PROCESSES, outcomes
            assert LocalLakehouse(root=root).catalog().list_namespaces() == [("bronze",)]
