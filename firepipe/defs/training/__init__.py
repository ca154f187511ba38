"""Detector training, evaluation and the champion."""
