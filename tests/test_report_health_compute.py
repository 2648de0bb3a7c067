"""The report's Compute and Health sections and the run table's reproduce command:
known-answer compute-to-target, and executed notebooks on synthetic sweeps with compute/*,
diag/* and alert tags (and on one without: short notes, no error)."""

from __future__ import annotations

import math

import nbformat
import numpy as np
import pandas as pd
import pytest

from analysis import compute, notebook, report
from analysis.loading import load_history, load_sweep
from analysis.report import prose, tables
from analysis.report.health import parse_alert
from hrm_core import names
from tests.support import synthetic

ACC = names.EVAL_EXACT_ACCURACY


def _known_sweep() -> synthetic.Sweep:
    """Two arms x two seeds, evals at steps 10, 20, 30. Arm a: 1e6 FLOPs/step, compute
    logged at steps 5, 15, 30 only (steps 10 and 20 are interpolated, exactly: linear);
    arm b: 2e6 FLOPs/step logged at every eval."""
    curves = {("a", 0): [0.1, 0.5, 0.9], ("a", 1): [0.2, 0.6, 0.7],
              ("b", 0): [0.6, 0.7, 0.8], ("b", 1): [0.1, 0.2, 0.3]}
    trials = []
    for (arm, seed), values in curves.items():
        rows = [(ACC, v, s) for v, s in zip(values, (10, 20, 30), strict=True)]
        fps, at = (1e6, (5, 15, 30)) if arm == "a" else (2e6, (10, 20, 30))
        rows += [(names.COMPUTE_TRAIN_FLOPS, fps * s, s) for s in at]
        rows += [(names.COMPUTE_DEVICE_SECONDS, 0.5 * s, s) for s in at]
        rows += [(names.TRAIN_LM_LOSS, 1.0, s) for s in range(1, 31)]
        trial = synthetic.Trial(f"{arm}{seed}", arm, seed, names.OUTCOME_COMPLETED, {"seed": str(seed)}, rows)
        trials.append(trial)
    tags = {names.TAG_SWEEP_KIND: "ablation", names.TAG_CONTROL: "a", names.TAG_OBJECTIVE: ACC,
            names.TAG_OBJECTIVE_MODE: "max"}
    return synthetic.Sweep("known-compute", "ablation", tags, trials)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-health-compute")
    uri = synthetic.new_store(str(root))
    art = str(root / "artifacts")
    ids = {"known": synthetic.write_sweep(uri, _known_sweep(), artifact_root=art)}
    abl = synthetic.make_ablation(
        "hc-abl", {"gated": 0.08}, seeds=(0, 1, 2), flops_per_step={"control": 1e9, "gated": 1.5e9},
        alerts={("gated", 1): {"grad_explosion": "step 120: grad norm 1e3 > 100 x its running median"},
                ("control", 2): {"eval_collapse": "step 160: eval/exact_accuracy fell from 50.0% to 1.0%"}},
        health_checked=True, diag=True, rng=3,
    )
    ids["abl"] = synthetic.write_sweep(uri, abl, artifact_root=art)
    srch = synthetic.make_search("hc-srch", n_trials=8, flops_per_step=1e9, parent_totals=False)
    ids["search"] = synthetic.write_sweep(uri, srch, artifact_root=art, optuna_dir=str(root / "optuna"))
    old = synthetic.make_ablation("hc-old", {"b": 0.05}, seeds=(0, 1))
    ids["old"] = synthetic.write_sweep(uri, old, artifact_root=art)
    return uri, ids, root


def _analysis(uri, parent, **kw):
    info, runs = load_sweep(parent_run=parent, tracking_uri=uri)
    history = load_history(runs, report.history_metrics(runs, info.objective), uri)
    return report.analyse(info, runs, history, **kw)


def test_compute_to_target_known_answer(store):
    uri, ids, _ = store
    a = _analysis(uri, ids["known"], target=0.55)
    t = a.to_target.set_index(["arm", "seed"])
    assert t.loc[("a", 0), "flops"] == 30e6 and t.loc[("a", 0), "step"] == 30  # 0.5 < 0.55 at step 20
    assert t.loc[("a", 1), "flops"] == 20e6  # interpolated between steps 15 and 30: exact
    assert t.loc[("b", 0), "flops"] == 20e6 and t.loc[("b", 0), "step"] == 10
    assert not t.loc[("b", 1), "reached"] and math.isnan(t.loc[("b", 1), "flops"])
    s = compute.target_summary(a.to_target).set_index("arm")
    assert s.loc["a", "median_flops"] == 25e6 and s.loc["a", "mean_flops_reached"] == 25e6
    assert s.loc["a", "reached"] == 2
    assert s.loc["b", "median_flops"] == np.inf  # half never reached
    assert s.loc["b", "mean_flops_reached"] == 20e6
    table = tables.compute_to_target_table(a).set_index("arm")
    assert table.loc["a (control)", "seed 0"] == "3e+07 (step 30)"
    assert table.loc["b", "seed 1"] == "not reached"
    assert table.loc["a (control)", "median FLOPs"] == "2.5e+07"
    assert table.loc["b", "median FLOPs"] == "not reached"
    assert table.loc["b", "reached"] == "1/2" and table.loc["b", "mean FLOPs (runs that reached)"] == "2e+07"
    heading = prose.target_heading(a)
    assert heading.startswith(f"Compute to reach {ACC} ≥ 55.0% (target = set with the TARGET option")
    # default target: 0.9 x the best arm's final mean = 0.9 x mean(0.9, 0.7) = 0.72 -> only a0 reaches it
    d = _analysis(uri, ids["known"])
    assert d.target == pytest.approx(0.72) and "0.9 × the best arm's final mean" in prose.target_heading(d)
    reached = d.to_target.set_index(["arm", "seed"])["reached"].to_dict()
    assert reached == {("a", 0): True, ("a", 1): False, ("b", 0): True, ("b", 1): False}
    # totals: per arm and for the sweep (no parent totals here: the sum over the runs)
    totals = tables.compute_totals_table(d).set_index("arm")
    assert totals.loc["a", "train FLOPs"] == "6e+07" and totals.loc["b", "train FLOPs"] == "1.2e+08"
    sweep = totals.loc["sweep (sum over the runs)"]
    assert sweep["train FLOPs"] == "1.8e+08" and sweep["device-seconds"] == "60.0"


def test_early_stopping_savings_from_the_trials():
    runs = pd.DataFrame({
        "outcome": [names.OUTCOME_COMPLETED, names.OUTCOME_EARLY_STOPPED, names.OUTCOME_EARLY_STOPPED],
        f"metrics.{names.COMPUTE_TRAIN_FLOPS}": [100.0, 20.0, 50.0],
        f"metrics.{names.COMPUTE_PLANNED_FLOPS}": [100.0, 100.0, np.nan],
        f"metrics.{names.COMPUTE_PLANNED_STEPS}": [10.0, 10.0, 10.0],
        f"metrics.{names.COMPUTE_FLOPS_PER_STEP}": [10.0, 10.0, 10.0],
    })
    saved, full = compute.early_stopping_savings(runs)
    assert saved == 80 + 50 and full == 170 + 130  # the second falls back to planned steps x flops per step


def test_health_parsing_and_conclusion_line(store):
    uri, ids, _ = store
    a = _analysis(uri, ids["abl"])
    assert parse_alert("step 400: eval collapsed: 2%") == (400.0, "eval collapsed: 2%")
    alerts = a.alerts.set_index("rule")
    assert alerts.loc["grad_explosion", "who"] == "gated seed 1"
    assert alerts.loc["grad_explosion", "step"] == 120
    assert alerts.loc["eval_collapse", "message"] == "eval/exact_accuracy fell from 50.0% to 1.0%"
    assert list(a.alerts["rule"]) == ["grad_explosion", "eval_collapse"]  # in ALERT_RULES order
    assert ("**Health: 2 of 6 runs raised alerts**: grad_explosion (gated seed 1 at step 120); "
            "eval_collapse (control seed 2 at step 160)") in a.conclusion
    counts = tables.alert_counts_table(a).set_index("arm")
    assert counts.loc["gated", "grad_explosion"] == 1 and counts.loc["control", "eval_collapse"] == 1
    assert counts.loc["control", "with alerts"] == 1 and counts.loc["control", "checked"] == 3
    old = _analysis(uri, ids["old"])
    assert "Health" not in old.conclusion and tables.alerts_table(old)["note"].tolist() == ["not checked"]
    assert prose.compute_summary(old).startswith("*No run logged compute/*")


def _markdown(nb) -> str:
    out = []
    for c in nb.cells:
        if c.cell_type == "markdown":
            out.append(c.source)
        for o in c.get("outputs", []):
            out.append(o.get("data", {}).get("text/markdown", ""))
            out.append(o.get("data", {}).get("text/html", ""))
            out.append(o.get("text", ""))
    return "\n".join(out)


def _executed(store, key: str):
    """The report of one stored sweep, built and executed: (result, notebook, its markdown)."""
    uri, ids, root = store
    res = report.build_report(parent_run=ids[key], tracking_uri=uri, out=root / f"{key}-report", upload=False)
    nb = nbformat.read(str(res.notebook), as_version=4)
    assert notebook.error_cells(nb) == 0
    return res, nb, _markdown(nb)


@pytest.mark.slow
def test_ablation_report_has_compute_health_and_reproduce(store):
    uri, ids, _ = store
    res, nb, text = _executed(store, "abl")
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Compute" in headings and "## Health" in headings
    assert "Health: 2 of 6 runs raised alerts" in nb.cells[0].source
    message = "grad norm 1e3 {} 100 x its running median"
    assert message.format("&gt;") in text or message.format(">") in text
    assert "Compute to reach eval/exact_accuracy ≥" in text and "0.9 × the best arm's final mean" in text
    assert "parent run totals" in text and "device-seconds" in text
    html = res.html.read_text()
    assert "python -m sweeps reproduce " in html and "eval_collapse" in html and "Compute to reach" in html
    run_ids = load_sweep(parent_run=ids["abl"], tracking_uri=uri)[1]["run_id"]
    assert all(f"python -m sweeps reproduce {r}" in html for r in run_ids)
    # plots: accuracy vs compute and the health panel come on top of the 5 of an ablation without variants
    images = sum("image/png" in o.get("data", {})
                 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert images == 5 + 2, images  # forest, curves x2, final values, Pareto + compute curves, health panel


@pytest.mark.slow
def test_search_and_old_sweeps_render(store):
    _, _, text = _executed(store, "search")
    assert "Early stopping (6 of 8 trials stopped) saved" in text and "computed from the trials" in text
    assert "0.9 × the best trial's final value" in text
    assert "Not checked: no run carries the hrm.alerts tag" in text
    _, _, text = _executed(store, "old")
    assert "No run logged compute/*" in text and "No diag/grad_norm" in text and "Not checked" in text
