"""Sweep reports: ``python -m analysis.report SWEEP|--parent-run ID [--out DIR]``.

Reads the sweep from MLflow only, analyses it, writes an executed notebook and its HTML
copy to ``reports/<sweep>/<parent_run_id>/`` and attaches both to the parent run.

| module | what it owns |
|---|---|
| ``sweep_analysis`` | ``analyse`` -> ``Analysis``: every number a report shows |
| ``health`` | the runs' alert tags -> per-run health and the alerts that fired |
| ``tables`` | the notebook's tables (DataFrames) from an ``Analysis`` |
| ``prose`` | the conclusion, the health line, the compute summary and headings, in words |
| ``fmt`` | how values, differences, p-values and FLOPs are written |
| ``links`` | MLflow UI links and reproduce commands for every run |
| ``build`` | ``build_report``: load, analyse, execute the notebook, export, attach |
| ``cli`` | the command line |

    from analysis.report import analyse, build_report
"""

from analysis.report.build import ARTIFACT_DIR, ReportResult, build_report, default_out_dir
from analysis.report.cli import main
from analysis.report.sweep_analysis import Analysis, analyse, history_metrics

__all__ = [
    "ARTIFACT_DIR", "Analysis", "ReportResult", "analyse", "build_report", "default_out_dir",
    "history_metrics", "main",
]
