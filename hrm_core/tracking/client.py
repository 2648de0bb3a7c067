"""The MLflow client: opened on a tracking URI, experiments found or made (the embedded store
keeps each experiment's artifacts under ``mlruns/artifacts/``; every experiment is tagged as one
of training runs), text artifacts read back."""

from __future__ import annotations

import os
import tempfile

from hrm_core import names
from hrm_core.tracking.uris import embedded_artifact_root, sqlite_path, tracking_uri

__all__ = ["ensure_experiment", "get_client", "read_text_artifact"]


def get_client(uri: str | None = None):
    """An ``MlflowClient`` on ``uri`` (default: ``tracking_uri()``), also made MLflow's
    process-wide URI; the folder of a SQLite store is created when missing."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    path = sqlite_path(uri)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created when missing, tagged
    ``mlflow.experimentKind=custom_model_development``: MLflow 3's UI opens it on its training
    runs, not on the GenAI (traces) view. An experiment made before the tag (or whose kind the UI
    only inferred) gets it now; a kind somebody chose is kept."""
    kind = {names.TAG_MLFLOW_EXPERIMENT_KIND: names.EXPERIMENT_KIND}
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if _kind_unset(exp.tags.get(names.TAG_MLFLOW_EXPERIMENT_KIND)):
            client.set_experiment_tag(exp.experiment_id, *kind.popitem())
        return exp.experiment_id
    artifact_location = None
    if client.tracking_uri.startswith("sqlite:"):
        artifact_location = "file://" + os.path.join(embedded_artifact_root(), names.safe_name(name))
    return client.create_experiment(name, artifact_location=artifact_location, tags=kind)


def _kind_unset(kind: str | None) -> bool:
    return not kind or kind.endswith("_inferred") or kind == "no_inferred_type"


def read_text_artifact(client, run_id: str, path: str) -> str:
    """The text of artifact ``path`` of run ``run_id`` (raises when it is not there)."""
    with tempfile.TemporaryDirectory(prefix="hrm-artifact-") as tmp:
        with open(client.download_artifacts(run_id, path, tmp), encoding="utf-8") as f:
            return f.read()
