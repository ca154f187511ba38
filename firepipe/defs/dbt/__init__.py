"""The dbt project in `dbt/` as Dagster assets: silver -> daily site summaries, alarm rates."""
