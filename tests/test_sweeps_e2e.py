"""End-to-end sweeps: a real local Ray (shared by the module), a real MLflow SQLite store,
real Optuna, the tiny model on 4x4 Sudoku."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from hrm_core import names
from tests.conftest import child_runs as children
from tests.conftest import no_duplicate_points, registered_checkpoint
from tests.conftest import write_sweep as write
from trainables import faults

pytestmark = pytest.mark.slow

SMOKE = "scale: smoke\n"


def test_ablation_arms_by_seeds_with_named_control(ray_local, store, tmp_path):
    from sweeps.runner import run_sweep

    path = write(tmp_path, """\
# Does a gate help the tiny model?
#   python -m sweeps run e2e_ablation
name: e2e_ablation
kind: ablation
base: [data=sudoku4, max_steps=16]
control: plain
arms:
  plain: [arch=hrm_v1]
  gated: [arch=hrm_v1_gated]
seeds: [0, 1]
max_concurrent: 2
""" + SMOKE)
    parent_id = run_sweep(path, log=lambda *_: None)
    parent = store.get_run(parent_id)
    assert parent.data.tags[names.TAG_CONTROL] == "plain"
    assert parent.data.tags[names.TAG_SWEEP_STATUS] == "finished"
    kids = children(store, parent_id)
    assert len(kids) == 4
    pairs = sorted((k.data.tags[names.TAG_ARM], k.data.tags[names.TAG_SEED]) for k in kids)
    assert pairs == [("gated", "0"), ("gated", "1"), ("plain", "0"), ("plain", "1")]
    for k in kids:
        assert k.info.status == "FINISHED" and k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
        assert k.data.tags[names.TAG_MLFLOW_PARENT] == parent_id
        # named for a person, <arm>/seed<k>; the Tune trial id stays a tag
        assert k.info.run_name == f"{k.data.tags[names.TAG_ARM]}/seed{k.data.tags[names.TAG_SEED]}"
        assert k.data.tags[names.TAG_TRIAL_ID] and k.data.tags[names.TAG_TRIAL_ID] not in k.info.run_name
        assert no_duplicate_points(store, k.info.run_id) == list(range(1, 17))
        assert k.data.params["arch.use_gating"] == str(k.data.tags[names.TAG_ARM] == "gated")
        assert "eval/exact_accuracy" in k.data.metrics
    # the gated arm logs its gate statistics
    gated = next(k for k in kids if k.data.tags[names.TAG_ARM] == "gated")
    assert "gate/L/x_mean" in gated.data.metrics
    # compute accounting: the summary's per-step FLOPs x 16 steps per trial, summed on the parent run
    per_step = {k.data.tags[names.TAG_ARM]: k.data.metrics[names.COMPUTE_FLOPS_PER_STEP] for k in kids}
    assert per_step["gated"] > per_step["plain"] > 0  # the gates' MLPs cost FLOPs
    for k in kids:
        assert k.data.metrics[names.COMPUTE_TRAIN_FLOPS] == 16 * per_step[k.data.tags[names.TAG_ARM]]
        assert k.data.metrics[names.COMPUTE_PLANNED_STEPS] == 16
        assert k.data.metrics[names.COMPUTE_DEVICE_SECONDS] > 0
    parent = store.get_run(parent_id)
    trained = sum(k.data.metrics[names.COMPUTE_TRAIN_FLOPS] for k in kids)
    assert parent.data.metrics[names.COMPUTE_SWEEP_FLOPS] == trained
    assert parent.data.metrics[names.COMPUTE_SAVED_FLOPS] == 0
    from tests.test_readable_runs import assert_readable_sweep

    assert_readable_sweep(store, parent, kids, header="Does a gate help the tiny model?")

    # the report renders end to end on this real sweep, from MLflow alone
    from analysis.report import build_report

    paths = build_report(parent_run=parent_id, tracking_uri=store.tracking_uri, out=tmp_path / "report")
    html = (tmp_path / "report" / "report.html").read_text()
    assert (tmp_path / "report" / "report.ipynb").exists() and "<img" in html, paths
    assert "gated" in html and "plain" in html
    # compute and health sections, and each run's reproduce command
    import nbformat

    nb = nbformat.read(str(tmp_path / "report" / "report.ipynb"), as_version=4)
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Compute" in headings and "## Health" in headings
    assert "Compute to reach eval/exact_accuracy" in html
    assert "training FLOPs" in html and "parent run totals" in html
    assert all(f"python -m sweeps reproduce {k.info.run_id}" in html for k in kids)
    # the alert rules check every trial (hrm.alerts set at its end; needs hrm_core/observe/alerts.py)
    assert all(names.TAG_ALERTS in k.data.tags for k in kids), "trials carry no hrm.alerts tag"
    assert "Not checked: no run carries" not in html
    artifacts = {a.path for a in store.list_artifacts(parent_id, "report")}
    assert {"report/report.ipynb", "report/report.html"} <= artifacts
    # the verdict on the parent run's page: the report's conclusion and where the report is
    note = store.get_run(parent_id).data.tags[names.TAG_MLFLOW_NOTE]
    assert note.startswith(paths.conclusion.strip()[:200]) and "`report/report.html`" in note


def test_search_with_asha_prunes_trials_that_cannot_learn(ray_local, store, tmp_path):
    import optuna

    from sweeps.runner import run_sweep

    path = write(tmp_path, """\
name: e2e_search
kind: search
base: [data=sudoku4, max_steps=24, eval_every_steps=6, lr_warmup_steps=2]
objective: {metric: val/accuracy, mode: max}
space:
  lr: {type: choice, values: [0.0, 0.01]}
num_samples: 6
max_concurrent: 1
scheduler: {type: asha, grace_period: 6, reduction_factor: 2, max_t: 24}
sampler: {type: random, seed: 0}  # draws lr 0.01, 0, 0.01, 0.01, 0, 0
""" + SMOKE)
    parent_id = run_sweep(path, log=lambda *_: None)
    parent = store.get_run(parent_id)
    kids = children(store, parent_id)
    assert len(kids) == 6
    outcomes = {k.data.tags[names.TAG_TRIAL_ID]: k.data.tags[names.TAG_OUTCOME] for k in kids}
    stopped = [k for k in kids if k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_EARLY_STOPPED]
    assert len(stopped) == 3, outcomes
    assert all(o in (names.OUTCOME_COMPLETED, names.OUTCOME_EARLY_STOPPED) for o in outcomes.values())
    # runs named by their sampled params; two trials that drew the same point get "#2", "#3"
    run_names = [k.info.run_name for k in kids]
    assert len(set(run_names)) == 6, run_names
    for k in kids:
        assert k.info.run_name.split(" #")[0] == f"lr={float(k.data.params['lr']):.3g}", run_names
    for k in stopped:
        assert float(k.data.params["lr"]) == 0.0, "only the arm that cannot learn is stopped"
        assert max(no_duplicate_points(store, k.info.run_id)) < 24
    # the FLOPs early stopping saved: the steps the stopped trials did not take x FLOPs per step
    saved = sum((24 - max(no_duplicate_points(store, k.info.run_id)))
                * k.data.metrics[names.COMPUTE_FLOPS_PER_STEP] for k in stopped)
    assert saved > 0 and parent.data.metrics[names.COMPUTE_SAVED_FLOPS] == saved
    trained = sum(k.data.metrics[names.COMPUTE_TRAIN_FLOPS] for k in kids)
    assert parent.data.metrics[names.COMPUTE_SWEEP_FLOPS] == trained
    study = optuna.load_study(study_name=parent.data.tags[names.TAG_OPTUNA_STUDY],
                              storage=parent.data.tags[names.TAG_OPTUNA_STORAGE])
    states = sorted(t.state.name for t in study.trials)
    assert states.count("PRUNED") == len(stopped)
    assert states.count("COMPLETE") == 6 - len(stopped)
    for t in study.trials:
        assert set(t.intermediate_values) <= {6, 12, 18, 24}, "intermediate values at the global step"
        assert t.intermediate_values


def test_four_concurrent_trials_share_the_sqlite_store(ray_local, store, tmp_path, caplog):
    from sweeps.runner import run_sweep

    path = write(tmp_path, """\
name: e2e_concurrency
kind: ablation
base: [data=sudoku4, max_steps=16, eval_every_steps=4]
control: a
arms:
  a: [lr=0.001]
  b: [lr=0.002]
seeds: [0, 1]
max_concurrent: 4
resources: {cpu: 0.5}
""" + SMOKE)
    parent_id = run_sweep(path, log=lambda *_: None)
    kids = children(store, parent_id)
    assert len(kids) == 4 and all(k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED for k in kids)
    assert "database is locked" not in caplog.text
    for k in kids:
        no_duplicate_points(store, k.info.run_id)


def test_diverged_trial_ends_diverged_and_the_sweep_goes_on(ray_local, store, tmp_path, monkeypatch):
    from sweeps.runner import run_sweep

    monkeypatch.setenv(faults.ENV, json.dumps({"inject_nan_arm": "nan", "inject_nan_at": 9}))
    path = write(tmp_path, """\
name: e2e_nan
kind: ablation
base: [data=sudoku4, max_steps=16]
control: ok
arms:
  ok: [lr=0.001]
  nan: [lr=0.001, puzzle_emb_lr=0]
seeds: [0]
""" + SMOKE)
    parent_id = run_sweep(path, log=lambda *_: None)
    kids = {k.data.tags[names.TAG_ARM]: k for k in children(store, parent_id)}
    assert kids["nan"].data.tags[names.TAG_OUTCOME] == names.OUTCOME_DIVERGED
    assert kids["nan"].info.status == "FINISHED"
    assert kids["ok"].data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    assert max(no_duplicate_points(store, kids["ok"].info.run_id)) == 16
    # alerts reach the trial's run: puzzle_emb_frozen with the checkpoint report of step 8,
    # nonfinite with the diverged trial's last report; hrm.alerts lists them at the end
    nan_tags = kids["nan"].data.tags
    assert nan_tags[names.TAG_ALERT_PREFIX + "puzzle_emb_frozen"].startswith("step 8: ")
    assert nan_tags[names.TAG_ALERT_PREFIX + "nonfinite"].startswith("step 10: train/lm_loss = nan")
    assert nan_tags[names.TAG_ALERTS] == "nonfinite,puzzle_emb_frozen"
    assert "puzzle_emb_frozen" not in kids["ok"].data.tags[names.TAG_ALERTS]  # checked: the tag is there


def test_killed_trial_resumes_from_its_checkpoint(ray_local, store, tmp_path, monkeypatch):
    """SIGKILL a trial's worker mid-run: it resumes at its checkpoint, keeps its one MLflow
    run, and ends with the same metrics as an identical trial that was not killed."""
    from sweeps.runner import run_sweep

    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    monkeypatch.setenv(faults.ENV, json.dumps({"pid_dir": str(pid_dir)}))
    path = write(tmp_path, """\
name: e2e_kill
kind: ablation
base: [data=sudoku4, max_steps=40, eval_every_steps=8]
control: twin
arms:
  twin: [lr=0.002]
  victim: [lr=0.002]
seeds: [0]
max_concurrent: 2
max_failures: 2
""" + SMOKE)
    killed = {}

    def killer():
        deadline = time.time() + 240
        pid_file = pid_dir / "victim-0.pid"
        while time.time() < deadline:
            if pid_file.exists() and registered_checkpoint(store, "e2e_kill", "victim"):
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    parent_id = run_sweep(path, log=lambda *_: None)
    thread.join()
    assert killed, "the victim was never killed"
    kids = {k.data.tags[names.TAG_ARM]: k for k in children(store, parent_id)}
    assert len(kids) == 2
    victim, twin = kids["victim"], kids["twin"]
    assert victim.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    resumed = store.get_metric_history(victim.info.run_id, names.RESUMED_FROM_STEP)
    assert resumed and resumed[0].value > 0
    assert no_duplicate_points(store, victim.info.run_id) == list(range(1, 41))
    for key in ("train/lm_loss", "val/accuracy", "val/lm_loss", "eval/accuracy", "eval/lm_loss"):
        a = [(m.step, m.value)
             for m in sorted(store.get_metric_history(victim.info.run_id, key), key=lambda m: m.step)]
        b = [(m.step, m.value)
             for m in sorted(store.get_metric_history(twin.info.run_id, key), key=lambda m: m.step)]
        assert a == b, key


def test_driver_killed_then_resumed_finishes_the_sweep(store, tmp_path):
    """SIGKILL the driver (and its private Ray) mid-sweep; `sweeps resume` completes the
    planned trials without rerunning finished ones, duplicating points or leaving runs open."""
    import subprocess
    import sys

    from tests.conftest import PROJECT

    path = write(tmp_path, """\
name: e2e_driver_kill
kind: ablation
base: [data=sudoku4, max_steps=24, eval_every_steps=8]
control: a
arms:
  a: [lr=0.001]
  b: [lr=0.002]
  c: [lr=0.003]
seeds: [0]
max_concurrent: 1
""" + SMOKE)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    driver = subprocess.Popen([sys.executable, "-m", "sweeps", "run", path, "--no-report"], cwd=PROJECT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    exp_name = names.experiment_name("e2e_driver_kill")
    deadline = time.time() + 300
    finished_before: dict[str, tuple] = {}
    try:
        while time.time() < deadline:
            time.sleep(1)
            exp = store.get_experiment_by_name(exp_name)
            if exp is None:
                continue
            kids = store.search_runs([exp.experiment_id],
                                     filter_string=f"tags.`{names.TAG_RUN_KIND}` = 'trial'")
            done = [k for k in kids if k.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_COMPLETED]
            running = [k for k in kids if k.info.status == "RUNNING"]
            if done and running and store.get_metric_history(running[0].info.run_id, "val/accuracy"):
                finished_before = {
                    k.info.run_id: (k.info.end_time,
                                    len(store.get_metric_history(k.info.run_id, "train/lm_loss")))
                    for k in done
                }
                break
        assert finished_before, "the sweep never reached the kill point"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    proc = subprocess.run([sys.executable, "-m", "sweeps", "resume", path, "--no-report"], cwd=PROJECT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = store.get_experiment_by_name(exp_name)
    (parent,) = store.search_runs([exp.experiment_id], filter_string=f"tags.`{names.TAG_RUN_KIND}` = 'sweep'")
    assert parent.data.tags[names.TAG_SWEEP_STATUS] == "finished" and parent.info.status == "FINISHED"
    kids = children(store, parent.info.run_id)
    assert len(kids) == 3, [k.info.run_name for k in kids]
    pairs = sorted((k.data.tags[names.TAG_ARM], k.data.tags[names.TAG_SEED]) for k in kids)
    assert pairs == [("a", "0"), ("b", "0"), ("c", "0")]
    for k in kids:
        assert k.info.status == "FINISHED", k.info.run_name
        assert k.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED, k.info.run_name
        assert no_duplicate_points(store, k.info.run_id) == list(range(1, 25))
    for run_id, (end_time, points) in finished_before.items():
        run = store.get_run(run_id)
        assert run.info.end_time == end_time, "a finished trial was rerun"
        assert len(store.get_metric_history(run_id, "train/lm_loss")) == points
