"""The MLflow sink, against a real SQLite-backed MLflow store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hrm_core import names
from tests.conftest import PROJECT

pytestmark = pytest.mark.slow


def test_cli_logs_run_to_mlflow(sudoku4_dataset, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    args = [
        "arch=hrm_tiny", f"data_path={sudoku4_dataset}", "global_batch_size=16", "epochs=1", "eval_interval=null",
        "max_steps=6", "eval_every_steps=3", "progress=false", "threads=1", "tracking.mlflow=true",
        "project_name=ci", "run_name=tiny", f"checkpoint_path={run_dir}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "hrm_core.pretrain", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hrm/ci")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    assert run.data.params["arch.hidden_size"] == "64"
    assert run.data.params["global_batch_size"] == "16"
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    assert len(run.data.tags[names.TAG_DATASET_FINGERPRINT]) == 16
    assert run.data.tags[names.TAG_CONFIG_HASH]
    history = client.get_metric_history(run.info.run_id, "train/lm_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    evals = client.get_metric_history(run.info.run_id, "eval/exact_accuracy")
    assert sorted(m.step for m in evals) == [3, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "config.yaml" in artifacts

    # resuming continues the same MLflow run: no second run, no (step, key) twice
    proc = subprocess.run(
        [sys.executable, "-m", "hrm_core.pretrain", *args, "max_steps=9", f"resume_from={run_dir}/step_6.pt"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/lm_loss")]
    assert sorted(steps) == list(range(1, 10))
    assert [m.value for m in client.get_metric_history(run.info.run_id, names.RESUMED_FROM_STEP)] == [6.0]
