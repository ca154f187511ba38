"""Entry points that run outside Dagster and import `firepipe.core`, so a local run and a
remote one (AWS Batch, EMR, SageMaker, the agent workers) execute the same code."""
