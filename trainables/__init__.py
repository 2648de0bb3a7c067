"""The HRM trainer as a Ray Tune function trainable (reporting, checkpoints, restore)."""
