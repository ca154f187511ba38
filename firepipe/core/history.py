"""One entry of the generation history: what was generated, from which spec and seed, where it
went, how long it took, and who or what ran it. Stores (SQLite, DynamoDB) keep it as flat rows.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

STATUSES: tuple[str, ...] = ("succeeded", "failed")
# Sortable text form of started_at: fixed width, UTC, so string order is time order in SQLite
# text columns and DynamoDB sort keys alike.
_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def timestamp_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"timestamps must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's numeric uid)
        return "unknown"


@dataclass(frozen=True)
class GenerationRecord:
    """A generation run of one partition; (run_id, partition_key) identifies it."""

    run_id: str
    asset_key: str  # "bronze/synthetic_readings"
    partition_key: str | None
    spec: Mapping[str, Any]  # the generator spec, JSON-serialisable
    seed: int
    rows: int
    location: str  # where the rows went: a table location, a folder or an s3:// URI
    started_at: datetime
    duration_s: float
    backend: str  # array backend and compute, e.g. "numpy", "cupy on batch-gpu"
    status: str
    user: str = field(default_factory=current_user)
    host: str = field(default_factory=socket.gethostname)
    dagster_job: str | None = None
    dagster_run_id: str | None = None

    def __post_init__(self) -> None:
        if not self.run_id or not self.asset_key:
            raise ValueError("a generation record needs a run_id and an asset_key")
        if self.rows < 0 or self.duration_s < 0 or self.seed < 0:
            raise ValueError(
                f"rows, duration_s and seed must be >= 0, got {self.rows}, {self.duration_s}, "
                f"{self.seed}"
            )
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        timestamp_text(self.started_at)  # rejects a naive time
        try:
            json.dumps(dict(self.spec))
        except TypeError as e:
            raise ValueError(f"spec must be JSON-serialisable: {e}") from e

    @property
    def spec_json(self) -> str:
        return json.dumps(dict(self.spec), sort_keys=True)

    def to_flat(self) -> dict[str, str | int | float | None]:
        """Primitive fields only: spec as JSON text, started_at as sortable UTC text."""
        flat = asdict(self)
        flat["spec"] = self.spec_json
        flat["started_at"] = timestamp_text(self.started_at)
        return flat

    @classmethod
    def from_flat(cls, row: Mapping[str, Any]) -> GenerationRecord:
        return cls(
            run_id=str(row["run_id"]),
            asset_key=str(row["asset_key"]),
            partition_key=row.get("partition_key"),
            spec=json.loads(row["spec"]),
            seed=int(row["seed"]),
            rows=int(row["rows"]),
            location=str(row["location"]),
            started_at=parse_timestamp(str(row["started_at"])),
            duration_s=float(row["duration_s"]),
            backend=str(row["backend"]),
            status=str(row["status"]),
            user=str(row["user"]),
            host=str(row["host"]),
            dagster_job=row.get("dagster_job"),
            dagster_run_id=row.get("dagster_run_id"),
        )
