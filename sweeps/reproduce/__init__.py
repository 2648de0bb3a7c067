"""``python -m sweeps reproduce RUN_ID``: rerun a recorded run and compare it metric by metric.

Any run with a ``run_context.json`` (a sweep trial or a standalone ``hrm_core.pretrain``
run with ``tracking.mlflow=true``) can be reproduced, in four steps, one module each:

1. ``load``: the run and its context are read from MLflow (``MLFLOW_TRACKING_URI``,
   ``--tracking-uri`` or the embedded store); the last step of its ``train/lm_loss`` history
   is where the rerun stops.
2. ``plan``: the recorded config, with ``--set KEY=VALUE`` (e.g. ``--set seed=1``) and
   ``--device`` on top; a missing dataset is rebuilt from the recorded recipe (the config's
   ``data.build``, else the dataset's ``build_info.json``) into ``--data-dir``, the recorded
   path, or the project's data dir, in that order of preference. Before any training, the
   context now is compared with the recorded one (``context``: config, git commit and diff,
   dataset fingerprint, torch threads, dtype path, device, compile, torch/CUDA/Python/library
   versions, CPU capability, world size), and every difference is printed with what it
   explains. No difference means bitwise identical metrics.
3. ``rerun``: the config is trained again standalone (no Ray) through the CLI's entry point
   (``hrm_core.pretrain.train``): same torch thread count, same schedule (``max_steps``
   unchanged: the cosine LR depends on it), stopped at the original's last step,
   checkpoints in ``--out`` (default ``checkpoints/reproduce/<run_id>/``). It logs to a new
   MLflow run in the original's experiment, tagged ``hrm.run_kind=reproduce`` and
   ``hrm.reproduces=<run_id>``.
4. ``compare``: every metric the original logged (timings excluded: ``perf/*``,
   ``compute/*_seconds``) is compared at every step both runs have: steps compared,
   bitwise-equal count (NaN equals NaN), max abs difference, first differing step. The rerun
   is tagged ``hrm.reproduce_match`` = ``bitwise`` | ``differs``.

``command`` runs the four and holds the CLI: exit code 0 (``--strict``: 1 unless bitwise); 2
with a one-line ``error:`` for an unknown run or a run without context.
"""
