"""Synthetic data generator agent: tabular generation, schema checks, quality metrics."""
