"""Validation: the synthetic generator's physics scored against real NIST fires."""
