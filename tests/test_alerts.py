"""Alert rules: each fires on its pathology and stays silent on a healthy stream; the monitor
keeps its state across a resume; nonfinite and puzzle_emb_frozen reach MLflow from real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hrm_core import names
from hrm_core.config.schema import AlertsConfig
from hrm_core.observe.alerts import AlertMonitor, AlertRules, alerts_tag
from tests.conftest import PROJECT
from tests.test_trainer import crashed_and_resumed, make_trainer, read_metrics, resumed_metrics

H = 4
WARMUP = 10


def healthy_stream(reports: int = 12, every: int = 10) -> list[tuple[int, dict[str, float]]]:
    """Train records every step, a report (eval + diag) every ``every`` steps: learning,
    halting earlier over time, gates in use, the puzzle embedding moving."""
    out = []
    for step in range(1, reports * every + 1):
        t = step / (reports * every)
        out.append((step, {
            "train/lm_loss": 2.0 - t, "train/q_halt_loss": 0.5, "train/q_continue_loss": 0.3,
            "train/lr": 1e-3,
            "train/exact_accuracy": 0.6 + 0.3 * t,
            "gate/L/sat_low": 0.3, "gate/L/sat_high": 0.1, "gate/H/sat_low": 0.2, "gate/H/sat_high": 0.2,
            "feudal/loss": 0.5,
        }))
        if step % every == 0:
            at_max = max(0.2, 1.0 - t)  # ACT learns to halt early
            shares = {names.DIAG_HALT_SHARE.format(split="train", k=k): (1 - at_max) / (H - 1)
                      for k in range(1, H)}
            shares[names.DIAG_HALT_SHARE.format(split="train", k=H)] = at_max
            out.append((step, {
                names.EVAL_EXACT_ACCURACY: min(0.9, t), "eval/lm_loss": 1.0,
                names.DIAG_GRAD_NORM: 2.0 + (step // every) % 3,  # 2, 3, 4, 2, ...
                names.DIAG_PUZZLE_UPDATED_SHARE: 0.3, names.DIAG_Q_HALT_MEAN: -2.0,
                names.DIAG_HALT_AT_MAX.format(split="train"): at_max, **shares,
            }))
    return out


def run(stream, **cfg) -> dict[str, tuple[int, str]]:
    rules = AlertRules(AlertsConfig(**cfg), warmup_steps=WARMUP)
    for step, m in stream:
        rules.observe(step, m)
    return rules.fired


def patched(stream, at: int, **changes):
    """The stream with ``changes`` applied to every report (record carrying eval/diag) from ``at``."""
    out = []
    for step, m in stream:
        m = dict(m)
        if step >= at and any(k.startswith(("eval/", "diag/")) for k in m):
            m.update(changes)
        out.append((step, m))
    return out


def test_a_healthy_stream_fires_nothing():
    assert run(healthy_stream()) == {}


AT_MAX = names.DIAG_HALT_AT_MAX.format(split="train")
PATHOLOGIES = {
    "grad_explosion": (lambda s: patched(s, 70, **{names.DIAG_GRAD_NORM: 50.0}), 70),
    "nonfinite": (lambda s: [(st, {**m, "train/lm_loss": float("nan")} if st == 33 else m)
                             for st, m in s], 33),
    "act_always_max": (lambda s: patched(s, 1, **{AT_MAX: 1.0}), 40),  # reports 20, 30, 40 after warm-up 10
    "puzzle_emb_frozen": (lambda s: patched(s, 50, **{names.DIAG_PUZZLE_UPDATED_SHARE: 0.0}), 50),
    "gates_saturated": (lambda s: [(st, {**m, "gate/L/sat_low": 0.95} if st >= 60 else m)
                                   for st, m in s], 60),
    "eval_collapse": (lambda s: patched(s, 100, **{names.EVAL_EXACT_ACCURACY: 0.3}), 100),  # peak 0.9 -> 0.3
}


@pytest.mark.parametrize("rule", names.ALERT_RULES)
def test_each_rule_fires_on_its_pathology_once(rule):
    make, step = PATHOLOGIES[rule]
    fired = run(make(healthy_stream()))
    assert list(fired) == [rule], fired
    assert fired[rule][0] == step
    assert fired[rule][1]
    assert run(make(healthy_stream()), disable=[rule]) == {}


def test_rule_edges():
    # non-finite grad norm: both grad_explosion and nonfinite
    s = patched(healthy_stream(), 30, **{names.DIAG_GRAD_NORM: float("inf")})
    assert set(run(s)) == {"grad_explosion", "nonfinite"}
    # below the absolute floor a jump is not an explosion
    s = [(st, {**m, names.DIAG_GRAD_NORM: m[names.DIAG_GRAD_NORM] * 1e-3} if names.DIAG_GRAD_NORM in m else m)
         for st, m in patched(healthy_stream(), 70, **{names.DIAG_GRAD_NORM: 50.0})]
    assert run(s) == {}
    # a peak below eval_min_peak cannot collapse; halt_max_steps = 1 never counts as "always max"
    low = [(st, {**m, names.EVAL_EXACT_ACCURACY: 0.1 if st < 100 else 0.0}
            if names.EVAL_EXACT_ACCURACY in m else m)
           for st, m in healthy_stream()]
    assert run(low) == {}
    one = [(st, {k: v for k, v in m.items() if "share_" not in k} | ({AT_MAX: 1.0} if AT_MAX in m else {}))
           for st, m in healthy_stream()]
    assert run(one) == {}
    # gates are saturated at init (sigmoid(-2.2) < 0.1): not before the warm-up ends
    s = [(st, {**m, "gate/L/sat_low": 1.0} if st <= WARMUP else m) for st, m in healthy_stream()]
    assert run(s) == {}
    # a model that solves nothing is right to use every segment
    s = [(st, {**m, "train/exact_accuracy": 0.1} if "train/exact_accuracy" in m else m)
         for st, m in patched(healthy_stream(), 1, **{AT_MAX: 1.0})]
    assert run(s) == {}
    assert list(run(s, act_min_exact_accuracy=0.0)) == ["act_always_max"]
    # act streak is broken by a healthy report
    s = [(st, {**m, AT_MAX: 0.5} if st == 40 and AT_MAX in m else m)
         for st, m in patched(healthy_stream(), 1, **{AT_MAX: 1.0})]
    assert run(s)["act_always_max"][0] == 70
    with pytest.raises(Exception, match="unknown rule"):
        AlertsConfig(disable=["nope"])
    assert alerts_tag(["eval_collapse", "nonfinite"]) == "nonfinite,eval_collapse" and alerts_tag([]) == ""


def test_monitor_state_survives_a_checkpoint():
    stream = patched(patched(healthy_stream(), 1, **{AT_MAX: 1.0}), 20,
                     **{names.DIAG_PUZZLE_UPDATED_SHARE: 0.0})
    emitted = []
    whole = AlertMonitor(AlertsConfig(), WARMUP, emit=lambda *a: emitted.append(a))
    for step, m in stream:
        whole.observe(step, m)
    assert [(s, r) for s, r, _ in emitted] == [(20, "puzzle_emb_frozen"), (40, "act_always_max")]

    split = [(s, m) for s, m in stream if s <= 30], [(s, m) for s, m in stream if s > 30]
    first_emitted, second_emitted = [], []
    first = AlertMonitor(AlertsConfig(), WARMUP, emit=lambda *a: first_emitted.append(a))
    for step, m in split[0]:
        first.observe(step, m)
    state = json.loads(json.dumps(first.state_dict()))  # plain data: it goes into the checkpoint
    second = AlertMonitor(AlertsConfig(), WARMUP, emit=lambda *a: second_emitted.append(a))
    second.load_state_dict(state)
    for step, m in split[1]:
        second.observe(step, m)
    assert first_emitted + second_emitted == emitted  # frozen not again; the act streak carried over
    assert second.fired == whole.fired


def alert_lines(run_dir: str) -> list[dict]:
    return [r for r in read_metrics(run_dir) if "alert" in r]


def test_resumed_trainer_keeps_its_alert_state(sudoku4_dataset, tmp_path):
    """puzzle_emb_frozen fires at step 4 and must not fire again after the resume at 8;
    act_always_max needs 3 reports after warm-up (4, 8, 12): the streak crosses the resume."""
    args = ("puzzle_emb_lr=0", "alerts.act_patience=3", "alerts.act_min_exact_accuracy=0")
    full = make_trainer(sudoku4_dataset, str(tmp_path / "full"), *args)
    full.fit()
    expected = alert_lines(str(tmp_path / "full"))
    assert [(r["step"], r["alert"]) for r in expected] == [(4, "puzzle_emb_frozen"), (12, "act_always_max")]

    part = str(tmp_path / "part")
    resumed = crashed_and_resumed(sudoku4_dataset, part, 8, *args)
    assert set(resumed.alerts.fired) == {"puzzle_emb_frozen"}
    resumed.fit()
    assert alert_lines(part) == expected
    assert resumed.alerts.fired == full.alerts.fired
    assert resumed_metrics(part) == read_metrics(str(tmp_path / "full"))


def test_checkpoint_from_before_alerts_resumes(sudoku4_dataset, tmp_path):
    tr = make_trainer(sudoku4_dataset, str(tmp_path / "a"), "max_steps=4")
    tr.fit()
    path = tmp_path / "a" / "step_4.pt"
    state = torch.load(path, weights_only=False)
    del state["alerts"], state["diagnostics"]
    torch.save(state, path)
    again = make_trainer(sudoku4_dataset, str(tmp_path / "b"), f"resume_from={path}")
    assert again.alerts.fired == {} and again.step == 4


# --- real runs into a real MLflow store -------------------------------------------------------------
CLI = ["arch=hrm_tiny", "global_batch_size=16", "epochs=1", "eval_interval=null", "progress=false",
       "threads=1", "tracking.mlflow=true", "project_name=alerts"]


def pretrain(store, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri}
    return subprocess.run([sys.executable, "-m", "hrm_core.pretrain", *CLI, *args], cwd=PROJECT, env=env,
                          capture_output=True, text=True, timeout=300)


def only_run(store, name: str):
    exp = store.get_experiment_by_name("hrm/alerts")
    (run,) = store.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return run


@pytest.mark.slow
def test_cli_alerts_reach_mlflow(sudoku4_dataset, store, tmp_path):
    # puzzle_emb_lr=0: the puzzle embedding never moves
    proc = pretrain(store, f"data_path={sudoku4_dataset}", "max_steps=8", "eval_every_steps=4",
                    "puzzle_emb_lr=0", "run_name=frozen", f"checkpoint_path={tmp_path / 'frozen'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "alert puzzle_emb_frozen at step 4" in proc.stdout
    tags = only_run(store, "frozen").data.tags
    frozen = tags[names.TAG_ALERT_PREFIX + "puzzle_emb_frozen"]
    assert frozen.startswith("step 4: diag/puzzle_emb/updated_share = 0")
    assert tags[names.TAG_ALERTS] == "puzzle_emb_frozen"
    lines = [json.loads(line) for line in open(tmp_path / "frozen" / "metrics.jsonl")]
    assert [(r["step"], r["alert"]) for r in lines if "alert" in r] == [(4, "puzzle_emb_frozen")]

    # a huge learning rate: the loss turns non-finite, the run ends diverged, the alert is on the run
    proc = pretrain(store, f"data_path={sudoku4_dataset}", "max_steps=12", "lr=1e20", "lr_warmup_steps=0",
                    "run_name=diverged", f"checkpoint_path={tmp_path / 'diverged'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = only_run(store, "diverged")
    assert run.data.tags[names.TAG_OUTCOME] == names.OUTCOME_DIVERGED
    assert run.data.tags[names.TAG_ALERT_PREFIX + "nonfinite"].startswith("step ")
    assert "train/lm_loss = nan" in run.data.tags[names.TAG_ALERT_PREFIX + "nonfinite"]
    assert "nonfinite" in run.data.tags[names.TAG_ALERTS].split(",")
