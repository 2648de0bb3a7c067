"""What a person reads in a report, without running a kernel: numbers written for reading,
intervals of bounded metrics inside their bounds (tables and figures), the forest plot,
crowded panels as small multiples, Optuna's views of a search (history, intermediate
values with the ASHA stops, the Pareto front of a two-objective search), and
``make optuna-dashboard``'s resolution of the latest search and its server on loopback.
Sweeps are synthetic, in a real MLflow SQLite store with real Optuna studies."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request

import matplotlib
import numpy as np
import pandas as pd
import pytest

from analysis import dashboard, loading, plots, report, stats, study_plots
from analysis.loading import AnalysisError
from analysis.report import fmt, prose, tables
from hrm_core import names
from tests.support import synthetic

matplotlib.use("Agg")
ACC, STEPS = names.EVAL_EXACT_ACCURACY, names.EVAL_STEPS
ARMS = ("control", "w0.03", "w0.1", "w0.3")


def _two_objective_search() -> synthetic.Sweep:
    """A two-objective search (accuracy max, ACT steps min, no early stopping): more ACT
    steps buy accuracy, so the trials trade one for the other; every third trial is worse
    (dominated, unless nothing beats it)."""
    rng = np.random.default_rng(5)
    trials, study = [], []
    for i, halt in enumerate((2, 3, 4, 5, 6, 7, 8, 4)):
        acc = float(0.3 + 0.07 * halt + rng.normal(0, 0.03) - (0.2 if i % 3 == 2 else 0.0))
        steps = float(0.8 * halt + rng.normal(0, 0.2))
        rows = [(ACC, acc * s / 100, s) for s in (50, 100)] + [(STEPS, steps, s) for s in (50, 100)]
        trials.append(synthetic.Trial(f"t{i}", f"arch.halt_max_steps={halt}", 0, names.OUTCOME_COMPLETED,
                                      {"seed": "0", "arch.halt_max_steps": str(halt)}, rows))
        study.append({"params": {"arch.halt_max_steps": halt}, "values": [acc, steps]})
    tags = {names.TAG_SWEEP_KIND: "search", names.TAG_OBJECTIVE: ACC, names.TAG_OBJECTIVE_MODE: "max"}
    return synthetic.Sweep("rd-pareto", "search", tags, trials, study)


def _write_study(client, parent_id: str, storage: str, sweep: synthetic.Sweep, directions: list[str],
                 metric_names: list[str]) -> None:
    """Persist a two-objective study as the sweep driver does, and tag its parent run."""
    import warnings

    import optuna

    study = optuna.create_study(storage=storage, study_name=parent_id, directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metric_names)
    dist = {"arch.halt_max_steps": optuna.distributions.IntDistribution(2, 8)}
    study.add_trials([optuna.trial.create_trial(params=t["params"], distributions=dist, values=t["values"])
                      for t in sweep.study])
    client.set_tag(parent_id, names.TAG_OPTUNA_STORAGE, storage)
    client.set_tag(parent_id, names.TAG_OPTUNA_STUDY, parent_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An ablation near 0% accuracy (4 arms with the feudal head, one failed run), a search
    stopped by ASHA with its study, and later a two-objective search with its study."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-readable")
    uri = synthetic.new_store(str(root))
    client = MlflowClient(tracking_uri=uri)
    abl = synthetic.make_ablation(
        "rd-abl", {"w0.03": 0.05, "w0.1": 0.0, "w0.3": -0.03}, seeds=(0, 1, 2, 3),
        outcomes={("w0.3", 1): names.OUTCOME_ERROR}, variants={a: ["feudal"] for a in ARMS},
        base=0.03, seed_sd=0.04, budget=100, eval_every=20, rng=3,
    )
    ids = {"abl": synthetic.write_sweep_bulk(uri, abl)}
    srch = synthetic.make_search("rd-srch", n_trials=8, budget=100, eval_every=25, grace=25)
    ids["search"] = synthetic.write_sweep_bulk(uri, srch)
    storage = f"sqlite:///{root / 'search.optuna.db'}"
    synthetic.write_optuna_study(srch, storage, ids["search"])
    client.set_tag(ids["search"], names.TAG_OPTUNA_STORAGE, storage)
    client.set_tag(ids["search"], names.TAG_OPTUNA_STUDY, ids["search"])
    pareto = _two_objective_search()
    ids["pareto"] = synthetic.write_sweep_bulk(uri, pareto)
    _write_study(client, ids["pareto"], f"sqlite:///{root / 'pareto.optuna.db'}", pareto,
                 ["maximize", "minimize"], [ACC, STEPS])
    return uri, ids, root


def _analysis(uri, parent):
    info, runs = loading.load_sweep(parent_run=parent, tracking_uri=uri)
    history = loading.load_history(runs, report.history_metrics(runs, info.objective), uri)
    return report.analyse(info, runs, history)


@pytest.fixture(scope="module")
def abl(store):
    uri, ids, _ = store
    return _analysis(uri, ids["abl"])


# --------------------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------------------
def _significant(text: str) -> int:
    return len(re.sub(r"^0\.0*", "", text).replace(".", ""))


def test_numbers_are_written_for_reading(abl):
    assert [fmt.p_number(p) for p in (0.0043, 0.05, 0.3, 0.999, 0.00012)] == [
        "0.0043", "0.050", "0.30", "1.0", "< 0.001"]
    assert fmt.diff(ACC, -0.0004) == "+0.0 points" and fmt.value(ACC, 0.61234) == "61.2%"
    assert fmt.count(12.0) == "12" and fmt.diff_interval(ACC, -0.008, 0.054) == "-0.8 to +5.4 points"
    board = tables.leaderboard_table(abl)
    assert board[f"mean {ACC}"].str.fullmatch(r"\d+\.\d%").all()
    assert board["n"].str.fullmatch(r"\d+").all() and board["sd"].str.fullmatch(r"\d+\.\d points").all()
    assert board["mean − control"].str.fullmatch(r"[+-]\d+\.\d points").all()
    comp = tables.comparison_table(abl)
    assert len(comp) == 3 and comp["difference"].str.fullmatch(r"[+-]\d+\.\d points").all()
    assert comp["sign-flip p"].str.fullmatch(r"\d\.\d+|").all()  # issue 15: the exact test beside t
    for col in ("p", "p (Holm)"):
        assert all(p == "< 0.001" or _significant(p) == 2 for p in comp[col]), comp[col].tolist()
    assert comp["effect"].str.fullmatch(r"d_z = -?\d+\.\d\d|n/a").all()
    power = tables.power_table(abl)
    assert power["power at d_z = 1"].str.fullmatch(r"\d+%").all()
    every = pd.concat([board, comp, power, tables.excluded_table(abl)], axis=0).astype(str)
    assert not every.stack().str.contains(r"\d\.\d{5,}").any()  # no six-decimal floats left
    assert tables.excluded_table(abl)["seed"].tolist() == ["1"]


# --------------------------------------------------------------------------------------
# bounded intervals
# --------------------------------------------------------------------------------------
def _percent_pairs(cells) -> list[float]:
    return [float(x) for c in cells for x in re.findall(r"(-?\d+\.\d)%", c)]


def test_intervals_of_a_rate_stay_in_bounds_in_tables_and_figures(abl):
    s = abl.summary
    assert s["ci_clipped"].any() and (s["ci_low"] >= 0).all() and (s["ci_high"] <= 1).all()
    c = abl.comparisons[abl.comparisons["metric"].map(stats.is_rate)]
    c = c.dropna(subset=["ci_low"])  # issue 15: an incomplete comparison shows no interval
    assert len(c) > 3 and (c["ci_low"] >= -1).all() and (c["ci_high"] <= 1).all()
    shown = _percent_pairs(tables.leaderboard_table(abl)["95% CI"])
    assert shown and min(shown) == 0.0 and max(shown) <= 100.0
    note = prose.interval_note(abl)
    assert "clipped" in note and "keeps the coverage" in note
    fig = plots.learning_curves(abl.history, ACC, control=abl.control)
    bands = [p.vertices[:, 1] for ax in fig.axes for coll in ax.collections for p in coll.get_paths()]
    assert bands and min(b.min() for b in bands) >= 0.0 and max(b.max() for b in bands) <= 1.0
    assert "clipped to 0%–100%" in fig.axes[0].get_title()
    fig = plots.final_values(abl.values, ACC, abl.arm_order, abl.control)
    bars = [seg for coll in fig.axes[0].collections if hasattr(coll, "get_segments")
            for seg in coll.get_segments()]
    assert bars and min(seg[:, 1].min() for seg in bars) >= 0.0
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------------------
# forest plot and small multiples
# --------------------------------------------------------------------------------------
def test_forest_plot_draws_each_comparison_with_its_interval_and_verdict(abl):
    rows = tables.forest_rows(abl)
    prim = abl.comparisons[abl.comparisons["role"] == "primary"].set_index("arm")
    assert list(rows["arm"]) == [a for a in abl.arm_order if a != abl.control]
    for r in rows.itertuples():
        assert r.diff == pytest.approx(prim.loc[r.arm, "diff"] * 100)
        assert r.ci_low == pytest.approx(prim.loc[r.arm, "ci_low"] * 100, nan_ok=True)
        assert prim.loc[r.arm, "verdict"] in r.label and "Holm p" in r.label
    fig = plots.forest(rows, ACC, abl.control)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows["arm"])
    spans = sorted((float(s[0, 0]), float(s[1, 0])) for coll in ax.collections for s in coll.get_segments())
    shown = [(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"], strict=True) if np.isfinite(lo)]
    assert spans == sorted(shown)  # issue 15: a comparison without an interval draws its point only
    assert "points" in ax.get_xlabel()
    matplotlib.pyplot.close("all")


def test_crowded_panels_are_small_multiples(abl):
    fig = plots.feudal_panel(abl.history)
    keys = sorted(k for k in abl.history["key"].unique() if k.startswith(names.FEUDAL_PREFIX))
    assert sorted(ax.get_title() for ax in fig.axes) == keys  # one axis per feudal metric
    assert all(len(ax.get_lines()) <= len(ARMS) for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(ARMS)  # one legend: the arms
    many = abl.history.assign(arm=abl.history["arm"] + "-" + abl.history["seed"].astype(str))
    fig = plots.learning_curves(many, ACC, control="control-0")
    drawn = many.loc[(many["key"] == ACC) & (many["outcome"] == names.OUTCOME_COMPLETED), "arm"].nunique()
    assert drawn > plots.MAX_LINES and len(fig.axes) == drawn - 1  # one per arm, each beside control-0
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------------------
# Optuna's views of a search
# --------------------------------------------------------------------------------------
def test_search_report_has_optunas_history_and_intermediate_values(store):
    uri, ids, _ = store
    a = _analysis(uri, ids["search"])
    t = a.trials
    assert t.source.startswith("Optuna study") and not t.multi and t.objectives == [ACC]
    stopped = a.runs["outcome"] == names.OUTCOME_EARLY_STOPPED
    assert (t.trials["state"] == "pruned").sum() == stopped.sum() > 0
    fig = study_plots.intermediate_values(t, a.metric)
    ax = fig.axes[0]
    crosses = ax.collections[0].get_offsets()  # where ASHA stopped each pruned trial
    last = a.history[a.history["key"] == ACC].groupby("run_id")["step"].max()
    assert sorted(crosses[:, 0]) == sorted(last[a.runs.loc[stopped, "run_id"]])
    assert sum(line.get_marker() == "o" for line in ax.get_lines()) == len(a.runs)  # a line per trial
    fig = study_plots.optimization_history(t)
    done = t.trials[t.trials["state"] == "complete"]
    best = fig.axes[0].get_lines()[0].get_ydata()
    assert best[-1] == pytest.approx(done["obj0"].max())
    assert study_plots.pareto_front(t) is None
    info = a.info  # without the study: the same views from MLflow
    info.optuna_storage = "sqlite:////nonexistent/dir/study.db"
    b = report.analyse(info, a.runs, a.history)
    assert b.trials.source.startswith("MLflow")
    assert (b.trials.trials["state"] == "pruned").sum() == stopped.sum()
    assert study_plots.intermediate_values(b.trials, b.metric) is not None
    matplotlib.pyplot.close("all")


def test_two_objective_search_shows_the_pareto_front(store):
    import optuna

    uri, ids, _ = store
    a = _analysis(uri, ids["pareto"])
    t = a.trials
    assert t.multi and t.objectives == [ACC, STEPS] and t.modes == ["max", "min"]
    fig = study_plots.pareto_front(t)
    ax = fig.axes[0]
    front = {tuple(p) for p in ax.collections[1].get_offsets().tolist()}
    study = optuna.load_study(study_name=ids["pareto"], storage=a.info.optuna_storage)
    assert front == {(tr.values[1], tr.values[0]) for tr in study.best_trials}  # Optuna's own front
    assert 0 < len(ax.collections[0].get_offsets()) == len(t.trials) - len(front)  # and the dominated
    assert "lower is better" in ax.get_xlabel() and ACC in ax.get_ylabel()
    assert len(study_plots.optimization_history(t).axes) == 2  # one panel per objective
    matplotlib.pyplot.close("all")


# --------------------------------------------------------------------------------------
# make optuna-dashboard
# --------------------------------------------------------------------------------------
def test_dashboard_resolves_the_latest_search(store, tmp_path, capsys):
    uri, ids, root = store
    latest = dashboard.resolve(None, uri)
    assert latest.parent_run_id == ids["pareto"] and latest.storage.endswith("pareto.optuna.db")
    named = dashboard.resolve("rd-srch", uri)
    assert named.parent_run_id == ids["search"] == named.study and named.sweep == "rd-srch"
    known = "known sweeps: rd-abl, rd-pareto, rd-srch[)]$"
    for sweep, message in (("rd-abl", "is an ablation"), ("nope", known)):
        with pytest.raises(AnalysisError, match=message):
            dashboard.resolve(sweep, uri)
    with pytest.raises(AnalysisError, match="no search invocation"):
        dashboard.resolve(None, synthetic.new_store(str(tmp_path)))
    assert dashboard.main(["rd-srch", "--tracking-uri", uri, "--port", "8123", "--print"]) == 0
    out = capsys.readouterr().out.split()
    assert out[1:] == [named.storage, "--host", "127.0.0.1", "--port", "8123", "--server", "wsgiref"]
    assert dashboard.main(["--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert capsys.readouterr().err.startswith("error: no MLflow store at")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_study_on_loopback(store):
    uri, ids, _ = store
    target = dashboard.resolve("rd-srch", uri)
    port = _free_port()
    proc = subprocess.Popen(dashboard.command(target, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline, body = time.monotonic() + 60, None
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.3)
        assert body is not None, "optuna-dashboard did not answer within 60 s"
        assert [s["study_name"] for s in body["study_summaries"]] == [ids["search"]]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
