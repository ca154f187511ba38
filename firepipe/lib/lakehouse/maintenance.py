"""Table maintenance: compact small files, rewrite manifests, expire old snapshots.

Every write is a commit, and each commit leaves a snapshot, a manifest list, a manifest and a
new metadata file behind; an overwrite reads every manifest of the current snapshot to find the
rows it replaces, so without maintenance each commit is slower than the last (issue 16: 0.39 s
a chunk became 1.65 s after 379 commits). Per table, in this order:

1. compaction: the small data files of each partition are read and rewritten as one file in an
   overwrite commit (the rows are unchanged; a concurrent writer that deleted one of those files
   makes the commit fail validation, and the table is left for the next run);
2. manifest rewrite: one commit merges the current snapshot's manifests (PyIceberg 0.12 has no
   RewriteManifests action; a merge-append of no files with merging forced does the same), and
   turns on manifest merging and old-metadata deletion for later commits;
3. snapshot expiry, by this rule: a snapshot is kept when it is younger than the retention age,
   among the last `keep_last`, a branch or tag head (the current snapshot included), or
   referred to by lineage: any table property or snapshot property named `firepipe.*snapshot-id`
   in any table of the catalog (gold records the silver snapshot it was computed from, the
   training set the gold snapshot), read from every snapshot present before this run's expiry,
   so a referred snapshot outlives its referrer by one run; or, for tables written as a pair
   (lib/lakehouse/pairs.py), a snapshot of the run that published some table's current snapshot
   (maintenance commits belong to the run of their parent): a partner's published snapshot, and
   the commits through which a run is traced, stay readable. A kept maintenance commit also
   keeps its parents down to the write whose rows it holds. The files only expired snapshots
   reached (manifest lists, manifests, data files) are then deleted; PyIceberg 0.12 expires
   metadata only and has no orphan-file removal, so that is done here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.snapshots import Snapshot

from firepipe.lib.lakehouse.pairs import MAINTENANCE_PROPERTY, snapshot_runs
from firepipe.lib.lakehouse.tables import PROPERTY_PREFIX, LakehouseError, commit_retrying

REFERENCE_SUFFIX = "snapshot-id"
SMALL_FILE_BYTES = 32 * 1024 * 1024  # a quarter of Iceberg's 128 MB target file size
# Later commits merge their manifests once this many pile up (Iceberg's default is 100).
MERGE_MANIFESTS_AT = 16


@dataclass(frozen=True)
class Retention:
    """Which snapshots survive expiry: those younger than `max_age`, and the last `keep_last`."""

    max_age: timedelta = timedelta(days=7)
    keep_last: int = 10

    def __post_init__(self) -> None:
        if self.keep_last < 1:
            raise LakehouseError(
                f"keep_last must be >= 1 (the current snapshot), got {self.keep_last}"
            )
        if self.max_age < timedelta(0):
            raise LakehouseError(f"the retention age must not be negative, got {self.max_age}")


@dataclass(frozen=True)
class TableMaintenance:
    """What maintenance did to one table."""

    table: str
    files_before: int
    files_after: int
    manifests_before: int
    manifests_after: int
    snapshots_before: int
    snapshots_after: int
    files_deleted: int
    compaction_skipped: str | None = None  # why, when a concurrent writer won


def referenced_snapshot_ids(catalog: Catalog, identifiers: Iterable[str]) -> set[int]:
    """Snapshot ids that lineage refers to: the values of table properties and snapshot
    properties named `firepipe.*snapshot-id`, over every snapshot of the tables."""
    ids: set[int] = set()
    for identifier in identifiers:
        table = catalog.load_table(identifier)
        sources = [table.properties]
        sources += [s.summary.additional_properties for s in table.snapshots() if s.summary]
        for props in sources:
            for key, value in props.items():
                if key.startswith(PROPERTY_PREFIX) and key.endswith(REFERENCE_SUFFIX):
                    try:
                        ids.add(int(value))
                    except ValueError as e:
                        raise LakehouseError(
                            f"{identifier}: property {key}={value!r} is not a snapshot id"
                        ) from e
    return ids


def pair_snapshot_ids(catalog: Catalog, identifiers: Iterable[str]) -> set[int]:
    """Snapshots, in any of the tables, of a run that some table's current snapshot belongs to:
    what `pairs.pair_state` and `pairs.repair` need to find a pair's published partner."""
    runs_by_table = []
    current_runs: set[str] = set()
    for identifier in identifiers:
        table = catalog.load_table(identifier)
        runs = snapshot_runs(table)
        current = table.current_snapshot()
        if current is not None and (run := runs.get(current.snapshot_id)) is not None:
            current_runs.add(run)
        runs_by_table.append(runs)
    return {sid for runs in runs_by_table for sid, run in runs.items() if run in current_runs}


def protected_snapshot_ids(catalog: Catalog, identifiers: Sequence[str]) -> set[int]:
    """What expiry must keep besides the retention: lineage references and pair runs."""
    return referenced_snapshot_ids(catalog, identifiers) | pair_snapshot_ids(catalog, identifiers)


def snapshots_to_expire(
    table: Table, retention: Retention, protected: set[int], now: datetime
) -> list[int]:
    """The ids `expire` would remove from `table` (see the module's rule). A kept maintenance
    commit also keeps its parents down to the write whose rows it holds: that is how a pair's
    run is traced through it."""
    newest_first = sorted(table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True)
    cutoff_ms = int((now - retention.max_age).timestamp() * 1000)
    heads = {ref.snapshot_id for ref in table.metadata.refs.values()}
    kept = {s.snapshot_id for s in newest_first[: retention.keep_last]}
    kept |= {s.snapshot_id for s in newest_first if s.timestamp_ms >= cutoff_ms}
    kept |= heads | (protected & {s.snapshot_id for s in newest_first})
    for snapshot_id in list(kept):
        snapshot = table.snapshot_by_id(snapshot_id)
        while snapshot is not None and _is_maintenance(snapshot):
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
            if snapshot is not None:
                kept.add(snapshot.snapshot_id)
    return [s.snapshot_id for s in newest_first if s.snapshot_id not in kept]


def _is_maintenance(snapshot: Snapshot) -> bool:
    summary = snapshot.summary
    return summary is not None and MAINTENANCE_PROPERTY in summary.additional_properties


def expire(
    catalog: Catalog,
    identifier: str,
    retention: Retention,
    protected: set[int],
    now: datetime | None = None,
) -> tuple[int, int]:
    """Expire the table's snapshots outside the retention and delete the files only they
    reached. Returns (snapshots expired, files deleted)."""
    now = now or datetime.now(UTC)

    def commit(table: Table | None) -> tuple[list[Snapshot], Table]:
        if table is None:
            raise LakehouseError(f"table {identifier} does not exist")
        doomed = set(snapshots_to_expire(table, retention, protected, now))
        expired = [s for s in table.snapshots() if s.snapshot_id in doomed]
        if expired:
            table.maintenance.expire_snapshots().by_ids(sorted(doomed)).commit()
        return expired, table

    expired, table = commit_retrying(catalog, identifier, commit)
    if not expired:
        return 0, 0
    table = catalog.load_table(identifier)  # the committed metadata, refs included
    doomed = _reachable(table, expired) - _reachable(table, table.snapshots())
    location = table.location().rstrip("/") + "/"
    outside = sorted(p for p in doomed if not p.startswith(location))
    if outside:
        raise LakehouseError(
            f"{identifier}: expired snapshots refer to files outside the table, for example "
            f"{outside[0]}: refusing to delete them"
        )
    for path in doomed:
        table.io.delete(path)
    return len(expired), len(doomed)


def _reachable(table: Table, snapshots: Sequence[Snapshot]) -> set[str]:
    """Every file the snapshots name: manifest lists, manifests and data files (deleted entries
    included, so a file a kept snapshot records as removed is still not deleted here)."""
    files: set[str] = set()
    for snapshot in snapshots:
        files.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in files:
                continue  # shared with a snapshot already walked
            files.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                files.add(entry.data_file.file_path)
    return files


def rewrite_manifests(catalog: Catalog, identifier: str, keep_metadata_files: int) -> int:
    """Merge the current snapshot's manifests in one commit (none when there is at most one),
    and set the table to merge later commits' manifests and to keep only the last
    `keep_metadata_files` metadata files. Returns the manifests of the current snapshot."""
    properties = {
        TableProperties.MANIFEST_MERGE_ENABLED: "true",
        TableProperties.MANIFEST_MIN_MERGE_COUNT: str(MERGE_MANIFESTS_AT),
        TableProperties.METADATA_DELETE_AFTER_COMMIT_ENABLED: "true",
        TableProperties.METADATA_PREVIOUS_VERSIONS_MAX: str(keep_metadata_files),
    }

    def commit(table: Table | None) -> int:
        if table is None:
            raise LakehouseError(f"table {identifier} does not exist")
        snapshot = table.current_snapshot()
        manifests = len(snapshot.manifests(table.io)) if snapshot else 0
        changed = {k: v for k, v in properties.items() if table.properties.get(k) != v}
        if manifests <= 1 and not changed:
            return manifests
        with table.transaction() as tx:
            # Merging is forced for this commit only (a count of 2); `properties` then stay.
            tx.set_properties({**properties, TableProperties.MANIFEST_MIN_MERGE_COUNT: "2"})
            if manifests > 1:
                summary = {MAINTENANCE_PROPERTY: "rewrite-manifests"}
                tx.update_snapshot(snapshot_properties=summary).merge_append().commit()
            tx.set_properties(properties)
        snapshot = table.current_snapshot()
        return len(snapshot.manifests(table.io)) if snapshot else 0

    return commit_retrying(catalog, identifier, commit)


def compact(
    catalog: Catalog, identifier: str, small_file_bytes: int = SMALL_FILE_BYTES, min_files: int = 2
) -> tuple[int, int]:
    """Rewrite each partition's small data files (under `small_file_bytes`) as one file, when a
    partition has at least `min_files` of them, in one overwrite commit whose rows are the
    same. Returns the data files of the current snapshot (before, after)."""
    if min_files < 2:
        raise LakehouseError(f"compaction needs min_files >= 2, got {min_files}")

    def commit(table: Table | None) -> tuple[int, int]:
        if table is None:
            raise LakehouseError(f"table {identifier} does not exist")
        tasks = list(table.scan().plan_files())
        groups = defaultdict(list)
        for task in tasks:
            if task.file.file_size_in_bytes < small_file_bytes:
                groups[(task.file.spec_id, str(task.file.partition))].append(task)
        rewritten = [group for group in groups.values() if len(group) >= min_files]
        if not rewritten:
            return len(tasks), len(tasks)
        scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
        added = 0
        with table.transaction() as tx:
            summary = {MAINTENANCE_PROPERTY: "compaction"}
            with tx.update_snapshot(snapshot_properties=summary).overwrite() as overwrite:
                for group in rewritten:
                    rows = scan.to_table(group)
                    for task in group:
                        overwrite.delete_data_file(task.file)
                    for data_file in _dataframe_to_data_files(
                        tx.table_metadata, rows, table.io, overwrite.commit_uuid
                    ):
                        overwrite.append_data_file(data_file)
                        added += 1
        removed = sum(len(group) for group in rewritten)
        return len(tasks), len(tasks) - removed + added

    return commit_retrying(catalog, identifier, commit)


def maintain_table(
    catalog: Catalog,
    identifier: str,
    retention: Retention,
    protected: set[int],
    small_file_bytes: int = SMALL_FILE_BYTES,
    now: datetime | None = None,
) -> TableMaintenance:
    """Compact, rewrite manifests, then expire (so the snapshots before compaction can go)."""
    table = catalog.load_table(identifier)
    snapshot = table.current_snapshot()
    manifests_before = len(snapshot.manifests(table.io)) if snapshot else 0
    snapshots_before = len(table.snapshots())
    skipped = None
    try:
        files_before, files_after = compact(catalog, identifier, small_file_bytes)
    except (ValidationException, CommitFailedException) as e:
        # A writer replaced some of the files being compacted: its rows win; compact next run.
        skipped = f"a concurrent commit changed the files being compacted: {e}"
        files_before = files_after = len(list(catalog.load_table(identifier).scan().plan_files()))
    manifests_after = rewrite_manifests(catalog, identifier, retention.keep_last)
    _, deleted = expire(catalog, identifier, retention, protected, now)
    return TableMaintenance(
        table=identifier,
        files_before=files_before,
        files_after=files_after,
        manifests_before=manifests_before,
        manifests_after=manifests_after,
        snapshots_before=snapshots_before,
        snapshots_after=len(catalog.load_table(identifier).snapshots()),
        files_deleted=deleted,
        compaction_skipped=skipped,
    )


def maintain(
    catalog: Catalog,
    identifiers: Sequence[str],
    retention: Retention,
    small_file_bytes: int = SMALL_FILE_BYTES,
    now: datetime | None = None,
    protect_from: Sequence[str] | None = None,
) -> list[TableMaintenance]:
    """Maintain each table; what expiry must keep is read first from all of them, or from
    `protect_from` (every table of the lake, when only some are maintained)."""
    protected = protected_snapshot_ids(
        catalog, identifiers if protect_from is None else protect_from
    )
    return [
        maintain_table(catalog, identifier, retention, protected, small_file_bytes, now)
        for identifier in identifiers
    ]
