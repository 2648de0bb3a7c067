"""Shared fixtures. Tests run on the CPU with small models and few steps."""

from __future__ import annotations

import os
import sys

import pytest
import torch

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The reference outputs the fidelity test checks; HRM_REFERENCE_FIXTURE names another file.
FIXTURE = os.environ.get(
    "HRM_REFERENCE_FIXTURE", os.path.join(PROJECT, "tests", "fixtures", "hrm_reference_tiny.pt")
)

# Two cores: keep torch from oversubscribing them when pytest runs subprocesses too.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sudoku4_dataset(tmp_path_factory) -> str:
    """A small 4x4 Sudoku dataset, built once per session by the real builder."""
    from hrm_core.data.build_sudoku import build_sudoku_dataset

    path = str(tmp_path_factory.mktemp("data") / "sudoku4")
    build_sudoku_dataset(path, size=4, blanks=8, subsample_size=200, num_aug=1, test_size=40, seed=0)
    return path


@pytest.fixture(scope="module")
def ray_local():
    """One real local Ray (2 CPUs) for the whole test module that asks for it: starting Ray
    takes seconds, so a module's end-to-end tests share it."""
    import ray

    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A real MLflow SQLite store in tmp_path, and MLFLOW_TRACKING_URI pointing at it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


# --- helpers shared by the sweep end-to-end tests ---------------------------------------------
def write_sweep(tmp_path, text: str, name: str = "sweep.yaml") -> str:
    """A sweep file in tmp_path whose Tune results stay in tmp_path too."""
    path = tmp_path / name
    path.write_text(text + f"storage_path: {tmp_path / 'ray'}\n")
    return str(path)


def child_runs(client, parent_id):
    from hrm_core import names

    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{names.TAG_INVOCATION}` = '{parent_id}'"
    )


def no_duplicate_points(client, run_id, key="train/lm_loss"):
    """Sorted steps of a metric, asserting no (step, key) was logged twice."""
    steps = [m.step for m in client.get_metric_history(run_id, key)]
    assert len(steps) == len(set(steps)), f"a (step, {key}) logged twice"
    return sorted(steps)


def registered_checkpoint(client, sweep: str, arm: str):
    """The path of an arm's checkpoint once Tune has registered it (the driver tags the run
    then). A checkpoint folder on disk may still be unregistered: a worker lost at that
    moment restarts from the previous checkpoint, so kill tests wait for this."""
    from hrm_core import names

    exp = client.get_experiment_by_name(names.experiment_name(sweep))
    runs = client.search_runs([exp.experiment_id], f"tags.`{names.TAG_ARM}` = '{arm}'") if exp else []
    return next(
        (r.data.tags[names.TAG_CHECKPOINT] for r in runs if names.TAG_CHECKPOINT in r.data.tags), None
    )
