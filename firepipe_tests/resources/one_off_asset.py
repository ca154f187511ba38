"""Calling a resource method the way an asset does: inside a materialisation, with its context."""

from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

T = TypeVar("T")


def call_in_asset(resource: dg.ConfigurableResource, call: Callable[[Any, Any], T]) -> T:
    """Materialise a one-off asset whose body is `call(context, resource)`; return what it got.
    What the call raises fails the materialisation and is raised here."""
    results: list[T] = []

    @dg.asset(required_resource_keys={"resource"})
    def one_off(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        results.append(call(context, context.resources.resource))
        return dg.MaterializeResult()

    dg.materialize([one_off], resources={"resource": resource})
    return results[0]
