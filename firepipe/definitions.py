"""The firepipe code location: every domain under `firepipe.defs`, with the resources of the
current environment (FIREPIPE_ENV) bound once here."""

import dagster as dg

import firepipe.defs
from firepipe import settings
from firepipe.resources import resources_for


@dg.definitions
def defs() -> dg.Definitions:
    resources = resources_for(settings.environment(), settings.local_paths())
    return dg.Definitions.merge(
        dg.load_defs(defs_root=firepipe.defs),
        dg.Definitions(resources=resources),
    )
