"""Hyperparameter search (cdrbench tune, Optuna)."""
