"""Where firepipe's dbt project is, and the dbt CLI resource for an environment.

The project lives in `dbt/` beside the package; its manifest (`dbt/target/manifest.json`) is
what dagster-dbt reads when the definitions load, built by `make dbt-manifest` (`dbt parse`,
offline). The target is the environment: `local` (DuckDB over the local Iceberg lake) or `aws`
(Snowflake).
"""

import sys
from pathlib import Path

from dagster_dbt import DbtCliResource

from firepipe.settings import Environment

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt"
DBT_MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
# The dbt of the interpreter running Dagster: the environment's, whatever PATH says.
DBT_EXECUTABLE = Path(sys.executable).parent / "dbt"
# dbt's global flags: plain text logs in the run's log, and nothing sent anywhere.
DBT_GLOBAL_FLAGS = ("--no-use-colors", "--no-send-anonymous-usage-stats", "--no-version-check")


class DbtManifestMissingError(FileNotFoundError):
    """The dbt manifest the definitions are built from has not been generated."""


def require_manifest(path: Path = DBT_MANIFEST_PATH) -> Path:
    """The manifest's path, or a clear error saying how to build it."""
    if not path.is_file():
        raise DbtManifestMissingError(
            f"the dbt manifest {path} does not exist: run `make dbt-manifest` (it runs "
            f"`dbt parse --project-dir {DBT_PROJECT_DIR} --profiles-dir {DBT_PROJECT_DIR}`); "
            "`make run`, `make dev` and `make test` build it first"
        )
    return path


def dbt_resource_for(env: Environment) -> DbtCliResource:
    return DbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        target=env.value,
        dbt_executable=str(DBT_EXECUTABLE),
        global_config_flags=list(DBT_GLOBAL_FLAGS),
    )
