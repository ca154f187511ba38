"""Serving: the champion's endpoint, gold scored by the champion, and the feature store."""
