"""Ablation reports: MLflow runs -> pandas -> statistics -> plots -> executed notebook.

Light on import: submodules load pandas, scipy, matplotlib and MLflow only when used.
No torch, no Ray; from this project only ``hrm_core.names`` and the torch-free
``hrm_core.tracking``.

    from analysis import load_runs, load_history
    from analysis.report import build_report
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_runs": "analysis.loading",
    "load_sweep": "analysis.loading",
    "load_history": "analysis.loading",
    "AnalysisError": "analysis.loading",
    "SweepInfo": "analysis.loading",
    "analyse": "analysis.report",
    "build_report": "analysis.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
