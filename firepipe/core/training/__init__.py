"""Detector training: training sets, models and tuning, evaluation on synthetic and real
fires, and the decision to promote a candidate."""
