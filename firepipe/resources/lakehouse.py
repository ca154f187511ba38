"""The lakehouse port: one Iceberg catalog, local or on AWS, behind the same interface.

Locally a PyIceberg SQL catalog in SQLite over a warehouse folder; on AWS the Glue Data
Catalog over an S3 warehouse, so Athena, EMR and Snowflake read the same tables with no
crawler. Configuration is checked when a catalog is first used, not when definitions load.
"""

from __future__ import annotations

import fcntl
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow.fs as pafs
from pydantic import Field
from pyiceberg.catalog import Catalog

from firepipe.lib.lakehouse import tables

CATALOG_NAME = "firepipe"


class Lakehouse(dg.ConfigurableResource, ABC):
    """Where the bronze/silver/gold/ml tables live."""

    @abstractmethod
    def catalog(self) -> Catalog: ...

    @abstractmethod
    def describe(self) -> dict[str, str]:
        """Human-readable locations of the catalog and the warehouse."""

    def list_tables(self) -> list[str]:
        catalog = self.catalog()
        return sorted(
            ".".join(ident)
            for (namespace,) in catalog.list_namespaces()
            for ident in catalog.list_tables(namespace)
        )

    def table_rows(self, identifier: str) -> int:
        """Rows in the table's current snapshot, from its metadata (no data is read)."""
        return tables.snapshot_rows(self.catalog().load_table(identifier))

    def read(self, identifier: str, scope: tables.Scope | None = None) -> pl.DataFrame:
        return tables.read_table(self.catalog(), identifier, scope)

    def scan(
        self, identifier: str, scope: tables.Scope | None = None, snapshot_id: int | None = None
    ) -> pl.LazyFrame:
        return tables.scan_table(self.catalog(), identifier, scope, snapshot_id)

    def snapshots(self, identifier: str) -> list[tables.SnapshotInfo]:
        return tables.table_snapshots(self.catalog(), identifier)

    def staging_directory(self, identifier: str, run_id: str) -> str:
        """Where a run writes files for `identifier` before `commit_staged` adds them."""
        return tables.staging_directory(self.catalog(), identifier, run_id)

    def commit_staged(
        self,
        identifier: str,
        files: Sequence[str],
        partitioning: Sequence[tables.PartitionColumn] = (),
        scope: tables.Scope | None = None,
        snapshot_properties: Mapping[str, str] | None = None,
    ) -> tables.WriteResult:
        """One commit: the rows in `scope` are replaced by those of the staged files; the new
        snapshot carries `snapshot_properties` (names under tables.PROPERTY_PREFIX)."""
        return tables.commit_files(
            self.catalog(), identifier, files, partitioning, scope, snapshot_properties
        )

    def snapshot_properties(
        self, identifier: str, snapshot_id: int | None = None
    ) -> dict[str, str]:
        """What a write stored with a snapshot of the table (default: the current one)."""
        return tables.snapshot_properties(self.catalog(), identifier, snapshot_id)

    def discard_staged(self, directory: str) -> None:
        """Delete a staging folder whose files were never committed (nothing if it is absent)."""
        fs, path = self._filesystem(directory)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_dir(path)

    @abstractmethod
    def storage_options(self) -> dict[str, str]:
        """Options a polars writer needs to write under the warehouse (no secrets)."""

    @abstractmethod
    def _filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]: ...


@lru_cache(maxsize=8)
def _sql_catalog(database: Path, warehouse: str) -> Catalog:
    """The SQL catalog in SQLite at `database`. Opening one creates its tables when they are
    absent, and two processes doing that at once (the steps of one run, on a new home) would
    both try: SQLite refuses the second ("table iceberg_tables already exists"). A lock file
    beside the database lets one process at a time open it."""
    from pyiceberg.catalog.sql import SqlCatalog

    with database.with_name(database.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return SqlCatalog(CATALOG_NAME, uri=f"sqlite:///{database}", warehouse=warehouse)


@lru_cache(maxsize=8)
def _glue_catalog(
    warehouse: str, region: str, glue_endpoint_url: str | None, s3_endpoint_url: str | None
) -> Catalog:
    """One Glue catalog per configuration: building one (a boto3 session) costs ~0.2 s."""
    from pyiceberg.catalog.glue import GlueCatalog

    properties = {"warehouse": warehouse, "glue.region": region, "s3.region": region}
    if glue_endpoint_url:
        properties["glue.endpoint"] = glue_endpoint_url
    if s3_endpoint_url:
        properties["s3.endpoint"] = s3_endpoint_url
    return GlueCatalog(CATALOG_NAME, **properties)


class LocalLakehouse(Lakehouse):
    """An Iceberg SQL catalog in SQLite, with the warehouse in a local folder."""

    root: str

    @property
    def _catalog_db(self) -> Path:
        return Path(self.root) / "catalog.db"

    @property
    def _warehouse(self) -> Path:
        return Path(self.root) / "warehouse"

    def catalog(self) -> Catalog:
        self._warehouse.mkdir(parents=True, exist_ok=True)
        return _sql_catalog(self._catalog_db, self._warehouse.as_uri())

    def describe(self) -> dict[str, str]:
        return {
            "catalog": f"Iceberg SQL catalog, SQLite at {self._catalog_db}",
            "warehouse": str(self._warehouse),
        }

    def storage_options(self) -> dict[str, str]:
        return {}

    def _filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        return pafs.LocalFileSystem(), uri.removeprefix("file://")


class GlueLakehouse(Lakehouse):
    """The Glue Data Catalog over an S3 warehouse; credentials from the default AWS chain."""

    warehouse: str = Field(description="s3://bucket/prefix under which tables are written")
    region: str
    glue_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None

    def catalog(self) -> Catalog:
        if not self.warehouse.startswith("s3://"):
            raise tables.LakehouseError(
                f"the Glue lakehouse needs an s3:// warehouse, got {self.warehouse!r}"
            )
        return _glue_catalog(
            self.warehouse, self.region, self.glue_endpoint_url, self.s3_endpoint_url
        )

    def describe(self) -> dict[str, str]:
        return {"catalog": f"AWS Glue Data Catalog ({self.region})", "warehouse": self.warehouse}

    def storage_options(self) -> dict[str, str]:
        options = {"aws_region": self.region}
        if self.s3_endpoint_url:
            options["aws_endpoint_url"] = self.s3_endpoint_url
            if self.s3_endpoint_url.startswith("http://"):
                options["aws_allow_http"] = "true"
        return options

    def _filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        fs = pafs.S3FileSystem(region=self.region, endpoint_override=self.s3_endpoint_url)
        return fs, uri.removeprefix("s3://")
