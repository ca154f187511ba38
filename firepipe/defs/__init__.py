"""Dagster definitions, one package per domain; `firepipe.definitions` loads them all."""
