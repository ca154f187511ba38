"""The local SQL catalog opened by several processes at once, as the steps of one run do on a
new home: each must get the catalog, none a "table iceberg_tables already exists" error."""

import multiprocessing as mp
import traceback
from pathlib import Path
from typing import Any

from firepipe.resources.lakehouse.catalogs import LocalLakehouse

PROCESSES = 4
ROUNDS = 5


def open_catalog(job: tuple[str, Any]) -> str:
    root, start = job
    start.wait()  # every process opens the new catalog at the same moment
    try:
        LocalLakehouse(root=root).catalog().create_namespace_if_not_exists("bronze")
    except Exception:  # the failure is what the test reports
        return traceback.format_exc(limit=1)
    return "ok"


def test_processes_opening_a_new_catalog_at_once_all_get_it(tmp_path: Path) -> None:
    # Without the lock this failed 3 of 20 openings in 5 rounds on a 2-core machine.
    context = mp.get_context("spawn")  # fresh processes: no catalog cached from this one
    with context.Manager() as manager, context.Pool(PROCESSES) as pool:
        for round_ in range(ROUNDS):
            root = str(tmp_path / f"home-{round_}")
            start = manager.Barrier(PROCESSES)
            outcomes = pool.map(open_catalog, [(root, start)] * PROCESSES)
            assert outcomes == ["ok"] * PROCESSES, outcomes
            assert LocalLakehouse(root=root).catalog().list_namespaces() == [("bronze",)]
