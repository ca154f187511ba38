"""Two Iceberg tables published as one version, though each commits on its own.

PyIceberg commits one table at a time, so a writer of two tables that must agree (silver's
readings and its quarantine: every reading in exactly one of them) can be killed between the
two commits. A pair is therefore published by one of its commits:

1. the partner table is committed first, its snapshot carrying the writer's run id
   (`RUN_PROPERTY`, see `run_properties`);
2. the primary table is committed last, carrying the same run id. This commit publishes.

The published pair is the primary's current snapshot and the partner's newest snapshot of the
same run (`published_partner`); a maintenance commit, which keeps every row, belongs to the run
of the snapshot it was made on. A kill before step 2 leaves the previous pair published, and
the partner's current snapshot may then be one run ahead of it: `pair_state` calls that
incomplete, and `repair` makes the published partner snapshot current again (one metadata
commit, which Iceberg refuses if another writer committed the partner meanwhile). Readers of the
primary alone (everything built on it) always read a published version; a reader of the partner
reads it at `published_partner`, which is its current snapshot whenever the pair is complete.

A primary whose current snapshot carries no run id (written before pairs, or not as a pair)
publishes nothing about its partner: the partner is read as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from firepipe.lib.lakehouse import tables

RUN_PROPERTY = f"{tables.PROPERTY_PREFIX}pair.run_id"
# Maintenance (lib/lakehouse/maintenance.py) compacts files and rewrites manifests in commits of
# its own that keep every row; they carry this property and no run id, so a snapshot's run is
# read through them.
MAINTENANCE_PROPERTY = f"{tables.PROPERTY_PREFIX}maintenance"


def run_properties(run_id: str) -> dict[str, str]:
    """The snapshot properties both commits of one run's pair carry."""
    if not run_id:
        raise tables.LakehouseError("a pair's run id must not be empty")
    return {RUN_PROPERTY: run_id}


def snapshot_runs(table: Table) -> dict[int, str | None]:
    """Per snapshot, in commit order, the run whose pair commit it holds the rows of: its own
    run id, or its parent's through a maintenance commit (which keeps every row)."""
    runs: dict[int, str | None] = {}
    for snapshot in table.snapshots():  # commit order: a parent before its children
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        parent = snapshot.parent_snapshot_id
        if RUN_PROPERTY in props:
            runs[snapshot.snapshot_id] = props[RUN_PROPERTY]
        elif MAINTENANCE_PROPERTY in props and parent is not None:
            runs[snapshot.snapshot_id] = runs.get(parent)  # None: the parent expired
        else:
            runs[snapshot.snapshot_id] = None
    return runs


def _current(table: Table | None) -> int | None:
    snapshot = table.current_snapshot() if table is not None else None
    return snapshot.snapshot_id if snapshot is not None else None


@dataclass(frozen=True)
class PairState:
    """Where a pair stands. `run_id`: the run whose primary commit is current (None: no
    primary yet, or one not written as a pair); `published`: that run's partner snapshot;
    `current`: the partner's current snapshot."""

    primary: str
    partner: str
    run_id: str | None
    published: int | None
    current: int | None

    @property
    def complete(self) -> bool:
        """Whether a reader of the partner's current snapshot sees the published pair."""
        return self.run_id is None or self.published == self.current


def pair_state(catalog: Catalog, primary: str, partner: str) -> PairState:
    """The pair as its tables' metadata says (no data is read).

    Raises LakehouseError when the primary names a run of which the partner has no snapshot
    (expired by maintenance), since no reader could then tell which partner rows were
    published."""
    primary_table = tables.load_table(catalog, primary)
    partner_table = tables.load_table(catalog, partner)
    primary_current, current = _current(primary_table), _current(partner_table)
    run_id = None
    if primary_table is not None and primary_current is not None:
        run_id = snapshot_runs(primary_table)[primary_current]
    if run_id is None:
        return PairState(primary, partner, None, None, current)
    runs = snapshot_runs(partner_table) if partner_table is not None else {}
    if current is not None and runs[current] == run_id:
        return PairState(primary, partner, run_id, current, current)
    of_run = [snapshot_id for snapshot_id, run in runs.items() if run == run_id]
    if not of_run:
        raise tables.LakehouseError(
            f"{primary} was published by run {run_id}, but {partner} has no snapshot of "
            "that run (expired?): rewrite both tables"
        )
    return PairState(primary, partner, run_id, of_run[-1], current)


def published_partner(catalog: Catalog, primary: str, partner: str) -> int | None:
    """The partner snapshot to read with the primary's current one (None: the partner's
    current snapshot, the primary being absent or not written as a pair)."""
    return pair_state(catalog, primary, partner).published


def repair(catalog: Catalog, primary: str, partner: str) -> PairState:
    """Make the published partner snapshot current again when a writer was killed between its
    two commits; returns the state found (unchanged when it was complete).

    Raises CommitFailedException when another writer committed the partner meanwhile: that
    writer's own primary commit is then what settles the pair."""
    state = pair_state(catalog, primary, partner)
    if state.complete or state.published is None:
        return state
    table = catalog.load_table(partner)
    now = table.current_snapshot()
    if now is None or now.snapshot_id != state.current:
        raise CommitFailedException(f"{partner} was committed while its pair was repaired")
    # Iceberg's own requirement: the commit fails if the partner moves before it lands.
    table.manage_snapshots().set_current_snapshot(snapshot_id=state.published).commit()
    return state
