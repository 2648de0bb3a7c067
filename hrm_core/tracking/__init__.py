"""The one MLflow layer. Nothing outside it imports mlflow, except ``analysis/loading.py``.

- ``uris``: where the store is (``MLFLOW_TRACKING_URI``, else the embedded ``mlruns/``).
- ``client``: the ``MlflowClient``, experiments, text artifacts.
- ``writer``: ``RunWriter``, the one way a run is written (params, metrics, tags, artifacts, its end).
- ``sink``: ``MlflowSink``, the training callback of a standalone run (the CLI's, reproduce's).
- ``probe``: is a tracking server there, within seconds; MLflow's HTTP retry budget.
- ``spool``: ``SpoolingClient``, the sweep driver's writes kept through a server outage.
- ``source``: MLflow's ``mlflow.user`` / ``mlflow.source.*`` tags, as its fluent API sets them.
- ``describe``: descriptions (``mlflow.note.content``) of experiments and of a sweep's parent run.
- ``datasets``: a run's dataset as an MLflow dataset input (name, fingerprint, split sizes).
- ``ui``: a run's address in the MLflow UI.

Torch-free at package level, and so are ``uris``, ``client``, ``writer``, ``probe``,
``spool``, ``source``, ``describe``, ``datasets`` and ``ui`` (mlflow is imported inside
functions), so that analysis can use ``uris``, ``describe`` and ``ui``.
"""
