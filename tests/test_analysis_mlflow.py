"""Analysis against a real MLflow SQLite store: synthetic sweeps written in the engine's
layout (one true-effect arm, one null arm, failed runs), loaded back and analysed."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from analysis import loading, report, stats
from analysis.loading import AnalysisError
from analysis.report import links, tables
from hrm_core import names
from tests.conftest import PROJECT
from tests.support import synthetic

OUTCOMES = {
    ("feudal", 2): names.OUTCOME_ERROR,
    ("gated", 4): names.OUTCOME_DIVERGED,
    ("control", 3): names.OUTCOME_KILLED,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store: an ablation (gated +8 points, feudal null, 3 failed runs), a search with
    its Optuna study, a sparse sweep (one seed in an arm, no eval metrics) and a parent
    run without children."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = synthetic.new_store(str(root))
    art = str(root / "artifacts")
    abl = synthetic.make_ablation(
        "abl",
        {"gated": 0.08, "feudal": 0.0},
        outcomes=OUTCOMES,
        variants={"gated": ["gate"], "feudal": ["feudal"]},
        rng=1,
    )
    ids = {"abl": synthetic.write_sweep(uri, abl, artifact_root=art)}
    ids["search"] = synthetic.write_sweep(
        uri, synthetic.make_search("srch", n_trials=16), artifact_root=art, optuna_dir=str(root / "optuna")
    )
    sparse = synthetic.make_ablation("sparse", {"solo": 0.1}, seeds=(0, 1), rng=2)
    sparse.trials = [t for t in sparse.trials if not (t.arm == "solo" and t.seed == 1)]
    for t in sparse.trials:  # training has started, no eval yet
        t.metrics = [m for m in t.metrics if m[0].startswith("train/")]
    ids["sparse"] = synthetic.write_sweep(uri, sparse, artifact_root=art)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(names.experiment_name("abl")).experiment_id
    tags = {names.TAG_RUN_KIND: names.RUN_KIND_SWEEP, names.TAG_SWEEP: "abl"}
    ids["empty"] = client.create_run(exp, run_name="abl@empty", tags=tags).info.run_id
    client.set_terminated(ids["empty"])
    return uri, ids


def test_load_runs_is_tidy(store):
    uri, ids = store
    runs = loading.load_runs("abl", tracking_uri=uri)  # the latest invocation *with* trials
    assert len(runs) == 15 and runs["run_id"].is_unique
    assert set(runs["arm"]) == {"control", "gated", "feudal"}
    assert sorted(runs["seed"].unique()) == [0, 1, 2, 3, 4]
    assert runs.attrs["sweep"]["parent_run_id"] == ids["abl"] and runs.attrs["sweep"]["control"] == "control"
    outcome = runs.set_index(["arm", "seed"])["outcome"]
    assert outcome[("feudal", 2)] == "error" and outcome[("gated", 4)] == "diverged"
    assert outcome[("control", 3)] == "killed"
    assert runs.set_index(["arm", "seed"]).loc[("feudal", 2), "status"] == "FAILED"
    for col in (
        "params.lr",
        f"metrics.{names.EVAL_EXACT_ACCURACY}",
        f"tags.{names.TAG_CONFIG_HASH}",
        "duration_s",
    ):
        assert col in runs.columns
    assert runs["params.arch.hidden_size"].dtype.kind == "i"
    by_parent = loading.load_runs(parent_run=ids["abl"], tracking_uri=uri)
    assert sorted(by_parent["run_id"]) == sorted(runs["run_id"])
    assert len(loading.load_runs(experiment="hrm/abl", tracking_uri=uri)) == 15


def test_history_bulk_matches_mlflow(store):
    from mlflow.tracking import MlflowClient

    uri, ids = store
    runs = loading.load_runs(parent_run=ids["abl"], tracking_uri=uri)
    keys = [names.EVAL_EXACT_ACCURACY, names.TRAIN_LM_LOSS]
    h = loading.load_history(runs, keys)
    assert {"run_id", "key", "step", "value", "arm", "seed", "outcome"} <= set(h.columns)
    rid = runs.loc[runs["arm"] == "gated", "run_id"].iloc[0]
    ref = MlflowClient(tracking_uri=uri).get_metric_history(rid, names.EVAL_EXACT_ACCURACY)
    mine = h[(h["run_id"] == rid) & (h["key"] == names.EVAL_EXACT_ACCURACY)]
    assert mine["step"].tolist() == [m.step for m in ref]
    assert mine["value"].tolist() == pytest.approx([m.value for m in ref])


def test_history_fast_path_is_the_public_api(store, monkeypatch):
    """On SQLite, load_history reads MLflow's metrics table (its one fast path); the frame is
    exactly the one MLflow's public get_metric_history gives: every run and metric of a sweep,
    NaNs (a diverged run) included."""
    from hrm_core.tracking.uris import sqlite_path

    uri, ids = store
    runs = loading.load_runs(parent_run=ids["abl"], tracking_uri=uri)
    keys = loading.logged_metrics(runs)
    rows = loading._sqlite_history(sqlite_path(uri), list(runs["run_id"]), keys)
    assert rows is not None and len(rows) > 0  # the fast path reads this store
    fast = loading.load_history(runs)
    assert fast["run_id"].nunique() == len(runs) == 15 and fast["key"].nunique() == len(keys) > 10
    assert fast["value"].isna().any()
    monkeypatch.setattr(loading, "_sqlite_history", lambda *_: None)  # as for a schema it does not know
    public = loading.load_history(runs)
    pd.testing.assert_frame_equal(fast, public, check_exact=True)


def test_report_flags_the_true_effect_not_the_null_arm_and_counts_failures(store):
    uri, ids = store
    info, runs = loading.load_sweep(parent_run=ids["abl"], tracking_uri=uri)
    a = report.analyse(info, runs)
    prim = a.comparisons[a.comparisons["role"] == "primary"].set_index("arm")
    # issue 15, intention to treat: control seed 3 was killed and feudal seed 2 failed, so both
    # comparisons miss a pair: "incomplete", naming it (gated seed 4 diverged: it counts, at 0)
    assert (prim["verdict"] == "incomplete").all()
    assert "control seed 3 (killed)" in prim.at["gated", "note"]
    assert "feudal seed 2 (error)" in prim.at["feudal", "note"]
    assert not prim["significant"].any() and prim["ci_low"].isna().all()  # no interval without every pair
    assert a.decision.table.set_index("arm").loc["gated", "diverged_arm"] == 1
    assert (a.comparisons.loc[a.comparisons["role"] == "exploratory", "metric"] != a.metric).all()
    assert sorted(a.excluded["reason"]) == ["diverged", "error", "killed"]
    assert a.counts.loc["feudal", "error"] == 1 and a.counts["total"].sum() == 15
    text = a.conclusion
    assert "**gated vs control**: **incomplete** — incomplete: resume or extend" in text
    assert "Holm step-down" in text and "Divergence, gated vs control: 1 vs 0" in text
    assert "feudal vs control" in text and "3 of 15 runs" in text and "1 error (feudal seed 2)" in text
    board = tables.leaderboard_table(a)
    assert board["arm"].iloc[0] == "control (control)" and board["arm"].iloc[1] == "gated"
    assert (
        not tables.power_table(a).empty and "hrm/abl" in tables.overview_table(a).loc["experiment", "value"]
    )
    assert links.links_html(a).count("<a href=") == 16


def test_sparse_sweep_shows_what_it_has(store):
    uri, ids = store
    info, runs = loading.load_sweep("sparse", tracking_uri=uri)
    a = report.analyse(info, runs)
    assert not a.metric_logged and a.comparisons.empty
    assert f"No run has logged `{names.EVAL_EXACT_ACCURACY}` yet" in a.conclusion
    assert tables.comparison_table(a).columns.tolist() == ["note"]
    # An arm with one seed: shown, no CI, no test.
    runs[f"metrics.{names.EVAL_EXACT_ACCURACY}"] = [0.5, 0.6, 0.7]
    a = report.analyse(info, runs, history=a.history)
    solo = a.summary.set_index("arm").loc["solo"]
    assert solo["n"] == 1 and solo["mean"] == 0.7 and solo["ci_method"] == ""
    assert "missing solo seed 1 (never started)" in a.conclusion  # issue 15: a missing pair is named
    assert "n < 2: no CI" in tables.leaderboard_table(a)["95% CI"].tolist()


def test_search_uses_the_study_and_the_same_rung(store):
    uri, ids = store
    info, runs = loading.load_sweep(parent_run=ids["search"], tracking_uri=uri)
    a = report.analyse(info, runs)
    assert a.kind == "search" and info.optuna_study == ids["search"]
    assert max(a.importances, key=a.importances.get) == "lr" and "Optuna study" in a.importance_method
    top_rung = a.leaderboard["rung"].max()
    assert (a.leaderboard["rung"].iloc[: (a.leaderboard["rung"] == top_rung).sum()] == top_rung).all()
    assert "Best trial at the top rung" in a.conclusion and "**lr**" in a.conclusion
    # Without the study: a labelled fallback, still at one rung.
    info.optuna_storage = "sqlite:////nonexistent/dir/study.db"
    b = report.analyse(info, runs)
    assert "Spearman" in b.importance_method and max(b.importances, key=b.importances.get) == "lr"


def test_bad_requests_raise_one_line_errors(store):
    uri, ids = store
    with pytest.raises(AnalysisError, match=r"unknown sweep 'nope'.*known sweeps: abl, sparse, srch"):
        loading.load_runs("nope", tracking_uri=uri)
    with pytest.raises(AnalysisError, match=f"parent run {ids['empty']} .* has no child runs"):
        loading.load_runs(parent_run=ids["empty"], tracking_uri=uri)
    with pytest.raises(AnalysisError, match="unknown parent run"):
        loading.load_runs(parent_run="0" * 32, tracking_uri=uri)
    runs = loading.load_runs("abl", tracking_uri=uri)
    with pytest.raises(AnalysisError, match="metric 'eval/nope' was never logged"):
        report.analyse(loading.SweepInfo(uri, "1", "hrm/abl", "abl"), runs, metric="eval/nope")
    with pytest.raises(AnalysisError, match="no MLflow store"):
        loading.load_runs("abl", tracking_uri="sqlite:////nonexistent/mlflow.db")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parent-run", "EMPTY"], "has no child runs"),
        (["abl", "--metric", "eval/nope", "--no-execute"], "was never logged"),
        ([], "give a sweep name or --parent-run"),
    ],
)
def test_cli_bad_requests_in_process(store, capsys, args, message):
    uri, ids = store
    args = [ids["empty"] if a == "EMPTY" else a for a in args]
    assert report.main([*args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_cli_unknown_sweep_exits_2_without_traceback(store):
    uri, _ = store
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", "no-such-sweep", "--tracking-uri", uri],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: unknown sweep 'no-such-sweep'")
    assert "Traceback" not in proc.stderr


def test_metric_modes_and_units():
    assert stats.metric_mode(names.EVAL_LM_LOSS) == "min" and stats.metric_mode(names.EVAL_STEPS) == "min"
    assert stats.metric_mode(names.EVAL_EXACT_ACCURACY) == "max"
    assert stats.display_scale(names.EVAL_ACCURACY) == (100.0, " points")
    assert stats.display_scale(names.EVAL_STEPS)[1] == ""


def test_layering_no_torch_no_ray_only_names_and_tracking():
    """analysis/ imports no torch and no ray (not even through MLflow, optuna or
    hrm_core.tracking), and from this project only hrm_core.names and hrm_core.tracking;
    every hrm_core.tracking module it names is imported below, so it must be torch-free."""
    import ast
    from pathlib import Path

    tracking = set()
    for path in (Path(PROJECT) / "analysis").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else (
                    [f"{node.module}.{a.name}" for a in node.names]
                    if isinstance(node, ast.ImportFrom) and node.module
                    else []
                )
            )
            for mod in mods:
                top = mod.split(".")[0]
                where = path.relative_to(PROJECT)
                assert top not in ("torch", "ray", "trainables", "sweeps"), f"{where} imports {mod}"
                if top == "hrm_core":
                    in_tracking = mod == "hrm_core.tracking" or mod.startswith("hrm_core.tracking.")
                    assert mod == "hrm_core.names" or in_tracking, f"{where} imports {mod}"
                    if in_tracking:
                        module = node.module if isinstance(node, ast.ImportFrom) else mod
                        tracking.add(module if module.startswith("hrm_core.tracking") else mod)
    assert tracking, "analysis reads the tracking URI through hrm_core.tracking"
    modules = ", ".join(["analysis.report", "analysis.plots", "analysis.notebook", *sorted(tracking)])
    code = (
        f"import sys, {modules}; bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
