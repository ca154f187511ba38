"""Notifications: a sensor that tells people through the notifier when a run fails."""
