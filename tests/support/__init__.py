"""Test support shared by the tests and the benchmarks (not shipped with the packages).

- ``synthetic``: synthetic sweeps written into a real MLflow store, in the sweep engine's
  layout, with known effects and failures.
- ``simulation``: thousands of simulated ablations, to check the report's statistics.
"""
