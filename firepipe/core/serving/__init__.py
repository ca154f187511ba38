"""Serving: online features, fast scoring and the engine the inference service runs."""
