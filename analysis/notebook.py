"""The report notebook: built with nbformat, executed headless on the project's own
kernel spec (``hrm-ablate``), exported to a self-contained HTML file.

The notebook recomputes everything from MLflow through ``analysis`` (so researchers can
extend it); only its first cell, the conclusion, is written at generation time. To add
a section, see analysis/README.md.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from analysis.loading import PROJECT_ROOT, AnalysisError

KERNEL_NAME = "hrm-ablate"
KERNEL_DISPLAY_NAME = "Python (hrm-ablate)"
EXECUTE_TIMEOUT_S = 600


class ReportError(Exception):
    """The notebook could not be executed or exported (not a bad request)."""


# --------------------------------------------------------------------------------------
# kernel spec
# --------------------------------------------------------------------------------------
def ensure_kernel(name: str = KERNEL_NAME) -> str:
    """Install the project's kernel spec into this venv (``<sys.prefix>/share/jupyter``)
    unless one with this name already runs this interpreter. Idempotent."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def current() -> str | None:
        try:
            spec = KernelSpecManager().get_kernel_spec(name)
        except NoSuchKernel:
            return None
        return spec.argv[0] if spec.argv else None

    if current() == sys.executable:
        return name
    install(kernel_name=name, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix)
    found = current()
    if found != sys.executable:
        raise ReportError(f"kernel spec '{name}' resolves to {found}, not {sys.executable} "
                          "(a user-level spec shadows it)")
    return name


# --------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------
@dataclass
class Section:
    """One report section: a markdown heading/intro and code cells; ``when`` decides from
    the Analysis whether the section applies (e.g. search-only sections)."""

    title: str
    intro: str
    cells: list[str]
    when: Callable[[Any], bool] = lambda a: True


SETUP = """\
%matplotlib inline
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, imported by optuna

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from analysis import loading, plots, stats, study_plots
from analysis.report import analyse, history_metrics, links, prose, tables
from hrm_core import names

pd.set_option("display.max_columns", 40)
pd.set_option("display.width", 200)
plt.rcParams["figure.dpi"] = 90

info, runs = loading.load_sweep(parent_run=PARENT_RUN_ID, tracking_uri=TRACKING_URI)
history = loading.load_history(runs, history_metrics(runs, METRIC or info.objective))
A = analyse(info, runs, history, metric=METRIC, mode=MODE, alpha=ALPHA, ci_method=CI_METHOD, target=TARGET,
            min_seeds=globals().get("MIN_SEEDS"), max_seeds=globals().get("MAX_SEEDS"))
control = f", control {A.control}" if A.control else ""
display(Markdown(f"<small>Loaded {len(runs):,} runs and {len(history):,} history rows; primary metric "
                 f"`{A.metric}` ({A.mode}){control}.</small>"))"""

SECTIONS: list[Section] = [
    Section(
        "Effects",
        "Each declared comparison's paired difference (intention to treat) on the primary metric at the "
        "end of the budget, with its family-level 95% CI; colour = verdict (green beats, red worse, blue "
        "equivalent, grey no detectable difference, hollow inconclusive, incomplete or no test).",
        [
            "plots.show(plots.forest(tables.forest_rows(A), A.metric, A.control),\n"
            "           f'Nothing to compare yet: no two arms with {A.metric}.')",
        ],
        when=lambda a: a.kind != "search",
    ),
    Section(
        "Overview",
        "The sweep as its parent run records it, and every run by outcome. Runs that failed, "
        "diverged or were stopped early are counted here and listed below; they are not in the per-arm "
        "summaries. In an ablation's verdicts a diverged run counts at its failure value, and a failed "
        "or killed one leaves its pair missing.",
        [
            "tables.show(tables.overview_table(A))",
            "tables.show(tables.counts_table(A))",
            "if len(A.excluded):\n    tables.show(tables.excluded_table(A))\n"
            "else:\n    display(Markdown('All runs completed: none left out.'))",
        ],
    ),
    Section(
        "Leaderboard",
        "Each run's value is its metric **at the end of its fixed budget**, never its best over evals "
        "(taking the best inflates results). Searches rank trials at the same rung, as ASHA does. An "
        "ablation's *mean − control* is the difference of the arms' means over their completed runs; the "
        "verdicts' difference (Statistics) is the paired intention-to-treat one, a different number.",
        [
            "tables.show(tables.leaderboard_table(A))",
            "if A.kind == 'search':\n    tables.show(tables.rung_table(A))\n"
            "elif prose.interval_note(A):\n    display(Markdown(prose.interval_note(A)))",
        ],
    ),
    Section(
        "Statistics",
        "The declared comparisons (default: every arm against the control) on the primary metric: paired "
        "intention-to-treat differences, a paired t-test and the exact sign-flip test against this look's "
        "group-sequential boundary, Holm step-down over the family (α split Bonferroni-wise, spent per "
        "comparison by O'Brien–Fleming over n / N_max), the completed-runs-only check, family-level "
        "(Bonferroni-simultaneous, repeated after more than one look) 95% intervals and d_z. The "
        "leaderboard's *mean − control* is the difference of the arms' completed-run means, not this "
        "paired difference. Other metrics are **exploratory**: paired t (Wilcoxon from 6 pairs) or Welch, "
        "Holm within the metric, no verdict; their CIs are t-intervals (or BCa with `CI_METHOD = 'bca'`, "
        "n >= 10).",
        [
            "tables.show(tables.comparison_table(A, 'primary'))",
            "tables.show(tables.comparison_table(A, 'exploratory'))",
            "tables.show(tables.power_table(A))",
        ],
        when=lambda a: a.kind != "search",
    ),
    Section(
        "Curves",
        "Learning curves: mean over seeds per arm with a 95% t-interval band (completed runs); "
        "final values per run; accuracy against ACT steps.",
        [
            "curve = names.watched(set(history.get('key', [])), A.metric)  # val/* when logged\n"
            "plots.show(plots.learning_curves(history, curve, control=A.control),\n"
            "           f'No run has logged {curve} yet.')",
            "plots.show(plots.learning_curves(history, names.TRAIN_LM_LOSS, control=A.control),\n"
            "           'No training loss logged.')",
            "plots.show(plots.final_values(A.values, A.metric, A.arm_order, A.control),\n"
            "           f'No final values of {A.metric} yet.')",
            "plots.show(plots.pareto(runs),\n"
            "           'No eval/exact_accuracy and eval/steps to plot against each other yet.')",
        ],
        when=lambda a: a.kind != "search",
    ),
    Section(
        "Curves",
        "Every trial's curve with the best at the top rung highlighted; values at each rung; "
        "accuracy against ACT steps for the trials that ran their full budget.",
        [
            "plots.show(plots.trial_curves(history, A.metric, A.leaderboard, A.rungs.get('rung', [])),"
            " f'No trial has logged {A.metric} yet.')",
            "plots.show(plots.rung_values(tables.rung_values(A), A.metric), 'No rung values yet.')",
            "plots.show(plots.pareto(runs, by=None),\n"
            "           'No eval/exact_accuracy and eval/steps to plot against each other yet.')",
        ],
        when=lambda a: a.kind == "search",
    ),
    Section(
        "Search",
        "Optuna's views of the study: the objective per trial in sampling order with the best so far, "
        "each trial's intermediate values (what ASHA compared; a cross where it stopped a trial) and, "
        "for two objectives, the Pareto front. Then parameter importance from the persisted study (or, "
        "if it cannot be read, |Spearman rho|) and parallel coordinates; both compare every trial at the "
        "same step.",
        [
            "plots.show(study_plots.optimization_history(A.trials), 'No trial has finished yet.')",
            "plots.show(study_plots.intermediate_values(A.trials, A.metric),\n"
            "           'No intermediate values reported (no trial reached an eval yet).')",
            "if A.trials is not None and A.trials.multi:\n"
            "    plots.show(study_plots.pareto_front(A.trials),\n"
            "               'No trial has finished with both objectives.')",
            "plots.show(plots.param_importance(A.importances, A.importance_method),\n"
            "           A.importance_method if not A.importances and A.importance_method\n"
            "           else 'No parameter importances.')",
            "plots.show(plots.parallel_coordinates(\n"
            "    A.board_runs, A.search_params, A.board_runs.get('value_at_common_rung'), A.metric, A.mode,\n"
            "    f'{A.metric} at step {A.common_rung}, which every trial reached'),\n"
            "    'Too few trials with values for parallel coordinates.')",
        ],
        when=lambda a: a.kind == "search",
    ),
    Section(
        "Variant panels",
        "Gate means and saturation, the feudal losses and goal alignment, and curriculum stage boundaries, "
        "where the sweep logged them.",
        [
            "plots.show(plots.gate_panel(history), 'No gate/* metrics logged: no arm uses gating.')",
            "plots.show(plots.feudal_panel(history),\n"
            "           'No feudal/* metrics logged: no arm uses the feudal head.')",
            "plots.show(plots.curriculum_panel(history, A.metric),\n"
            "           'No curriculum/stage logged: no arm uses a curriculum.')",
        ],
    ),
    Section(
        "Compute",
        "Training compute from the `compute/*` metrics: FLOPs are the model summary's train-step figure × "
        "the steps taken (per curriculum stage; evaluation not counted), device-seconds the train loop's "
        "wall time × the trial's devices. Accuracy against cumulative FLOPs, the compute each arm needed "
        "to reach a target (`TARGET`; default 0.9 × the best arm's final mean), and totals per arm and "
        "for the sweep.",
        [
            "display(Markdown(prose.compute_summary(A)))",
            "plots.show(plots.compute_curves(A.curve, A.metric, None if A.kind == 'search' else 'arm',\n"
            "                                A.target),\n"
            "           f'No {A.metric} with compute/train_flops to plot '\n"
            "           '(runs from before compute accounting, or no eval yet).')",
            "display(Markdown(f'**{prose.target_heading(A)}**'))\ntables.show(tables.compute_to_target_table(A))",
            "tables.show(tables.compute_totals_table(A))",
        ],
    ),
    Section(
        "Health",
        "Training-health alerts each run raised (tags `hrm.alert.<rule>` = `step <n>: <message>`, "
        "the first firing; `hrm.alerts` lists the rules, empty when healthy, absent when the run was "
        "not checked), counted per arm, and the diagnostics behind them (`diag/*`) where logged.",
        [
            "display(Markdown(prose.health_summary(A)))",
            "tables.show(tables.alerts_table(A))",
            "tables.show(tables.alert_counts_table(A))",
            "plots.show(plots.health_panel(history, 'outcome' if A.kind == 'search' else 'arm'),\n"
            "           'No diag/grad_norm or diag/halt_steps/* logged (runs from before the diagnostics).')",
        ],
    ),
    Section(
        "Conclusion (recomputed)",
        "The conclusion at the top, recomputed from MLflow when this notebook ran (it differs only when "
        "the parameters cell was changed).",
        ["display(Markdown(A.conclusion))"],
    ),
    Section(
        "MLflow runs",
        "Links open the MLflow UI (`make mlflow-ui` for the embedded store; set `UI_URL` otherwise). "
        "Each run's reproduce command reruns it from its recorded context and says whether the rerun "
        "matches bitwise.",
        ["display(HTML(links.links_html(A, UI_URL)))"],
    ),
]


def build_notebook(
    title: str, conclusion: str, parameters: dict[str, Any], analysis: Any
) -> nbformat.NotebookNode:
    """Conclusion cell first, then the tagged parameters cell, setup, and the sections
    that apply to this sweep."""
    cells = [new_markdown_cell(f"# {title}\n\n{conclusion}")]
    params = "# Parameters (papermill-style: re-run with others to re-report)\n" + "\n".join(
        f"{k} = {v!r}" for k, v in parameters.items()
    )
    cells.append(new_code_cell(params, metadata={"tags": ["parameters"]}))
    cells.append(new_code_cell(SETUP))
    for section in SECTIONS:
        if not section.when(analysis):
            continue
        cells.append(new_markdown_cell(f"## {section.title}\n\n{section.intro}"))
        cells.extend(new_code_cell(src) for src in section.cells)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME,
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# --------------------------------------------------------------------------------------
# execution and export
# --------------------------------------------------------------------------------------
def execute(
    nb: nbformat.NotebookNode, timeout: int = EXECUTE_TIMEOUT_S, cwd: Path = PROJECT_ROOT
) -> nbformat.NotebookNode:
    """Run every cell headless on the project kernel (named explicitly); the kernel starts
    in the project root so ``analysis`` imports even without an install. The kernel's own
    stderr (start-up chatter) goes to a temp file, quoted only if the kernel dies."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    kernel = ensure_kernel()
    client = NotebookClient(nb, kernel_name=kernel, timeout=timeout, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}})
    with tempfile.TemporaryFile("w+") as log:
        try:
            client.execute(stderr=log)
        except CellExecutionError as e:
            lines = str(e).strip().splitlines()
            raise ReportError(f"a report cell failed: {lines[-1] if lines else e}") from None
        except (CellTimeoutError, DeadKernelError) as e:
            log.seek(0)
            tail = [line for line in log.read().splitlines() if line.strip()][-1:]
            why = f"report notebook did not finish: {e}" + (f" ({tail[0]})" if tail else "")
            raise ReportError(why) from None
    return nb


def error_cells(nb: nbformat.NotebookNode) -> int:
    """How many code cells have an error output."""
    return sum(any(o.get("output_type") == "error" for o in c.get("outputs", []))
               for c in nb.cells if c.cell_type == "code")


_NO_ALT = re.compile(r'alt="No description has been provided for this image"')


def to_html(nb: nbformat.NotebookNode) -> str:
    """Self-contained HTML for reading (figures inlined as base64 PNG, with their titles as
    alternative text): the outputs only, no code and no prompts; the notebook keeps every
    cell's code."""
    import html
    import logging

    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.log.setLevel(logging.ERROR)  # its alt-text warning: the alt text is set below
    body, _ = exporter.from_notebook_node(nb)
    alts = iter([o.get("metadata", {}).get("image/png", {}).get("alt", "figure")
                 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "image/png" in o.get("data", {})])
    # nbconvert's lab template drops the outputs' alt metadata and writes this placeholder on
    # every image instead, in output order
    return _NO_ALT.sub(lambda _: f'alt="{html.escape(next(alts, "figure"), quote=True)}"', body)


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


__all__ = [
    "KERNEL_NAME", "AnalysisError", "ReportError", "Section", "SECTIONS", "build_notebook", "ensure_kernel",
    "execute", "to_html",
]
