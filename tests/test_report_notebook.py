"""The generated report notebook, executed headless on the project kernel, exported to
HTML and attached to the sweep's parent run; and the CLI end to end."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from analysis import notebook, report
from analysis.loading import load_sweep
from hrm_core import names
from tests.conftest import PROJECT
from tests.support import synthetic

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-report")
    uri = synthetic.new_store(str(root))
    art = str(root / "artifacts")
    abl = synthetic.make_ablation(
        # 8 seeds: the fewest at which a family of 2 can reach a verdict (issue 15)
        "nb-abl", {"gated": 0.08, "feudal": 0.0}, outcomes={("feudal", 1): names.OUTCOME_ERROR},
        variants={"gated": ["gate"], "feudal": ["feudal"]}, stages={"control": [70, 140]}, rng=3,
        seeds=range(8),
    )
    ids = {"abl": synthetic.write_sweep(uri, abl, artifact_root=art)}
    srch = synthetic.make_search("nb-srch", n_trials=12)
    ids["search"] = synthetic.write_sweep(uri, srch, artifact_root=art, optuna_dir=str(root / "optuna"))
    return uri, ids, root


def _images(nb) -> int:
    return len(_figure_cells(nb))


def _figure_cells(nb) -> list[str]:
    """The source of each code cell that drew a figure, in order."""
    return [c.source for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def _readable_html(html: str) -> str:
    """The report page as a person reads it: no code, no long floats; its text, images cut."""
    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", html, flags=re.S)
    assert "jp-CodeMirrorEditor" not in text and "jp-InputPrompt" not in text  # no code cell's input
    assert "plots.show(" not in text and "import matplotlib" not in text
    text = re.sub(r"data:image/png;base64,[^\"']+", "", text)
    long = [x for x in re.findall(r"\b\d+\.\d+\b", text) if len(x.replace(".", "").lstrip("0")) > 4]
    assert not long, long  # at most 4 significant digits anywhere (no 0.009766, no 2.148438)
    return text


def test_ablation_notebook_executes_and_is_attached(store):
    from mlflow.tracking import MlflowClient

    uri, ids, root = store
    res = report.build_report(parent_run=ids["abl"], tracking_uri=uri, out=root / "abl-report")
    nb = nbformat.read(str(res.notebook), as_version=4)
    assert notebook.error_cells(nb) == 0
    first, params = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown"
    assert "**gated beats control** by +" in first.source and "95% CI" in first.source
    # the verdicts as sweeps --until-decided reads them, and the look recorded on the parent run
    verdicts = {(d["arm"], d["reference"]): d["verdict"] for d in res.decisions}
    assert verdicts == {("gated", "control"): "beats", ("feudal", "control"): "incomplete"}
    assert not res.decided
    tags = MlflowClient(tracking_uri=uri).get_run(ids["abl"]).data.tags
    assert [lk["pairs"] for lk in json.loads(tags[names.TAG_LOOKS])] == [7]  # feudal seed 1 failed
    assert "Looks (1): 7 pairs" in first.source
    assert params.metadata["tags"] == ["parameters"] and f"PARENT_RUN_ID = {ids['abl']!r}" in params.source
    assert nb.metadata["kernelspec"]["name"] == notebook.KERNEL_NAME
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    for section in ("Overview", "Leaderboard", "Statistics", "Curves", "Variant panels", "MLflow runs"):
        assert f"## {section}" in headings
    # forest, learning curves (objective, train loss), final values, Pareto, gates, feudal, curriculum
    figures = _figure_cells(nb)
    assert len(figures) == 8 and "plots.forest(" in figures[0]  # the forest plot comes first
    html = res.html.read_text()
    assert html.count('src="data:image/png;base64') == 8 and "gated beats control" in html
    assert 'alt="Effect of each arm vs control' in html  # every figure has its titles as alternative text
    assert "No description has been provided for this image" not in html
    _readable_html(html)
    effects, overview = html.find(">Effects<"), html.find(">Overview<")
    assert 0 < effects < html.find('src="data:image/png') < overview  # the forest plot, under its heading
    assert "<th>95% CI</th>" in html and re.search(r"<td>\d+\.\d% to \d+\.\d%\*?</td>", html)
    listed = MlflowClient(tracking_uri=uri).list_artifacts(ids["abl"], report.ARTIFACT_DIR)
    artifacts = {f.path for f in listed}
    assert artifacts == {f"{report.ARTIFACT_DIR}/report.ipynb", f"{report.ARTIFACT_DIR}/report.html"}
    info = load_sweep(parent_run=ids["abl"], tracking_uri=uri)[0]
    assert report.default_out_dir(info) == Path(PROJECT) / "reports" / "nb-abl" / ids["abl"]


def test_cli_search_report(store):
    uri, ids, root = store
    out = root / "search-report"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", "nb-srch", "--tracking-uri", uri, "--out", str(out),
         "--no-upload"],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"notebook: {out / 'report.ipynb'}" in proc.stdout
    assert f"html: {out / 'report.html'}" in proc.stdout
    nb = nbformat.read(str(out / "report.ipynb"), as_version=4)
    assert notebook.error_cells(nb) == 0
    assert "Best trial at the top rung" in nb.cells[0].source
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert "## Search" in headings and "## Statistics" not in headings
    # trial curves, values at each rung, Pareto, Optuna's history and intermediate values, importance,
    # parallel coordinates
    figures = _figure_cells(nb)
    assert len(figures) == 7
    for view in ("optimization_history", "intermediate_values"):
        assert any(view in f for f in figures), view
    _readable_html((out / "report.html").read_text())
