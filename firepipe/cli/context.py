"""What the commands share: the resources of the current environment, initialised for the
running command, and the Dagster instance folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from firepipe import settings

if TYPE_CHECKING:
    from firepipe.resources.lakehouse import Lakehouse
    from firepipe.resources.registry import ModelRegistry


def initialised(resource: Any) -> Any:
    """A Dagster resource's value, its dg.EnvVar fields resolved as a run would resolve them
    (unresolved, they read as the variables' names), for the running command.

    A plain resource (fields only: no nested resources, no lifecycle hooks) is its own value
    once its variables are read, so it is built here: Dagster's own initialisation creates an
    ephemeral instance, which loads SQLAlchemy and Alembic and took over half of `firepipe
    history`'s time (1.3 s of 2.7 s, measured). Any other resource goes through Dagster, its
    init context closing with the command, not in the interpreter's teardown."""
    from firepipe.lib.plain_resources import UnsetVariableError, is_plain, resolved

    if is_plain(resource):
        try:
            return resolved(resource)
        except UnsetVariableError as error:
            raise click.ClickException(
                f"{error} ({settings.ENV_VAR}={settings.environment().value})"
            ) from None
    return click.get_current_context().with_resource(resource.process_config_and_initialize_cm())


def lakehouse() -> Lakehouse:
    # Imported here so `firepipe --help` answers without loading dagster and pyiceberg.
    from firepipe.resources import resource_for

    lakehouse: Lakehouse = initialised(
        resource_for("lakehouse", settings.environment(), settings.local_paths())
    )
    return lakehouse


def model_registry() -> ModelRegistry:
    from firepipe.resources import resource_for

    registry: ModelRegistry = initialised(
        resource_for("model_registry", settings.environment(), settings.local_paths())
    )
    return registry


def dagster_home() -> Path:
    raw = os.environ.get("DAGSTER_HOME")
    home = Path(raw) if raw else settings.local_paths().dagster_home
    if not home.is_dir():
        raise click.ClickException(f"no Dagster instance at {home}: run `make run` first")
    return home
