"""The HRM: the recurrence (hrm.py), its layers, its variants (variants/: gating, feudal),
and reference-checkpoint loading."""
