"""Write, audit, publish: files staged under a table, checked, and committed only if they pass.

`stage_check_commit` is the one path by which an asset that writes files itself (bronze's
generator, gold's feature engines) lands them: the files go to a staging folder inside the
table's location, the checks judge the staged files, and one Iceberg commit adds them only
when the blocking checks pass. On a failed check or any exception (an interrupt included) the
staging folder is deleted and the table is left as it was, so no reader ever sees rows that
were not checked, and no orphan files stay behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from firepipe.lib.lakehouse import tables
from firepipe.resources.lakehouse import Lakehouse


class Staged(Protocol):
    """What a stage step returns: at least the files it wrote (URIs under the staging folder)."""

    @property
    def files(self) -> Sequence[str]: ...


S = TypeVar("S", bound=Staged)
R = TypeVar("R")


@dataclass(frozen=True)
class Audit(Generic[R]):
    """The checks' verdict on the staged files: whether the blocking ones passed, and every
    check's result (reported whether or not they passed)."""

    passed: bool
    results: R


@dataclass(frozen=True)
class Publication(Generic[S, R]):
    """What a stage-check-commit did. `write` is None when the audit failed: nothing was
    committed and the staging folder is gone."""

    staged: S
    audit: Audit[R]
    write: tables.WriteResult | None

    @property
    def committed(self) -> bool:
        return self.write is not None


def stage_check_commit(
    lakehouse: Lakehouse,
    table: str,
    staging: str,
    stage: Callable[[str], S],
    check: Callable[[S], Audit[R]],
    partitioning: Sequence[tables.PartitionColumn] = (),
    scope: tables.Scope | None = None,
    snapshot_properties: Mapping[str, str] | None = None,
) -> Publication[S, R]:
    """Stage files into `staging` (`stage(staging)`), audit them (`check`), and commit them to
    `table` in one snapshot carrying `snapshot_properties`, replacing the rows in `scope`
    (default: the whole table), only if the audit passed.

    A failed audit returns with `write` None; an exception in any step propagates. Either way
    the staging folder is deleted first and the table is unchanged.
    """
    try:
        staged = stage(staging)
        audit = check(staged)
        if not audit.passed:
            lakehouse.discard_staged(staging)
            return Publication(staged, audit, None)
        write = lakehouse.commit_staged(
            table, list(staged.files), partitioning, scope, snapshot_properties
        )
    except BaseException:
        # Nothing was committed: the staged files belong to no snapshot of the table.
        lakehouse.discard_staged(staging)
        raise
    return Publication(staged, audit, write)
