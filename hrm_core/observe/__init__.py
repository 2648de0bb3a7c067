"""Watching a run without changing it: callbacks, the trainer's reporter, diagnostics, alerts,
FLOP and compute accounting, run context, provenance."""
