"""Building one report: load the sweep from MLflow, analyse it, write the executed
notebook and its HTML copy to ``reports/<sweep>/<parent_run_id>/`` and attach both to
the sweep's parent run (artifacts under ``report/``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from analysis import stats
from analysis.loading import (
    PROJECT_ROOT,
    SweepInfo,
    default_tracking_uri,
    load_history,
    load_sweep,
    open_client,
    require_metric,
)
from analysis.report.links import DEFAULT_UI_URL
from analysis.report.sweep_analysis import Analysis, analyse, history_metrics
from hrm_core import names

REPORTS_DIR = PROJECT_ROOT / "reports"
ARTIFACT_DIR = "report"


@dataclass
class ReportResult:
    notebook: Path
    html: Path
    parent_run_id: str
    conclusion: str
    uploaded: bool
    # one per declared comparison: arm, reference, label, verdict, reason (analysis.verdicts)
    decisions: list[dict] = field(default_factory=list)
    decided: bool = False  # every declared comparison is beats / worse / equivalent

    def summary(self) -> str:
        """What a user reads at the end: the conclusion, then where the report is."""
        lines = [self.conclusion, "", f"notebook: {self.notebook}", f"html: {self.html}"]
        if self.uploaded:
            lines.append(f"attached to parent run {self.parent_run_id} (artifacts/{ARTIFACT_DIR}/)")
        return "\n".join(lines)


def default_out_dir(info: SweepInfo) -> Path:
    return REPORTS_DIR / names.safe_name(info.sweep) / (info.parent_run_id or "all")


def build_report(
    sweep: str | None = None,
    *,
    parent_run: str | None = None,
    tracking_uri: str | None = None,
    out: str | Path | None = None,
    metric: str | None = None,
    mode: str | None = None,
    alpha: float = stats.ALPHA,
    ci_method: str = "t",
    execute: bool = True,
    upload: bool = True,
    ui_url: str = DEFAULT_UI_URL,
    timeout: int = 600,
    target: float | None = None,
    min_seeds: int | None = None,
    max_seeds: int | None = None,
) -> ReportResult:
    """Load, analyse, build and execute the notebook, export HTML, attach both to the
    parent run. Raises AnalysisError for bad requests, ReportError if execution fails
    (the partial notebook is still written, for debugging)."""
    uri = tracking_uri or default_tracking_uri()
    info, runs = load_sweep(sweep, parent_run=parent_run, tracking_uri=uri)
    if metric is not None:
        require_metric(runs, metric)
    history = load_history(runs, history_metrics(runs, metric or info.objective), uri)
    a = analyse(info, runs, history, metric=metric, mode=mode, alpha=alpha, ci_method=ci_method,
                target=target, min_seeds=min_seeds, max_seeds=max_seeds)
    _record_look(a, uri)
    params = {"TRACKING_URI": uri, "PARENT_RUN_ID": info.parent_run_id, "METRIC": metric, "MODE": mode,
              "ALPHA": alpha, "CI_METHOD": ci_method, "UI_URL": ui_url, "TARGET": target,
              "MIN_SEEDS": min_seeds, "MAX_SEEDS": max_seeds}
    out_dir = Path(out) if out else default_out_dir(info)
    nb_path, html_path = _write(a, params, out_dir, execute, timeout)
    uploaded = bool(upload and info.parent_run_id)
    if uploaded:
        client = open_client(uri)
        for path in (nb_path, html_path):
            client.log_artifact(info.parent_run_id, str(path), ARTIFACT_DIR)
        # the verdict on the parent run's page in the MLflow UI (its description)
        from hrm_core.tracking.describe import describe_run, report_note

        note = report_note(a.conclusion, f"{ARTIFACT_DIR}/{html_path.name}", str(html_path))
        describe_run(client, info.parent_run_id, note)
    d = a.decision
    return ReportResult(nb_path, html_path, info.parent_run_id or "", a.conclusion, uploaded,
                        list(d.rows) if d else [], bool(d and d.decided))


def _record_look(a: Analysis, uri: str) -> None:
    """A report on a new set of completed pairs is a look: recorded on the parent run (the
    notebook, run later, then finds it there and analyses with the same looks)."""
    d = a.decision
    if d is None or not d.new_look or not a.info.parent_run_id:
        return
    from analysis import looks

    looks.record(open_client(uri), a.info.parent_run_id, d.looks)
    a.info.parent_tags[names.TAG_LOOKS] = json.dumps(d.looks)
    d.new_look = False


def _write(a: Analysis, params: dict, out_dir: Path, execute: bool, timeout: int) -> tuple[Path, Path]:
    """Build the notebook (conclusion first), run it if asked, and write it and its HTML
    copy, also when a cell fails (the partial notebook is kept for debugging)."""
    from analysis import notebook as nbk

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"{'Search' if a.kind == 'search' else 'Ablation'} report: {a.info.sweep}"
    text = a.conclusion + (f"\n\n<small>Written {stamp} from {len(a.runs)} MLflow runs of parent run "
                           f"`{a.info.parent_run_id}`. The code behind every table and figure is in "
                           "`report.ipynb`, beside this page.</small>")
    nb = nbk.build_notebook(title, text, params, a)
    nb_path, html_path = out_dir / "report.ipynb", out_dir / "report.html"
    try:
        if execute:
            nbk.execute(nb, timeout=timeout)
    finally:
        nbk.write(nb, nb_path)
        html_path.write_text(nbk.to_html(nb), encoding="utf-8")
    return nb_path, html_path
