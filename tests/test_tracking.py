"""The MLflow layer: the CLI's sink against a real SQLite-backed MLflow store, the one
RunWriter every run is written through, and the tracking URIs."""

from __future__ import annotations

import math
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
        "arch=hrm_tiny", f"data_path={sudoku4_dataset}", "global_batch_size=16", "epochs=1",
        "eval_interval=null", "max_steps=6", "eval_every_steps=3", "progress=false", "threads=1",
        "tracking.mlflow=true", "project_name=ci", "run_name=tiny", f"checkpoint_path={run_dir}",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "hrm_core.pretrain", *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)
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
    # readable in the UI: a training-runs experiment; MLflow's source tags; the dataset as an
    # input; perf/* and system/* (a first sample at the first step)
    assert exp.tags[names.TAG_MLFLOW_EXPERIMENT_KIND] == names.EXPERIMENT_KIND
    assert run.data.tags[names.TAG_MLFLOW_SOURCE_NAME] == "python -m hrm_core.pretrain"
    assert run.data.tags[names.TAG_MLFLOW_SOURCE_TYPE] == "LOCAL" and run.data.tags[names.TAG_MLFLOW_USER]
    assert run.data.tags.get(names.TAG_MLFLOW_GIT_COMMIT, "unknown") == run.data.tags[names.TAG_GIT_COMMIT]
    (entry,) = run.inputs.dataset_inputs
    assert entry.dataset.digest == run.data.tags[names.TAG_DATASET_FINGERPRINT]
    assert '"train_examples": 400' in entry.dataset.profile
    assert run.data.metrics[names.PERF_SAMPLES_PER_S] > 0 and run.data.metrics[names.SYSTEM_PROCESS_RSS] > 10
    assert [m.step for m in client.get_metric_history(run.info.run_id, names.SYSTEM_PROCESS_RSS)][0] == 1

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


class Recorder:
    """A client that records the batches it is given (and answers get_run with its tags)."""

    tracking_uri = "sqlite:///recorder.db"

    def __init__(self, tags=None):
        self.batches, self.calls, self.tags = [], [], dict(tags or {})

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self.batches.append((list(metrics), list(params), list(tags)))
        self.tags.update({t.key: t.value for t in tags})

    def set_tag(self, run_id, key, value):
        self.calls.append(("set_tag", key, value))
        self.tags[key] = value

    def set_terminated(self, run_id, status=None):
        self.calls.append(("set_terminated", status))

    def get_run(self, run_id):
        from types import SimpleNamespace

        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags)))


def test_run_writer_batches_within_mlflow_limits_and_cleans_values():
    from hrm_core.tracking.writer import RunWriter

    client = Recorder()
    writer = RunWriter(client, "r")
    writer.log_params({f"p{i:03d}": "x" * 7000 if i == 0 else i for i in range(250)}, {"t": 1})
    assert [(len(p), len(t)) for _, p, t in client.batches] == [(100, 1), (100, 0), (50, 0)]
    params = [p for _, batch, _ in client.batches for p in batch]
    assert [p.key for p in params] == sorted(p.key for p in params) and len(params[0].value) == 6000
    client.batches.clear()
    for step in range(1, 2501):
        writer.add_metrics(step, {"m": float(step)}, timestamp=7)
    writer.add_metrics(2501, {"inf": float("inf"), "nan": float("nan"), "int": 3})
    assert writer.buffered == 2503 and client.batches == []
    writer.flush()
    assert [len(m) for m, _, _ in client.batches] == [1000, 1000, 503] and writer.buffered == 0
    metrics = [m for batch, _, _ in client.batches for m in batch]
    assert [m.step for m in metrics[:2500]] == list(range(1, 2501))
    assert {m.timestamp for m in metrics[:2500]} == {7}
    last = {m.key: m.value for m in metrics[2500:]}
    assert math.isnan(last["inf"]) and math.isnan(last["nan"]) and last["int"] == 3.0


def test_run_writer_ends_a_run_with_outcome_alerts_and_error():
    from hrm_core.tracking.writer import RunWriter

    client = Recorder()
    writer = RunWriter(client, "r")
    writer.set_alerts([(5, "nonfinite", "loss is nan"), (3, "grad_explosion", "norm 1e9")])
    assert client.tags[names.TAG_ALERT_PREFIX + "nonfinite"] == "step 5: loss is nan"
    writer.add_metrics(1, {"m": 1.0})
    writer.end(names.OUTCOME_ERROR, alerts_checked=True, error="E" * 6000)
    assert len(client.batches[-1][0]) == 1, "end flushes the metrics first"
    assert client.calls == [
        ("set_tag", names.TAG_OUTCOME, names.OUTCOME_ERROR),
        ("set_tag", names.TAG_ALERTS, "grad_explosion,nonfinite"),  # in names.ALERT_RULES order
        ("set_tag", names.TAG_ERROR, "E" * 5000),
        ("set_terminated", "FAILED"),
    ]
    healthy = Recorder()
    RunWriter(healthy, "r").end(names.OUTCOME_DIVERGED, alerts_checked=True)
    assert healthy.calls == [("set_tag", names.TAG_OUTCOME, names.OUTCOME_DIVERGED),
                             ("set_tag", names.TAG_ALERTS, ""), ("set_terminated", "FINISHED")]
    unchecked = Recorder()
    RunWriter(unchecked, "r").end(names.OUTCOME_COMPLETED, alerts_checked=False)
    assert [c[1] for c in unchecked.calls] == [names.TAG_OUTCOME, "FINISHED"]


def test_run_writer_on_a_real_store(tmp_path):
    """What RunWriter writes is what MLflow reads back: params, tags, NaN metrics, status."""
    from hrm_core.tracking.client import ensure_experiment, get_client
    from hrm_core.tracking.writer import RunWriter

    client = get_client(f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    exp = client.get_experiment(ensure_experiment(client, "hrm/writer"))
    assert exp.name == "hrm/writer" and ensure_experiment(client, "hrm/writer") == exp.experiment_id
    run_id = client.create_run(exp.experiment_id).info.run_id
    writer = RunWriter(client, run_id)
    writer.log_params({f"k{i}": i for i in range(150)}, {names.TAG_SEED: 3})
    for step in (1, 2):
        writer.add_metrics(step, {"a": step / 2, "b": float("inf") if step == 2 else 1.0})
    writer.end(names.OUTCOME_COMPLETED, alerts_checked=True)
    run = client.get_run(run_id)
    assert len(run.data.params) == 150 and run.data.params["k149"] == "149"
    assert run.data.tags[names.TAG_SEED] == "3" and run.data.tags[names.TAG_ALERTS] == ""
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "a")] == [(1, 0.5), (2, 1.0)]
    assert math.isnan(client.get_metric_history(run_id, "b")[-1].value)


def test_tracking_uris(monkeypatch):
    from hrm_core.paths import project_root
    from hrm_core.tracking import uris

    monkeypatch.delenv(uris.ENV_TRACKING_URI, raising=False)
    assert uris.tracking_uri() == f"sqlite:///{project_root()}/mlruns/mlflow.db"
    assert uris.sqlite_path(uris.tracking_uri()) == os.path.join(project_root(), "mlruns", "mlflow.db")
    monkeypatch.setenv(uris.ENV_TRACKING_URI, "http://u:secret@host:5000")
    assert uris.tracking_uri() == "http://u:secret@host:5000" and uris.is_http(uris.tracking_uri())
    assert uris.redact(uris.tracking_uri()) == "http://u:***@host:5000"
    assert uris.sqlite_path("http://x") is None
    assert not uris.is_http("postgresql://u@db/mlflow") and uris.redact("sqlite:///a.db") == "sqlite:///a.db"
