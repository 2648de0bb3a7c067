"""HRM core: a faithful Hierarchical Reasoning Model trainer.

Kept free of heavy imports (torch, mlflow, ray) so that ``hrm_core.names`` can be
imported by light layers such as ``analysis``. Heavy entry points are loaded lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_reference_checkpoint", "build_model"]


def __getattr__(name: str) -> Any:
    if name == "load_reference_checkpoint":
        from hrm_core.model.reference import load_reference_checkpoint

        return load_reference_checkpoint
    if name == "build_model":
        from hrm_core.model.hrm import build_model

        return build_model
    raise AttributeError(f"module 'hrm_core' has no attribute {name!r}")
