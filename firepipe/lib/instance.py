"""firepipe's Dagster instance: Dagster's own, with a run's partition tags made to agree and
checked before the run exists.

- A job's tags go into every run of it, so the end_to_end job's default range arrives beside a
  `dagster/partition` the user chose (one partition in the launchpad, `--tags` on the command
  line), a mix Dagster refuses. One partition named is the user's choice: the range is dropped,
  on every path that creates a run (`create_run`: the UI, sensors, schedules, `dagster job
  launch`; `create_run_for_job`: `dagster job execute`, `execute_in_process`).
- Dagster stores a new run first and reads its partition tags after: a range naming a key that
  does not exist leaves a run that never starts and a traceback, and a run of a partitioned
  asset without any partition fails at that asset's step, after the steps before it ran. For
  runs made from a job definition in this process (`dagster job execute`, `execute_job`,
  `execute_in_process`) both are refused before the run is stored, with one line that says
  what to pass: `dagster job execute` prints it as `Error: ...` and exits non-zero. (The UI and
  the daemon create runs from snapshots, without the partitions definitions at hand; Dagster's
  own checks apply there.)

The firepipe home's dagster.yaml names this class (firepipe.settings).
"""

from collections.abc import Mapping, Sequence
from typing import Any

import click
import dagster as dg

# Dagster's run tags for the partitions of a run (its docs name them; dagster exports no
# constant).
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


class PartitionSelectionError(click.UsageError):
    """A run's partition tags do not select partitions of its partitioned assets."""


def partition_selection_problem(
    job: dg.JobDefinition,
    tags: Mapping[str, str],
    asset_selection: Sequence[dg.AssetKey] | None = None,
) -> str | None:
    """Why a run of `job` (its `asset_selection`, or all its assets) with these `tags` cannot
    run its partitioned assets; None when it can, or when it has none."""
    graph = job.asset_layer.asset_graph
    keys = set(asset_selection) if asset_selection else job.asset_layer.executable_asset_keys
    partitioned = {
        key: node.partitions_def
        for key in sorted(keys, key=lambda k: k.to_user_string())
        if (node := graph.get(key)).partitions_def is not None
    }
    if not partitioned:
        return None
    names = ", ".join(key.to_user_string() for key in partitioned)
    start, end, single = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG), tags.get(PARTITION_TAG)
    if single is None and start is None and end is None:
        return (
            f"{names} is partitioned and the run names no partition: pass the tag "
            f"{PARTITION_TAG} or both {RANGE_START_TAG} and {RANGE_END_TAG}"
        )
    if single is None and (start is None or end is None):
        return f"a partition range needs both {RANGE_START_TAG} and {RANGE_END_TAG}"
    for key, partitions in partitioned.items():
        known = partitions.get_partition_keys()
        wanted = [single] if single is not None else [start, end]
        unknown = [k for k in wanted if k not in known]
        if unknown:
            return (
                f"{key.to_user_string()} has no partition {', '.join(map(repr, unknown))}; "
                f"its keys run from {known[0]!r} to {known[-1]!r}"
            )
        if single is None and known.index(str(start)) > known.index(str(end)):
            return f"the partition range starts at {start!r}, after its end {end!r}"
    return None


def agreeing_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    """`tags` with a partition range dropped when one partition is named too."""
    tags = dict(tags or {})
    if PARTITION_TAG in tags:
        tags.pop(RANGE_START_TAG, None)
        tags.pop(RANGE_END_TAG, None)
    return tags


class FirepipeInstance(dg.DagsterInstance):
    """Dagster's instance with the partition selection checked before a run is stored."""

    # What Dagster asks of a custom instance class named in dagster.yaml: its own settings
    # (none) and the storage defaults of the instance folder (Dagster's).
    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Any:
        from dagster._core.instance.ref import InstanceRef

        return InstanceRef.config_defaults(base_dir)

    def create_run_for_job(self, job_def: dg.JobDefinition, *args: Any, **kwargs: Any) -> Any:
        kwargs["tags"] = agreeing_tags(kwargs.get("tags"))
        problem = partition_selection_problem(
            job_def, kwargs["tags"], kwargs.get("asset_selection")
        )
        if problem is not None:
            raise PartitionSelectionError(f"{job_def.name}: {problem}")
        return super().create_run_for_job(job_def, *args, **kwargs)

    def create_run(self, **kwargs: Any) -> Any:
        kwargs["tags"] = agreeing_tags(kwargs.get("tags"))
        return super().create_run(**kwargs)
