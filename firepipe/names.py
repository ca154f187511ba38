"""The names every layer agrees on: asset keys (as paths), Iceberg table names and the
registered model's name.

Free of Dagster, so the CLI and the services read them without loading the definitions; `defs/`
makes its `dg.AssetKey`s from these paths. An asset's first path element is its layer and its
group in the UI (bronze, silver, gold, ml, analytics), and its table is its path joined with a
dot (`table_name`), as the Iceberg IO manager names tables.
"""

from __future__ import annotations

AssetPath = tuple[str, str]

SYNTHETIC_READINGS: AssetPath = ("bronze", "synthetic_readings")
FIELD_READINGS: AssetPath = ("bronze", "field_readings")
FIELD_DEAD_LETTERS: AssetPath = ("bronze", "field_dead_letters")
LANDED_READINGS: AssetPath = ("bronze", "landed_readings")
SENSOR_READINGS: AssetPath = ("silver", "sensor_readings")
QUARANTINE: AssetPath = ("silver", "quarantine")
SENSOR_FEATURES: AssetPath = ("gold", "sensor_features")
GENERATOR_VALIDATION: AssetPath = ("gold", "generator_validation")
TRAINING_SET: AssetPath = ("ml", "training_set")
DETECTOR: AssetPath = ("ml", "detector")
EVALUATION: AssetPath = ("ml", "evaluation")
CHAMPION: AssetPath = ("ml", "champion")
# Serving: the champion's SageMaker endpoint (a record of the deployment locally), gold scored
# by the champion (a table), and the latest gold features per device in the feature store.
ENDPOINT: AssetPath = ("ml", "endpoint")
SCORES: AssetPath = ("ml", "scores")
ONLINE_FEATURES: AssetPath = ("ml", "online_features")
# The NIST tests replayed through the monitoring, analysis and response agents.
AGENTS_REPLAY: AssetPath = ("agents", "nist_replay")
# The knowledge base's index over firepipe's own documents (faiss locally, Bedrock in AWS).
KB_INDEX: AssetPath = ("genai", "kb_index")
# The dbt models' layer: analytics/<model name>.
ANALYTICS = "analytics"

# The detector's name in the model registry (MLflow, or SageMaker's managed MLflow).
MODEL_NAME = "firepipe-fire-detector"


def table_name(path: AssetPath) -> str:
    """The Iceberg table (namespace.table) that holds the asset at `path`."""
    return ".".join(path)


def group_name(path: AssetPath) -> str:
    """The asset's group in the UI: its layer."""
    return path[0]
