"""Sweeps: declarative sweep files -> validated -> Ray Tune with Optuna + ASHA, or arms x seeds."""
