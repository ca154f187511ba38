"""The one place firepipe reads its environment.

`FIREPIPE_ENV` picks the resources (`local`, the default, or `aws`); `FIREPIPE_HOME` moves the
folder that holds every piece of local state (default `./.firepipe`); `FIREPIPE_NIST_DATA_DIR`
replaces the packaged NIST fire tests with another folder of the same format. They are read
when called, never at import time, so tests and tools can point one process at several homes.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml  # PyYAML: a dependency of dagster

ENV_VAR = "FIREPIPE_ENV"
HOME_VAR = "FIREPIPE_HOME"
DEFAULT_HOME = ".firepipe"
NIST_DATA_VAR = "FIREPIPE_NIST_DATA_DIR"
SNOWFLAKE_AUTH_VAR = "FIREPIPE_SNOWFLAKE_AUTH"

# Run monitoring (the dagster-daemon, which `dagster dev` starts) fails a run that has not
# started within start_timeout_seconds, ends a cancel that hangs past cancel_timeout_seconds,
# and stops a run past max_runtime_seconds: a day, the backstop for a run whose worker died
# where firepipe.lib.runs cannot see it (another host); a run's `dagster/max_runtime` tag
# overrides it. The local launcher cannot tell a dead worker, so firepipe.lib.runs does.
_RUN_MONITORING_YAML = """\
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_runtime_seconds: 86400
  poll_interval_seconds: 60
"""
# firepipe's instance class refuses a run whose partition tags select nothing before the run
# is stored (firepipe.lib.instance); otherwise it is Dagster's.
_INSTANCE_CLASS_YAML = """\
instance_class:
  module: firepipe.lib.instance
  class: FirepipeInstance
"""
# Blocks a firepipe home's dagster.yaml must hold, by top-level key.
_REQUIRED_BLOCKS = {"run_monitoring": _RUN_MONITORING_YAML, "instance_class": _INSTANCE_CLASS_YAML}
# Telemetry would try to reach the internet; the local instance never does.
_DAGSTER_YAML = (
    """\
# Local Dagster instance for firepipe: SQLite storage in this folder.
telemetry:
  enabled: false
"""
    + _RUN_MONITORING_YAML
    + _INSTANCE_CLASS_YAML
)


class Environment(enum.StrEnum):
    LOCAL = "local"
    AWS = "aws"


class SettingsError(ValueError):
    """A firepipe environment variable holds a value firepipe cannot use."""


E = TypeVar("E", bound=enum.StrEnum)


def _choice(var: str, choices: type[E], default: E) -> E:
    """The member of `choices` that `var` names (any case), `default` when it is unset."""
    raw = os.environ.get(var, default.value).strip().lower()
    try:
        return choices(raw)
    except ValueError:
        allowed = ", ".join(c.value for c in choices)
        raise SettingsError(f"{var}={raw!r} is not one of: {allowed}") from None


def environment() -> Environment:
    return _choice(ENV_VAR, Environment, Environment.LOCAL)


@dataclass(frozen=True)
class LocalPaths:
    """Where each piece of local state lives under the firepipe home."""

    home: Path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def lake(self) -> Path:
        """The lakehouse root: its catalog and warehouse (laid out by LocalLakehouse)."""
        return self.home / "lake"

    @property
    def generation_history(self) -> Path:
        """The SQLite file of generation runs (SqliteGenerationHistory)."""
        return self.home / "generation_history.db"

    @property
    def field_warehouse(self) -> Path:
        """The DuckDB file standing in for the Snowflake field warehouse (`firepipe seed`)."""
        return self.home / "field_warehouse.duckdb"

    @property
    def extraction_watermarks(self) -> Path:
        """The SQLite file of extraction watermarks (SqliteWatermarkStore)."""
        return self.home / "extraction_watermarks.db"

    @property
    def landing(self) -> Path:
        """The landing folder standing in for the S3 landing prefix (LocalLandingZone)."""
        return self.home / "landing"

    @property
    def training(self) -> Path:
        """Where LocalTrainingBackend writes a job's data channels while the job runs."""
        return self.home / "training"

    @property
    def mlflow(self) -> Path:
        """MLflow's SQLite store (mlflow.db) and artifact folder (artifacts/)."""
        return self.home / "mlflow"

    @property
    def notifications(self) -> Path:
        """The SQLite outbox of notifications (LocalNotifier; `firepipe notifications list`)."""
        return self.home / "notifications.db"

    @property
    def endpoint_deployments(self) -> Path:
        """The SQLite record of the champion's deployments (LocalModelEndpoint)."""
        return self.home / "endpoint.db"

    @property
    def online_features(self) -> Path:
        """The SQLite online store: the latest gold features per device (LocalFeatureStore)."""
        return self.home / "online_features.db"

    @property
    def state_store(self) -> Path:
        """The SQLite state store: the agents' state per device, with history (LocalStateStore)."""
        return self.home / "state_store.db"

    @property
    def queues(self) -> Path:
        """The SQLite file of the agents' queues and topic (LocalQueue, LocalTopic)."""
        return self.home / "queues.db"

    @property
    def escalations(self) -> Path:
        """The SQLite file of the alerts' escalation timers (LocalEscalationTimer)."""
        return self.home / "escalations.db"

    @property
    def knowledge_base(self) -> Path:
        """The knowledge base: its faiss index versions (index/) and the embedding model's
        ONNX graph (model/), written once from the model's weights (LocalKnowledgeBase)."""
        return self.home / "knowledge_base"


def local_paths() -> LocalPaths:
    raw = os.environ.get(HOME_VAR, "").strip()
    home = Path(raw).expanduser() if raw else Path.cwd() / DEFAULT_HOME
    return LocalPaths(home=home.resolve())


def ensure_dagster_home(paths: LocalPaths | None = None) -> Path:
    """Create the Dagster instance folder with its config, and return it. A config that is
    already there (an older firepipe's, or the user's) is kept and given the blocks it lacks
    (run monitoring, the instance class)."""
    paths = paths or local_paths()
    paths.dagster_home.mkdir(parents=True, exist_ok=True)
    config = paths.dagster_home / "dagster.yaml"
    if config.exists():
        _add_missing_blocks(config)
    else:
        config.write_text(_DAGSTER_YAML)
    return paths.dagster_home


def _add_missing_blocks(config: Path) -> None:
    """Append each of firepipe's blocks (run monitoring, the instance class) that `config`
    lacks (the user's own block wins); appending keeps the user's other keys and comments as
    they were."""
    text = config.read_text()
    try:
        current = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SettingsError(f"{config} is not valid YAML: {error}") from None
    if current is not None and not isinstance(current, dict):
        raise SettingsError(f"{config} must hold a YAML mapping of instance settings")
    missing = [block for key, block in _REQUIRED_BLOCKS.items() if key not in (current or {})]
    if not missing:
        return
    kept = text.rstrip("\n") + "\n" if text.strip() else ""
    config.write_text(kept + "".join(missing))


class SnowflakeAuth(enum.StrEnum):
    """How the field warehouse source signs in to Snowflake (the secrets come through dg.EnvVar:
    SNOWFLAKE_PASSWORD, or SNOWFLAKE_PRIVATE_KEY [+ SNOWFLAKE_PRIVATE_KEY_PASSPHRASE])."""

    PASSWORD = "password"
    KEY_PAIR = "key_pair"
    ENCRYPTED_KEY_PAIR = "encrypted_key_pair"


def snowflake_auth() -> SnowflakeAuth:
    """FIREPIPE_SNOWFLAKE_AUTH: which credentials to ask for (a choice, not a secret)."""
    return _choice(SNOWFLAKE_AUTH_VAR, SnowflakeAuth, SnowflakeAuth.PASSWORD)


SPARK_ENGINE_VAR = "FIREPIPE_SPARK_ENGINE"


class SparkEngine(enum.StrEnum):
    """Where the Spark features run in AWS (the spark_compute resource; each engine's settings
    come through dg.EnvVar: see docs/lakehouse.md, "Spark engines")."""

    EMR_SERVERLESS = "emr-serverless"
    EMR = "emr"  # a step on a transient EMR-on-EC2 cluster
    GLUE = "glue"


def spark_engine() -> SparkEngine:
    """FIREPIPE_SPARK_ENGINE: the AWS Spark engine (emr-serverless by default)."""
    return _choice(SPARK_ENGINE_VAR, SparkEngine, SparkEngine.EMR_SERVERLESS)


# The six NIST smoke-alarm fire tests firepipe ships (with their SOURCE.md: NIST's credit and
# the terms they are used under), inside the package so an installed wheel and an image have them.
PACKAGED_NIST_DATA_DIR = Path(__file__).resolve().parent / "data" / "nist_smoke_alarms"


def nist_data_dir() -> Path:
    """The folder of real NIST fire tests: FIREPIPE_NIST_DATA_DIR when set (any folder of
    NIST_Smoke_Alarms_*.csv files with an Activation_Times.csv), else the packaged copy."""
    raw = os.environ.get(NIST_DATA_VAR, "").strip()
    if not raw:
        return PACKAGED_NIST_DATA_DIR
    folder = Path(raw).expanduser().resolve()
    if not folder.is_dir():
        raise SettingsError(f"{NIST_DATA_VAR}={raw!r}: {folder} is not a folder")
    return folder
