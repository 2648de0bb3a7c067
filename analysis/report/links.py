"""Links from the report to MLflow: every run's page in the MLflow UI and the command
that reproduces it, as one HTML table."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import pandas as pd

from analysis.loading import SweepInfo
from analysis.report import fmt
from hrm_core.tracking import ui

if TYPE_CHECKING:
    from analysis.report.sweep_analysis import Analysis

DEFAULT_UI_URL = ui.DEFAULT_UI_URL
REPRODUCE_COMMAND = "python -m sweeps reproduce {run_id}"


def reproduce_command(run_id: str) -> str:
    """The command that reruns one trial from its recorded context (sweeps/reproduce/)."""
    return REPRODUCE_COMMAND.format(run_id=run_id)


def run_url(info: SweepInfo, run_id: str, ui_url: str = DEFAULT_UI_URL) -> str:
    """The MLflow UI page of a run (the tracking server itself when it is one)."""
    return ui.run_url(info.tracking_uri, info.experiment_id, run_id, ui_url)


def _link(info: SweepInfo, run_id: str, text: str, ui_url: str) -> str:
    return f'<a href="{html.escape(run_url(info, run_id, ui_url))}">{html.escape(text)}</a>'


def links_html(a: Analysis, ui_url: str = DEFAULT_UI_URL) -> str:
    """An HTML table linking every run (and the parent run) to the MLflow UI."""
    esc = html.escape
    head = ""
    if a.info.parent_run_id:
        head = f"<p>Parent run: {_link(a.info, a.info.parent_run_id, a.info.parent_run_name, ui_url)}</p>"
    v = a.values.set_index("run_id")["value"]
    status = a.health.set_index("run_id")["status"] if len(a.health) else pd.Series(dtype=str)
    rows = "".join(
        f"<tr><td>{_link(a.info, r.run_id, str(r.run_name), ui_url)}</td><td>{esc(str(r.arm))}</td>"
        f"<td>{'' if pd.isna(r.seed) else r.seed}</td><td>{esc(r.outcome)}</td>"
        f"<td>{fmt.value(a.metric, v.get(r.run_id, math.nan))}</td>"
        f"<td>{esc(str(status.get(r.run_id, '')))}</td>"
        f"<td><code>{esc(reproduce_command(r.run_id))}</code></td></tr>"
        for r in a.runs.itertuples()
    )
    return (f"{head}<table><thead><tr><th>run</th><th>arm</th><th>seed</th><th>outcome</th>"
            f"<th>{esc(a.metric)}</th><th>health</th><th>reproduce</th></tr></thead><tbody>{rows}</tbody></table>")
