"""Jobs that span domains."""

import dagster as dg

from firepipe.defs.generation.partitions import DEFAULT_BATCHES, default_range_tags

end_to_end = dg.define_asset_job(
    "end_to_end",
    selection=dg.AssetSelection.all(),
    # A run names its bronze partitions with these range tags unless it brings its own
    # (`--tags` on `dagster job execute`, the launchpad in the UI).
    tags=default_range_tags(),
    description="Materialise every asset in dependency order: field extraction, landed files "
    f"and generation (batches {', '.join(DEFAULT_BATCHES)} of every scenario family unless the "
    "run's partition range tags say otherwise) into bronze, then silver, gold features, "
    "validation, the detector and the dbt models.",
)
