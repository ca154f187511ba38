"""Jobs that span domains."""

import dagster as dg

end_to_end = dg.define_asset_job(
    "end_to_end",
    selection=dg.AssetSelection.all(),
    description="Materialise every asset in dependency order: field extraction, landed files "
    "and generation into bronze, then silver, gold features, validation and the dbt models.",
)
