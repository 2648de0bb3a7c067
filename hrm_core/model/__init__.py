"""The HRM: the recurrence (hrm.py), its layers, its variants, and reference-checkpoint loading."""
