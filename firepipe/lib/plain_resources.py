"""Plain resources outside a Dagster run: a resource made of fields only is its own value once
its `dg.EnvVar` fields are read. Building it here, not through Dagster's initialisation, skips
the ephemeral instance Dagster creates for that (SQLAlchemy and Alembic: over half of a short
command's time, measured), which a CLI command or a Lambda cold start cannot afford."""

from __future__ import annotations

from typing import Any

import dagster as dg

# The hooks a ConfigurableResource may override to do work when it is initialised.
LIFECYCLE = (
    "create_resource",
    "setup_for_execution",
    "teardown_after_execution",
    "yield_for_execution",
)


class UnsetVariableError(ValueError):
    """An environment variable a resource field reads is not set."""


def is_plain(resource: Any) -> bool:
    cls, base = type(resource), dg.ConfigurableResource
    plain = all(getattr(cls, hook) is getattr(base, hook) for hook in LIFECYCLE)
    return plain and not resource.nested_resources


def resolved(resource: Any) -> Any:
    """`resource` (plain: `is_plain`) with every dg.EnvVar field replaced by its value."""
    cls = type(resource)
    fields = {name: getattr(resource, name) for name in cls.model_fields}
    return cls(**{name: _value(cls, name, value) for name, value in fields.items()})


def _value(cls: type, field: str, value: Any) -> Any:
    if not isinstance(value, dg.EnvVar):
        return value
    found = value.get_value()
    if found is None:
        raise UnsetVariableError(
            f"{value.env_var_name} is not set: {cls.__name__}.{field} reads it"
        )
    return found
