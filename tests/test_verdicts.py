"""The verdict engine on small, known cases: intention to treat (failure values, missing
pairs, reruns), the exact divergence tests, the sequential boundaries, the rule's reasons,
the plan read from an invocation's sweep_resolved.json (defaults for an older one), looks
recorded on the parent run, the quantisation step from the runs' dataset inputs, the
importance guard and the report command's seed options. Sweeps are synthetic, in a real
MLflow SQLite store."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import family, importance, itt, loading, looks, sequential, verdicts
from analysis.report import cli
from hrm_core import names
from tests.support import synthetic

ACC = names.EVAL_EXACT_ACCURACY


# --------------------------------------------------------------------------------------
# intention to treat
# --------------------------------------------------------------------------------------
def _values(rows) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, runs) from (arm, seed, outcome, value, start minute) rows."""
    runs = pd.DataFrame([{"run_id": f"r{i}", "run_name": f"{a}/seed{s}", "arm": a, "seed": s, "outcome": o,
                          f"metrics.{ACC}": v, "start_time": pd.Timestamp("2026-01-01", tz="UTC")
                          + pd.Timedelta(minutes=t)} for i, (a, s, o, v, t) in enumerate(rows)])
    runs["seed"] = runs["seed"].astype("Int64")
    from analysis import stats

    return stats.run_values(runs, ACC), runs


def test_itt_failure_value_missing_pairs_and_reruns():
    values, runs = _values([
        ("control", 0, "completed", 0.5, 0), ("arm", 0, "error", math.nan, 0),
        ("arm", 0, "completed", 0.6, 5),  # the rerun replaces the failed run
        ("control", 1, "completed", 0.4, 0), ("arm", 1, "diverged", 0.3, 0),  # counts at 0
        ("control", 2, "killed", math.nan, 0), ("arm", 2, "completed", 0.7, 0),  # missing
        ("control", 3, "completed", 0.5, 0),  # arm seed 3 never started
    ])
    fail, how = itt.failure_value(ACC, "max", None, ACC)
    assert fail == 0.0 and "worst value" in how
    table = itt.cells(values, runs, fail)
    cell = table.set_index(["arm", "seed"])
    assert cell.loc[("arm", 0), "status"] == "completed" and cell.loc[("arm", 0), "itt"] == 0.6
    assert cell.loc[("arm", 1), "itt"] == 0.0 and math.isnan(cell.loc[("arm", 1), "cc"])
    assert cell.loc[("arm", 3), "why"] == itt.NEVER_STARTED
    p = itt.pairs(table, "arm", "control")
    assert p["missing"] == ["control seed 2 (killed)", "arm seed 3 (never started)"]
    np.testing.assert_allclose(p["itt"], [0.1, -0.4, np.nan, np.nan])
    np.testing.assert_allclose(p["cc"], [0.1, np.nan, np.nan, np.nan])
    # a min objective needs its failure value: without one, completed runs only, and why
    assert itt.failure_value("eval/lm_loss", "min", None, "eval/lm_loss")[0] is None
    assert itt.failure_value("eval/lm_loss", "min", 9.0, "eval/lm_loss")[0] == 9.0


def test_equivalence_within_the_margin_is_a_decision():
    noise = np.random.default_rng(1).normal(0, 0.002, (2, 10))
    rows = [(arm, s, "completed", 0.5 + 0.01 * s + noise[i, s], 0)
            for i, arm in enumerate("ab") for s in range(10)]
    values, runs = _values(rows)
    info = loading.SweepInfo("u", "0", "e", "s", control="a", equivalence_margin=0.02)
    d = verdicts.evaluate(info, runs, values, ACC, "max", "a")
    assert d.rows[0]["verdict"] == "equivalent" and "within ±0.02" in d.rows[0]["reason"] and d.decided
    info.equivalence_margin = None
    assert verdicts.evaluate(info, runs, values, ACC, "max", "a").rows[0]["verdict"] == (
        "no detectable difference")


def test_divergence_tests_are_exact():
    arm = np.array([1, 1, 1, 1, 1, 0, 0, 0], bool)
    ref = np.zeros(8, bool)
    p, how = itt.divergence_test(arm, ref)
    assert how == "McNemar exact" and p == pytest.approx(sps.binomtest(5, 5, 0.5).pvalue)
    p, how = itt.divergence_test(arm, ref, paired=False)
    assert how == "Fisher exact" and p == pytest.approx(sps.fisher_exact([[5, 3], [0, 8]]).pvalue)
    assert itt.divergence_test(ref, ref)[0] == 1.0


# --------------------------------------------------------------------------------------
# the sequential rule
# --------------------------------------------------------------------------------------
def test_obrien_fleming_spending_and_boundaries():
    assert sequential.obf_spent(1.0, 0.05) == 0.05 and sequential.obf_spent(0.0, 0.05) == 0.0
    assert sequential.obf_spent(0.5, 0.05) == pytest.approx(2 * sps.norm.sf(1.959964 / math.sqrt(0.5)))
    (single,) = sequential.boundaries((10,), 0.05, 10)
    assert single == pytest.approx(sps.t.isf(0.025, 9))  # one look at N_max: the fixed-sample test
    b = sequential.boundaries((3, 5, 10), 0.05, 10)
    assert b[0] > b[1] > b[2] > single  # early looks are strict; the last pays a little for them
    assert sequential.schedule([3, 5, 5, 2], 8, min_n=3) == (3, 5, 8)
    plan = family.Plan()
    assert [family.smallest_decisive_n(plan, m) for m in (1, 2, 4)] == [7, 8, 9]


def test_the_rule_and_its_reasons():
    plan = family.Plan(margin=0.5)
    rng = np.random.default_rng(0)
    d = np.stack([
        np.full(10, 0.25),  # zero variance
        rng.normal(3.0, 1.0, 10),  # a large effect: beats
        rng.normal(0.0, 0.1, 10),  # tight around 0: equivalent within 0.5
        rng.normal(0.0, 1.0, 10),  # no effect
        np.r_[rng.normal(3.0, 1.0, 8), np.nan, np.nan],  # 8 pairs: below the 9 a family of 5 needs
    ])
    res = family.decide_family(d[None], d[None], plan)
    v = [family.VERDICTS[int(x)] for x in res["verdict"][0]]
    assert v == ["inconclusive", "beats", "equivalent", "no detectable difference", "inconclusive"]
    assert res["zero_var"][0, 0] and not np.isfinite(res["ci_low"][0, 0]) and res["below"][0, 4]
    assert family.smallest_decisive_n(plan, 5) == 9
    two = family.decide_family(d[None, :, :2], d[None, :, :2], plan)
    assert (two["verdict"] == family.INCONCLUSIVE).all() and two["few"].all()
    # completed-only disagrees (its pairs show nothing): no verdict
    cc = d.copy()
    cc[1] = rng.normal(0, 1, 10)
    res = family.decide_family(d[None], cc[None], plan)
    assert res["verdict"][0, 1] == family.INCONCLUSIVE and res["cc_fail"][0, 1]
    # worse for a min objective is a positive difference
    res = family.decide_family(d[None], d[None], family.Plan(mode="min"))
    assert res["verdict"][0, 1] == family.WORSE


def test_sign_flip_p_is_exact():
    d = np.array([1.0, 2.0, -0.5, 3.0, 1.5, 0.7])
    signs = np.array(np.meshgrid(*[[-1, 1]] * 6)).reshape(6, -1).T
    ref = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-12)
    assert family.sign_flip_p(d[None])[0] == pytest.approx(ref)
    assert family.sign_flip_p(np.r_[d, np.nan][None])[0] == pytest.approx(ref)  # an absent pair: no change


# --------------------------------------------------------------------------------------
# from MLflow: the plan, the looks, the quantisation step
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.entities import Dataset, DatasetInput
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-verdicts")
    uri = synthetic.new_store(str(root))
    client = MlflowClient(tracking_uri=uri)
    sweep = synthetic.make_ablation("vd", {"w0": 0.0, "w1": 0.08}, control="off", seeds=range(8), rng=4)
    new = synthetic.write_sweep_bulk(uri, sweep)
    plan = {"comparisons": [{"arm": "w1", "reference": "w0", "label": "does the loss help"},
                            {"arm": "w0", "reference": "off", "label": None}],
            "failure_value": None, "min_seeds": 3, "max_seeds": 8, "equivalence_margin": None}
    client.log_text(new, json.dumps(plan), "sweep_resolved.json")
    child = client.search_runs([client.get_run(new).info.experiment_id],
                               f"tags.`{names.TAG_INVOCATION}` = '{new}'", max_results=1)[0].info.run_id
    profile = json.dumps({"test_examples": 256, "train_examples": 1000})
    client.log_inputs(child, [DatasetInput(Dataset("sudoku4", "abc123", "local", "{}", profile=profile))])
    old = synthetic.write_sweep_bulk(uri, synthetic.make_ablation("vd-old", {"w1": 0.0}, seeds=(0, 1), rng=5))
    return uri, {"new": new, "old": old}


def test_decide_reads_the_declared_family_and_records_no_look(store):
    uri, ids = store
    d = verdicts.decide(parent_run=ids["new"], tracking_uri=uri)
    assert [(r["arm"], r["reference"], r["label"]) for r in d.rows] == [
        ("w1", "w0", "does the loss help"), ("w0", "off", "")]
    by = {(r["arm"], r["reference"]): r for r in d.rows}
    assert by[("w1", "w0")]["verdict"] == "beats" and "sign-flip" in by[("w1", "w0")]["reason"]
    assert by[("w0", "off")]["verdict"] == "no detectable difference" and not d.decided
    assert d.plan.max_seeds == 8 and d.n_pairs == 8 and len(d.looks) == 1 and d.new_look
    assert d.step == pytest.approx(1 / 256) and "256 test puzzles" in d.step_how
    assert names.TAG_LOOKS not in loading.load_sweep(parent_run=ids["new"], tracking_uri=uri)[0].parent_tags
    # a recorded look at 4 pairs: this one is the second, its interval a repeated one
    from mlflow.tracking import MlflowClient

    earlier = [{"time": "t0", "pairs": 4, "seeds": [0, 1, 2, 3]}]
    looks.record(MlflowClient(tracking_uri=uri), ids["new"], earlier)
    d2 = verdicts.decide(parent_run=ids["new"], tracking_uri=uri)
    assert [lk["pairs"] for lk in d2.looks] == [4, 8] and d2.table["look"].tolist() == [2, 2]
    assert (d2.table["crit"] > d.table["crit"]).all()  # the earlier look spent some alpha
    # --max-seeds overrides the sweep's: at 8 of 16 less alpha is spent yet
    d3 = verdicts.decide(parent_run=ids["new"], tracking_uri=uri, max_seeds=16)
    assert (d3.table["crit"] > d2.table["crit"]).all()


def test_the_conclusion_states_the_plan_the_looks_and_the_stop_reason(store):
    from mlflow.tracking import MlflowClient

    from analysis import report

    uri, ids = store
    client = MlflowClient(tracking_uri=uri)
    looks.record(client, ids["new"], [{"time": "t0", "pairs": 4, "seeds": [0, 1, 2, 3]}])
    client.set_tag(ids["new"], names.TAG_STOP_REASON, names.STOP_DECIDED)
    info, runs = loading.load_sweep(parent_run=ids["new"], tracking_uri=uri)
    text = report.analyse(info, runs).conclusion
    assert "**w1 beats w0** (does the loss help) by +" in text and "repeated 95% CI" in text
    assert "Looks (2): 4 pairs at t0; 8 pairs at" in text and "Holm step-down" in text
    assert "every declared comparison was decided" in text and "Quantisation step 1/256" in text
    assert "80% power needs d_z ≥" in text and "smallest n at which any verdict is possible" in text


def test_old_invocation_uses_the_defaults_and_says_so(store):
    uri, ids = store
    info, runs = loading.load_sweep(parent_run=ids["old"], tracking_uri=uri)
    assert info.plan_defaults == list(loading.PLAN_KEYS) and info.min_seeds == 3 and info.max_seeds == 10
    d = verdicts.decide(parent_run=ids["old"], tracking_uri=uri)
    (row,) = d.rows
    assert row["verdict"] == "inconclusive" and row["reason"].startswith("2 seeds: too few for a test")
    assert "the minimum detectable effect at n = 7 would be d_z" in row["reason"]
    assert "predates `comparisons`, `failure_value`" in d.plan_defaults_note
    assert "comparisons: every arm against the control" in d.plan_defaults_note
    assert "1/" not in d.step_how  # no test size recorded: no rounding, and why


def test_importance_guard():
    assert "importance needs at least two" in importance.guard(1, 50)
    assert "needs at least 6" in importance.guard(3, 5)
    assert importance.guard(3, 6) == ""


@pytest.mark.parametrize("args, message", [
    (["vd", "--min-seeds", "1"], "--min-seeds must be at least 2"),
    (["vd", "--max-seeds", "x"], "invalid int value"),
])
def test_report_cli_seed_options(capsys, args, message):
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_a_smoke_scale_report_says_its_results_are_not_findings(store):
    from mlflow.tracking import MlflowClient

    from analysis.report import prose
    from analysis.report.sweep_analysis import analyse, history_metrics

    uri, ids = store
    MlflowClient(uri).set_tag(ids["old"], names.TAG_SCALE, "smoke")
    said = {}
    for key in ("old", "new"):
        info, runs = loading.load_sweep(parent_run=ids[key], tracking_uri=uri)
        history = loading.load_history(runs, history_metrics(runs, info.objective), uri)
        said[key] = analyse(info, runs, history).conclusion
    assert said["old"].startswith(prose.SMOKE_NOTE) and "not findings" in said["old"]
    assert "not findings" not in said["new"]
