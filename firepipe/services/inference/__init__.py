"""The inference service: the champion fire detector behind the SageMaker serving contract
(`firepipe serve` locally and on ECS, `serve` in the SageMaker container)."""
