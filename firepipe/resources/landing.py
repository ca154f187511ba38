"""The landing zone port: files dropped for ingestion, in a local folder or under an S3 prefix.

Layout (keys are relative to the zone's root folder or prefix):

- `incoming/...`              files to ingest (any depth); the only place `list_objects` looks;
- `quarantine/...`            refused files, moved here with `<name>.reason.json` beside them
                              ({"rule", "reason", "quarantined_at", "source_key"});
- `_ingested/<sha256>.json`   one mark per ingested content and the key it went in under, so
                              the same bytes under another key are ingested once;
- `_state/landing_ledger.json` what ingestion handled, per key and version, and the files
                              waiting to show they are complete (`ingest_landing`), beside the
                              data it describes, so it survives restarts of Dagster and its
                              database.

The ingestion loop and the ledger are `firepipe.core.ingestion.landing.ingest_new` /
`LandingLedger`. Ingested files stay in `incoming/` as the raw archive; expire them with a
lifecycle rule (the ledger keeps one line per ingested key).

A local file can still be written after it was quarantined (an upload that paused past the
settle time, whose writer holds the moved file open): each run returns such a file to
incoming/ (`reclaim_rewritten`), where it is judged again as a new version.

Landed files are untrusted: `ingest_landing` parses them in one child process per run
(`firepipe.lib.isolated`, with a memory limit and a time limit), so a file that makes the
reader panic, abort or run away is quarantined with what happened, and the run goes on.
"""

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import dagster as dg
import polars as pl
from pydantic import Field

from firepipe.core.ingestion.landing import (
    LANDING_SETTLE_S,
    IngestSummary,
    LandedObject,
    LandingLedger,
    Parser,
    QuarantineError,
    ingest_new,
)
from firepipe.lib.isolated import FailureKind, IsolatedCallError, IsolatedFunction
from firepipe.lib.lakehouse import tables
from firepipe.lib.s3 import object_exists
from firepipe.resources.lakehouse import Lakehouse

INCOMING = "incoming/"
QUARANTINE = "quarantine/"
INGESTED_MARKS = "_ingested/"
LEDGER_KEY = "_state/landing_ledger.json"
# A local file is written in place, so one without its format's end mark may be an upload in
# progress; it is judged as it is once unchanged for this long. A writer that pauses longer
# and then finishes is reclaimed from quarantine (`reclaim_rewritten`). Chosen, not measured.
LOCAL_SETTLE_S = 10.0
# The parse of one landed file, by module path: `ingest_landing` runs it in a child process.
PARSER = "firepipe.core.ingestion.landing:parse_landed_file"
# How a parse that did not return ended -> the quarantine rule of its file.
PARSER_FAILURE_RULES: dict[FailureKind, str] = {
    "raised": "parser_error",
    "out_of_memory": "memory_limit",
    "crashed": "parser_crashed",
    "timed_out": "parser_timeout",
}


class LandingZone(dg.ConfigurableResource, ABC):
    """Where files land; implements firepipe.core.landing.LandingSource."""

    settle_s: float = Field(
        default=LANDING_SETTLE_S,
        description="a file without its format's end mark (Parquet footer, final newline) "
        "is judged as it is once two looks this far apart saw it unchanged",
    )
    # Assumed: a landed file is at most a few hundred MB; its parse holds the bytes,
    # the frame as read and the typed columns, a few times the file. Chosen, not measured.
    parse_memory_limit_mb: int = Field(
        default=4096,
        description="address space one file's parse may take beyond the parser's own; "
        "a file that needs more is quarantined (memory_limit)",
    )
    parse_timeout_s: float = Field(
        default=300.0,
        description="a file whose parse takes longer is quarantined (parser_timeout)",
    )

    @abstractmethod
    def list_objects(self) -> list[LandedObject]:
        """Every object under incoming/, in no particular order."""

    @abstractmethod
    def read(self, key: str) -> bytes: ...

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _move(self, key: str, target: str) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the zone is, for people."""

    def drop(self, name: str, data: bytes) -> str:
        """Land a file under incoming/ (what an uploader does); returns its key."""
        name = name.strip("/")
        if not name or ".." in name.split("/"):
            raise ValueError(f"not a landing file name: {name!r}")
        key = INCOMING + name
        self._put(key, data)
        return key

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str:
        """Move `key` to quarantine/ with its reason beside it; returns the quarantined key.

        The reason is written first, then the file is moved (a rename locally, a server-side
        copy and delete on S3): a crash in between leaves the file in incoming/, to be
        quarantined again, never lost. A name already in quarantine gets a time folder.
        """
        if not key.startswith(INCOMING):
            raise ValueError(f"only incoming/ files are quarantined, got {key!r}")
        relative = key.removeprefix(INCOMING)
        target = QUARANTINE + relative
        if self._exists(target):
            target = f"{QUARANTINE}{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}/{relative}"
        sidecar = {
            "rule": rule,
            "reason": reason,
            "quarantined_at": at.astimezone(UTC).isoformat(),
            "source_key": key,
        }
        self._put(target + ".reason.json", json.dumps(sidecar, indent=2).encode())
        self._move(key, target)
        return target

    def quarantine_reason(self, quarantined_key: str) -> dict[str, Any]:
        return dict(json.loads(self.read(quarantined_key + ".reason.json")))

    def rewritten_in_quarantine(self) -> dict[str, str]:
        """Quarantined key -> incoming key, of the files written to after they were
        quarantined. Empty on a store whose objects are whole once listed (S3)."""
        return {}

    def reclaim_rewritten(self) -> list[str]:
        """Moves each file `rewritten_in_quarantine` names back to incoming/, where it is
        judged again as a new version; returns the incoming keys."""
        reclaimed = []
        for target, source in self.rewritten_in_quarantine().items():
            # The file first: a crash between leaves it in incoming/ (judged again) and a
            # reason without its file, which `rewritten_in_quarantine` skips.
            self._move(target, source)
            self._delete(target + ".reason.json")
            reclaimed.append(source)
        return reclaimed

    def is_ingested(self, digest: str) -> bool:
        return self._exists(f"{INGESTED_MARKS}{digest}.json")

    def ingested_key(self, digest: str) -> str | None:
        mark = f"{INGESTED_MARKS}{digest}.json"
        if not self._exists(mark):
            return None
        return str(json.loads(self.read(mark))["key"])

    def mark_ingested(self, digest: str, key: str, at: datetime) -> None:
        mark = {"key": key, "ingested_at": at.astimezone(UTC).isoformat()}
        self._put(f"{INGESTED_MARKS}{digest}.json", json.dumps(mark).encode())

    def load_ledger(self) -> LandingLedger:
        """What `ingest_landing` handled and what waits; empty before the first run."""
        if not self._exists(LEDGER_KEY):
            return LandingLedger()
        return LandingLedger.from_json(self.read(LEDGER_KEY).decode())

    def save_ledger(self, ledger: LandingLedger) -> None:
        self._put(LEDGER_KEY, ledger.to_json().encode())

    def has_landed(self, name: str, data: bytes) -> bool:
        """Whether `data` under incoming/`name` is there, was ingested, or was quarantined."""
        relative = name.strip("/")
        digest = hashlib.sha256(data).hexdigest()
        return (
            self._exists(INCOMING + relative)
            or self._exists(QUARANTINE + relative)
            or self.is_ingested(digest)
        )


class LocalLandingZone(LandingZone):
    """A folder: files dropped under `<root>/incoming/`."""

    root: str = Field(description="the landing folder; incoming/ and quarantine/ live in it")
    settle_s: float = Field(
        default=LOCAL_SETTLE_S,
        description="a file without its format's end mark (Parquet footer, final newline) "
        "is judged as it is once two looks this far apart saw it unchanged",
    )

    def _path(self, key: str) -> Path:
        return Path(self.root) / key

    def list_objects(self) -> list[LandedObject]:
        incoming = self._path(INCOMING)
        if not incoming.is_dir():
            return []
        objects = []
        for path in incoming.rglob("*"):
            # Skip folders and the temporary files of writes in progress.
            if not path.is_file() or path.name.startswith(".landing-"):
                continue
            objects.append(self._object(path))
        return objects

    def _object(self, path: Path) -> LandedObject:
        stat = path.stat()
        return LandedObject(
            key=path.relative_to(self.root).as_posix(),
            last_modified=datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC),
            size_bytes=stat.st_size,
            # A write changes size or mtime; a new file under the key (a rename, or a `cp -p`
            # that keeps the old mtime) has a new inode or ctime.
            version=f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}",
        )

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str:
        """As LandingZone.quarantine, and the moved file's version is added to its reason, so
        a writer still holding it open is noticed (`reclaim_rewritten`)."""
        target = super().quarantine(key, rule, reason, at)
        sidecar = self.quarantine_reason(target)
        sidecar["version"] = self._object(self._path(target)).version
        self._put(target + ".reason.json", json.dumps(sidecar, indent=2).encode())
        return target

    def rewritten_in_quarantine(self) -> dict[str, str]:
        quarantine = self._path(QUARANTINE)
        if not quarantine.is_dir():
            return {}
        rewritten = {}
        for reason_path in sorted(quarantine.rglob("*.reason.json")):
            target = reason_path.relative_to(self.root).as_posix().removesuffix(".reason.json")
            sidecar = json.loads(reason_path.read_bytes())
            source = str(sidecar["source_key"])
            # A reason from before versions were recorded, one whose file went back, or a key
            # taken again meanwhile: nothing to reclaim.
            if "version" not in sidecar or not self._exists(target) or self._exists(source):
                continue
            if self._object(self._path(target)).version != sidecar["version"]:
                rewritten[target] = source
        return rewritten

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".landing-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def _move(self, key: str, target: str) -> None:
        self._path(target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._path(key), self._path(target))

    def describe(self) -> str:
        return f"local folder {self.root}"


class S3LandingZone(LandingZone):
    """An S3 prefix: files dropped under `s3://<bucket>/<prefix>/incoming/`."""

    bucket: str
    prefix: str = Field(default="landing", description="the zone's folder in the bucket")
    region: str
    endpoint_url: str | None = Field(default=None, description="for moto or S3-compatible stores")

    def _client(self) -> Any:
        return _s3(self.region, self.endpoint_url)

    def _full(self, key: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{key}" if prefix else key

    def list_objects(self) -> list[LandedObject]:
        base = self._full("")
        pages = self._client().get_paginator("list_objects_v2")
        objects = []
        for page in pages.paginate(Bucket=self.bucket, Prefix=self._full(INCOMING)):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):  # a console "folder"
                    continue
                modified = item["LastModified"].astimezone(UTC)
                etag = str(item["ETag"]).strip('"')
                objects.append(
                    LandedObject(
                        key=item["Key"].removeprefix(base),
                        last_modified=modified,
                        size_bytes=int(item["Size"]),
                        # Each PUT is a new object: same bytes, same ETag, a later time.
                        version=f"{etag}@{modified.isoformat()}",
                    )
                )
        return objects

    def read(self, key: str) -> bytes:
        response = self._client().get_object(Bucket=self.bucket, Key=self._full(key))
        return bytes(response["Body"].read())

    def _put(self, key: str, data: bytes) -> None:
        self._client().put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def _exists(self, key: str) -> bool:
        return object_exists(self._client(), self.bucket, self._full(key))

    def _delete(self, key: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=self._full(key))

    def _move(self, key: str, target: str) -> None:
        source = {"Bucket": self.bucket, "Key": self._full(key)}
        self._client().copy_object(CopySource=source, Bucket=self.bucket, Key=self._full(target))
        self._delete(key)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}"


@lru_cache(maxsize=8)
def _s3(region: str, endpoint_url: str | None) -> Any:
    """One S3 client per region and endpoint, shared (boto3 clients are thread-safe)."""
    import boto3

    return boto3.client("s3", region_name=region, endpoint_url=endpoint_url)


def lakehouse_writer(lakehouse: Lakehouse, identifier: str) -> Callable[[pl.DataFrame], None]:
    """A writer for `ingest_new`: each file's rows replace that file's earlier rows in the table.

    Scoped by `source_file`, so writing a file again after a crash (or a corrected re-upload of
    the same key) replaces its rows instead of adding them twice.
    """

    def write(frame: pl.DataFrame) -> None:
        if frame.is_empty():  # a header-only file: nothing to replace or add
            return
        files = tuple(frame.get_column("source_file").unique().to_list())
        scope = tables.Scope(((tables.Values("source_file", files),),))
        tables.write_table(lakehouse.catalog(), identifier, frame, scope=scope)

    return write


@dataclass(frozen=True)
class Quarantined:
    key: str
    rule: str
    reason: str
    quarantined_key: str


@dataclass
class LandingRun:
    """What one `ingest_landing` did: the loop's summary, each quarantine's reason, and the
    files returned from quarantine because they were written to after it."""

    summary: IngestSummary
    quarantined: list[Quarantined] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)


class _RecordingZone:
    """The zone as `ingest_new` sees it, remembering each quarantine with its reason (the
    loop's summary keeps only the rule)."""

    def __init__(self, zone: LandingZone) -> None:
        self.zone = zone
        self.quarantined: list[Quarantined] = []

    def list_objects(self) -> Sequence[LandedObject]:
        return self.zone.list_objects()

    def read(self, key: str) -> bytes:
        return self.zone.read(key)

    def quarantine(self, key: str, rule: str, reason: str, at: datetime) -> str:
        target = self.zone.quarantine(key, rule, reason, at)
        self.quarantined.append(Quarantined(key, rule, reason, target))
        return target

    def ingested_key(self, digest: str) -> str | None:
        return self.zone.ingested_key(digest)

    def mark_ingested(self, digest: str, key: str, at: datetime) -> None:
        self.zone.mark_ingested(digest, key, at)


def isolated_parser(function: IsolatedFunction) -> Parser:
    """A parse for `ingest_new` that calls `function` (a Parser running in a child process):
    whatever made the child fail quarantines the file, the parser's own QuarantineError as it
    is, a panic, crash, runaway allocation or hang by PARSER_FAILURE_RULES with what happened."""

    def parse(source_file: str, data: bytes, ingested_at: datetime) -> pl.DataFrame:
        try:
            return cast(pl.DataFrame, function(source_file, data, ingested_at))
        except IsolatedCallError as failure:
            if isinstance(failure.error, QuarantineError):
                raise failure.error from None
            rule = PARSER_FAILURE_RULES[failure.kind]
            raise QuarantineError(rule, f"the parser {failure.detail}") from None

    return parse


def ingest_landing(
    zone: LandingZone,
    lakehouse: Lakehouse,
    identifier: str,
    now: datetime | None = None,
    parser: str = PARSER,
) -> LandingRun:
    """Ingest every version of a file the zone's stored ledger has not handled into
    `identifier`, and store the ledger as far as it got, also when a file stopped the run
    (`summary.failed`).

    Files are parsed by `parser` ("package.module:function", a Parser) in one child process,
    reused for the run and replaced after a file that crashed it, under the zone's memory and
    time limits.
    """
    reclaimed = zone.reclaim_rewritten()
    recording = _RecordingZone(zone)
    before = zone.load_ledger()
    stored = before.to_json()
    function = IsolatedFunction(parser, zone.parse_memory_limit_mb, zone.parse_timeout_s)
    with function:
        summary = ingest_new(
            recording,
            before,
            lakehouse_writer(lakehouse, identifier),
            now,
            zone.settle_s,
            parse=isolated_parser(function),
        )
    if summary.ledger.to_json() != stored:
        zone.save_ledger(summary.ledger)
    return LandingRun(summary, recording.quarantined, reclaimed)
