"""Watching a run without changing it: callbacks, diagnostics, alerts, FLOP and compute accounting, run context, provenance."""
