"""The dbt-duckdb plugin through which dbt reads firepipe's local Iceberg lake.

profiles.yml names this module as a plugin (alias `firepipe_lake`) with the lake's root; a
source whose meta says `plugin: firepipe_lake` is then copied into DuckDB, when a model first
references it, from the table's current snapshot. The rows stream through PyIceberg's Arrow
batch reader, which applies Iceberg's own schema (evolved columns, field ids) and delete files,
so DuckDB never holds more than its table and dbt needs no DuckDB extension: DuckDB's iceberg
extension would be downloaded when first loaded, and these machines cannot reach the internet.

Only dbt imports this module (in the dbt process); the catalog is the one LocalLakehouse opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from firepipe.resources.lakehouse import LocalLakehouse

LAKE_ROOT_KEY = "lake_root"
TABLE_KEY = "iceberg_table"
SNAPSHOT_KEY = "snapshot_id"


class LakePluginError(Exception):
    """The plugin's configuration or a source it is asked for is wrong."""


class Plugin(BasePlugin):
    """Loads `namespace.table` (meta `iceberg_table`, default schema.identifier) as Arrow."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        root = plugin_config.get(LAKE_ROOT_KEY)
        if not root:
            raise LakePluginError(
                f"the firepipe_lake plugin needs `{LAKE_ROOT_KEY}` (the folder holding "
                "catalog.db and warehouse/) in its profiles.yml config"
            )
        self._lake_root = Path(str(root)).expanduser().resolve()
        self._catalog: Catalog | None = None
        # DuckDB creates its database file but not the folder around it.
        if self.creds is not None and self.creds.path and self.creds.path != ":memory:":
            Path(self.creds.path).expanduser().parent.mkdir(parents=True, exist_ok=True)

    def catalog(self) -> Catalog:
        if self._catalog is None:
            if not (self._lake_root / "catalog.db").exists():
                raise LakePluginError(
                    f"no Iceberg catalog at {self._lake_root}/catalog.db: materialise the lake "
                    "assets first (make run), or point firepipe_home at the right home"
                )
            self._catalog = LocalLakehouse(root=str(self._lake_root)).catalog()
        return self._catalog

    def load(self, source_config: SourceConfig) -> pa.RecordBatchReader:
        identifier = str(source_config.get(TABLE_KEY, "{schema}.{identifier}")).format(
            **source_config.as_dict()
        )
        try:
            table = self.catalog().load_table(identifier)
        except NoSuchTableError as exc:
            raise LakePluginError(
                f"table {identifier} is not in the lake at {self._lake_root}: materialise its "
                "asset first"
            ) from exc
        snapshot = source_config.get(SNAPSHOT_KEY)
        scan = table.scan(snapshot_id=int(snapshot) if snapshot is not None else None)
        return scan.to_arrow_batch_reader()

    def default_materialization(self) -> str:
        # A batch reader can be read once: the rows are copied into a DuckDB table.
        return "table"
