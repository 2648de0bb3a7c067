"""Run contexts and ``python -m sweeps reproduce``: a real local Ray sweep, a real SQLite
MLflow store, the tiny model on 4x4 Sudoku, reruns compared bitwise."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from hrm_core import names
from tests.conftest import PROJECT, child_runs, write_sweep

pytestmark = pytest.mark.slow

CONTEXT_KEYS = {"version", "created", "config", "seeds", "git", "dataset", "hardware", "software", "host"}
HARDWARE_KEYS = {
    "device", "torch_threads", "forward_dtype", "low_precision_gemm", "dtype_path", "compile", "world_size",
    "torch", "cuda", "cpu_capability", "cpu_model", "cpu_flags", "gpu",
}


@pytest.fixture(scope="module")
def sweep_trial(tmp_path_factory):
    """One finished smoke-sweep trial (local Ray, SQLite store), shared by the module."""
    import ray

    from sweeps.runner import run_sweep

    tmp = tmp_path_factory.mktemp("reproduce")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            path = write_sweep(tmp, """\
name: repro
kind: ablation
base: [data=sudoku4, max_steps=16, eval_every_steps=8]
control: plain
arms:
  plain: [arch=hrm_v1]
seeds: [0]
scale: smoke
""")
            parent_id = run_sweep(path, log=lambda *_: None)
        finally:
            ray.shutdown()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (kid,) = child_runs(client, parent_id)
    assert kid.data.tags[names.TAG_OUTCOME] == names.OUTCOME_COMPLETED
    return {"uri": uri, "client": client, "run_id": kid.info.run_id, "tmp": tmp}


def run_reproduce(capsys, *args: str) -> tuple[int, str]:
    from sweeps.__main__ import main

    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    if os.environ.get("HRM_SHOW_REPRODUCE"):
        sys.__stderr__.write(captured.out + captured.err)
    return code, captured.out + captured.err


def load_context(client, run_id: str, tmp) -> dict:
    local = client.download_artifacts(run_id, names.RUN_CONTEXT_ARTIFACT, str(tmp))
    with open(local) as f:
        return json.load(f)


def histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in client.get_run(run_id).data.metrics
            if not names.is_timing(k) and k != names.RESUMED_FROM_STEP]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_trial_records_its_context(sweep_trial, tmp_path):
    client, run_id = sweep_trial["client"], sweep_trial["run_id"]
    run = client.get_run(run_id)
    assert run.data.tags[names.TAG_GIT_COMMIT] and run.data.tags[names.TAG_GIT_DIRTY] in ("true", "false")
    ctx = load_context(client, run_id, tmp_path)
    assert CONTEXT_KEYS <= set(ctx)
    assert HARDWARE_KEYS <= set(ctx["hardware"])
    cfg = ctx["config"]
    # the config as the trial ran it: concrete, with the trial's threads and checkpointing
    assert cfg["device"] == "cpu" and cfg["threads"] == 1 and cfg["checkpoint_every_eval"] is True
    assert cfg["arch"]["forward_dtype"] == "float32" and cfg["low_precision_gemm"] in ("fp32", "native")
    assert os.path.isabs(cfg["data_path"]) and cfg["data"]["build"]["builder"] == "sudoku"
    assert ctx["hardware"]["torch_threads"] == 1 and ctx["hardware"]["world_size"] == 1
    assert ctx["seeds"]["seed"] == 0 and set(ctx["seeds"]["streams"]) == {"init", "data", "explore"}
    assert ctx["dataset"]["fingerprint"] == run.data.tags[names.TAG_DATASET_FINGERPRINT]
    assert ctx["dataset"]["recipe"]["args"]["size"] == 4
    assert ctx["git"]["commit"] == run.data.tags[names.TAG_GIT_COMMIT]
    assert any(line.startswith("torch==") for line in ctx["software"]["pip_freeze"])
    if ctx["git"]["dirty"]:
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert names.GIT_DIFF_ARTIFACT in artifacts


def test_trial_reproduces_bitwise(sweep_trial, tmp_path, capsys):
    client, run_id = sweep_trial["client"], sweep_trial["run_id"]
    code, out = run_reproduce(capsys, run_id, "--tracking-uri", sweep_trial["uri"],
                              "--out", str(tmp_path / "rep"), "--strict")
    assert code == 0, out
    assert "verdict: bitwise identical" in out, out
    for key in ("git commit", "dataset fingerprint", "torch threads", "CPU capability", "config "):
        assert f"  - {key}" not in out, out  # a dirty tree edited meanwhile is the only allowed difference

    (rerun,) = client.search_runs([client.get_run(run_id).info.experiment_id],
                                  f"tags.`{names.TAG_REPRODUCES}` = '{run_id}'")
    tags = rerun.data.tags
    assert tags[names.TAG_RUN_KIND] == names.RUN_KIND_REPRODUCE
    assert tags[names.TAG_REPRODUCE_MATCH] == "bitwise"
    assert tags[names.TAG_ARM] == "plain" and tags[names.TAG_SEED] == "0"
    original, again = histories(client, run_id), histories(client, rerun.info.run_id)
    assert names.TRAIN_LM_LOSS in original and names.EVAL_EXACT_ACCURACY in original
    for key, points in original.items():
        assert [s for s, _ in points] == [s for s, _ in again[key]], key
        assert all(same(a, b) for (_, a), (_, b) in zip(points, again[key], strict=True)), key
    assert [s for s, _ in original[names.TRAIN_LM_LOSS]] == list(range(1, 17))
    # the rerun records its own context
    assert names.RUN_CONTEXT_ARTIFACT in {a.path for a in client.list_artifacts(rerun.info.run_id)}


def test_changed_seed_differs(sweep_trial, tmp_path, capsys):
    run_id = sweep_trial["run_id"]
    code, out = run_reproduce(capsys, run_id, "--tracking-uri", sweep_trial["uri"],
                              "--out", str(tmp_path / "rep"), "--set", "seed=1", "--strict")
    assert code == 1, out
    assert "  - config seed: recorded 0, now 1 -> set with --set" in out, out
    assert out.index("config seed") < out.index("rerunning on") < out.index("verdict: differs")
    client = sweep_trial["client"]
    reruns = client.search_runs([client.get_run(run_id).info.experiment_id],
                                f"tags.`{names.TAG_REPRODUCES}` = '{run_id}'")
    seed1 = next(r for r in reruns if r.data.tags[names.TAG_SEED] == "1")
    assert seed1.data.tags[names.TAG_REPRODUCE_MATCH] == "differs"


def test_changed_commit_and_dataset_reported_before_the_rerun(sweep_trial, tmp_path, capsys):
    """A copy of the trial whose context records another commit and another dataset at its path."""
    from mlflow.entities import Metric

    from hrm_core.data.build_sudoku import build_sudoku_dataset

    client, run_id = sweep_trial["client"], sweep_trial["run_id"]
    ctx = load_context(client, run_id, tmp_path)
    other = str(tmp_path / "sudoku4_other")
    build_sudoku_dataset(other, size=4, blanks=8, subsample_size=200, num_aug=0, test_size=64, seed=1)
    # the recorded fingerprint stays the original's
    ctx["config"]["data_path"] = ctx["dataset"]["path"] = other
    ctx["git"]["commit"] = "0" * 40
    original = client.get_run(run_id)
    copy = client.create_run(original.info.experiment_id, run_name="copy",
                             tags={names.TAG_RUN_KIND: names.RUN_KIND_TRIAL})
    client.log_text(copy.info.run_id, json.dumps(ctx), names.RUN_CONTEXT_ARTIFACT)
    lm = client.get_metric_history(run_id, names.TRAIN_LM_LOSS)
    client.log_batch(copy.info.run_id, metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in lm])
    client.set_terminated(copy.info.run_id)

    code, out = run_reproduce(capsys, copy.info.run_id, "--tracking-uri", sweep_trial["uri"],
                              "--out", str(tmp_path / "rep"))
    assert code == 0, out
    commit = out.index(f"  - git commit: recorded {'0' * 40}")
    dataset = out.index(f"  - dataset fingerprint ({other}): recorded {ctx['dataset']['fingerprint']}")
    start = out.index("rerunning on")
    assert max(commit, dataset) < start < out.index("device=cpu") < out.index("verdict: differs"), out
    assert "the code changed since the original" in out and "the data differ" in out


def test_unknown_run_and_run_without_context(sweep_trial, capsys):
    client = sweep_trial["client"]
    code, out = run_reproduce(capsys, "0123456789abcdef", "--tracking-uri", sweep_trial["uri"])
    assert code == 2 and "error: unknown run id '0123456789abcdef'" in out
    bare = client.create_run(client.get_run(sweep_trial["run_id"]).info.experiment_id, run_name="bare")
    code, out = run_reproduce(capsys, bare.info.run_id, "--tracking-uri", sweep_trial["uri"])
    assert code == 2 and f"error: run {bare.info.run_id} has no {names.RUN_CONTEXT_ARTIFACT}" in out
    assert len([line for line in out.splitlines() if line.startswith("error:")]) == 1


def test_standalone_run_records_context_and_a_missing_dataset_is_rebuilt(store, tmp_path, capsys):
    """``hrm_core.pretrain tracking.mlflow=true`` on a built-in dataset at a tmp path; the
    dataset is then deleted and reproduce rebuilds it from the recorded recipe."""
    from hrm_core.config.compose import compose_config
    from hrm_core.data.resolve import resolve_data_path

    # the shared project copy
    source = resolve_data_path(compose_config(["data=sudoku4"]), log=lambda *_: None)
    data = tmp_path / "orig" / "sudoku4"
    shutil.copytree(source, data)
    args = [
        "arch=hrm_tiny", "data=sudoku4", f"data_path={data}", "global_batch_size=16", "epochs=1",
        "eval_interval=null",
        "max_steps=6", "eval_every_steps=3", "progress=false", "threads=1", "tracking.mlflow=true",
        "project_name=ci", "run_name=tiny", f"checkpoint_path={tmp_path / 'run'}",
    ]
    proc = subprocess.run([sys.executable, "-m", "hrm_core.pretrain", *args], cwd=PROJECT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = store.search_runs([store.get_experiment_by_name("hrm/ci").experiment_id])
    ctx = load_context(store, run.info.run_id, tmp_path)
    assert CONTEXT_KEYS <= set(ctx) and HARDWARE_KEYS <= set(ctx["hardware"])
    assert ctx["config"]["data_path"] == str(data) and ctx["config"]["threads"] == 1
    assert ctx["dataset"]["fingerprint"] == run.data.tags[names.TAG_DATASET_FINGERPRINT]
    assert ctx["dataset"]["build_info"]["builder"] == "hrm_core.data.build_sudoku"

    shutil.rmtree(data)
    rebuilt = tmp_path / "rebuilt"
    code, out = run_reproduce(capsys, run.info.run_id, "--out", str(tmp_path / "rep"),
                              "--data-dir", str(rebuilt), "--strict")
    assert code == 0, out
    assert f"rebuilt into {rebuilt / 'sudoku4'}" in out and "dataset fingerprint" not in out, out
    assert (rebuilt / "sudoku4" / "train").is_dir()
    assert "verdict: bitwise identical" in out
    rerun = store.search_runs([run.info.experiment_id],
                              f"tags.`{names.TAG_REPRODUCES}` = '{run.info.run_id}'")[0]
    assert rerun.data.tags[names.TAG_REPRODUCE_MATCH] == "bitwise"
    assert rerun.data.tags[names.TAG_DATASET_FINGERPRINT] == ctx["dataset"]["fingerprint"]


def test_a_pruned_invocation_lists_refuses_and_reproduces(sweep_trial, monkeypatch, capsys):
    """The trial keeps its last checkpoint (plus the best), none of the trainer's own copies;
    ``list`` shows the disk; ``prune`` refuses a running invocation, frees a finished one and tags
    it; ``reproduce`` says so and still matches (tests/test_prune.py has the unit half)."""
    from sweeps.__main__ import main
    from sweeps.prune import invocation_folders
    from sweeps.storage import CHECKPOINT_DIR, usage
    from trainables.tune_sink import SCORE

    client, run_id = sweep_trial["client"], sweep_trial["run_id"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep_trial["uri"])
    parent_id = client.get_run(run_id).data.tags[names.TAG_INVOCATION]
    (folder,) = invocation_folders(client.get_run(parent_id))
    (trial,) = [d for d in os.listdir(folder.path) if os.path.isdir(os.path.join(folder.path, d))]
    trial_dir = os.path.join(folder.path, trial)
    results = [json.loads(line) for line in open(os.path.join(trial_dir, "result.json"))]
    scored = [(r[SCORE], r["checkpoint_dir_name"]) for r in results if r.get("checkpoint_dir_name")]
    assert len(scored) == 2  # evals at steps 8 and 16
    top = max(s for s, _ in scored if not math.isnan(s))  # NaN: the objective was not logged yet
    best = [name for s, name in scored if s == top][-1]  # ties: the later
    kept = sorted(d for d in os.listdir(trial_dir) if CHECKPOINT_DIR.match(d))
    assert kept == sorted({best, scored[-1][1]})
    assert not os.path.exists(os.path.join(trial_dir, "hrm")), "the trainer's own copies reached storage"

    assert main(["list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if parent_id in x)
    assert usage(folder).checkpoints > 0 and " disk " in line and "(checkpoints 0 B)" not in line

    client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "running")
    try:
        assert main(["prune", "repro"]) == 2
    finally:
        client.set_tag(parent_id, names.TAG_SWEEP_STATUS, "finished")
    assert capsys.readouterr().err == (f"error: invocation {parent_id} of sweep 'repro' is running: prune "
                                       "takes only a finished invocation (its trials resume from these "
                                       "checkpoints)\n")
    assert sorted(d for d in os.listdir(trial_dir) if CHECKPOINT_DIR.match(d)) == kept

    assert main(["prune", "repro", "--keep", "none"]) == 0
    assert f"{len(kept)} checkpoint(s) removed" in capsys.readouterr().out
    assert not [d for d in os.listdir(trial_dir) if CHECKPOINT_DIR.match(d)]
    assert usage(folder).checkpoints == 0 and os.path.exists(os.path.join(trial_dir, "result.json"))
    assert client.get_run(parent_id).data.tags[names.TAG_PRUNED].startswith("keep=none; freed ")
    assert main(["list"]) == 0
    assert "(checkpoints 0 B)  pruned" in capsys.readouterr().out

    code, out = run_reproduce(capsys, run_id, "--out", str(sweep_trial["tmp"] / "after-prune"), "--strict")
    assert code == 0, out
    assert f"note: the checkpoints of invocation {parent_id} were pruned (keep=none; freed" in out
    assert "it reruns from the recorded config and data recipe" in out
