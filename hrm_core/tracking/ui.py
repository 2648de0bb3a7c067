"""Where a person opens a run: the address of its page in the MLflow UI.

A tracking server serves its own UI, so a run on ``http(s)://`` is shown there; a store
opened in-process (the embedded SQLite store) is shown by ``make mlflow-ui``, which serves
it at ``DEFAULT_UI_URL``. Imports neither MLflow nor torch: the analysis layer reads it too.
"""

from __future__ import annotations

from hrm_core.tracking.uris import is_http

__all__ = ["DEFAULT_UI_URL", "TRAINING_VIEW", "experiment_url", "run_url", "ui_base"]

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # `make mlflow-ui` (MLFLOW_PORT's default)
# MLflow 3's UI opens an experiment on its GenAI pages unless told the workflow; the experiment
# kind tag alone does not switch it (3.17). This opens the training-runs table and run pages.
TRAINING_VIEW = "?workflowType=machine_learning"


def ui_base(tracking_uri: str | None, ui_url: str = DEFAULT_UI_URL) -> str:
    """The UI's base address: the tracking server itself (without a password), else ``ui_url``."""
    if is_http(tracking_uri):
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(tracking_uri)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")
    return ui_url.rstrip("/")


def experiment_url(tracking_uri: str | None, experiment_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """``<ui>/#/experiments/<id>``: the experiment's runs table."""
    return f"{ui_base(tracking_uri, ui_url)}/#/experiments/{experiment_id}{TRAINING_VIEW}"


def run_url(tracking_uri: str | None, experiment_id: str, run_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """``<ui>/#/experiments/<experiment id>/runs/<run id>``: the run's page (a sweep's parent
    run lists its trials' runs nested under it)."""
    return f"{ui_base(tracking_uri, ui_url)}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"
