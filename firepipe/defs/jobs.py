"""Jobs that span domains."""

import dagster as dg

end_to_end = dg.define_asset_job(
    "end_to_end",
    selection=dg.AssetSelection.all(),
    description="Materialise every asset in dependency order: generation to gold features.",
)
