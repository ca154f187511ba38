"""The firepipe code location: every domain under `firepipe.defs`, with the resources of the
current environment (FIREPIPE_ENV) bound once here."""

import warnings

import dagster as dg

import firepipe.defs
from firepipe import settings
from firepipe.resources import resources_for


def _domain_definitions() -> dg.Definitions:
    # Loading from the package module (not from a dg project folder) keeps the code location
    # importable from an installed wheel; dagster marks this loader as preview.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.load_definitions_from_package_module(firepipe.defs)


# Steps run in processes forked from a server that has already imported firepipe, so a step
# starts in well under a second instead of re-importing dagster, polars and pyarrow each time.
EXECUTOR = dg.multiprocess_executor.configured(
    {"start_method": {"forkserver": {"preload_modules": ["firepipe.definitions"]}}}
)


@dg.definitions
def defs() -> dg.Definitions:
    resources = resources_for(settings.environment(), settings.local_paths())
    policy = dg.Definitions(resources=resources, executor=EXECUTOR)
    return dg.Definitions.merge(_domain_definitions(), policy)
